"""Prometheus' configuration file: what loads, what warns, what fails (with the file and key named)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kubescrape.config.prometheus import (
    api_config,
    kubelet_discovery,
    load_prometheus_config,
    parse_prometheus_duration,
    scrape_settings,
    static_groups,
    target_template,
    writer_settings,
)
from kubescrape.discovery import ApiClient, ApiConfig, TargetGroup
from kubescrape.errors import ConfigError

AGENT_CONFIG = """
global:
  scrape_interval: 30s
  external_labels: {cluster: prod}
scrape_configs:
- job_name: kubelet
  scheme: https
  tls_config: {ca_file: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt}
  authorization: {credentials_file: /var/run/secrets/kubernetes.io/serviceaccount/token}
  kubernetes_sd_configs:
  - role: node
  relabel_configs:
  - {action: labelmap, regex: __meta_kubernetes_node_label_(.+)}
- job_name: pods
  scrape_interval: 15s
  scrape_timeout: 5s
  body_size_limit: 10MB
  kubernetes_sd_configs:
  - role: pod
    namespaces: {names: [shop]}
    selectors: [{role: pod, field: spec.nodeName=node-1}]
  relabel_configs:
  - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, regex: "true"}
- job_name: static
  static_configs: [{targets: ["127.0.0.1:9100"], labels: {env: dev}}]
  params: {module: [http_2xx]}
remote_write:
- url: http://receiver:9090/api/v1/write
  queue_config: {max_samples_per_send: 500, batch_send_deadline: 10s}
  write_relabel_configs:
  - {source_labels: [__name__], regex: "go_.*", action: drop}
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "prometheus.yml"
    p.write_text(text)
    return p


def test_a_prometheus_agent_file_loads(tmp_path: Path) -> None:
    cfg = load_prometheus_config(_write(tmp_path, AGENT_CONFIG))
    assert [j.job_name for j in cfg.scrape_configs] == ["kubelet", "pods", "static"]
    kubelet, pods, static = cfg.scrape_configs
    assert cfg.interval(kubelet) == 30 and cfg.timeout(kubelet) == 10
    assert cfg.interval(pods) == 15 and cfg.timeout(pods) == 5 and pods.body_size_limit == 10 << 20
    assert kubelet.token_file() == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    sd = pods.kubernetes_sd_configs[0]
    assert sd.role == "pod" and sd.namespaces.names == ["shop"]
    assert sd.selectors[0].field == "spec.nodeName=node-1"
    assert static.static_configs[0].targets == ["127.0.0.1:9100"]
    rw = cfg.remote_write[0]
    assert rw.queue_config.max_samples_per_send == 500 and rw.queue_config.batch_send_deadline == 10
    settings = scrape_settings(cfg, pods)
    assert settings.job == "pods" and settings.interval == 15 and len(settings.relabel_configs) == 1
    assert cfg.global_.external_labels == {"cluster": "prod"} and cfg.warnings == ()


def test_unimplemented_options_warn_or_fail_when_strict(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path, AGENT_CONFIG + "rule_files: [rules.yml]\nalerting: {alertmanagers: []}\n")
    with caplog.at_level(logging.WARNING, logger="kubescrape.config"):
        cfg = load_prometheus_config(path)
    assert [w.split(": ", 1)[1] for w in cfg.warnings] == [
        "rule_files is not implemented by kubescrape and is ignored",
        "alerting is not implemented by kubescrape and is ignored"]
    assert "rule_files is not implemented" in caplog.text
    with pytest.raises(ConfigError, match=r"not implemented by kubescrape: rule_files, alerting.*--strict"):
        load_prometheus_config(path, strict=True)


