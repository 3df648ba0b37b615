"""Authorization as the kubelet does it with ``authorization.mode: Webhook`` and an RBAC apiserver.

Two halves, like the real thing:

* :func:`request_attributes` is the kubelet's ``GetRequestAttributes``
  (``pkg/kubelet/server/auth.go``): HTTP method → verb, URL path → ``nodes/<subresource>``.
  Since Kubernetes 1.32 the kubelet may ask for several subresources (fine-grained authz: ``/pods`` →
  ``pods`` then ``proxy``) and allows the request if any of them is allowed.
* :class:`RBACAuthorizer` answers the SubjectAccessReview the way the apiserver's RBAC authorizer
  does: ClusterRoleBindings grant everywhere, RoleBindings only inside their namespace (so they can
  never grant ``nodes/*``, which is cluster-scoped), rules match on verb, API group, resource
  (``*``, ``nodes/metrics``, ``*/metrics``), resourceNames and nonResourceURLs; members of
  ``system:masters`` are allowed everything, like the apiserver's privileged group.

:func:`forbidden_body` renders the 403 text for the emulated kubelet version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from kubescrape.emulator.tokens import ServiceAccountRef, service_account_user
from kubescrape.errors import EmulatorError

SYSTEM_MASTERS = "system:masters"

__all__ = [
    "SYSTEM_MASTERS",
    "Attributes",
    "KubeletVersion",
    "Policy",
    "PolicyRule",
    "RBACAuthorizer",
    "default_policy",
    "forbidden_body",
    "load_policy",
    "request_attributes",
]


# --- the kubelet side: request → attributes --------------------------------------------------------

_VERBS = {"POST": "create", "GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


class KubeletVersion(NamedTuple):
    """A parsed kubelet version (``v1.29.0``, ``1.32``)."""

    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> KubeletVersion:
        m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+].*)?", text.strip())
        if not m:
            raise EmulatorError(f"kubelet version {text!r} is not a version like 1.29.0",
                                "pass --kubelet-version MAJOR.MINOR[.PATCH], e.g. 1.29.0")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))

    @property
    def lists_subresources(self) -> bool:
        """1.32+ authorizes a list of subresources and prints ``subresource(s)=[...]`` in the 403."""
        return (self.major, self.minor) >= (1, 32)

    @property
    def fine_grained_default(self) -> bool:
        """KubeletFineGrainedAuthz: alpha (off) in 1.32, beta and on by default from 1.33."""
        return (self.major, self.minor) >= (1, 33)

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"


class Attributes(NamedTuple):
    """One authorization question: may ``user`` (in ``groups``) ``verb`` ``resource/subresource``?"""

    user: str
    groups: tuple[str, ...]
    verb: str
    resource: str
    subresource: str
    name: str
    namespace: str = ""
    api_group: str = ""
    path: str = ""
    resource_request: bool = True


def _is_subpath(subpath: str, path: str) -> bool:
    path = path.removesuffix("/")
    return subpath == path or (subpath.startswith(path) and len(subpath) > len(path)
                               and subpath[len(path)] == "/")


def subresources_for(path: str, *, fine_grained: bool = False) -> list[str]:
    """The subresources the kubelet checks for ``path``, in order (the first allowed one wins)."""
    subresources: list[str] = []
    if fine_grained:
        if _is_subpath(path, "/pods"):
            subresources.append("pods")
        elif _is_subpath(path, "/healthz"):
            subresources.append("healthz")
        elif _is_subpath(path, "/configz"):
            subresources.append("configz")
        elif _is_subpath(path, "/statusz"):
            subresources.append("statusz")
        elif _is_subpath(path, "/runningpods/"):
            subresources.append("pods")
    if _is_subpath(path, "/stats/"):
        subresources.append("stats")
    elif _is_subpath(path, "/metrics"):
        subresources.append("metrics")
    elif _is_subpath(path, "/logs/"):
        subresources.append("log")
    elif _is_subpath(path, "/checkpoint/"):
        subresources.append("checkpoint")
    else:
        subresources.append("proxy")
    return subresources


def request_attributes(user: str, groups: Sequence[str], method: str, path: str, node_name: str,
                       *, fine_grained: bool = False) -> list[Attributes]:
    """The kubelet's ``GetRequestAttributes``: one :class:`Attributes` per subresource to try.

    Methods other than POST/GET/PUT/PATCH/DELETE get an empty verb, as in the kubelet (and so are
    allowed only by a ``*`` verb rule).
    """
    verb = _VERBS.get(method.upper(), "")
    return [
        Attributes(user, tuple(groups), verb, "nodes", sub, node_name, path=path)
        for sub in subresources_for(path, fine_grained=fine_grained)
    ]


def forbidden_body(attrs: Sequence[Attributes], version: KubeletVersion) -> bytes:
    """The kubelet's 403 body for a denied request.

    Before 1.32: ``Forbidden (user=U, verb=V, resource=nodes, subresource=S)``.
    From 1.32 (fine-grained authz, kubernetes PR #126347) the subresources tried are listed, Go
    ``%v`` style: ``Forbidden (user=U, verb=V, resource=nodes, subresource(s)=[pods proxy])`` plus a
    trailing newline.
    """
    a = attrs[0]
    if version.lists_subresources:
        subs = " ".join(x.subresource for x in attrs)
        text = (f"Forbidden (user={a.user}, verb={a.verb}, resource={a.resource}, "
                f"subresource(s)=[{subs}])\n")
    else:
        text = f"Forbidden (user={a.user}, verb={a.verb}, resource={a.resource}, subresource={a.subresource})"
    return text.encode("utf-8")


# --- the apiserver side: RBAC ------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyRule:
    """One RBAC rule."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    def allows(self, a: Attributes) -> bool:
        """RBAC's ``RuleAllows``."""
        if not ("*" in self.verbs or a.verb in self.verbs):
            return False
        if not a.resource_request:
            return any(u == "*" or u == a.path or (u.endswith("*") and a.path.startswith(u[:-1]))
                       for u in self.non_resource_urls)
        if not ("*" in self.api_groups or a.api_group in self.api_groups):
            return False
        combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        if not any(
            r in ("*", combined)
            or (a.subresource and len(r) == len(a.subresource) + 2 and r.startswith("*/")
                and r.endswith(a.subresource))
            for r in self.resources
        ):
            return False
        return not self.resource_names or a.name in self.resource_names


@dataclass(frozen=True)
class Subject:
    kind: str  # User, Group, ServiceAccount
    name: str
    namespace: str = ""

    def applies_to(self, user: str, groups: Iterable[str], binding_namespace: str) -> bool:
        if self.kind == "User":
            return user == self.name
        if self.kind == "Group":
            return self.name in groups
        if self.kind == "ServiceAccount":
            return user == service_account_user(self.namespace or binding_namespace, self.name)
        return False


@dataclass(frozen=True)
class Binding:
    name: str
    role_kind: str  # ClusterRole or Role
    role_name: str
    subjects: tuple[Subject, ...]
    namespace: str = ""  # "" for a ClusterRoleBinding


@dataclass
class Policy:
    """Everything RBAC needs, loaded from YAML: roles, bindings and ServiceAccounts."""

    cluster_roles: dict[str, list[PolicyRule]] = field(default_factory=dict)
    roles: dict[tuple[str, str], list[PolicyRule]] = field(default_factory=dict)
    cluster_role_bindings: list[Binding] = field(default_factory=list)
    role_bindings: list[Binding] = field(default_factory=list)
    service_accounts: list[ServiceAccountRef] = field(default_factory=list)

    def merge(self, other: Policy) -> None:
        """Add ``other``'s objects (later definitions of the same role replace earlier ones)."""
        self.cluster_roles.update(other.cluster_roles)
        self.roles.update(other.roles)
        self.cluster_role_bindings += other.cluster_role_bindings
        self.role_bindings += other.role_bindings
        for sa in other.service_accounts:
            if sa not in self.service_accounts:
                self.service_accounts.append(sa)

    def all_service_accounts(self) -> list[ServiceAccountRef]:
        """ServiceAccounts declared as objects or named as binding subjects."""
        out = list(self.service_accounts)
        for b in self.cluster_role_bindings + self.role_bindings:
            for s in b.subjects:
                if s.kind == "ServiceAccount":
                    sa = ServiceAccountRef(s.namespace or b.namespace, s.name)
                    if sa not in out:
                        out.append(sa)
        return out

    def is_bound(self, sa: ServiceAccountRef) -> bool:
        """True when some binding names ``sa`` (directly, or via its groups)."""
        user = sa.user
        return any(s.applies_to(user, sa.groups, b.namespace)
                   for b in self.cluster_role_bindings + self.role_bindings for s in b.subjects)


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EmulatorError(f"{where}: expected a list of strings, got {value!r}",
                            "fix the RBAC YAML: verbs/apiGroups/resources are lists of strings")
    return tuple(value)


def _rules(doc: dict[str, Any], where: str) -> list[PolicyRule]:
    rules = doc.get("rules") or []
    if not isinstance(rules, list):
        raise EmulatorError(f"{where}: rules must be a list", "fix the RBAC YAML")
    out = []
    for i, r in enumerate(rules):
        if not isinstance(r, dict):
            raise EmulatorError(f"{where}: rules[{i}] must be a mapping", "fix the RBAC YAML")
        out.append(PolicyRule(
            verbs=_strs(r.get("verbs"), f"{where} rules[{i}].verbs"),
            api_groups=_strs(r.get("apiGroups"), f"{where} rules[{i}].apiGroups"),
            resources=_strs(r.get("resources"), f"{where} rules[{i}].resources"),
            resource_names=_strs(r.get("resourceNames"), f"{where} rules[{i}].resourceNames"),
            non_resource_urls=_strs(r.get("nonResourceURLs"), f"{where} rules[{i}].nonResourceURLs"),
        ))
    return out


def _binding(doc: dict[str, Any], where: str, namespace: str) -> Binding:
    ref = doc.get("roleRef")
    if not isinstance(ref, dict) or ref.get("kind") not in ("ClusterRole", "Role") or not ref.get("name"):
        raise EmulatorError(f"{where}: roleRef must name a ClusterRole or Role",
                            "add roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: …}")
    if ref["kind"] == "Role" and not namespace:
        raise EmulatorError(f"{where}: a ClusterRoleBinding cannot reference a Role",
                            "reference a ClusterRole, or use a RoleBinding")
    subjects = []
    for i, s in enumerate(doc.get("subjects") or []):
        if not isinstance(s, dict) or s.get("kind") not in ("User", "Group", "ServiceAccount") \
                or not s.get("name"):
            raise EmulatorError(f"{where}: subjects[{i}] must have kind User/Group/ServiceAccount and a name",
                                "fix the subject in the RBAC YAML")
        if s["kind"] == "ServiceAccount" and not s.get("namespace") and not namespace:
            raise EmulatorError(f"{where}: subjects[{i}] ServiceAccount {s['name']} has no namespace",
                                "add namespace: to the ServiceAccount subject")
        subjects.append(Subject(s["kind"], str(s["name"]), str(s.get("namespace") or "")))
    return Binding(str(doc["metadata"]["name"]), ref["kind"], str(ref["name"]), tuple(subjects), namespace)


def parse_policy(text: str, source: str = "<rbac>") -> Policy:
    """Parse multi-document RBAC YAML; other kinds (ConfigMap, DaemonSet …) are ignored."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise EmulatorError(f"{source} is not valid YAML: {e}", "fix the YAML syntax") from e
    policy = Policy()
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise EmulatorError(f"{source}: document {i + 1} is not a mapping", "fix the RBAC YAML")
        kind = doc.get("kind")
        if kind == "List":
            for item in doc.get("items") or []:
                policy.merge(parse_policy(yaml.safe_dump(item), source))
            continue
        if kind not in ("ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding", "ServiceAccount"):
            continue
        meta = doc.get("metadata")
        if not isinstance(meta, dict) or not meta.get("name"):
            raise EmulatorError(f"{source}: {kind} (document {i + 1}) has no metadata.name",
                                "add metadata.name")
        name = str(meta["name"])
        ns = str(meta.get("namespace") or "")
        where = f"{source}: {kind} {name}"
        if kind in ("Role", "RoleBinding", "ServiceAccount") and not ns:
            ns = "default"  # what kubectl apply does without -n
        if kind == "ClusterRole":
            policy.cluster_roles[name] = _rules(doc, where)
        elif kind == "Role":
            policy.roles[(ns, name)] = _rules(doc, where)
        elif kind == "ClusterRoleBinding":
            policy.cluster_role_bindings.append(_binding(doc, where, ""))
        elif kind == "RoleBinding":
            policy.role_bindings.append(_binding(doc, where, ns))
        else:
            uid = str(meta.get("uid") or "")
            policy.service_accounts.append(ServiceAccountRef(ns, name, uid))
    return policy


def load_policy(paths: Iterable[str | Path]) -> Policy:
    """Load and merge RBAC YAML files."""
    policy = Policy()
    for p in paths:
        try:
            text = Path(p).read_text()
        except OSError as e:
            raise EmulatorError(f"cannot read RBAC file {p}: {e}", "check the --rbac path") from e
        policy.merge(parse_policy(text, str(p)))
    return policy


ADMIN_BINDING = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kube-apiserver:kubelet-apis
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:kubelet-api-admin
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: admin
  - apiGroup: rbac.authorization.k8s.io
    kind: Group
    name: system:masters
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: unbound
  namespace: default
"""


def default_policy() -> Policy:
    """The seed's ``auth.yaml``, ``system:kubelet-api-admin``, the admin binding and ``default/unbound``."""
    policy = Policy()
    data = resources.files("kubescrape") / "data"
    for name in ("kubelet-api-admin.yaml", "auth.yaml"):
        policy.merge(parse_policy((data / name).read_text(), f"kubescrape/data/{name}"))
    policy.merge(parse_policy(ADMIN_BINDING, "built-in admin binding"))
    return policy


class RBACAuthorizer:
    """Decides :class:`Attributes` against a :class:`Policy`."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def _rules_for(self, user: str, groups: tuple[str, ...], namespace: str) -> Iterable[PolicyRule]:
        for b in self.policy.cluster_role_bindings:
            if any(s.applies_to(user, groups, "") for s in b.subjects):
                yield from self.policy.cluster_roles.get(b.role_name, ())
        if not namespace:
            return  # RoleBindings never grant cluster-scoped resources such as nodes
        for b in self.policy.role_bindings:
            if b.namespace != namespace:
                continue
            if not any(s.applies_to(user, groups, b.namespace) for s in b.subjects):
                continue
            if b.role_kind == "ClusterRole":
                yield from self.policy.cluster_roles.get(b.role_name, ())
            else:
                yield from self.policy.roles.get((b.namespace, b.role_name), ())

    def allowed(self, a: Attributes) -> bool:
        """True when RBAC allows ``a``."""
        if SYSTEM_MASTERS in a.groups:
            return True
        return any(rule.allows(a) for rule in self._rules_for(a.user, a.groups, a.namespace))

    def authorize(self, attrs: Sequence[Attributes]) -> bool:
        """The kubelet's loop: allowed if any of the subresource attributes is allowed."""
        return any(self.allowed(a) for a in attrs)
