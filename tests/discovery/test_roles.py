"""The role builders produce Prometheus' ``__meta_kubernetes_*`` labels (discovery/kubernetes/*.go)."""

from __future__ import annotations

from typing import Any

from kubescrape.discovery.roles import node_group, pod_group, service_group
from kubescrape.discovery.targetgroup import sanitize_label_name

M = "__meta_kubernetes_"


def _node(addresses: list[dict[str, str]], port: int = 10250) -> dict[str, Any]:
    return {"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"},
                         "annotations": {"a.b/c-d": "x"}},
            "spec": {"providerID": "aws:///eu-west-1a/i-0"},
            "status": {"addresses": addresses, "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}


def test_sanitize_label_name() -> None:
    assert sanitize_label_name("app.kubernetes.io/name") == "app_kubernetes_io_name"
    assert sanitize_label_name("a-b:c") == "a_b_c"


def test_node_target_and_labels() -> None:
    g = node_group(_node([{"type": "Hostname", "address": "n1"}, {"type": "ExternalIP", "address": "1.2.3.4"},
                          {"type": "InternalIP", "address": "10.0.0.1"}]))
    assert g.source == "node/n1"
    assert g.targets == ({
        "__address__": "10.0.0.1:10250", "instance": "n1", f"{M}node_provider_id": "aws:///eu-west-1a/i-0",
        f"{M}node_address_Hostname": "n1", f"{M}node_address_ExternalIP": "1.2.3.4",
        f"{M}node_address_InternalIP": "10.0.0.1"},)
    assert g.labels == {
        f"{M}node_name": "n1", f"{M}node_label_kubernetes_io_hostname": "n1",
        f"{M}node_labelpresent_kubernetes_io_hostname": "true", f"{M}node_annotation_a_b_c_d": "x",
        f"{M}node_annotationpresent_a_b_c_d": "true"}


def test_node_address_preference_and_no_address() -> None:
    g = node_group(_node([{"type": "Hostname", "address": "n1"}, {"type": "ExternalDNS", "address": "n1.x"}]))
    assert g.targets[0]["__address__"] == "n1.x:10250"
    assert node_group(_node([])).targets == ()
    assert node_group(_node([{"type": "InternalIP", "address": "fd00::1"}])).targets[0]["__address__"] == \
        "[fd00::1]:10250"


def _pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1", "labels": {"app": "web"},
                     "annotations": {"prometheus.io/scrape": "true"},
                     "ownerReferences": [{"kind": "ReplicaSet", "name": "web-abc", "controller": True}]},
        "spec": {"nodeName": "n1",
                 "containers": [{"name": "app", "image": "img:1", "ports": [
                     {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                     {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]},
                                {"name": "sidecar", "image": "side:2"}],
                 "initContainers": [{"name": "init", "image": "init:3"}]},
        "status": {"phase": "Running", "podIP": "10.1.2.3", "podIPs": [{"ip": "10.1.2.3"}, {"ip": "fd00::3"}],
                   "hostIP": "192.168.0.1", "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "app", "containerID": "containerd://aaa"}],
                   **status},
    }


def test_pod_targets_per_port_and_portless_container() -> None:
    g = pod_group(_pod())
    assert g.source == "pod/shop/web-1"
    addrs = [(t["__address__"], t[f"{M}pod_container_name"], t[f"{M}pod_container_init"]) for t in g.targets]
    assert addrs == [("10.1.2.3:8080", "app", "false"), ("10.1.2.3:9090", "app", "false"),
                     ("10.1.2.3", "sidecar", "false"), ("10.1.2.3", "init", "true")]
    first = g.targets[0]
    assert first[f"{M}pod_container_port_name"] == "http"
    assert first[f"{M}pod_container_port_number"] == "8080"
    assert first[f"{M}pod_container_port_protocol"] == "TCP"
    assert first[f"{M}pod_container_id"] == "containerd://aaa"
    assert first[f"{M}pod_container_image"] == "img:1"
    assert f"{M}pod_container_port_name" not in g.targets[2]
    assert g.targets[2][f"{M}pod_container_id"] == ""
    assert g.labels == {
        f"{M}namespace": "shop", f"{M}pod_name": "web-1", f"{M}pod_ip": "10.1.2.3", f"{M}pod_ready": "true",
        f"{M}pod_phase": "Running", f"{M}pod_node_name": "n1", f"{M}pod_host_ip": "192.168.0.1",
        f"{M}pod_uid": "u1", f"{M}pod_ipv4": "10.1.2.3", f"{M}pod_ipv6": "fd00::3",
        f"{M}pod_label_app": "web", f"{M}pod_labelpresent_app": "true",
        f"{M}pod_annotation_prometheus_io_scrape": "true",
        f"{M}pod_annotationpresent_prometheus_io_scrape": "true",
        f"{M}pod_controller_kind": "ReplicaSet", f"{M}pod_controller_name": "web-abc"}


def test_pod_without_ip_has_no_targets_and_ready_unknown() -> None:
    assert pod_group(_pod(podIP="")).targets == ()
    g = pod_group(_pod(conditions=[]))
    assert g.labels[f"{M}pod_ready"] == "unknown"


def test_service_targets() -> None:
    svc = {"metadata": {"name": "api", "namespace": "shop", "labels": {"app": "api"}},
           "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10",
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
    g = service_group(svc)
    assert g.source == "svc/shop/api"
    assert g.targets == ({"__address__": "api.shop.svc:80", f"{M}service_port_name": "http",
                          f"{M}service_port_number": "80", f"{M}service_port_protocol": "TCP",
                          f"{M}service_type": "ClusterIP", f"{M}service_cluster_ip": "10.96.0.10"},)
    assert g.labels[f"{M}service_name"] == "api" and g.labels[f"{M}namespace"] == "shop"
