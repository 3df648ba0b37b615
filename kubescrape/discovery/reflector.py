"""List, then watch: a local copy of one resource kept current, client-go's Reflector in small.

:meth:`Reflector.run` lists (remembering the list's resourceVersion), then watches from that version
with bookmarks on, so a quiet resource still advances the version and a reconnect resumes where it
stopped; a watch that ends (the server's timeout) is simply resumed. ``410 Gone`` (the version was
compacted away) means the copy may have missed events: list again and emit the difference (objects
that vanished are deleted, changed ones modified), so consumers never lose a target that still exists.
Errors back off exponentially with jitter (:class:`kubescrape.clock.Backoff`, 0.5 s doubling to 30 s,
reset after a successful list), so the agents of a whole cluster do not reconnect in step after an
apiserver outage.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from kubescrape.clock import SYSTEM_CLOCK, Backoff, Clock
from kubescrape.discovery.apiclient import ApiError, DiscoveryError
from kubescrape.discovery.metrics import DiscoveryMetrics

Json = dict[str, Any]
Handler = Callable[[str, Json], None]  # ("ADDED" | "MODIFIED" | "DELETED", object)

log = logging.getLogger(__name__)

__all__ = ["ListWatch", "Reflector"]


class ListWatch(Protocol):
    """What the reflector needs of an API client (:class:`~kubescrape.discovery.apiclient.ApiClient`)."""

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Json: ...

    def watch(self, path: str, params: Mapping[str, str]) -> AsyncIterator[Json]: ...


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


def _key(obj: Json) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


class Reflector:
    """Keeps :attr:`objects` equal to the server's objects at ``path`` and calls ``handler`` on changes."""

    def __init__(self, client: ListWatch, path: str, handler: Handler, *,
                 params: Mapping[str, str] | None = None, clock: Clock = SYSTEM_CLOCK,
                 backoff: Backoff | None = None, watch_timeout: int = 300,
                 metrics: DiscoveryMetrics | None = None, role: str = "") -> None:
        self.client = client
        self.path = path
        self.handler = handler
        self.params = {k: v for k, v in (params or {}).items() if v}
        self.clock = clock
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.watch_timeout = watch_timeout
        self.objects: dict[tuple[str, str], Json] = {}
        self.resource_version = ""
        self.synced = False
        self.lists = 0
        self.watches = 0
        self.errors = 0
        self.events = 0
        self.last_error: DiscoveryError | None = None
        self.metrics = metrics
        self.role = role

    def _emit(self, kind: str, obj: Json) -> None:
        if self.metrics is not None:
            event = {"ADDED": "add", "MODIFIED": "update", "DELETED": "delete"}.get(kind, kind.lower())
            self.metrics.events.labels(role=self.role, event=event).inc()
        try:
            self.handler(kind, obj)
        except Exception:  # a consumer's bug must not stop the watch; it is logged with the object
            log.exception("discovery handler failed on %s %s", kind, _key(obj))

    async def list(self) -> None:
        """List and replace the local copy, emitting only the differences."""
        body = await self.client.get(self.path, self.params)
        self.lists += 1
        if self.metrics is not None:
            self.metrics.lists.labels(role=self.role).inc()
        items = body.get("items") or []
        fresh = {_key(o): o for o in items}
        for key in [k for k in self.objects if k not in fresh]:
            self._emit("DELETED", self.objects.pop(key))
        for key, obj in fresh.items():
            old = self.objects.get(key)
            self.objects[key] = obj
            if old is None:
                self._emit("ADDED", obj)
            elif old != obj:
                self._emit("MODIFIED", obj)
        self.resource_version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        self.synced = True

    async def watch_once(self) -> None:
        """One watch from :attr:`resource_version` until the server ends it; raises ``_Gone`` on 410."""
        params = {**self.params, "resourceVersion": self.resource_version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(self.watch_timeout)}
        self.watches += 1
        async for event in self.client.watch(self.path, params):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                code = int(obj.get("code", 0) or 0)
                if code == 410:
                    raise _Gone(obj.get("message", ""))
                raise ApiError(code, str(obj.get("reason", "")), str(obj.get("message", "")))
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                self.resource_version = str(rv)
            self.events += 1
            if kind == "BOOKMARK":
                continue
            key = _key(obj)
            if kind == "DELETED":
                self.objects.pop(key, None)
            elif kind in ("ADDED", "MODIFIED"):
                self.objects[key] = obj
            else:
                continue
            self._emit(str(kind), obj)

    async def run(self) -> None:
        """List and watch forever (cancel to stop)."""
        need_list = True
        while True:
            try:
                if need_list:
                    await self.list()
                    need_list = False
                    self.backoff.reset()
                started, events = self.clock.monotonic(), self.events
                await self.watch_once()
                if self.events != events:
                    self.backoff.reset()
                elif self.clock.monotonic() - started < 1.0:
                    # A watch the server ends at once, again and again (a proxy cutting streams): do not spin.
                    await self.clock.sleep(self.backoff.next())
            except _Gone as e:
                log.info("watch of %s expired (%s): listing again", self.path, e)
                need_list = True
            except DiscoveryError as e:
                self.errors += 1
                self.last_error = e
                if self.metrics is not None:
                    self.metrics.failures.labels(mechanism="kubernetes", reason=e.reason).inc()
                delay = self.backoff.next()
                log.warning("%s: %s; retrying in %.1fs", self.path, e, delay)
                await self.clock.sleep(delay)
