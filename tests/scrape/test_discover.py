"""discover(): every configured URL with its discovered labels and its target, in build_targets order."""

from __future__ import annotations

from kubescrape.config.models import AgentConfig
from kubescrape.scrape.targets import build_targets, discover


def config(**instance: object) -> AgentConfig:
    return AgentConfig.model_validate({"global": {"hostname": "node-a"}, "instances": [instance]})


def test_targets_are_those_of_build_targets() -> None:
    cfg = AgentConfig.model_validate({"global": {"hostname": "node-a"}, "instances": [
        {"urls": ["http://127.0.0.1:1/metrics", "http://127.0.0.1:1/metrics"], "job": "a"},
        {"urls": ["http://127.0.0.1:2/x", "http://127.0.0.1:3"], "job": "b",
         "target_relabel_configs": [{"source_labels": ["__metrics_path__"], "regex": "/x",
                                     "action": "drop"}]},
        {"urls": []},
    ]})
    found = discover(cfg)
    assert [d.target for d in found if d.target is not None] == build_targets(cfg)
    assert [d.instance for d in found] == [0, 0, 1, 1]
    assert [d.target is None for d in found] == [False, False, True, False]
    assert found[1].target is not None and found[1].target.name == "http://127.0.0.1:1/metrics#2"


def test_discovered_labels_are_what_target_relabeling_sees() -> None:
    url = "https://user:pw-1234@127.0.0.1:10250/metrics/probes?a=1&b=2"
    (d,) = discover(config(urls=[url], job="kubelet", labels={"zone": "z1"}))
    assert d.labels == {
        "__address__": "127.0.0.1:10250",  # credentials are never labels
        "__scheme__": "https",
        "__metrics_path__": "/metrics/probes",
        "__param_a": "1",
        "__param_b": "2",
        "instance": "https://127.0.0.1:10250/metrics/probes?a=1&b=2",
        "job": "kubelet",
        "zone": "z1",
        "agent_hostname": "node-a",
    }


def test_default_path() -> None:
    (d,) = discover(config(urls=["http://127.0.0.1:9100"]))
    assert d.labels["__metrics_path__"] == "/metrics"
