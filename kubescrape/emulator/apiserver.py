"""A stand-in kube-apiserver for the emulated fleet: enough of the real one for kubectl, client-go-style
informers, the official Python client, vmagent and Prometheus' Kubernetes discovery.

The request chain is the apiserver's: authentication (client certificate against the cluster CA, then
ServiceAccount bearer token, then anonymous, like ``--anonymous-auth=true``) → authorization (the
same RBAC YAML as the kubelets, :class:`~kubescrape.emulator.authz.RBACAuthorizer`) → handler.
Responses have the apiserver's shapes:

* lists ``{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"…"},"items":[…]}``
  (items without kind/apiVersion), ``limit``/``continue`` paging;
* watches (``?watch=1``): one JSON event per line, ``{"type":"ADDED","object":{…}}``, with
  ``resourceVersion`` resumption, ``allowWatchBookmarks`` BOOKMARK events, ``timeoutSeconds``, and a
  watch from a compacted version answered, as the watch cache does, with 200 and one
  ``{"type":"ERROR","object":<Status 410 Expired>}`` event;
* failures as ``metav1.Status`` with the apiserver's messages (401 Unauthorized, 403 "pods is
  forbidden: User … cannot list resource …", 404 NotFound, 400 BadRequest for selectors);
* discovery (``/api``, ``/apis``, ``/api/v1``, ``/apis/<group>/<version>``, ``/version``) in the
  legacy (unaggregated) form, which every client falls back to;
* ``selfsubjectaccessreviews`` (``kubectl auth can-i``) answered from the RBAC policy;
* ``/api/v1/nodes/NODE/proxy/PATH``: authorized as ``get nodes/proxy`` and forwarded to that node's
  emulated kubelet with the apiserver's own kubelet client certificate (``system:masters``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from kubescrape.clock import SYSTEM_CLOCK, Clock
from kubescrape.emulator.apistore import (
    RESOURCES,
    Event,
    Expired,
    Json,
    Resource,
    SelectorError,
    Store,
    field_selector,
    label_selector,
    status_object,
)
from kubescrape.emulator.apitables import table, wants_table
from kubescrape.emulator.authn import AUTHENTICATED, Authenticator, UserInfo
from kubescrape.emulator.authz import Attributes, RBACAuthorizer
from kubescrape.emulator.tokens import SA_PREFIX
from kubescrape.errors import EmulatorError

log = logging.getLogger(__name__)

__all__ = ["ApiServer", "NodeAddress"]

NodeAddress = Callable[[str], "tuple[str, int] | None"]
JSON_TYPE = "application/json"
_PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")
# Paths the system:discovery ClusterRole opens to every authenticated user.
_DISCOVERY_PATHS = ("/api", "/apis", "/openapi")
_DEFAULT_WATCH_TIMEOUT = 1800.0


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true")


def _json_response(status: int, body: Json) -> web.Response:
    return web.Response(status=status, body=json.dumps(body, separators=(",", ":")).encode(),
                        content_type=JSON_TYPE)


def _status(code: int, reason: str, message: str, details: Json | None = None) -> web.Response:
    return _json_response(code, status_object(code, reason, message, details))


def _forbidden_message(a: Attributes) -> str:
    """The apiserver's ``forbiddenMessage`` (staging/…/endpoints/handlers/responsewriters/errors.go)."""
    if not a.resource_request:
        return f'User "{a.user}" cannot {a.verb} path "{a.path}"'
    resource = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    if a.namespace:
        return (f'User "{a.user}" cannot {a.verb} resource "{resource}" in API group "{a.api_group}" '
                f'in the namespace "{a.namespace}"')
    return (f'User "{a.user}" cannot {a.verb} resource "{resource}" in API group "{a.api_group}" '
            "at the cluster scope")


def _forbidden(a: Attributes) -> web.Response:
    if not a.resource_request:
        return _status(403, "Forbidden", f"forbidden: {_forbidden_message(a)}", {})
    qualified = f"{a.resource}.{a.api_group}" if a.api_group else a.resource
    details: Json = {}
    if a.name:
        details["name"] = a.name
    if a.api_group:
        details["group"] = a.api_group
    details["kind"] = a.resource
    subject = f'{qualified} "{a.name}"' if a.name else qualified
    return _status(403, "Forbidden", f"{subject} is forbidden: {_forbidden_message(a)}", details)


