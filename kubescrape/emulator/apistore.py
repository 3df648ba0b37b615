"""The stand-in apiserver's storage: objects by resource, one resourceVersion counter, watch history.

Like etcd behind the apiserver's watch cache: every change takes the next resourceVersion (one counter
for all resources, so versions are comparable across kinds); each resource keeps a bounded history of
events so that a watch may resume from any version still in it. A watch from an older version fails
with ``410 Gone`` / ``Expired`` ("too old resource version: R (F)"), which is what clients must
answer with a fresh list; :meth:`Store.compact` forces that at will, for tests.

Selectors follow ``k8s.io/apimachinery``: label selectors ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``,
``k in (a,b)``, ``k notin (a,b)``; field selectors ``f=v``, ``f==v``, ``f!=v`` on the fields each
resource supports (anything else is a 400 ``field label not supported``).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

Json = dict[str, Any]

__all__ = [
    "RESOURCES",
    "Event",
    "Expired",
    "Json",
    "Resource",
    "SelectorError",
    "Store",
    "Watcher",
    "field_selector",
    "label_selector",
    "status_object",
]


@dataclass(frozen=True)
class Resource:
    """One served resource: its REST name, kind, group/version and what may select it."""

    name: str
    kind: str
    group: str
    version: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()  # field selectors beyond metadata.name / metadata.namespace
    singular: str = ""

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``group/version`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``pods`` or ``endpointslices.discovery.k8s.io``, as the apiserver names it in messages."""
        return f"{self.name}.{self.group}" if self.group else self.name


_POD_FIELDS = ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
               "status.phase", "status.podIP", "status.nominatedNodeName")
RESOURCES: dict[tuple[str, str], Resource] = {
    (r.group, r.name): r
    for r in (
        Resource("nodes", "Node", "", "v1", False, ("no",), ("spec.unschedulable",), "node"),
        Resource("pods", "Pod", "", "v1", True, ("po",), _POD_FIELDS, "pod"),
        Resource("services", "Service", "", "v1", True, ("svc",), (), "service"),
        Resource("endpoints", "Endpoints", "", "v1", True, ("ep",), (), "endpoints"),
        Resource("namespaces", "Namespace", "", "v1", False, ("ns",), ("status.phase",), "namespace"),
        Resource("endpointslices", "EndpointSlice", "discovery.k8s.io", "v1", True, (), (),
                 "endpointslice"),
    )
}


def status_object(code: int, reason: str, message: str, details: Json | None = None) -> Json:
    """A ``metav1.Status`` failure as the apiserver writes it (``details`` omitted when empty)."""
    out: Json = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                 "message": message, "reason": reason}
    if details is not None:
        out["details"] = details
    out["code"] = code
    return out


class SelectorError(ValueError):
    """A label or field selector the apiserver would refuse with 400 BadRequest."""


class Expired(Exception):
    """A watch asked for a resourceVersion older than the history kept (410 Gone)."""

    def __init__(self, requested: int, oldest: int) -> None:
        self.requested = requested
        self.oldest = oldest
        super().__init__(f"too old resource version: {requested} ({oldest})")


# --- selectors ---------------------------------------------------------------------------------------

def _split_terms(text: str) -> list[str]:
    terms: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    terms.append("".join(cur).strip())
    return [t for t in terms if t]


_SET_TERM = re.compile(r"^([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)$")
_EQ_TERM = re.compile(r"^([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)$")
_KEY = re.compile(r"^(!?)\s*([^\s!=(),]+)$")
LabelTest = Callable[[Mapping[str, str]], bool]


class _Requirement(NamedTuple):
    key: str
    op: str  # in, notin, exists, !exists
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "in":
            return labels.get(self.key) in self.values
        if self.op == "notin":
            return labels.get(self.key) not in self.values
        return (self.key in labels) == (self.op == "exists")


def label_selector(text: str) -> LabelTest:
    """A predicate over a label map for a ``labelSelector`` (``""`` selects everything)."""
    reqs: list[_Requirement] = []
    for term in _split_terms(text):
        m = _SET_TERM.match(term)
        if m:
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(_Requirement(m.group(1), m.group(2), values))
            continue
        m = _EQ_TERM.match(term)
        if m:
            key, op, value = m.groups()
            reqs.append(_Requirement(key, "notin" if op == "!=" else "in", frozenset((value,))))
            continue
        m = _KEY.match(term)
        if m:
            reqs.append(_Requirement(m.group(2), "!exists" if m.group(1) else "exists", frozenset()))
            continue
        raise SelectorError(f"unable to parse requirement: {term!r}")
    return lambda labels: all(r.matches(labels) for r in reqs)


def field_value(obj: Json, path: str) -> str:
    """The string value of a dotted field (``spec.nodeName``) as field selectors compare it."""
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if cur is None:
        return "false" if path == "spec.unschedulable" else ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def field_selector(text: str, resource: Resource) -> Callable[[Json], bool]:
    """A predicate over an object for a ``fieldSelector`` on ``resource``."""
    allowed = {"metadata.name", *resource.fields}
    if resource.namespaced:
        allowed.add("metadata.namespace")
    terms: list[tuple[str, bool, str]] = []  # (field, equal?, value)
    for term in _split_terms(text):
        m = re.match(r"^([^=!]+?)\s*(==|=|!=)\s*(.*)$", term)
        if not m:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        path, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        if path not in allowed:
            raise SelectorError(f"field label not supported: {path}")
        terms.append((path, op != "!=", value))
    return lambda obj: all((field_value(obj, p) == v) == eq for p, eq, v in terms)


