"""Payload realism and dynamics, checked with prometheus_client's independent parser."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubescrape.emulator.payloads import NodePayloads
from kubescrape.emulator.payloads_render import go_float
from kubescrape.errors import EmulatorError
from kubescrape.testing import FakeClock

TEXT_ENDPOINTS = ("metrics", "cadvisor", "resource", "probes", "kube_proxy_metrics")
SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def node(
    pods: int = 20, *, seed: int = 7, churn: float = 0.0, clock: FakeClock | None = None
) -> NodePayloads:
    return NodePayloads(
        "ip-10-0-1-17.ec2.internal",
        "10.0.1.17",
        pods,
        churn_per_min=churn,
        seed=seed,
        clock=clock or FakeClock(autojump=False),
    )


def parse(body: bytes) -> dict[str, tuple[str, list[tuple[SampleKey, float, float | None]]]]:
    """family -> (type, [(key, value, timestamp seconds)])"""
    out: dict[str, tuple[str, list[tuple[SampleKey, float, float | None]]]] = {}
    for fam in text_string_to_metric_families(body.decode()):
        samples = []
        for s in fam.samples:
            ts = float(s.timestamp) if s.timestamp is not None else None
            samples.append(((s.name, tuple(sorted(s.labels.items()))), s.value, ts))
        out[fam.name] = (fam.type, samples)
    return out


def values(body: bytes) -> dict[str, tuple[str, float]]:
    """series text -> (family type, value): a quick line parser for the many-call dynamics tests
    (validity is checked with prometheus_client's parser elsewhere)."""
    types: dict[str, str] = {}
    out: dict[str, tuple[str, float]] = {}
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, mtype = line.split(" ")
            types[name] = mtype
            continue
        if line.startswith("#"):
            continue
        cut = line.rfind("}") + 1 or line.index(" ")
        series, rest = line[:cut], line[cut:].split()
        name = series.split("{", 1)[0]
        fam = next(
            (
                name[: -len(sfx)]
                for sfx in ("_bucket", "_sum", "_count")
                if name.endswith(sfx) and name[: -len(sfx)] in types
            ),
            name,
        )
        out[series] = (types[fam], float(rest[0]))
    return out


def series_name(series: str) -> str:
    return series.split("{", 1)[0]


def series_labels(series: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', series))


def endpoint(n: NodePayloads, name: str) -> Callable[[], bytes]:
    fn: Callable[[], bytes] = getattr(n, name)
    return fn


@pytest.mark.parametrize("name", TEXT_ENDPOINTS)
def test_every_text_payload_parses_with_help_and_type(name: str) -> None:
    body = endpoint(node(), name)()
    families = parse(body)
    assert len(families) >= 2
    text = body.decode()
    for fam, (mtype, samples) in families.items():
        # The parser drops a counter's ``_total`` suffix from the family name.
        assert re.search(rf"^# TYPE {fam}(_total)? {mtype}$", text, re.M), fam
        assert re.search(rf"^# HELP {fam}(_total)? \S", text, re.M), fam
        assert samples or mtype == "histogram", fam
    assert text.endswith("\n")


@pytest.mark.parametrize("pods", [1, 30, 120])
def test_cadvisor_series_per_pod_is_realistic(pods: int) -> None:
    n = node(pods)
    body = n.cadvisor()
    samples = len(values(body))
    empty = len(values(node(0).cadvisor()))
    per_pod = (samples - empty) / pods
    assert 100 <= per_pod <= 200 if pods > 1 else 100 <= per_pod <= 260, per_pod
    # Bytes per pod in the range of real kubelets (tens of KB).
    assert 25_000 <= (len(body) - len(node(0).cadvisor())) / pods <= 80_000


def test_cadvisor_labels_and_cgroups_look_like_the_kubelets() -> None:
    n = node(10)
    fams = parse(n.cadvisor())
    cpu = fams["container_cpu_usage_seconds"][1]
    labelsets = [dict(k[1]) for k, _, _ in cpu]
    assert all(set(ls) == {"container", "cpu", "id", "image", "name", "namespace", "pod"} for ls in labelsets)
    assert all(ls["cpu"] == "total" for ls in labelsets)
    root = [ls for ls in labelsets if ls["id"] == "/"]
    assert root == [
        {"container": "", "cpu": "total", "id": "/", "image": "", "name": "", "namespace": "", "pod": ""}
    ]
    for p in n.pods():
        mine = [ls for ls in labelsets if ls["pod"] == p.name]
        # pod cgroup + sandbox + containers
        assert len(mine) == 2 + len(p.containers)
        pod_cg = [ls for ls in mine if ls["id"] == p.cgroup]
        assert pod_cg and pod_cg[0]["container"] == "" and pod_cg[0]["image"] == ""
        for c in p.containers:
            (ls,) = [ls for ls in mine if ls["container"] == c.name]
            assert re.fullmatch(r"/kubepods(/burstable|/besteffort)?/pod[0-9a-f-]{36}/[0-9a-f]{64}", ls["id"])
            assert ls["name"] == c.container_id and ls["image"] == c.spec.image
    # Network series only for the sandbox (pause) and the root cgroup.
    net = fams["container_network_receive_bytes"][1]
    for key, _, _ in net:
        ls = dict(key[1])
        assert ls["id"] == "/" or ls["image"].startswith("registry.k8s.io/pause:")
        assert ls["interface"]
    assert {dict(k[1])["device"] for k, _, _ in fams["container_fs_usage_bytes"][1]} >= {"/dev/nvme0n1p1"}
    assert {dict(k[1])["state"] for k, _, _ in fams["container_tasks_state"][1]} == {
        "sleeping",
        "running",
        "stopped",
        "uninterruptible",
        "iowaiting",
    }
    assert "machine_memory_bytes" in fams and "container_oom_events" in fams


def test_timestamps_where_the_real_endpoints_have_them() -> None:
    clock = FakeClock(autojump=False)
    n = node(8, clock=clock)
    clock.advance(123.4)
    now = clock.time()
    cad = parse(n.cadvisor())
    for fam in (
        "container_cpu_usage_seconds",
        "container_memory_working_set_bytes",
        "container_last_seen",
        "container_network_receive_bytes",
    ):
        for _, _, ts in cad[fam][1]:
            assert ts is not None and now - 10.5 <= ts <= now, (fam, ts, now)
    for fam in ("container_spec_cpu_shares", "container_start_time_seconds", "cadvisor_version_info"):
        assert all(ts is None for _, _, ts in cad[fam][1]), fam
    # Containers are refreshed at different moments, as cAdvisor's per-container housekeeping does.
    assert len({ts for _, _, ts in cad["container_cpu_usage_seconds"][1]}) > 4
    res = parse(n.resource())
    for fam in ("node_cpu_usage_seconds", "container_memory_working_set_bytes", "pod_cpu_usage_seconds"):
        assert all(ts is not None for _, _, ts in res[fam][1]), fam
    assert all(ts is None for _, _, ts in res["resource_scrape_error"][1])
    for name in ("metrics", "probes", "kube_proxy_metrics"):
        assert all(ts is None for _, s in parse(endpoint(n, name)()).values() for _, _, ts in s), name


@pytest.mark.parametrize("name", TEXT_ENDPOINTS)
def test_counters_never_decrease_and_grow_with_time(name: str) -> None:
    clock = FakeClock(autojump=False)
    n = node(15, clock=clock)
    fn = endpoint(n, name)
    prev = values(fn())
    grew = 0
    for step in (0.5, 15.0, 15.0, 300.0, 7200.0):
        clock.advance(step)
        cur = values(fn())
        assert cur.keys() == prev.keys()  # no churn: the same series
        for key, (mtype, v) in cur.items():
            if mtype in ("counter", "histogram") or series_name(key).endswith(("_sum", "_count")):
                assert v >= prev[key][1], (key, prev[key][1], v)
                grew += v > prev[key][1]
        prev = cur
    assert grew > 0


def test_a_clock_stepping_back_never_makes_counters_decrease() -> None:
    clock = FakeClock(autojump=False)
    n = node(8, clock=clock)
    clock.advance(600.0)
    before = values(n.cadvisor())
    clock.advance(-300.0)  # wall clock stepped back (NTP)
    assert values(n.cadvisor()) == before
    clock.advance(400.0)
    after = values(n.cadvisor())
    cpu = [k for k in before if series_name(k) == "container_cpu_usage_seconds_total"]
    assert all(after[k][1] > before[k][1] for k in cpu)


def test_cadvisor_counters_and_gauges_move_like_a_node() -> None:
    clock = FakeClock(autojump=False)
    n = node(10, clock=clock)
    a = values(n.cadvisor())
    clock.advance(60)
    b = values(n.cadvisor())
    cpu = [k for k in a if series_name(k) == "container_cpu_usage_seconds_total"]
    assert cpu and all(b[k][1] > a[k][1] for k in cpu)
    rates = [(b[k][1] - a[k][1]) / 60 for k in cpu]
    assert all(0 < r < 16 for r in rates)  # cores
    ws = [k for k in a if series_name(k) == "container_memory_working_set_bytes"]
    moved = sum(a[k][1] != b[k][1] for k in ws)
    assert moved > len(ws) // 2
    assert all(b[k][1] > 0 for k in ws)
    rx = [k for k in a if series_name(k) == "container_network_receive_bytes_total"]
    assert rx and all(b[k][1] > a[k][1] for k in rx)


def test_histograms_are_cumulative() -> None:
    clock = FakeClock(autojump=False)
    n = node(10, clock=clock)
    clock.advance(3600)
    for body in (n.metrics(), n.kube_proxy_metrics()):
        for mtype, samples in parse(body).values():
            if mtype != "histogram":
                continue
            by_series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
            counts: dict[tuple[tuple[str, str], ...], float] = {}
            for (sname, labels), v, _ in samples:
                rest = tuple(kv for kv in labels if kv[0] != "le")
                if sname.endswith("_bucket"):
                    le = dict(labels)["le"]
                    by_series.setdefault(rest, []).append((float(le), v))
                elif sname.endswith("_count"):
                    counts[rest] = v
            for rest, buckets in by_series.items():
                vals = [v for _, v in sorted(buckets)]
                assert vals == sorted(vals)
                assert sorted(buckets)[-1][0] == float("inf")
                assert vals[-1] == counts[rest]


def test_le_is_the_last_label_as_the_go_client_writes_it() -> None:
    text = node().metrics().decode()
    buckets = [line for line in text.splitlines() if "_bucket{" in line]
    assert buckets and all(re.search(r'(\{|,)le="[^"]+"\} ', line) for line in buckets)
    assert 'kubelet_cgroup_manager_duration_seconds_bucket{operation_type="create",le="0.005"}' in text


def test_seed_histogram_and_kubelet_families() -> None:
    text = node().metrics().decode()
    assert text.startswith(
        "# HELP apiserver_audit_event_total [ALPHA] Counter of audit events generated and sent to the audit "
        "backend.\n# TYPE apiserver_audit_event_total counter\napiserver_audit_event_total 0\n"
    )
    assert 'apiserver_client_certificate_expiration_seconds_bucket{le="0"} 0\n' in text
    assert 'apiserver_client_certificate_expiration_seconds_bucket{le="1800"} 0\n' in text
    fams = parse(text.encode())
    for fam in (
        "rest_client_requests",
        "kubelet_runtime_operations_duration_seconds",
        "kubelet_pod_start_duration_seconds",
        "kubelet_running_pods",
        "kubelet_running_containers",
        "kubelet_node_name",
        "storage_operation_duration_seconds",
        "process_cpu_seconds",
        "go_goroutines",
        "kubernetes_build_info",
    ):
        assert fam in fams, fam
    assert values(text.encode())["kubelet_running_pods"][1] == 20
    assert 'kubelet_node_name{node="ip-10-0-1-17.ec2.internal"}' in values(text.encode())
    ops = {
        dict(k[1]).get("operation_type") for k, _, _ in fams["kubelet_runtime_operations_duration_seconds"][1]
    }
    assert {"list_containers", "container_status", "pull_image"} <= ops


def test_resource_and_probes_match_the_pods() -> None:
    n = node(12)
    pods = n.pods()
    res = values(n.resource())
    for p in pods:
        assert f'pod_cpu_usage_seconds_total{{namespace="{p.namespace}",pod="{p.name}"}}' in res
        for c in p.containers:
            text = f'container="{c.name}",namespace="{p.namespace}",pod="{p.name}"'
            assert res[f"container_memory_working_set_bytes{{{text}}}"][1] > 0
    probes = parse(n.probes())["prober_probe"][1]
    assert probes
    for (_, labels), v, _ in probes:
        ls = dict(labels)
        assert set(ls) == {"container", "namespace", "pod", "pod_uid", "probe_type", "result"}
        assert ls["probe_type"] in ("Liveness", "Readiness", "Startup")
        assert v >= 0
    assert {dict(k[1])["pod_uid"] for k, _, _ in probes} <= {p.uid for p in pods}


def test_churn_replaces_pods_at_the_configured_rate() -> None:
    clock = FakeClock(autojump=False)
    n = node(40, churn=6.0, clock=clock)
    before = {p.uid: p for p in n.pods()}
    body0 = n.cadvisor().decode()
    clock.advance(60.0)
    after = {p.uid: p for p in n.pods()}
    assert n.pod_count() == 40 == len(after)
    gone = set(before) - set(after)
    assert n.churned == 6
    # A slot may be hit twice in a minute; every event replaces one pod.
    assert 1 <= len(gone) <= 6
    body1 = n.cadvisor().decode()
    for uid in gone:
        old = before[uid]
        assert uid in body0 and uid not in body1
        for c in old.containers:
            assert c.container_id not in body1
    for uid in set(after) - set(before):
        assert uid in body1
    # DaemonSet pods (the first slots) are never replaced.
    assert [p.uid for p in n.pods()[:4]] == [p.uid for p in list(before.values())[:4]]
    clock.advance(600.0)
    n.metrics()
    assert n.churned == 66
    assert n.pod_count() == 40


def test_churned_pods_start_at_zero_and_counters_stay_valid() -> None:
    clock = FakeClock(autojump=False)
    n = node(20, churn=30.0, clock=clock)
    for _ in range(12):
        clock.advance(7.0)
        for series, (mtype, v) in values(n.cadvisor()).items():
            if mtype == "counter":
                assert v >= 0, series


def test_churn_is_independent_of_call_spacing() -> None:
    c1, c2 = FakeClock(autojump=False), FakeClock(autojump=False)
    a, b = node(30, churn=12.0, clock=c1), node(30, churn=12.0, clock=c2)
    for _ in range(20):
        c1.advance(30.0)
        a.cadvisor()
    c2.advance(600.0)
    assert a.cadvisor() == b.cadvisor()
    assert a.pods_json() == b.pods_json()


def test_deterministic_for_equal_seeds() -> None:
    for name in (*TEXT_ENDPOINTS, "stats_summary", "pods_json", "configz"):
        assert endpoint(node(seed=3), name)() == endpoint(node(seed=3), name)(), name
    assert node(seed=3).cadvisor() != node(seed=4).cadvisor()
    assert node(seed=3).pods_json() != node(seed=4).pods_json()


def test_stats_summary_shape() -> None:
    clock = FakeClock(autojump=False)
    n = node(9, clock=clock)
    s1 = json.loads(n.stats_summary())
    clock.advance(120)
    s2 = json.loads(n.stats_summary())
    nd = s2["node"]
    assert nd["nodeName"] == "ip-10-0-1-17.ec2.internal"
    # Per-cgroup stats times, up to one housekeeping interval old, not all equal.
    times = {c["cpu"]["time"] for p in s2["pods"] for c in p["containers"]}
    assert len(times) > 1
    assert nd["cpu"]["usageNanoCores"] > 0 and nd["memory"]["workingSetBytes"] > 0
    assert {c["name"] for c in nd["systemContainers"]} == {"kubelet", "runtime", "pods"}
    assert nd["fs"]["capacityBytes"] > nd["fs"]["usedBytes"] > 0
    assert len(s2["pods"]) == 9
    for p1, p2 in zip(s1["pods"], s2["pods"], strict=True):
        assert set(p2["podRef"]) == {"name", "namespace", "uid"}
        assert p2["cpu"]["usageCoreNanoSeconds"] >= p1["cpu"]["usageCoreNanoSeconds"]
        assert p2["network"]["rxBytes"] >= p1["network"]["rxBytes"]
        for c in p2["containers"]:
            assert c["memory"]["workingSetBytes"] > 0 and "usageNanoCores" in c["cpu"]
    assert nd["cpu"]["usageCoreNanoSeconds"] > s1["node"]["cpu"]["usageCoreNanoSeconds"]


def test_pods_json_is_a_pod_list() -> None:
    n = node(11)
    body = json.loads(n.pods_json())
    assert body["kind"] == "PodList" and body["apiVersion"] == "v1"
    assert len(body["items"]) == 11
    uids = set()
    for item, p in zip(body["items"], n.pods(), strict=True):
        md, spec, status = item["metadata"], item["spec"], item["status"]
        assert (md["name"], md["namespace"], md["uid"]) == (p.name, p.namespace, p.uid)
        assert spec["nodeName"] == "ip-10-0-1-17.ec2.internal"
        assert [c["name"] for c in spec["containers"]] == [c.name for c in p.containers]
        assert status["phase"] == "Running" and status["hostIP"] == "10.0.1.17"
        assert status["qosClass"] in ("Guaranteed", "Burstable", "BestEffort")
        for cs in status["containerStatuses"]:
            assert re.fullmatch(r"containerd://[0-9a-f]{64}", cs["containerID"])
        uids.add(md["uid"])
    assert len(uids) == 11


def test_configz() -> None:
    cfg = json.loads(node().configz())["kubeletconfig"]
    assert cfg["authentication"]["webhook"]["enabled"] is True
    assert cfg["authorization"]["mode"] == "Webhook"
    assert cfg["port"] == 10250 and cfg["healthzPort"] == 10248


def test_same_time_same_body_and_zero_pods() -> None:
    n = node(5)
    assert n.cadvisor() == n.cadvisor()
    empty = node(0)
    assert empty.pod_count() == 0
    assert parse(empty.cadvisor())["container_cpu_usage_seconds"][1]
    assert json.loads(empty.pods_json())["items"] == []


def test_rejects_bad_arguments() -> None:
    with pytest.raises(EmulatorError, match="pods"):
        node(-1)
    with pytest.raises(EmulatorError, match="churn"):
        node(3, churn=-1.0)
    with pytest.raises(EmulatorError, match="version"):
        NodePayloads("n", "10.0.0.1", 1, kubelet_version="latest")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (1800, "1800"),
        (2592000, "2.592e+06"),
        (0.005, "0.005"),
        (1e-05, "1e-05"),
        (1395066363, "1.395066363e+09"),
        (10220.460575195, "10220.460575195"),
        (float("inf"), "+Inf"),
    ],
)
def test_go_float_matches_the_go_client(value: float, text: str) -> None:
    assert go_float(value) == text