def _not_found_path() -> web.Response:
    return _status(404, "NotFound", "the server could not find the requested resource", {})


def _resource_list(group_version: str, resources: list[Resource], extra: list[Json] | None = None) -> Json:
    out: list[Json] = []
    for r in resources:
        entry: Json = {"name": r.name, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
                       "verbs": ["get", "list", "watch"]}
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        out.append(entry)
        if r.name == "nodes":
            out.append({"name": "nodes/proxy", "singularName": "", "namespaced": False,
                        "kind": "NodeProxyOptions", "verbs": ["create", "delete", "get", "patch", "update"]})
    out += extra or []
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": out}


_SSAR = {"name": "selfsubjectaccessreviews", "singularName": "selfsubjectaccessreview", "namespaced": False,
         "kind": "SelfSubjectAccessReview", "verbs": ["create"]}
_GROUPS = ("discovery.k8s.io", "authorization.k8s.io")


class ApiServer:
    """The HTTPS listener and its handlers; objects come from a :class:`Store`."""

    def __init__(self, store: Store, *, address: str, port: int, ssl_context: ssl.SSLContext,
                 authenticator: Authenticator, authorizer: RBACAuthorizer, kubelet_ssl: ssl.SSLContext,
                 node_address: NodeAddress, version: str, bookmark_interval: float = 60.0,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = store
        self.address = address
        self.port = port
        self.ssl_context = ssl_context
        self.authn = authenticator
        self.authz = authorizer
        self.kubelet_ssl = kubelet_ssl
        self.node_address = node_address
        self.version = version
        self.bookmark_interval = bookmark_interval
        self.clock = clock
        self.requests = 0
        self.watches_opened = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        """``https://address:port``."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"https://{host}:{self.port}"

    async def start(self) -> None:
        """Bind the TLS listener."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address, self.port, ssl_context=self.ssl_context,
                           reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            self._runner = None
            raise EmulatorError(f"cannot listen on {self.address}:{self.port}: {e.strerror}",
                                "pick another --apiserver-port, or stop what is using it") from e
        sockets = getattr(site._server, "sockets", None) or ()
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.kubelet_ssl, limit=64), auto_decompress=False)

    async def stop(self) -> None:
        """End open watches and close the listener."""
        self._closing.set()
        self.store.close_watchers()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- the chain ------------------------------------------------------------------------------------

    def _user(self, request: web.Request) -> UserInfo | None:
        transport = request.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        return self.authn.authenticate(peercert, request.headers.get("Authorization"))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """authn → authz → handler."""
        self.requests += 1
        user = self._user(request)
        if user is None:
            return _status(401, "Unauthorized", "Unauthorized")
        if "Impersonate-User" in request.headers:
            impersonated = self._impersonate(request, user)
            if isinstance(impersonated, web.Response):
                return impersonated
            user = impersonated
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"] or parts[:1] == ["apis"]:
            return await self._api(request, user, parts)
        attrs = Attributes(user.name, user.groups, "get" if request.method in ("GET", "HEAD") else "",
                           "", "", "", path=path, resource_request=False)
        if path not in _PUBLIC_PATHS and not self.authz.allowed(attrs):
            return _forbidden(attrs)
        if path == "/version":
            return _json_response(200, self._version())
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok", content_type="text/plain")
        return _not_found_path()

    def _impersonate(self, request: web.Request, user: UserInfo) -> UserInfo | web.Response:
        """``kubectl --as``: allowed to whoever may ``impersonate users`` (system:masters may)."""
        name = request.headers["Impersonate-User"]
        attrs = Attributes(user.name, user.groups, "impersonate", "users", "", name, path=request.path)
        if not self.authz.allowed(attrs):
            return _forbidden(attrs)
        groups = list(request.headers.getall("Impersonate-Group", ()))
        if name.startswith(SA_PREFIX):
            namespace = name[len(SA_PREFIX):].split(":", 1)[0]
            groups += ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
        if AUTHENTICATED not in groups:
            groups.append(AUTHENTICATED)
        return UserInfo(name, tuple(groups), "impersonation")

    def _version(self) -> Json:
        major, minor = self.version.lstrip("v").split(".")[:2]
        return {"major": major, "minor": minor, "gitVersion": self.version,
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2024-01-01T00:00:00Z", "goVersion": "go1.21.5", "compiler": "gc",
                "platform": "linux/amd64"}

    def _discovery_allowed(self, user: UserInfo, path: str) -> Attributes | None:
        """None when ``user`` may read discovery ``path`` (system:discovery: every authenticated user)."""
        if AUTHENTICATED in user.groups:
            return None
        attrs = Attributes(user.name, user.groups, "get", "", "", "", path=path, resource_request=False)
        return None if self.authz.allowed(attrs) else attrs

    async def _api(self, request: web.Request, user: UserInfo, parts: list[str]) -> web.StreamResponse:
        path = "/" + "/".join(parts)
        # discovery documents
        if parts == ["api"] or parts == ["apis"] or parts == ["api", "v1"] or (
                parts[0] == "apis" and len(parts) == 3) or (parts[0] == "apis" and len(parts) == 2):
            denied = self._discovery_allowed(user, path)
            if denied is not None:
                return _forbidden(denied)
            doc = self._discovery(request, parts)
            return _json_response(200, doc) if doc is not None else _not_found_path()
        if parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        else:
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            return _not_found_path()
        if group == "authorization.k8s.io" and version == "v1" and rest == ["selfsubjectaccessreviews"]:
            if request.method != "POST":
                return _status(405, "MethodNotAllowed",
                               "the server does not allow this method on the requested resource", {})
            return await self._ssar(request, user)
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        resource = RESOURCES.get((group, rest[0]))
        if resource is None or resource.version != version or (namespace and not resource.namespaced):
            return _not_found_path()
        name = rest[1] if len(rest) > 1 else ""
        subresource = rest[2] if len(rest) > 2 else ""
        if subresource and not (resource.name == "nodes" and subresource == "proxy"):
            return _not_found_path()
        watch = not name and _truthy(request.query.get("watch"))
        if subresource == "proxy":
            verb = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                    "DELETE": "delete"}.get(request.method, "")
        elif request.method not in ("GET", "HEAD"):
            return _status(405, "MethodNotAllowed",
                           "the server does not allow this method on the requested resource", {})
        else:
            verb = "get" if name else ("watch" if watch else "list")
        attrs = Attributes(user.name, user.groups, verb, resource.name, subresource, name,
                           namespace=namespace, api_group=group, path=path)
        if not self.authz.allowed(attrs):
            return _forbidden(attrs)
        if subresource == "proxy":
            return await self._proxy(request, name, "/" + "/".join(rest[3:]))
        if name:
            obj = self.store.get(resource, namespace, name)
            if obj is None:
                details: Json = {"name": name}
                if group:
                    details["group"] = group
                details["kind"] = resource.name
                return _status(404, "NotFound", f'{resource.qualified} "{name}" not found', details)
            if wants_table(request.headers.get("Accept", "")):
                return _json_response(200, table(resource, [obj], now=self.clock.time(),
                                                 resource_version=obj["metadata"].get("resourceVersion", "")))
            return _json_response(200, {"kind": resource.kind, "apiVersion": resource.api_version, **obj})
        try:
            test = self._selector(request, resource, namespace)
        except SelectorError as e:
            return _status(400, "BadRequest", str(e))
        if watch:
            return await self._watch(request, resource, test)
        return self._list(request, resource, test)

    def _discovery(self, request: web.Request, parts: list[str]) -> Json | None:
        by_gv: dict[str, list[Resource]] = {}
        for r in RESOURCES.values():
            by_gv.setdefault(r.api_version, []).append(r)
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.address}:{self.port}"}]}
        if parts == ["apis"]:
            groups = []
            for g in _GROUPS:
                gv = {"groupVersion": f"{g}/v1", "version": "v1"}
                groups.append({"name": g, "versions": [gv], "preferredVersion": gv})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        if parts == ["api", "v1"]:
            return _resource_list("v1", by_gv["v1"])
        if len(parts) == 2 and parts[1] in _GROUPS:
            gv = {"groupVersion": f"{parts[1]}/v1", "version": "v1"}
            return {"kind": "APIGroup", "apiVersion": "v1", "name": parts[1], "versions": [gv],
                    "preferredVersion": gv}
        if len(parts) == 3 and parts[2] == "v1":
            if parts[1] == "authorization.k8s.io":
                return _resource_list("authorization.k8s.io/v1", [], [_SSAR])
            if parts[1] in by_gv or f"{parts[1]}/v1" in by_gv:
                return _resource_list(f"{parts[1]}/v1", by_gv[f"{parts[1]}/v1"])
        return None

    @staticmethod
    def _selector(request: web.Request, resource: Resource, namespace: str) -> Callable[[Json], bool]:
        fields = field_selector(request.query.get("fieldSelector", ""), resource)
        labels = label_selector(request.query.get("labelSelector", ""))

        def test(obj: Json) -> bool:
            meta = obj["metadata"]
            if namespace and meta.get("namespace") != namespace:
                return False
            return labels(meta.get("labels") or {}) and fields(obj)

        return test

    # --- list ------------------------------------------------------------------------------------------

    def _list(self, request: web.Request, resource: Resource, test: Callable[[Json], bool]) -> web.Response:
        items = [o for o in self.store.items(resource) if test(o)]
        meta: Json = {"resourceVersion": str(self.store.rv)}
        token = request.query.get("continue")
        if token:
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(token.encode())))
            except (ValueError, TypeError):
                return _status(400, "BadRequest", "continue key is not valid: illegal base64 data")
            items = [o for o in items
                     if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after]
        limit = int(request.query.get("limit", "0") or 0)
        if 0 < limit < len(items):
            last = items[limit - 1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps([last.get("namespace", ""), last["name"]]).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if wants_table(request.headers.get("Accept", "")):
            rv = meta.pop("resourceVersion")
            return _json_response(200, table(resource, items, now=self.clock.time(), resource_version=rv,
                                             extra_meta=meta))
        return _json_response(200, {"kind": f"{resource.kind}List", "apiVersion": resource.api_version,
                                    "metadata": meta, "items": items})

    # --- watch -----------------------------------------------------------------------------------------

    async def _watch(self, request: web.Request, resource: Resource,
                     test: Callable[[Json], bool]) -> web.StreamResponse:
        rv_text = request.query.get("resourceVersion", "")
        try:
            rv = int(rv_text) if rv_text else 0
        except ValueError:
            return _status(400, "BadRequest",
                           f'resourceVersion: Invalid value: "{rv_text}": must be an integer')
        timeout = float(request.query.get("timeoutSeconds", "0") or 0) or _DEFAULT_WATCH_TIMEOUT
        bookmarks = _truthy(request.query.get("allowWatchBookmarks"))
        initial_events = _truthy(request.query.get("sendInitialEvents"))
        resp = web.StreamResponse(status=200, headers={"Content-Type": JSON_TYPE,
                                                       "Cache-Control": "no-cache, private"})
        await resp.prepare(request)
        self.watches_opened += 1
        watcher = self.store.subscribe(resource)
        kind = {"kind": resource.kind, "apiVersion": resource.api_version}
        as_table = wants_table(request.headers.get("Accept", ""))
        first = [True]

        async def send(kind_: str, obj: Json) -> None:
            if as_table and kind_ in ("ADDED", "MODIFIED", "DELETED"):
                # Server-side printing of watch events: one row each, the columns with the first only.
                obj = table(resource, [obj], now=self.clock.time(),
                            resource_version=obj["metadata"].get("resourceVersion", ""), headers=first[0])
                first[0] = False
            line = json.dumps({"type": kind_, "object": obj}, separators=(",", ":"))
            await resp.write(line.encode() + b"\n")

        try:
            if rv == 0 or initial_events:
                # "Start at most recent" / "any": synthetic ADDED events for the current state first.
                backlog = [Event(self.store.rv, "ADDED", o) for o in self.store.items(resource)]
                sent = self.store.rv
            else:
                try:
                    backlog = self.store.events_since(resource, rv)
                except Expired as e:
                    await send("ERROR", status_object(410, "Expired", str(e)))
                    return resp
                sent = rv
            for ev in backlog:
                if test(ev.obj):
                    await send(ev.type, {**kind, **ev.obj})
                sent = max(sent, ev.rv)
            if initial_events and bookmarks:
                await send("BOOKMARK", {**kind, "metadata": {
                    "resourceVersion": str(sent), "creationTimestamp": None,
                    "annotations": {"k8s.io/initial-events-end": "true"}}})
            deadline = self.clock.monotonic() + timeout
            next_bookmark = self.clock.monotonic() + self.bookmark_interval
            while True:
                now = self.clock.monotonic()
                if now >= deadline:
                    break
                wait = min(deadline, next_bookmark) - now if bookmarks else deadline - now
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), max(0.0, wait))
                except TimeoutError:
                    if bookmarks and self.clock.monotonic() >= next_bookmark:
                        await send("BOOKMARK", {**kind, "metadata": {"resourceVersion": str(self.store.rv),
                                                                    "creationTimestamp": None}})
                        next_bookmark = self.clock.monotonic() + self.bookmark_interval
                    continue
                if item is None:
                    break
                if item.rv <= sent:
                    continue
                sent = item.rv
                if test(item.obj):
                    await send(item.type, {**kind, **item.obj})
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unsubscribe(watcher)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await resp.write_eof()
        return resp

    # --- access reviews --------------------------------------------------------------------------------

    async def _ssar(self, request: web.Request, user: UserInfo) -> web.Response:
        try:
            body: Any = await request.json()
            spec = body["spec"]
        except (ValueError, KeyError, TypeError):
            return _status(400, "BadRequest", "the body is not a SelfSubjectAccessReview")
        ra = spec.get("resourceAttributes")
        nra = spec.get("nonResourceAttributes")
        if isinstance(ra, dict):
            attrs = Attributes(user.name, user.groups, ra.get("verb", ""), ra.get("resource", ""),
                               ra.get("subresource", ""), ra.get("name", ""),
                               namespace=ra.get("namespace", ""), api_group=ra.get("group", ""))
        elif isinstance(nra, dict):
            attrs = Attributes(user.name, user.groups, nra.get("verb", ""), "", "", "",
                               path=nra.get("path", ""), resource_request=False)
        else:
            return _status(422, "Invalid", "SelfSubjectAccessReview.authorization.k8s.io is invalid: "
                           "spec.resourceAttributes: Invalid value: \"null\": exactly one of "
                           "nonResourceAttributes or resourceAttributes must be specified")
        allowed = self.authz.allowed(attrs)
        return _json_response(201, {
            "kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None}, "spec": spec,
            "status": {"allowed": allowed} if allowed else {"allowed": False},
        })

    # --- nodes/proxy -----------------------------------------------------------------------------------

    async def _proxy(self, request: web.Request, node: str, path: str) -> web.StreamResponse:
        target = self.node_address(node)
        if target is None:
            return _status(404, "NotFound", f'nodes "{node}" not found', {"name": node, "kind": "nodes"})
        assert self._session is not None
        host, port = target
        url = f"https://{host}:{port}{path}"
        if request.query_string:
            url += "?" + request.query_string
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("accept", "accept-encoding", "user-agent")}
        try:
            async with self._session.request(request.method, url, headers=headers,
                                             data=await request.read() or None) as upstream:
                body = await upstream.read()
                out = {k: v for k, v in upstream.headers.items()
                       if k.lower() in ("content-type", "content-encoding")}
                return web.Response(status=upstream.status, body=body, headers=out)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            return _status(503, "ServiceUnavailable",
                           f"error trying to reach service: {e}", {})