# --- the store ---------------------------------------------------------------------------------------

class Event(NamedTuple):
    """One change: its resourceVersion, ``ADDED``/``MODIFIED``/``DELETED`` and the object after it."""

    rv: int
    type: str
    obj: Json


@dataclass(eq=False)
class Watcher:
    """One open watch: events are pushed here; ``None`` tells it to end (server stop or overflow)."""

    resource: Resource
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    limit: int = 100_000

    def push(self, item: Event | None) -> bool:
        """Queue ``item``; False (and the watch is told to end) when the watcher is too far behind."""
        if item is not None and self.queue.qsize() >= self.limit:
            self.queue.put_nowait(None)  # the apiserver drops a watcher that cannot keep up
            return False
        self.queue.put_nowait(item)
        return True


def _key(obj: Json) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


class Store:
    """Objects of every resource, versioned by one counter, with a bounded watch history per resource."""

    def __init__(self, *, history: int = 20_000, first_version: int = 1000) -> None:
        self.rv = first_version
        self._history = history
        self._objects: dict[Resource, dict[tuple[str, str], tuple[Json, Json]]] = {
            r: {} for r in RESOURCES.values()}
        self._log: dict[Resource, deque[Event]] = {r: deque() for r in RESOURCES.values()}
        self._oldest: dict[Resource, int] = dict.fromkeys(RESOURCES.values(), first_version)
        self._watchers: dict[Resource, set[Watcher]] = {r: set() for r in RESOURCES.values()}

    @staticmethod
    def resource(group: str, name: str) -> Resource:
        """The resource served as ``name`` in ``group``."""
        return RESOURCES[(group, name)]

    def _record(self, resource: Resource, ev: Event) -> None:
        log = self._log[resource]
        log.append(ev)
        while len(log) > self._history:
            self._oldest[resource] = log.popleft().rv
        for w in list(self._watchers[resource]):
            if not w.push(ev):
                self._watchers[resource].discard(w)

    def put(self, resource: Resource, obj: Json) -> bool:
        """Create or update ``obj`` (without resourceVersion); False when nothing changed."""
        key = _key(obj)
        old = self._objects[resource].get(key)
        if old is not None and old[0] == obj:
            return False
        self.rv += 1
        full = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
        self._objects[resource][key] = (obj, full)
        self._record(resource, Event(self.rv, "MODIFIED" if old is not None else "ADDED", full))
        return True

    def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        """Delete an object; False when it did not exist."""
        old = self._objects[resource].pop((namespace, name), None)
        if old is None:
            return False
        self.rv += 1
        gone = {**old[1], "metadata": {**old[1]["metadata"], "resourceVersion": str(self.rv)}}
        self._record(resource, Event(self.rv, "DELETED", gone))
        return True

    def replace_all(self, resource: Resource, objects: Iterable[Json]) -> int:
        """Make ``resource`` hold exactly ``objects``: put each, delete the rest; returns the changes."""
        wanted = {_key(o): o for o in objects}
        changes = sum(self.put(resource, o) for o in wanted.values())
        for ns, name in [k for k in self._objects[resource] if k not in wanted]:
            changes += self.delete(resource, ns, name)
        return changes

    def get(self, resource: Resource, namespace: str, name: str) -> Json | None:
        """The stored object (with its resourceVersion), or None."""
        entry = self._objects[resource].get((namespace, name))
        return entry[1] if entry is not None else None

    def items(self, resource: Resource) -> list[Json]:
        """Every object of ``resource`` sorted by namespace and name (as etcd's key order)."""
        return [v[1] for _, v in sorted(self._objects[resource].items())]

    def events_since(self, resource: Resource, rv: int) -> list[Event]:
        """The events after ``rv``; raises :class:`Expired` if some of them were compacted away."""
        if rv < self._oldest[resource]:
            raise Expired(rv, self._oldest[resource])
        return [e for e in self._log[resource] if e.rv > rv]

    def compact(self) -> None:
        """Drop every resource's history: watches from any version before now get 410 Gone."""
        for r in self._log:
            self._log[r].clear()
            self._oldest[r] = self.rv

    def subscribe(self, resource: Resource) -> Watcher:
        """A new watcher receiving every future event of ``resource``."""
        w = Watcher(resource)
        self._watchers[resource].add(w)
        return w

    def unsubscribe(self, w: Watcher) -> None:
        """Stop feeding ``w``."""
        self._watchers[w.resource].discard(w)

    def close_watchers(self) -> None:
        """End every open watch (server stop)."""
        for ws in self._watchers.values():
            for w in ws:
                w.queue.put_nowait(None)
            ws.clear()

    def watcher_count(self) -> int:
        """Open watches (for tests and the summary)."""
        return sum(len(ws) for ws in self._watchers.values())
