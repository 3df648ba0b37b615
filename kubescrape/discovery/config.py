"""A scrape job's ``kubernetes_sd_configs`` (as the Prometheus loader keeps them on the instance) turned
into discoveries: validated here, with errors naming the file, the job and the key.

Each entry takes Prometheus' keys: ``role``, ``api_server`` or ``kubeconfig_file`` (else the pod's
in-cluster configuration), ``namespaces`` (``names``, ``own_namespace``), ``selectors``, ``tls_config``,
``authorization`` / ``bearer_token[_file]``. Relative file paths are relative to the configuration
file, as in Prometheus. Keys Prometheus has that kubescrape does not implement (``attach_metadata``,
proxies, OAuth2 …) are named in a warning; unknown ones are errors.

``kubelet_sd_configs`` entries (a kubescrape extension, Grafana Alloy's ``discovery.kubelet``: the pods
of this node from the kubelet's ``/pods``) are read the same way when the instance carries them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from kubescrape.auth import IN_CLUSTER_CA_FILE, IN_CLUSTER_TOKEN_FILE
from kubescrape.config.models import AgentConfig, InstanceConfig, parse_prometheus_duration
from kubescrape.discovery.apiclient import ApiClient, ApiConfig, in_cluster_config, load_kubeconfig
from kubescrape.discovery.kubelet import KubeletDiscovery
from kubescrape.discovery.kubernetes import ROLES, KubernetesDiscovery, OnUpdate, RoleSelector
from kubescrape.discovery.metrics import DiscoveryMetrics
from kubescrape.errors import ConfigError

log = logging.getLogger("kubescrape.config")

__all__ = [
    "Discovery",
    "KubeletSDConfig",
    "KubernetesSDConfig",
    "api_config",
    "job_discoveries",
    "kubelet_discovery",
    "kubernetes_discovery",
    "parse_sd_configs",
]

ClientFactory = Callable[[ApiConfig], ApiClient]
Discovery = KubernetesDiscovery | KubeletDiscovery
# Prometheus keys of a kubernetes_sd_configs entry kubescrape does not act on.
_UNIMPLEMENTED = ("attach_metadata", "proxy_url", "no_proxy", "proxy_from_environment",
                  "proxy_connect_header", "oauth2", "follow_redirects", "enable_http2", "http_headers",
                  "basic_auth")


def _seconds(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return parse_prometheus_duration(str(value))


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TLSConfig(_Model):
    """``tls_config``."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: str | None = None


class Authorization(_Model):
    """``authorization``."""

    type: str = "Bearer"
    credentials: str | None = None
    credentials_file: str | None = None


class Namespaces(_Model):
    """``namespaces``."""

    names: list[str] = []
    own_namespace: bool = False


class Selector(_Model):
    """``selectors`` entry."""

    role: str
    label: str = ""
    field: str = ""


class _Credentials(_Model):
    tls_config: TLSConfig = TLSConfig()
    authorization: Authorization | None = None
    bearer_token: str | None = None
    bearer_token_file: str | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> _Credentials:
        given = [n for n in ("authorization", "bearer_token", "bearer_token_file") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(f"at most one of {', '.join(given)} must be configured")
        return self

    def token_file(self) -> str | None:
        """The file holding the bearer token, if any."""
        return self.authorization.credentials_file if self.authorization else self.bearer_token_file

    def token(self) -> str | None:
        """An inline bearer token, if any."""
        return self.authorization.credentials if self.authorization else self.bearer_token


class KubernetesSDConfig(_Credentials):
    """One ``kubernetes_sd_configs`` entry."""

    role: str
    api_server: str | None = None
    kubeconfig_file: str | None = None
    namespaces: Namespaces = Namespaces()
    selectors: list[Selector] = []

    @model_validator(mode="after")
    def _valid(self) -> KubernetesSDConfig:
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r} is not one of {', '.join(ROLES)}")
        if self.api_server and self.kubeconfig_file:
            raise ValueError("api_server and kubeconfig_file are mutually exclusive")
        for s in self.selectors:
            if s.role not in ROLES:
                raise ValueError(f"selector role {s.role!r} is not one of {', '.join(ROLES)}")
        return self


class KubeletSDConfig(_Credentials):
    """One ``kubelet_sd_configs`` entry; ``${VAR}`` in ``url`` comes from the environment (a DaemonSet
    passes the node's IP through the downward API)."""

    url: str = "https://localhost:10250"
    refresh_interval: Annotated[float, BeforeValidator(_seconds)] = 5.0
    namespaces: list[str] = []


def _resolve(base: Path | None, value: str | None) -> str | None:
    if value is None or base is None or Path(value).is_absolute():
        return value
    return str(base / value)


def _with_paths(raw: Mapping[str, Any], base: Path | None) -> dict[str, Any]:
    out = dict(raw)
    for key in ("kubeconfig_file", "bearer_token_file"):
        if isinstance(out.get(key), str):
            out[key] = _resolve(base, out[key])
    for section, keys in (("tls_config", ("ca_file", "cert_file", "key_file")),
                          ("authorization", ("credentials_file",))):
        if isinstance(out.get(section), dict):
            out[section] = {k: _resolve(base, v) if k in keys and isinstance(v, str) else v
                            for k, v in out[section].items()}
    return out