@pytest.mark.parametrize(("snippet", "message"), [
    ("scrape_configs:\n- job_name: a\n  scrape_intervl: 5s\n",
     r"unknown field\(s\) scrape_configs\[a\]\.scrape_intervl"),
    ("scrape_configs:\n- job_name: a\n  scrape_interval: 5 s\n", r"not a valid duration string: '5 s'"),
    ("scrape_configs:\n- job_name: a\n  kubernetes_sd_configs: [{role: pods}]\n",
     r"role 'pods' is not one of"),
    ("scrape_configs:\n- job_name: a\n- job_name: a\n", r"multiple scrape configs with job name 'a'"),
    ("scrape_configs:\n- job_name: a\n  bearer_token: x\n  bearer_token_file: y\n", r"at most one of"),
    ("scrape_configs: [\n", r"not valid YAML"),
])
def test_errors_name_file_and_key(tmp_path: Path, snippet: str, message: str) -> None:
    path = _write(tmp_path, snippet)
    with pytest.raises(ConfigError, match=message) as info:
        load_prometheus_config(path)
    assert str(path) in str(info.value)


def test_durations() -> None:
    assert parse_prometheus_duration("1m30s") == 90
    assert parse_prometheus_duration("500ms") == 0.5
    assert parse_prometheus_duration("1d") == 86400
    with pytest.raises(ValueError, match="not a valid duration"):
        parse_prometheus_duration("30s1m")


def test_api_server_entry_uses_its_own_tls_and_token(tmp_path: Path) -> None:
    cfg = load_prometheus_config(_write(tmp_path, """
scrape_configs:
- job_name: a
  kubernetes_sd_configs:
  - role: node
    api_server: https://127.0.0.1:6443/
    tls_config: {ca_file: /ca.crt}
    bearer_token_file: /token
"""))
    api = api_config(cfg.scrape_configs[0].kubernetes_sd_configs[0])
    assert (api.server, api.ca_file, api.token_file) == ("https://127.0.0.1:6443", "/ca.crt", "/token")


def test_remote_write_maps_to_writer_settings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_prometheus_config(_write(tmp_path, AGENT_CONFIG))
    with caplog.at_level(logging.WARNING, logger="kubescrape.config"):
        (w,) = writer_settings(cfg)
    assert w.url == "http://receiver:9090/api/v1/write" and w.name == "receiver:9090/api/v1/write"
    assert (w.batch, w.queue_capacity, w.flush_deadline, w.timeout) == (500, 10000, 10.0, 30.0)
    assert "remote_write[0].write_relabel_configs is not implemented" in caplog.text


def test_static_configs_become_target_groups(tmp_path: Path) -> None:
    cfg = load_prometheus_config(_write(tmp_path, AGENT_CONFIG))
    (group,) = static_groups(cfg.scrape_configs[2])
    assert group == TargetGroup("static/static/0", ({"__address__": "127.0.0.1:9100"},), {"env": "dev"})


def test_kubelet_sd_defaults_to_the_pods_service_account(tmp_path: Path) -> None:
    cfg = load_prometheus_config(_write(tmp_path, """
scrape_configs:
- job_name: node-local
  kubelet_sd_configs:
  - url: https://${NODE_IP}:10250
    namespaces: [shop]
"""))
    sd = cfg.scrape_configs[0].kubelet_sd_configs[0]
    seen: list[ApiConfig] = []

    def factory(api: ApiConfig) -> ApiClient:  # outside a pod the mounted CA does not exist: do not load it
        seen.append(api)
        return ApiClient(ApiConfig("http://127.0.0.1:9"))

    d = kubelet_discovery(sd, lambda groups: None, environ={"NODE_IP": "10.0.0.7"}, client_factory=factory)
    (api,) = seen
    assert api.server == "https://10.0.0.7:10250"
    assert api.token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert api.ca_file == "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    assert list(d.namespaces) == ["shop"] and d.refresh_interval == 5.0


def test_limits_reach_the_targets(tmp_path: Path) -> None:
    cfg = load_prometheus_config(_write(tmp_path, """
global: {sample_limit: 1000, label_limit: 30}
scrape_configs:
- job_name: a
  sample_limit: 50
  label_value_length_limit: 200
  body_size_limit: 1MB
"""))
    t = target_template(cfg, cfg.scrape_configs[0])
    limits = (t.sample_limit, t.label_limit, t.label_value_length_limit, t.body_size_limit)
    assert limits == (50, 30, 200, 1 << 20), "the job's own, else the global ones"
