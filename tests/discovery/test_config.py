"""A job's kubernetes_sd_configs / kubelet_sd_configs as the Prometheus loader keeps them, validated and
turned into discoveries."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from kubescrape.config.models import AgentConfig, InstanceConfig
from kubescrape.config.prometheus import load_prometheus
from kubescrape.discovery import ApiClient, ApiConfig, KubernetesDiscovery
from kubescrape.discovery.config import (
    KubeletSDConfig,
    api_config,
    job_discoveries,
    kubelet_discovery,
    parse_sd_configs,
)
from kubescrape.errors import ConfigError


def _load(tmp_path: Path, text: str) -> AgentConfig:
    p = tmp_path / "prometheus.yml"
    p.write_text(text)
    return load_prometheus(p)


def test_api_server_entry_uses_its_own_tls_and_token_relative_to_the_file(tmp_path: Path) -> None:
    cfg = _load(tmp_path, """
scrape_configs:
- job_name: nodes
  kubernetes_sd_configs:
  - role: node
    api_server: https://127.0.0.1:6443/
    tls_config: {ca_file: ca.crt}
    bearer_token_file: /token
    namespaces: {names: [shop], own_namespace: false}
    selectors: [{role: node, label: "zone=a"}]
""")
    (sd,), kubelet = parse_sd_configs(cfg, cfg.instances[0])
    assert kubelet == []
    api = api_config(sd)
    assert (api.server, api.ca_file, api.token_file) == ("https://127.0.0.1:6443", str(tmp_path / "ca.crt"),
                                                         "/token")
    (d,) = job_discoveries(cfg, cfg.instances[0], lambda groups: None,
                           client_factory=lambda c: ApiClient(ApiConfig("http://127.0.0.1:9")))
    assert isinstance(d, KubernetesDiscovery) and d.reflectors[0].params == {"labelSelector": "zone=a"}


@pytest.mark.parametrize(("entry", "message"), [
    ("{role: pods}", r"role 'pods' is not one of"),
    ("{role: pod, api_server: x, kubeconfig_file: y}", r"mutually exclusive"),
    ("{role: pod, bearer_token: a, bearer_token_file: b}", r"at most one of"),
    ("{role: pod, namespace: [a]}", r"kubernetes_sd_configs\[0\]\.namespace"),
])
def test_bad_entries_name_file_job_and_key(entry: str, message: str) -> None:
    inst = InstanceConfig(job_name="pods", kubernetes_sd_configs=[yaml.safe_load(entry)])
    cfg = AgentConfig(instances=[inst], files=["/etc/prometheus.yml"])
    with pytest.raises(ConfigError, match=message) as info:
        parse_sd_configs(cfg, inst)
    assert "/etc/prometheus.yml" in str(info.value) and "scrape_configs[pods]" in str(info.value)


def test_unimplemented_keys_warn(caplog: pytest.LogCaptureFixture) -> None:
    inst = InstanceConfig(job_name="pods", kubernetes_sd_configs=[{"role": "pod",
                                                                   "attach_metadata": {"node": True}}])
    with caplog.at_level(logging.WARNING, logger="kubescrape.config"):
        (sd,), _ = parse_sd_configs(AgentConfig(instances=[inst]), inst)
    assert sd.role == "pod" and "attach_metadata is not implemented" in caplog.text


def test_kubelet_sd_defaults_to_the_pods_service_account() -> None:
    seen: list[ApiConfig] = []

    def factory(api: ApiConfig) -> ApiClient:  # outside a pod the mounted CA does not exist: do not load it
        seen.append(api)
        return ApiClient(ApiConfig("http://127.0.0.1:9"))

    sd = KubeletSDConfig.model_validate({"url": "https://${NODE_IP}:10250", "namespaces": ["shop"]})
    d = kubelet_discovery(sd, lambda groups: None, environ={"NODE_IP": "10.0.0.7"}, client_factory=factory)
    (api,) = seen
    assert api.server == "https://10.0.0.7:10250"
    assert api.token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert api.ca_file == "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    assert list(d.namespaces) == ["shop"] and d.refresh_interval == 5.0
