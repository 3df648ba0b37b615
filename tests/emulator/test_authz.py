from __future__ import annotations

from pathlib import Path

import pytest

from kubescrape.emulator.authz import (
    Attributes,
    KubeletVersion,
    RBACAuthorizer,
    default_policy,
    forbidden_body,
    load_policy,
    parse_policy,
    request_attributes,
    subresources_for,
)
from kubescrape.errors import EmulatorError

SA = "system:serviceaccount:flashcat:categraf-daemonset"
SA_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:flashcat", "system:authenticated")

# The kubelet's own table (pkg/kubelet/server/auth_test.go AuthzTestCases), without fine-grained authz.
PATHS = {
    "/attach/ns/pod/ctr": ["proxy"],
    "/checkpoint/ns/pod/ctr": ["checkpoint"],
    "/configz": ["proxy"],
    "/containerLogs/ns/pod/ctr": ["proxy"],
    "/debug/flags/v": ["proxy"],
    "/debug/pprof/heap": ["proxy"],
    "/exec/ns/pod/ctr": ["proxy"],
    "/healthz": ["proxy"],
    "/healthz/ping": ["proxy"],
    "/logs/": ["log"],
    "/logs/syslog": ["log"],
    "/metrics": ["metrics"],
    "/metrics/cadvisor": ["metrics"],
    "/metrics/probes": ["metrics"],
    "/metrics/resource": ["metrics"],
    "/metrics/slis": ["metrics"],
    "/metricsfoo": ["proxy"],
    "/pods/": ["proxy"],
    "/pods": ["proxy"],
    "/portForward/ns/pod": ["proxy"],
    "/run/ns/pod/ctr": ["proxy"],
    "/runningpods/": ["proxy"],
    "/spec/": ["proxy"],
    "/stats/": ["stats"],
    "/stats": ["stats"],
    "/stats/summary": ["stats"],
    "/statsx": ["proxy"],
}
FINE_GRAINED = {
    "/healthz": ["healthz", "proxy"],
    "/healthz/syncloop": ["healthz", "proxy"],
    "/pods/": ["pods", "proxy"],
    "/runningpods/": ["pods", "proxy"],
    "/configz": ["configz", "proxy"],
    "/statusz": ["statusz", "proxy"],
    "/metrics": ["metrics"],
    "/stats/summary": ["stats"],
}


@pytest.mark.parametrize(("path", "expected"), sorted(PATHS.items()))
def test_path_to_subresource(path: str, expected: list[str]) -> None:
    assert subresources_for(path) == expected


@pytest.mark.parametrize(("path", "expected"), sorted(FINE_GRAINED.items()))
def test_path_to_subresources_fine_grained(path: str, expected: list[str]) -> None:
    assert subresources_for(path, fine_grained=True) == expected


@pytest.mark.parametrize(("method", "verb"), [
    ("GET", "get"), ("POST", "create"), ("PUT", "update"), ("PATCH", "patch"), ("DELETE", "delete"),
    ("HEAD", ""), ("OPTIONS", ""),
])
def test_method_to_verb(method: str, verb: str) -> None:
    (a,) = request_attributes("u", (), method, "/metrics", "node-1")
    assert (a.verb, a.resource, a.subresource) == (verb, "nodes", "metrics")
    assert (a.name, a.namespace) == ("node-1", "")


def test_forbidden_body_per_version() -> None:
    attrs = request_attributes("system:kube-controller-manager", (), "GET", "/metrics", "n")
    old = forbidden_body(attrs, KubeletVersion.parse("1.29.0"))
    assert old == (b"Forbidden (user=system:kube-controller-manager, verb=get, resource=nodes, "
                   b"subresource=metrics)")
    new = forbidden_body(attrs, KubeletVersion.parse("v1.32.1"))
    assert new == (b"Forbidden (user=system:kube-controller-manager, verb=get, resource=nodes, "
                   b"subresource(s)=[metrics])\n")
    pods = request_attributes("system:anonymous", (), "GET", "/pods", "n", fine_grained=True)
    assert forbidden_body(pods, KubeletVersion.parse("1.33")) == (
        b"Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource(s)=[pods proxy])\n")


