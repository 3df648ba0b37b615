"""Manifests: schema-valid, least-privilege RBAC, a node-agent DaemonSet with node-local pod discovery and
loadable Categraf TOML; or (--mode cluster) a sharded StatefulSet with cluster discovery RBAC."""

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
from kubescrape.deploy import (
    SA_CA_FILE,
    SA_TOKEN_FILE,
    build_manifests,
    cluster_prometheus_yml,
    config_toml,
    node_pods_yml,
    prometheus_toml,
)

K8S_VERSION = "1.29.0"
WRITER = "https://vm.example:8428/api/v1/write"


def _objects(namespace: str = "monitoring", mode: str = "daemonset",
             replicas: int = 2) -> list[dict[str, Any]]:
    return [obj for _, obj in build_manifests(namespace, WRITER, "registry.example/kubescrape:1.2.3",
                                              mode=mode, replicas=replicas)]


def _by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


@pytest.mark.parametrize("mode", ["daemonset", "cluster"])
@pytest.mark.parametrize("version", ["1.25.0", K8S_VERSION, kubernetes_validate.latest_version() + ".0"])
def test_every_manifest_validates_against_the_openapi_schema(version: str, mode: str) -> None:
    for obj in _objects(mode=mode):
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


def test_rbac_grants_exactly_get_on_the_four_node_subresources() -> None:
    objs = _objects("monitoring")
    (role,) = _by_kind(objs, "ClusterRole")
    # /pods (node-local discovery) is nodes/proxy before kubelet 1.32, nodes/pods with fine-grained authz.
    assert role["rules"] == [{
        "apiGroups": [""], "resources": ["nodes/metrics", "nodes/stats", "nodes/proxy", "nodes/pods"],
        "verbs": ["get"],
    }]
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
    assert set(data) == {"config.toml", "node_pods.yml", "prometheus.toml"}
    config = tomllib.loads(data["config.toml"])
    assert config["writers"] == [{"url": WRITER, "timeout": 5000, "dial_timeout": 2500}]
    # node_pods.yml sits next to config.toml (same ConfigMap, same mount) and runs through the bridge.
    assert config["prometheus"] == {"enable": True, "scrape_config_file": "/etc/categraf/conf/node_pods.yml"}
    (pods_job,) = yaml.safe_load(data["node_pods.yml"])["scrape_configs"]
    assert pods_job["kubelet_sd_configs"] == [{"url": "https://${HOSTIP}:10250", "refresh_interval": "30s"}]
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


def test_cadvisor_honors_its_timestamps_and_tracks_them_for_staleness() -> None:
    text = prometheus_toml()
    instances = tomllib.loads(text)["instances"]
    by_job = {i["labels"]["job"]: i for i in instances}
    cadvisor = by_job["cadvisor"]
    assert cadvisor["honor_timestamps"] is True
    assert cadvisor["track_timestamps_staleness"] is True
    for job in ("kubelet", "kube-proxy"):  # no own timestamps there: Prometheus' defaults
        assert "honor_timestamps" not in by_job[job] and "track_timestamps_staleness" not in by_job[job]
    # The reason is stated next to the setting, with where it was measured.
    assert "staleness marker" in text and "bench/results/2026-12-02-cadvisor-timestamps.md" in text


def test_writer_url_is_escaped_in_toml() -> None:
    url = 'http://x/write?q="a\\b"'
    assert tomllib.loads(config_toml(url))["writers"][0]["url"] == url