def test_series_that_survive_churn_never_step_back() -> None:
    clock = FakeClock(autojump=False)
    n = node(25, churn=20.0, clock=clock)
    prev = values(n.cadvisor())
    for _ in range(8):
        clock.advance(9.0)
        cur = values(n.cadvisor())
        common = [k for k in cur if k in prev and cur[k][0] == "counter"]
        assert any('id="/"' in k for k in common) and any('id="/kubepods"' in k for k in common)
        for k in common:
            assert cur[k][1] >= prev[k][1], k
        prev = cur
    assert n.churned >= 20


def test_numbers_have_the_go_clients_shapes() -> None:
    n = node(6)
    text = n.cadvisor().decode()
    ws = [line for line in text.splitlines() if line.startswith("container_memory_working_set_bytes{")]
    # Below 1e6 plain integers, from 1e6 on exponent form: 293057, 4.4634112e+07.
    assert ws and all(re.search(r"} (\d{1,6}|\d\.\d+e\+\d\d) \d{13}$", line) for line in ws)
    assert sum("e+" in line for line in ws) > len(ws) // 2
    cpu = [line for line in text.splitlines() if line.startswith("container_cpu_usage_seconds_total{")]
    assert all(re.search(r"} \d+\.\d{9} \d{13}$", line) for line in cpu)
    start = [line for line in n.resource().decode().splitlines() if line.startswith("container_start_time")]
    assert start and all(re.search(r"} 1\.\d+e\+09$", line) for line in start)


def test_deterministic_across_processes() -> None:
    """Equal seeds give equal bodies in another interpreter too (no dependence on hash randomization)."""
    script = (
        "import hashlib, sys\n"
        "from kubescrape.emulator.payloads import NodePayloads\n"
        "from kubescrape.testing import FakeClock\n"
        "clock = FakeClock(autojump=False)\n"
        "n = NodePayloads('node-a', '10.0.0.9', 12, churn_per_min=3.0, seed=5, clock=clock)\n"
        "sys.stdout.write(hashlib.sha256(n.cadvisor() + n.pods_json() + n.metrics()).hexdigest())\n"
    )
    root = Path(__file__).resolve().parents[2]
    digests = set()
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed, "PYTHONPATH": str(root)}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, timeout=60, check=True
        )
        digests.add(out.stdout.decode())
    n = NodePayloads("node-a", "10.0.0.9", 12, churn_per_min=3.0, seed=5, clock=FakeClock(autojump=False))
    assert digests == {hashlib.sha256(n.cadvisor() + n.pods_json() + n.metrics()).hexdigest()}