def test_version_parse() -> None:
    assert KubeletVersion.parse("v1.29.0") == (1, 29, 0)
    assert KubeletVersion.parse("1.33") == (1, 33, 0)
    assert KubeletVersion.parse("1.30.2-eks-1").lists_subresources is False
    assert KubeletVersion.parse("1.33.0").fine_grained_default is True
    with pytest.raises(EmulatorError, match="fix:"):
        KubeletVersion.parse("latest")


def _allowed(authz: RBACAuthorizer, user: str, groups: tuple[str, ...], method: str, path: str) -> bool:
    return authz.authorize(request_attributes(user, groups, method, path, "node-1"))


def test_default_policy_seed_role() -> None:
    authz = RBACAuthorizer(default_policy())
    for path in ("/metrics", "/metrics/cadvisor", "/stats/summary", "/pods", "/healthz", "/spec/"):
        assert _allowed(authz, SA, SA_GROUPS, "GET", path), path
    # the seed's role only has verb get
    assert not _allowed(authz, SA, SA_GROUPS, "POST", "/exec/ns/pod/c")
    assert not _allowed(authz, SA, SA_GROUPS, "GET", "/logs/")
    unbound = "system:serviceaccount:default:unbound"
    assert not _allowed(authz, unbound, ("system:serviceaccounts", "system:authenticated"), "GET", "/metrics")
    # a SA of the same name in another namespace is not the bound one
    other_ns = "system:serviceaccount:default:categraf-daemonset"
    assert not _allowed(authz, other_ns, SA_GROUPS, "GET", "/metrics")


def test_default_policy_admin_and_masters() -> None:
    authz = RBACAuthorizer(default_policy())
    assert _allowed(authz, "admin", ("system:authenticated",), "POST", "/exec/ns/pod/c")
    assert _allowed(authz, "admin", ("system:authenticated",), "GET", "/logs/x")
    assert not _allowed(authz, "admin", ("system:authenticated",), "GET", "/checkpoint/a/b/c")
    # system:masters is the apiserver's superuser group
    assert _allowed(authz, "anyone", ("system:masters",), "POST", "/checkpoint/a/b/c")
    assert not _allowed(authz, "system:kube-controller-manager", ("system:authenticated",), "GET", "/metrics")


def _authz(yaml_text: str) -> RBACAuthorizer:
    return RBACAuthorizer(parse_policy(yaml_text))


ROLE = """
apiVersion: rbac.authorization.k8s.io/v1
kind: {kind}
metadata: {{name: r{ns}}}
rules:
- apiGroups: [{groups}]
  resources: [{resources}]
  verbs: [{verbs}]
{extra}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {bkind}
metadata: {{name: b{ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: {kind}, name: r}}
subjects:
- {{kind: {skind}, name: {sname}{snamespace}}}
"""


def _role(kind: str = "ClusterRole", bkind: str = "ClusterRoleBinding", groups: str = '""',
          resources: str = "nodes/metrics", verbs: str = "get", extra: str = "", skind: str = "User",
          sname: str = "u", snamespace: str = "", ns: str = "") -> RBACAuthorizer:
    return _authz(ROLE.format(kind=kind, bkind=bkind, groups=groups, resources=resources, verbs=verbs,
                              extra=extra, skind=skind, sname=sname, snamespace=snamespace,
                              ns=(f", namespace: {ns}" if ns else "")))


@pytest.mark.parametrize(("kwargs", "path", "method", "allowed"), [
    ({}, "/metrics", "GET", True),
    ({}, "/metrics", "POST", False),
    ({}, "/stats/summary", "GET", False),
    ({"verbs": '"*"'}, "/metrics", "DELETE", True),
    ({"resources": '"*"'}, "/stats/summary", "GET", True),
    ({"resources": '"*/stats"'}, "/stats/summary", "GET", True),
    ({"resources": '"*/stats"'}, "/metrics", "GET", False),
    ({"resources": "nodes"}, "/metrics", "GET", False),  # "nodes" does not cover nodes/metrics
    ({"groups": '"*"'}, "/metrics", "GET", True),
    ({"groups": "apps"}, "/metrics", "GET", False),
    ({"extra": "  resourceNames: [node-1]"}, "/metrics", "GET", True),
    ({"extra": "  resourceNames: [node-2]"}, "/metrics", "GET", False),
    ({"skind": "Group", "sname": "monitoring"}, "/metrics", "GET", True),
    ({"skind": "Group", "sname": "other"}, "/metrics", "GET", False),
    ({"skind": "ServiceAccount", "sname": "sa", "snamespace": ", namespace: mon"}, "/metrics", "GET", True),
    ({"skind": "ServiceAccount", "sname": "sa", "snamespace": ", namespace: x"}, "/metrics", "GET", False),
])
def test_rbac_rule_matching(kwargs: dict[str, str], path: str, method: str, allowed: bool) -> None:
    authz = _role(**kwargs)
    user = "system:serviceaccount:mon:sa" if kwargs.get("skind") == "ServiceAccount" else "u"
    assert _allowed(authz, user, ("monitoring", "system:authenticated"), method, path) is allowed