def test_generated_config_loads_with_load_categraf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubescrape.config.categraf import load_categraf
    from kubescrape.discovery.apiclient import ApiClient, ApiConfig
    from kubescrape.discovery.config import kubelet_discovery, parse_sd_configs
    from kubescrape.scrape.targets import build_targets

    monkeypatch.setenv("HOSTIP", "10.0.0.7")
    monkeypatch.setenv("HOSTNAME", "node-a")
    (tmp_path / "input.prometheus").mkdir()
    (tmp_path / "config.toml").write_text(config_toml(WRITER, str(tmp_path / "node_pods.yml")))
    (tmp_path / "node_pods.yml").write_text(node_pods_yml())
    (tmp_path / "input.prometheus" / "prometheus.toml").write_text(prometheus_toml())
    config = load_categraf(tmp_path)
    (pods,) = [i for i in config.instances if i.job_name == "pods"]
    _, (sd,) = parse_sd_configs(config, pods)
    assert sd.refresh_interval == 30.0
    # Without credentials in the file, node-local discovery uses the ServiceAccount token and CA.
    class Built(Exception):
        """Carries the client's configuration out (no in-pod CA file here to build a client from)."""

    def client(cfg: ApiConfig) -> ApiClient:
        raise Built(cfg)

    with pytest.raises(Built) as built:
        kubelet_discovery(sd, lambda groups: None, client_factory=client)
    cfg = built.value.args[0]
    assert (cfg.server, cfg.token_file, cfg.ca_file) == ("https://10.0.0.7:10250", SA_TOKEN_FILE, SA_CA_FILE)
    config.instances.remove(pods)
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
        cadvisor = str(t.url).endswith("/metrics/cadvisor")
        assert t.honor_timestamps is True
        assert t.track_timestamps_staleness is cadvisor


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


def test_cluster_mode_is_a_sharded_statefulset_with_a_headless_service() -> None:
    objs = _objects("obs", mode="cluster", replicas=3)
    assert [o["kind"] for o in objs] == [
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Service",
        "StatefulSet",
    ]
    assert not _by_kind(objs, "DaemonSet")
    (sts,) = _by_kind(objs, "StatefulSet")
    (svc,) = _by_kind(objs, "Service")
    (sa,) = _by_kind(objs, "ServiceAccount")
    (cm,) = _by_kind(objs, "ConfigMap")
    spec = sts["spec"]
    assert spec["replicas"] == 3
    assert spec["serviceName"] == svc["metadata"]["name"] and svc["spec"]["clusterIP"] == "None"
    labels = spec["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"] == spec["selector"]["matchLabels"] == labels
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert "hostNetwork" not in pod
    (agent,) = pod["containers"]
    cmd = agent["command"]
    assert cmd[:2] == ["kubescrape", "run"]
    assert cmd[cmd.index("--shard-count") + 1] == "3" and "--shard-index" not in cmd
    # The shard index comes from the pod name (kubescrape-0, -1, -2) through the downward API.
    assert agent["env"] == [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                                            "fieldPath": "metadata.name"}}}]
    config_path = Path(cmd[cmd.index("--config") + 1])
    (mount,) = [m for m in agent["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == cm["metadata"]["name"] and config_path.name in cm["data"]
    # One spool claim per replica: a rescheduled shard keeps what it had not yet delivered.
    spool_dir = cmd[cmd.index("--spool-dir") + 1]
    (spool,) = [m for m in agent["volumeMounts"] if m["mountPath"] == spool_dir]
    assert [c["metadata"]["name"] for c in spec["volumeClaimTemplates"]] == [spool["name"]]
    assert not [v for v in pod["volumes"] if v["name"] == spool["name"]]
    assert pod["securityContext"]["fsGroup"] == agent["securityContext"]["runAsUser"]
    assert pod["terminationGracePeriodSeconds"] >= float(cmd[cmd.index("--shutdown-timeout") + 1]) + 5


def test_cluster_mode_shard_index_comes_from_the_pod_name() -> None:
    from kubescrape.discovery.shard import sharder_from_options

    (sts,) = _by_kind(_objects(mode="cluster", replicas=3), "StatefulSet")
    cmd = sts["spec"]["template"]["spec"]["containers"][0]["command"]
    count = int(cmd[cmd.index("--shard-count") + 1])
    sharders = [sharder_from_options(count, None, environ={"POD_NAME": f"kubescrape-{i}"}) for i in range(3)]
    assert [(s.count, s.index) for s in sharders] == [(3, 0), (3, 1), (3, 2)]


def test_cluster_mode_rbac_is_discovery_plus_the_kubelet_proxy() -> None:
    (role,) = _by_kind(_objects(mode="cluster"), "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes", "pods", "services", "endpoints"],
         "verbs": ["list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes/proxy", "nodes/metrics"], "verbs": ["get"]},
    ]


