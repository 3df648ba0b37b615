"""Where the apiserver is and how to authenticate: in-cluster environment and kubeconfig files."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from kubescrape.discovery.apiclient import DiscoveryError, in_cluster_config, load_kubeconfig
from kubescrape.errors import ConfigError


def test_in_cluster_config(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok")
    (tmp_path / "namespace").write_text("monitoring\n")
    cfg = in_cluster_config({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"},
                            token_file=tmp_path / "token", ca_file=tmp_path / "ca.crt")
    assert cfg.server == "https://10.96.0.1:443"
    assert cfg.token_file == str(tmp_path / "token") and cfg.ca_file == str(tmp_path / "ca.crt")
    assert cfg.namespace == "monitoring"
    v6 = in_cluster_config({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"},
                           token_file=tmp_path / "token")
    assert v6.server == "https://[fd00::1]:443"


def test_in_cluster_config_outside_a_pod_says_so(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match="KUBERNETES_SERVICE_HOST"):
        in_cluster_config({}, token_file=tmp_path / "token")
    with pytest.raises(DiscoveryError, match="automountServiceAccountToken"):
        in_cluster_config({"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "1"},
                          token_file=tmp_path / "missing")


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: c1
  cluster: {{server: "https://127.0.0.1:6443/", certificate-authority: ca.crt, tls-server-name: kubernetes}}
- name: c2
  cluster: {{server: "https://10.0.0.1", certificate-authority-data: {ca}, insecure-skip-tls-verify: true}}
users:
- name: u1
  user: {{client-certificate-data: {crt}, client-key: /abs/key.pem}}
- name: u2
  user: {{tokenFile: tok}}
contexts:
- name: one
  context: {{cluster: c1, user: u1, namespace: shop}}
- name: two
  context: {{cluster: c2, user: u2}}
current-context: one
"""


def test_kubeconfig_files_and_data(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG.format(ca=base64.b64encode(b"CA PEM").decode(),
                                      crt=base64.b64encode(b"CERT PEM").decode()))
    one = load_kubeconfig(path)
    assert one.server == "https://127.0.0.1:6443"
    assert one.ca_file == str(tmp_path / "ca.crt"), "relative paths are relative to the kubeconfig"
    assert one.cert_file is not None and Path(one.cert_file).read_bytes() == b"CERT PEM"
    assert one.key_file == "/abs/key.pem" and one.namespace == "shop" and one.server_name == "kubernetes"
    two = load_kubeconfig(path, context="two")
    assert two.ca_file is not None and Path(two.ca_file).read_bytes() == b"CA PEM"
    assert two.insecure_skip_verify and two.token_file == str(tmp_path / "tok")


def test_kubeconfig_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG.format(ca="'*not base64*'", crt="Q0VSVA=="))
    with pytest.raises(ConfigError, match="certificate-authority-data is not valid base64"):
        load_kubeconfig(path, context="two")
    with pytest.raises(ConfigError, match="no context named 'three'"):
        load_kubeconfig(path, context="three")
    with pytest.raises(ConfigError, match="cannot read the kubeconfig"):
        load_kubeconfig(tmp_path / "missing")
