"""Targets built from configuration, URL label templates, and the per-series labeler's conflict rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubescrape.config.categraf import load_categraf
from kubescrape.config.models import AgentConfig, GlobalConfig, InstanceConfig
from kubescrape.errors import ConfigError
from kubescrape.relabel import RelabelConfig
from kubescrape.scrape.targets import (
    Target,
    build_targets,
    compile_globs,
    make_labeler,
    render_url_template,
    synthetic_labels,
)

SEED = Path(__file__).resolve().parents[1] / "data" / "categraf_seed"


def agent(*instances: dict[str, Any], **global_: Any) -> AgentConfig:
    g = {"hostname": "node-1", **global_}
    return AgentConfig.model_validate({"global": g, "instances": list(instances)})


def one(**instance: Any) -> Target:
    global_ = instance.pop("global_", {})
    [target] = build_targets(agent(instance, **global_))
    return target


def test_seed_targets() -> None:
    cfg = load_categraf(SEED, env={"HOSTNAME": "10.206.0.16"})
    proxy, kubelet, cadvisor = build_targets(cfg)
    assert proxy.url == "http://127.0.0.1:10249/metrics"
    assert proxy.labels == (
        ("agent_hostname", "10.206.0.16"),
        ("instance", "http://127.0.0.1:10249/metrics"),
        ("job", "kube-proxy"),
    )
    assert not proxy.tls.use_tls and proxy.bearer_token_file is None
    assert kubelet.url == "https://127.0.0.1:10250/metrics"
    assert kubelet.label_dict["job"] == "kubelet"
    assert cadvisor.label_dict == {
        "agent_hostname": "10.206.0.16",
        "instance": "https://127.0.0.1:10250/metrics/cadvisor",
        "job": "cadvisor",
    }
    for t in (kubelet, cadvisor):
        assert t.tls.use_tls and t.tls.insecure_skip_verify and t.tls.ca_file is None
        assert t.bearer_token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    for t in (proxy, kubelet, cadvisor):
        assert (t.interval, t.timeout) == (15.0, 3.0)
        assert t.honor_labels is False and t.honor_timestamps is True
        assert t.body_size_limit == 64 << 20
        assert t.name == t.url


def test_interval_times_and_input_interval() -> None:
    cfg = AgentConfig.model_validate(
        {
            "global": {"interval": 20},
            "input_interval": 5,
            "instances": [{"urls": ["http://a:1/m"], "interval_times": 3}],
        }
    )
    assert build_targets(cfg)[0].interval == 15.0
    assert one(urls=["http://a:1/m"], interval_times=2, global_={"interval": "30s"}).interval == 60.0


@pytest.mark.parametrize(
    ("template", "want"),
    [
        ("{{.Host}}", "10.0.0.1:10250"),
        ("{{.Hostname}}:{{.Port}}", "10.0.0.1:10250"),
        ("{{ .Scheme }}/{{.Path}}", "https//metrics/cadvisor"),
        ("{{.Query}}#{{.Fragment}}", "a=1&b=2#frag"),
        ("node {{- .Hostname -}} !", "node10.0.0.1!"),
        ("static", "static"),
    ],
)
def test_render_url_template(template: str, want: str) -> None:
    url = "https://user:pw@10.0.0.1:10250/metrics/cadvisor?a=1&b=2#frag"
    assert render_url_template(template, url) == want


def test_url_labels() -> None:
    assert one(urls=["https://10.0.0.1:10250/metrics"], url_label_value="{{.Host}}").label_dict[
        "instance"
    ] == ("10.0.0.1:10250")
    # Categraf's default: the whole URL, with the default /metrics path filled in.
    t = one(urls=["http://10.0.0.1:9100"])
    assert t.url == "http://10.0.0.1:9100/metrics"
    assert t.label_dict["instance"] == "http://10.0.0.1:9100/metrics"
    t = one(urls=["http://10.0.0.1:9100/m"], url_label_key="target", url_label_pair={"host": "{{.Hostname}}"})
    assert t.label_dict == {
        "target": "http://10.0.0.1:9100/m",
        "host": "10.0.0.1",
        "agent_hostname": "node-1",
    }
    assert "instance" not in one(urls=["http://a:1/m"], url_label_key="-").label_dict
    with pytest.raises(ConfigError, match="unsupported template action") as info:
        one(urls=["http://a:1/m"], url_label_value="{{if .Host}}x{{end}}")
    assert info.value.key == "instances[0].url_label_value"


def test_label_precedence_like_categraf() -> None:
    t = one(
        urls=["http://a:1/m"],
        labels={"instance": "mine", "region": "inst", "agent_hostname": "custom", "gone": "-"},
        job="fallback",
        global_={"labels": {"region": "global", "dc": "d1", "gone": "g"}},
    )
    assert t.label_dict == {
        "instance": "mine",  # instance labels beat the url label
        "region": "inst",  # and global labels
        "dc": "d1",
        "agent_hostname": "custom",
        "job": "fallback",
        "gone": "g",  # "-" removes the instance's own and the scraped value; global labels still fill in
    }
    assert "gone" in t.ignore_label_keys
    assert dict(t.labels) == t.label_dict and list(t.labels) == sorted(t.labels)
    # job extra loses to labels.job; omit_hostname drops agent_hostname.
    t = one(urls=["http://a:1/m"], labels={"job": "j"}, job="other", global_={"omit_hostname": True})
    assert t.label_dict == {"instance": "http://a:1/m", "job": "j"}


def test_no_job_unless_configured() -> None:
    assert "job" not in one(urls=["http://a:1/m"]).label_dict


def test_target_fields_map() -> None:
    t = one(
        urls=["https://a:1/m"],
        timeout="1500ms",
        use_tls=True,
        tls_ca="/ca",
        tls_cert="/c",
        tls_key="/k",
        tls_server_name="kubelet",
        tls_min_version="1.3",
        bearer_token_string="tok",
        username="u",
        password="p",
        headers=["X-A", "1", "X-B", "2"],
        ignore_metrics=["go_*"],
        ignore_label_keys=["id"],
        honor_labels=True,
        honor_timestamps=False,
        body_size_limit=10,
    )
    assert t.timeout == 1.5
    assert (t.tls.ca_file, t.tls.cert_file, t.tls.key_file) == ("/ca", "/c", "/k")
    assert (t.tls.server_name, t.tls.min_version) == ("kubelet", "1.3")
    assert (t.bearer_token_string, t.username, t.password) == ("tok", "u", "p")
    assert t.headers == (("X-A", "1"), ("X-B", "2"))
    assert (t.ignore_metrics, t.ignore_label_keys) == (("go_*",), ("id",))
    assert (t.honor_labels, t.honor_timestamps, t.body_size_limit) == (True, False, 10)


def test_instance_without_urls_is_skipped_and_duplicate_names_get_suffix() -> None:
    cfg = agent({"urls": []}, {"urls": ["http://a:1/m"]}, {"urls": ["http://a:1/m"]})
    assert [t.name for t in build_targets(cfg)] == ["http://a:1/m", "http://a:1/m#2"]


def test_target_relabel_configs_rewrite_and_drop() -> None:
    rules = [
        {
            "source_labels": ["__address__"],
            "regex": "(.*):1",
            "target_label": "__address__",
            "replacement": "${1}:10250",
        },
        {"target_label": "__scheme__", "replacement": "https"},
        {"target_label": "__metrics_path__", "replacement": "/metrics/cadvisor"},
        {"source_labels": ["__param_x"], "target_label": "x"},
    ]
    t = one(urls=["http://node:1/m?x=7"], target_relabel_configs=rules)
    assert t.url == "https://node:10250/metrics/cadvisor?x=7"
    assert t.label_dict["x"] == "7"
    assert not any(k.startswith("__") for k in t.label_dict)
    cfg = agent(
        {
            "urls": ["http://a:1/m", "http://b:1/m"],
            "target_relabel_configs": [{"source_labels": ["__address__"], "regex": "a:.*", "action": "drop"}],
        }
    )
    assert [t.url for t in build_targets(cfg)] == ["http://b:1/m"]


def labels_of(target: Target, name: str, scraped: list[tuple[str, str]]) -> dict[str, str] | None:
    out = make_labeler(target)(name, scraped)
    if out is None:
        return None
    assert out == sorted(out)
    return dict(out)


def test_labeler_honor_labels_false_renames_conflicts() -> None:
    t = one(urls=["http://a:1/m"], labels={"job": "kubelet"})
    got = labels_of(t, "m", [("job", "x"), ("instance", "i"), ("exported_job", "taken"), ("pod", "p")])
    assert got == {
        "__name__": "m",
        "job": "kubelet",
        "instance": "http://a:1/m",
        "agent_hostname": "node-1",
        "exported_job": "taken",
        "exported_exported_job": "x",
        "exported_instance": "i",
        "pod": "p",
    }


def test_labeler_honor_labels_true_keeps_scraped() -> None:
    t = one(urls=["http://a:1/m"], labels={"job": "kubelet"}, honor_labels=True)
    assert labels_of(t, "m", [("job", "x"), ("le", "1")]) == {
        "__name__": "m",
        "job": "x",
        "le": "1",
        "instance": "http://a:1/m",
        "agent_hostname": "node-1",
    }


def test_labeler_filters_prefixes_and_empty_values() -> None:
    t = one(
        urls=["http://a:1/m"],
        url_label_key="-",
        global_={"omit_hostname": True},
        ignore_metrics=["go_*", "apiserver_request_duration_seconds"],
        ignore_label_keys=["id", "pod_*"],
        labels={"container": "-"},
    )
    lab = make_labeler(t)
    assert lab("go_goroutines", []) is None
    # A histogram's series are ignored through the family name, as Categraf matches families.
    assert lab("apiserver_request_duration_seconds_bucket", [("le", "1")]) is None
    assert lab("apiserver_request_duration_seconds_count", []) is None
    assert lab(
        "process_cpu_seconds_total",
        [("id", "/"), ("pod_name", "x"), ("pod", "p"), ("e", ""), ("container", "c"), ("Zeta", "z")],
    ) == [
        ("Zeta", "z"),
        ("__name__", "process_cpu_seconds_total"),
        ("pod", "p"),
    ]
    t = one(
        urls=["http://a:1/m"],
        name_prefix="p_",
        metrics_drop=["p_drop_*"],
        metrics_pass=["p_*"],
        metrics_name_prefix="k_",
        global_={"omit_hostname": True},
        url_label_key="-",
    )
    lab = make_labeler(t)
    assert lab("drop_me", []) is None
    assert lab("keep", []) == [("__name__", "k_p_keep")]


def test_labeler_metric_relabel_then_categraf_relabel() -> None:
    t = one(
        urls=["http://a:1/m"],
        url_label_key="-",
        global_={"omit_hostname": True},
        metric_relabel_configs=[
            {
                "source_labels": ["__name__"],
                "regex": "old_(.*)",
                "target_label": "__name__",
                "replacement": "new_$1",
            }
        ],
        relabel_configs=[
            {"source_labels": ["__name__"], "regex": "new_drop", "action": "drop"},
            {"regex": "tmp", "action": "labeldrop"},
        ],
    )
    assert [r.action for r in t.metric_relabel_configs] == ["replace", "drop", "labeldrop"]
    lab = make_labeler(t)
    assert lab("old_x", [("tmp", "1"), ("k", "v")]) == [("__name__", "new_x"), ("k", "v")]
    assert lab("old_drop", []) is None
    # Removing __name__ keeps the old name, as Categraf does.
    t2 = one(
        urls=["http://a:1/m"],
        url_label_key="-",
        global_={"omit_hostname": True},
        metric_relabel_configs=[{"regex": "__name__", "action": "labeldrop"}],
    )
    assert make_labeler(t2)("m", []) == [("__name__", "m")]


def test_synthetic_labels() -> None:
    t = one(
        urls=["http://a:1/m"],
        labels={"job": "kubelet"},
        metric_relabel_configs=[{"source_labels": ["__name__"], "regex": "up", "action": "drop"}],
    )
    assert synthetic_labels(t, "up") == [
        ("__name__", "up"),
        ("agent_hostname", "node-1"),
        ("instance", "http://a:1/m"),
        ("job", "kubelet"),
    ]


@pytest.mark.parametrize(
    ("patterns", "name", "matches"),
    [
        (["go_*"], "go_gc", True),
        (["go_*"], "xgo_gc", False),
        (["a?c"], "abc", True),
        (["{kube,cad}*"], "cadvisor_x", True),
        (["{kube,cad}*"], "node_x", False),
        (["[!a]x"], "bx", True),
        (["[!a]x"], "ax", False),
        (["exact.name"], "exactXname", False),
        (["a", "b"], "b", True),
    ],
)
def test_globs(patterns: list[str], name: str, matches: bool) -> None:
    rx = compile_globs(patterns)
    assert rx is not None
    assert (rx.fullmatch(name) is not None) is matches
    assert compile_globs([]) is None


def test_models_used_directly() -> None:
    cfg = AgentConfig(
        global_=GlobalConfig(hostname="h"),
        instances=[
            InstanceConfig(
                urls=["http://a:1/m"],
                metric_relabel_configs=[RelabelConfig(target_label="t", replacement="v")],
            )
        ],
    )
    [t] = build_targets(cfg)
    assert make_labeler(t)("m", []) == [
        ("__name__", "m"),
        ("agent_hostname", "h"),
        ("instance", "http://a:1/m"),
        ("t", "v"),
    ]


def test_timeout_longer_than_the_interval_is_clamped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    t = one(urls=["http://127.0.0.1:9100/metrics"], timeout=30)
    assert (t.interval, t.timeout) == (15.0, 15.0)
    assert any("exceeds the scrape interval" in r.getMessage() for r in caplog.records)


# --- credentials, limits, TLS versions (issue 15) ------------------------------------------------------


def test_url_credentials_are_used_for_auth_and_appear_in_no_label() -> None:
    t = one(urls=["http://alice:PASS@10.0.0.1:9100/metrics"], labels={"job": "node"},
            url_label_pair={"host": "{{.Host}}"})
    assert t.url == t.name == "http://10.0.0.1:9100/metrics"
    assert (t.username, t.password) == ("alice", "PASS")
    assert t.label_dict["instance"] == "http://10.0.0.1:9100/metrics"
    assert t.label_dict["host"] == "10.0.0.1:9100"
    everything = repr(t.labels) + repr(synthetic_labels(t, "up"))
    assert "PASS" not in everything and "alice" not in everything
    # The instance's own username/password win over the URL's, as in Categraf.
    t = one(urls=["http://alice:PASS@10.0.0.1:9100/metrics"], username="bob", password="pw")
    assert (t.url, t.username, t.password) == ("http://10.0.0.1:9100/metrics", "bob", "pw")
    # Percent-encoded userinfo is decoded; a user without password sends an empty one.
    t, u = build_targets(agent({"urls": ["http://a%40b:p%3As@h:1/m", "http://carol@h:2/m"]}))
    assert (t.username, t.password) == ("a@b", "p:s")
    assert (u.url, u.username, u.password) == ("http://h:2/m", "carol", None)


def test_target_relabel_never_sees_credentials() -> None:
    t = one(urls=["http://alice:PASS@10.0.0.1:9100/metrics"],
            target_relabel_configs=[RelabelConfig(source_labels=["__address__"], target_label="addr")])
    assert t.label_dict["addr"] == "10.0.0.1:9100"
    assert t.url == "http://10.0.0.1:9100/metrics" and t.username == "alice"


def test_scrape_limits_and_staleness_option_reach_the_target() -> None:
    t = one(urls=["http://a:1/m"], sample_limit=5000, label_limit=30, label_name_length_limit=128,
            label_value_length_limit=2048, track_timestamps_staleness=True)
    assert (t.sample_limit, t.label_limit, t.label_name_length_limit, t.label_value_length_limit) == (
        5000, 30, 128, 2048)
    assert t.track_timestamps_staleness is True and t.forced_error is None
    d = one(urls=["http://a:1/m"])
    assert (d.sample_limit, d.label_limit, d.label_name_length_limit, d.label_value_length_limit,
            d.target_limit, d.track_timestamps_staleness) == (0, 0, 0, 0, 0, False)


def test_target_limit_fails_every_target_of_the_instance_like_prometheus() -> None:
    cfg = agent({"urls": ["http://a:1/m", "http://b:1/m", "http://c:1/m"], "target_limit": 2},
                {"urls": ["http://d:1/m"], "target_limit": 1})
    a, b, c, d = build_targets(cfg)
    for t in (a, b, c):
        assert t.forced_error == "target_limit exceeded (number of targets: 3, limit: 2)"
    assert d.forced_error is None
    # Counted after target relabeling, as Prometheus does.
    cfg = agent({"urls": ["http://a:1/m", "http://b:1/m", "http://c:1/m"], "target_limit": 2,
                 "target_relabel_configs": [{"source_labels": ["__address__"], "regex": "c:1",
                                             "action": "drop"}]})
    assert [t.forced_error for t in build_targets(cfg)] == [None, None]


def test_tls_max_version_reaches_the_target() -> None:
    t = one(urls=["https://a:1/m"], use_tls=True, tls_min_version="1.2", tls_max_version="1.2")
    assert (t.tls.min_version, t.tls.max_version) == ("1.2", "1.2")
    assert one(urls=["https://a:1/m"]).tls.max_version is None
