"""Manifests: schema-valid, least-privilege RBAC, a node-agent DaemonSet, loadable Categraf TOML."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from kubescrape.cli import app
from kubescrape.deploy import SA_CA_FILE, SA_TOKEN_FILE, build_manifests, config_toml, prometheus_toml

K8S_VERSION = "1.29.0"
WRITER = "https://vm.example:8428/api/v1/write"


def _objects(namespace: str = "monitoring") -> list[dict[str, Any]]:
    return [obj for _, obj in build_manifests(namespace, WRITER, "registry.example/kubescrape:1.2.3")]


def _by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


@pytest.mark.parametrize("version", ["1.25.0", K8S_VERSION, kubernetes_validate.latest_version() + ".0"])
def test_every_manifest_validates_against_the_openapi_schema(version: str) -> None:
    for obj in _objects():
        kubernetes_validate.validate(obj, version, strict=True)


def test_printed_yaml_is_the_same_objects_and_validates() -> None:
    result = CliRunner().invoke(app, ["manifests", "--namespace", "obs", "--writer-url", WRITER])
    assert result.exit_code == 0, result.output
    docs = [d for d in yaml.safe_load_all(result.stdout) if d is not None]
    assert [d["kind"] for d in docs] == [
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
        "ConfigMap", "ConfigMap", "DaemonSet",
    ]
    assert docs == [obj for _, obj in build_manifests("obs", WRITER, "kubescrape:0.1.0")]
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    # The "why" comments survive in the printed output.
    assert "# One agent per node" in result.stdout


def test_output_dir_writes_one_file_per_manifest(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    result = CliRunner().invoke(app, ["manifests", "-o", str(out)])
    assert result.exit_code == 0, result.output
    files = sorted(out.iterdir())
    assert len(files) == 7
    kinds = [yaml.safe_load(f.read_text())["kind"] for f in files]
    assert kinds[0] == "Namespace" and kinds[-1] == "DaemonSet"
    assert files[2].name == "02-clusterrole-kubescrape.yaml"


def test_unwritable_output_dir_is_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(app, ["manifests", "-o", str(blocker / "sub")])
    assert result.exit_code == 2


def test_rbac_grants_exactly_get_on_the_three_node_subresources() -> None:
    objs = _objects("monitoring")
    (role,) = _by_kind(objs, "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes/metrics", "nodes/stats", "nodes/proxy"], "verbs": ["get"]}
    ]
    (binding,) = _by_kind(objs, "ClusterRoleBinding")
    (sa,) = _by_kind(objs, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "monitoring"}
    ]
    assert not _by_kind(objs, "Role") and not _by_kind(objs, "RoleBinding")


def test_daemonset_runs_on_every_node_with_host_network_and_downward_api() -> None:
    objs = _objects()
    (ds,) = _by_kind(objs, "DaemonSet")
    (sa,) = _by_kind(objs, "ServiceAccount")
    pod = ds["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    # A key-less Exists toleration matches every taint, control-plane included.
    assert {"operator": "Exists"} in pod["tolerations"]
    (agent,) = pod["containers"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in agent["env"]}
    assert env == {"HOSTNAME": "spec.nodeName", "HOSTIP": "status.hostIP"}
    assert agent["image"] == "registry.example/kubescrape:1.2.3"
    assert agent["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert agent["resources"]["limits"] == {"cpu": "500m", "memory": "384Mi"}


def test_daemonset_probes_spool_shutdown_and_security() -> None:
    (ds,) = _by_kind(_objects(), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    args = agent["args"]
    listen = args[args.index("--listen") + 1]
    port = int(listen.rsplit(":", 1)[1])
    (named,) = [p for p in agent["ports"] if p["containerPort"] == port]
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/healthz")):
        assert agent[probe]["httpGet"]["path"] == path
        assert agent[probe]["httpGet"]["port"] in (port, named["name"])
    # The spool survives a pod restart: it lives on the node.
    spool_dir = args[args.index("--spool-dir") + 1]
    (mount,) = [m for m in agent["volumeMounts"] if m["mountPath"] == spool_dir]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["hostPath"]["path"] == spool_dir
    shutdown = float(args[args.index("--shutdown-timeout") + 1])
    assert pod["terminationGracePeriodSeconds"] >= shutdown + 5
    sc = agent["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    # The only root step may chown the spool and nothing else.
    (init,) = pod["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    # Config mounts match the Categraf layout the image's ENTRYPOINT reads.
    mounts = {m["name"]: m["mountPath"] for m in agent["volumeMounts"]}
    assert mounts["config"] == "/etc/categraf/conf"
    assert mounts["input-prometheus"] == "/etc/categraf/conf/input.prometheus"


def test_configmaps_hold_the_categraf_layout() -> None:
    objs = _objects()
    data = {k: v for cm in _by_kind(objs, "ConfigMap") for k, v in cm["data"].items()}
    assert set(data) == {"config.toml", "prometheus.toml"}
    config = tomllib.loads(data["config.toml"])
    assert config["writers"] == [{"url": WRITER, "timeout": 5000, "dial_timeout": 2500}]
    instances = tomllib.loads(data["prometheus.toml"])["instances"]
    assert [i["urls"] for i in instances] == [
        ["http://127.0.0.1:10249/metrics"],
        ["https://$HOSTIP:10250/metrics"],
        ["https://$HOSTIP:10250/metrics/cadvisor"],
    ]
    for kubelet in instances[1:]:
        assert kubelet["bearer_token_file"] == SA_TOKEN_FILE
        assert kubelet["tls_ca"] == SA_CA_FILE
        assert kubelet["use_tls"] is True
        assert "insecure_skip_verify" not in kubelet
    # The self-signed kubelet certificate caveat is documented where the user edits the config.
    assert "serverTLSBootstrap" in data["prometheus.toml"]


def test_writer_url_is_escaped_in_toml() -> None:
    url = 'http://x/write?q="a\\b"'
    assert tomllib.loads(config_toml(url))["writers"][0]["url"] == url


def test_generated_config_loads_with_load_categraf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubescrape.config.categraf import load_categraf
    from kubescrape.scrape.targets import build_targets

    monkeypatch.setenv("HOSTIP", "10.0.0.7")
    monkeypatch.setenv("HOSTNAME", "node-a")
    (tmp_path / "input.prometheus").mkdir()
    (tmp_path / "config.toml").write_text(config_toml(WRITER))
    (tmp_path / "input.prometheus" / "prometheus.toml").write_text(prometheus_toml())
    config = load_categraf(tmp_path)
    targets = build_targets(config)
    urls = sorted(str(t.url) for t in targets)
    assert urls == [
        "http://127.0.0.1:10249/metrics",
        "https://10.0.0.7:10250/metrics",
        "https://10.0.0.7:10250/metrics/cadvisor",
    ]
    assert not config.warnings
    for t in targets:
        assert t.enable_compression is False  # node-local targets: no gzip round trip
        if str(t.url).startswith("https://"):
            assert t.tls.ca_file is not None and str(t.tls.ca_file) == SA_CA_FILE
            assert t.tls.insecure_skip_verify is False
            assert t.bearer_token_file is not None and str(t.bearer_token_file) == SA_TOKEN_FILE


def test_dockerfile_matches_the_daemonset() -> None:
    """The image's user and ENTRYPOINT are what the DaemonSet's securityContext and mounts assume."""
    from kubescrape.deploy import CONFIG_DIR, RUN_AS

    root = Path(__file__).resolve().parent.parent
    lines = [line.strip() for line in (root / "Dockerfile").read_text().splitlines()]
    assert "FROM python:3.11-slim" in lines
    assert f"USER {RUN_AS}:{RUN_AS}" in lines
    (entry,) = [line for line in lines if line.startswith("ENTRYPOINT")]
    assert json.loads(entry.removeprefix("ENTRYPOINT")) == ["kubescrape", "run", "--config-dir", CONFIG_DIR]
    ignored = (root / ".dockerignore").read_text().splitlines()
    assert "*" in ignored and "!kubescrape/" in ignored and "!pyproject.toml" in ignored