def test_role_and_rolebinding_cannot_grant_nodes() -> None:
    role = _role(kind="Role", bkind="RoleBinding", resources='"*"', verbs='"*"', ns="default")
    assert not _allowed(role, "u", (), "GET", "/metrics")
    crole_rb = _authz(ROLE.format(kind="ClusterRole", bkind="RoleBinding", groups='"*"', resources='"*"',
                                  verbs='"*"', extra="", skind="User", sname="u", snamespace="",
                                  ns=", namespace: default"))
    assert not _allowed(crole_rb, "u", (), "GET", "/metrics")
    # ... but the same RoleBinding does grant namespaced resources in its namespace
    a = Attributes("u", (), "get", "pods", "", "p", namespace="default")
    assert role.allowed(a)
    assert not role.allowed(a._replace(namespace="other"))


def test_non_resource_urls() -> None:
    authz = _authz("""
kind: ClusterRole
metadata: {name: r}
rules: [{nonResourceURLs: ["/healthz", "/api/*"], verbs: [get]}]
---
kind: ClusterRoleBinding
metadata: {name: b}
roleRef: {kind: ClusterRole, name: r}
subjects: [{kind: User, name: u}]
""")
    nr = Attributes("u", (), "get", "", "", "", path="/healthz", resource_request=False)
    assert authz.allowed(nr)
    assert authz.allowed(nr._replace(path="/api/v1"))
    assert not authz.allowed(nr._replace(path="/metrics"))
    # nonResourceURL rules never grant resource requests
    assert not _allowed(authz, "u", (), "GET", "/healthz")


def test_policy_service_accounts_and_binding_state() -> None:
    policy = default_policy()
    names = {(s.namespace, s.name) for s in policy.all_service_accounts()}
    assert {("flashcat", "categraf-daemonset"), ("default", "unbound")} <= names
    bound = {(s.namespace, s.name): policy.is_bound(s) for s in policy.all_service_accounts()}
    assert bound[("flashcat", "categraf-daemonset")] is True
    assert bound[("default", "unbound")] is False


@pytest.mark.parametrize(("text", "match"), [
    ("kind: ClusterRole\nmetadata: {}\n", "metadata.name"),
    ("kind: ClusterRoleBinding\nmetadata: {name: b}\nroleRef: {kind: Role, name: r}\n",
     "cannot reference a Role"),
    ("kind: ClusterRoleBinding\nmetadata: {name: b}\nroleRef: {kind: ClusterRole, name: r}\n"
     "subjects: [{kind: ServiceAccount, name: s}]\n", "has no namespace"),
    ("kind: ClusterRole\nmetadata: {name: r}\nrules: [{verbs: get}]\n", "list of strings"),
    ("kind: [\n", "not valid YAML"),
])
def test_bad_yaml_names_the_problem(text: str, match: str) -> None:
    with pytest.raises(EmulatorError, match=match):
        parse_policy(text, "x.yaml")


def test_load_policy_files_and_ignores_other_kinds(tmp_path: Path) -> None:
    p = tmp_path / "rbac.yaml"
    p.write_text("kind: ConfigMap\nmetadata: {name: c}\n---\n" + (Path(__file__).parents[2] /
                 "kubescrape" / "data" / "auth.yaml").read_text())
    policy = load_policy([p])
    assert "categraf-daemonset" in policy.cluster_roles
    with pytest.raises(EmulatorError, match="--rbac"):
        load_policy([tmp_path / "missing.yaml"])