def test_cluster_prometheus_yml_loads_without_warnings(tmp_path: Path) -> None:
    from kubescrape.config.prometheus import load_prometheus
    from kubescrape.discovery.config import parse_sd_configs

    (cm,) = _by_kind(_objects(mode="cluster"), "ConfigMap")
    assert cm["data"]["prometheus.yml"] == cluster_prometheus_yml(WRITER)
    path = tmp_path / "prometheus.yml"
    path.write_text(cm["data"]["prometheus.yml"])
    config = load_prometheus(path, strict=True)
    assert config.warnings == []
    assert [w.url for w in config.writers] == [WRITER]
    roles = {}
    for inst in config.instances:
        kube, kubelet = parse_sd_configs(config, inst)
        assert not kubelet
        # No api_server: the in-cluster configuration of the pod's ServiceAccount.
        assert [(sd.api_server, sd.kubeconfig_file) for sd in kube] == [(None, None)]
        roles[inst.job_name] = kube[0].role
    assert roles == {"kubelet": "node", "cadvisor": "node", "pods": "pod"}
    doc = yaml.safe_load(path.read_text())
    by_job = {j["job_name"]: j for j in doc["scrape_configs"]}
    # kube-prometheus' relabeling: the apiserver's proxy path to the kubelet of each node.
    assert by_job["cadvisor"]["relabel_configs"][1:] == [
        {"target_label": "__address__", "replacement": "kubernetes.default.svc:443"},
        {"source_labels": ["__meta_kubernetes_node_name"], "regex": "(.+)",
         "target_label": "__metrics_path__", "replacement": "/api/v1/nodes/$1/proxy/metrics/cadvisor"},
    ]
    assert by_job["cadvisor"]["tls_config"] == {"ca_file": SA_CA_FILE}
    assert by_job["cadvisor"]["bearer_token_file"] == SA_TOKEN_FILE


def test_manifests_command_cluster_mode_and_bad_options(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["manifests", "--mode", "cluster", "--replicas", "4", "--writer-url", WRITER])
    assert result.exit_code == 0, result.output
    docs = [d for d in yaml.safe_load_all(result.stdout) if d is not None]
    assert docs == [obj for _, obj in build_manifests("flashcat", WRITER, "kubescrape:0.1.0", mode="cluster",
                                                      replicas=4)]
    assert "volumeClaimTemplates" in result.stdout and "not an emptyDir" in result.stdout
    for args, word in ((["--mode", "deployment"], "--mode"), (["--mode", "cluster", "--replicas", "0"],
                                                               "--replicas")):
        bad = CliRunner().invoke(app, ["manifests", *args, "-o", str(tmp_path / "x")])
        assert bad.exit_code == 2 and word in bad.stderr, bad.output
        assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("body", [
    "Forbidden (user=system:serviceaccount:obs:kubescrape, verb=get, resource=nodes, subresource=proxy)",
    "Forbidden (user=system:serviceaccount:obs:kubescrape, verb=get, resource=nodes, "
    "subresource(s)=[pods proxy])",
])
def test_doctor_fix_for_a_denied_pods_list_grants_what_the_manifests_grant(body: str) -> None:
    from kubescrape.doctor import parse_forbidden, rbac_fix_yaml

    forbidden = parse_forbidden(body)
    assert forbidden is not None
    role, binding = yaml.safe_load_all(rbac_fix_yaml(forbidden, "/pods"))
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes/pods", "nodes/proxy"], "verbs": ["get"]}]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubescrape", "namespace": "obs"}]
    (manifest_role,) = _by_kind(_objects(), "ClusterRole")
    assert set(role["rules"][0]["resources"]) <= set(manifest_role["rules"][0]["resources"])
    # Any other path keeps the single, most specific subresource.
    (role, _) = yaml.safe_load_all(rbac_fix_yaml(forbidden, "/metrics"))
    assert len(role["rules"][0]["resources"]) == 1