def parse_sd_configs(config: AgentConfig, inst: InstanceConfig) -> tuple[list[KubernetesSDConfig],
                                                                         list[KubeletSDConfig]]:
    """The validated SD entries of one scrape job. Raises :class:`ConfigError` naming file, job and key."""
    file = config.files[0] if config.files else None
    base = Path(file).parent if file else None
    job = inst.job_name or "?"
    out_k: list[KubernetesSDConfig] = []
    out_l: list[KubeletSDConfig] = []
    raw_kubelet: list[Any] = list(getattr(inst, "kubelet_sd_configs", None) or [])
    for kind, entries in (("kubernetes_sd_configs", inst.kubernetes_sd_configs), ("kubelet_sd_configs",
                                                                                raw_kubelet)):
        for i, raw in enumerate(entries):
            where = f"scrape_configs[{job}].{kind}[{i}]"
            if not isinstance(raw, dict):
                raise ConfigError("expected a mapping", "write each entry as role: …, api_server: …",
                                  file=file, key=where)
            unimplemented = [k for k in raw if k in _UNIMPLEMENTED]
            for k in unimplemented:
                log.warning("%s: %s.%s is not implemented by kubescrape and is ignored", file, where, k)
            data = _with_paths({k: v for k, v in raw.items() if k not in _UNIMPLEMENTED}, base)
            try:
                if kind == "kubernetes_sd_configs":
                    out_k.append(KubernetesSDConfig.model_validate(data))
                else:
                    out_l.append(KubeletSDConfig.model_validate(data))
            except ValidationError as e:
                err = e.errors()[0]
                key = ".".join([where, *(str(p) for p in err["loc"])])
                msg = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    msg = f"field {err['loc'][-1]} not found in Prometheus' {kind}"
                raise ConfigError(msg, "fix or remove the key (see Prometheus' kubernetes_sd_config)",
                                  file=file, key=key) from e
    return out_k, out_l


def api_config(sd: KubernetesSDConfig, *, environ: Mapping[str, str] | None = None) -> ApiConfig:
    """Where the apiserver of ``sd`` is: ``kubeconfig_file``, ``api_server`` with the entry's own TLS and
    credentials, or the pod's in-cluster configuration."""
    if sd.kubeconfig_file:
        return load_kubeconfig(sd.kubeconfig_file)
    if sd.api_server:
        tls = sd.tls_config
        return ApiConfig(sd.api_server.rstrip("/"), ca_file=tls.ca_file, cert_file=tls.cert_file,
                         key_file=tls.key_file, token_file=sd.token_file(), token=sd.token(),
                         insecure_skip_verify=tls.insecure_skip_verify, server_name=tls.server_name)
    return in_cluster_config(environ)


def kubernetes_discovery(sd: KubernetesSDConfig, on_update: OnUpdate, *,
                         client_factory: ClientFactory = ApiClient,
                         metrics: DiscoveryMetrics | None = None) -> KubernetesDiscovery:
    """The discovery of one ``kubernetes_sd_configs`` entry (not started)."""
    cfg = api_config(sd)
    namespaces = list(sd.namespaces.names)
    if sd.namespaces.own_namespace and cfg.namespace not in namespaces:
        namespaces.append(cfg.namespace)
    return KubernetesDiscovery(client_factory(cfg), sd.role, on_update, namespaces=namespaces,
                               selectors=[RoleSelector(s.role, s.label, s.field) for s in sd.selectors],
                               metrics=metrics)


def kubelet_discovery(sd: KubeletSDConfig, on_update: OnUpdate, *, client_factory: ClientFactory = ApiClient,
                      environ: Mapping[str, str] | None = None,
                      metrics: DiscoveryMetrics | None = None) -> KubeletDiscovery:
    """The node-local discovery of one ``kubelet_sd_configs`` entry (not started); without credentials it
    uses the pod's ServiceAccount token and CA, like Alloy's ``discovery.kubelet``."""
    env = os.environ if environ is None else environ
    url = re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), sd.url).rstrip("/")
    tls = sd.tls_config
    token_file, token = sd.token_file(), sd.token()
    ca_file = tls.ca_file
    if token_file is None and token is None and tls.cert_file is None:
        token_file = str(IN_CLUSTER_TOKEN_FILE)
        ca_file = ca_file or (None if tls.insecure_skip_verify else str(IN_CLUSTER_CA_FILE))
    cfg = ApiConfig(url, ca_file=ca_file, cert_file=tls.cert_file, key_file=tls.key_file,
                    token_file=token_file, token=token, insecure_skip_verify=tls.insecure_skip_verify,
                    server_name=tls.server_name)
    return KubeletDiscovery(client_factory(cfg), on_update, namespaces=sd.namespaces,
                            refresh_interval=sd.refresh_interval, metrics=metrics)


def job_discoveries(config: AgentConfig, inst: InstanceConfig, on_update: OnUpdate, *,
                    client_factory: ClientFactory = ApiClient,
                    metrics: DiscoveryMetrics | None = None) -> list[Discovery]:
    """Every discovery of one scrape job (not started)."""
    kube, kubelet = parse_sd_configs(config, inst)
    out: list[Discovery] = [
        kubernetes_discovery(sd, on_update, client_factory=client_factory, metrics=metrics) for sd in kube]
    out += [kubelet_discovery(sd, on_update, client_factory=client_factory, metrics=metrics)
            for sd in kubelet]
    return out
