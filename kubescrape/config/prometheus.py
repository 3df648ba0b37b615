"""Prometheus' configuration file as kubescrape's native format (``kubescrape run --config FILE.yml``).

:func:`load_prometheus_config` reads ``global``, ``scrape_configs`` (``static_configs``,
``kubernetes_sd_configs``, relabeling, scheme/path/params, TLS and credentials, limits) and
``remote_write`` into frozen models. As in Prometheus, a key Prometheus does not know is an error naming
the file and the key path; a key Prometheus knows but kubescrape does not implement (``rule_files``,
``alerting``, ``attach_metadata`` …) is named in a warning — or is an error with ``strict=True`` — so a
Prometheus-agent user's file runs unmodified and nothing is silently ignored.

:func:`scrape_settings` and :func:`kubernetes_discovery` turn one scrape job into what the scrape
manager and discovery need.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from kubescrape.auth import IN_CLUSTER_CA_FILE, IN_CLUSTER_TOKEN_FILE
from kubescrape.discovery.apiclient import ApiClient, ApiConfig, in_cluster_config, load_kubeconfig
from kubescrape.discovery.kubelet import KubeletDiscovery
from kubescrape.discovery.kubernetes import ROLES, KubernetesDiscovery, OnUpdate, RoleSelector
from kubescrape.discovery.metrics import DiscoveryMetrics
from kubescrape.discovery.targetgroup import TargetGroup
from kubescrape.errors import ConfigError
from kubescrape.relabel import RelabelConfig
from kubescrape.remote_write.queue import WriterSettings
from kubescrape.scrape.manager import ScrapeManager, ScrapeSettings
from kubescrape.scrape.targets import Target, TLSSettings

log = logging.getLogger("kubescrape.config")

__all__ = [
    "Discovery",
    "KubeletSDConfig",
    "KubernetesSDConfig",
    "PrometheusConfig",
    "RemoteWriteConfig",
    "ScrapeConfig",
    "attach_jobs",
    "kubelet_discovery",
    "kubernetes_discovery",
    "load_prometheus_config",
    "parse_prometheus_duration",
    "scrape_settings",
    "static_groups",
    "target_template",
    "writer_settings",
]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
_DURATION = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")


def parse_prometheus_duration(value: Any) -> float:
    """``model.ParseDuration``: ``1y2w3d4h5m6s7ms`` (units in this order, integers) → seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if text == "0":
        return 0.0
    m = _DURATION.match(text)
    if not text or not m:
        raise ValueError(f"not a valid duration string: {text!r} (use e.g. 15s, 1m30s, 500ms)")
    total = 0.0
    for group, unit in zip(range(2, 15, 2), ("y", "w", "d", "h", "m", "s", "ms"), strict=True):
        if m.group(group):
            total += int(m.group(group)) * _UNITS[unit]
    return total


Seconds = Annotated[float, BeforeValidator(parse_prometheus_duration)]
_UNITS_BYTES = {"": 1, "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "kib": 1 << 10,
                "mib": 1 << 20, "gib": 1 << 30}


def _bytes(value: Any) -> int:
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS_BYTES:
        raise ValueError(f"not a size: {value!r} (use e.g. 10MB)")
    return int(m.group(1)) * _UNITS_BYTES[m.group(2).lower()]


Bytes = Annotated[int, BeforeValidator(_bytes)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# Keys Prometheus accepts that kubescrape does not act on: named in a warning (an error when strict).
_UNIMPLEMENTED: dict[str, tuple[str, ...]] = {
    "": ("rule_files", "alerting", "remote_read", "storage", "tracing", "scrape_config_files", "runtime",
         "otlp"),
    "global": ("evaluation_interval", "rule_query_offset", "query_log_file", "scrape_failure_log_file",
               "scrape_protocols", "metric_name_validation_scheme", "metric_name_escaping_scheme"),
    "scrape": ("scrape_protocols", "scrape_classic_histograms", "native_histogram_bucket_limit",
               "native_histogram_min_bucket_factor", "track_timestamps_staleness", "proxy_url",
               "no_proxy", "proxy_from_environment", "proxy_connect_header", "oauth2", "follow_redirects",
               "enable_http2", "http_headers", "scrape_failure_log_file", "fallback_scrape_protocol",
               "always_scrape_classic_histograms", "convert_classic_histograms_to_nhcb",
               "file_sd_configs", "http_sd_configs", "dns_sd_configs", "consul_sd_configs",
               "ec2_sd_configs", "azure_sd_configs", "gce_sd_configs", "openstack_sd_configs",
               "digitalocean_sd_configs", "docker_sd_configs", "dockerswarm_sd_configs",
               "eureka_sd_configs", "hetzner_sd_configs", "ionos_sd_configs", "kuma_sd_configs",
               "lightsail_sd_configs", "linode_sd_configs", "marathon_sd_configs", "nerve_sd_configs",
               "nomad_sd_configs", "ovhcloud_sd_configs", "puppetdb_sd_configs", "scaleway_sd_configs",
               "serverset_sd_configs", "triton_sd_configs", "uyuni_sd_configs", "vultr_sd_configs",
               "scrape_native_histograms", "metric_name_validation_scheme", "metric_name_escaping_scheme"),
    "kubernetes_sd": ("attach_metadata", "proxy_url", "no_proxy", "proxy_from_environment",
                      "proxy_connect_header", "oauth2", "follow_redirects", "enable_http2", "http_headers",
                      "basic_auth"),
    "remote_write": ("metadata_config", "sigv4", "azuread", "google_iam", "oauth2", "proxy_url", "no_proxy",
                     "proxy_from_environment", "proxy_connect_header", "follow_redirects", "enable_http2",
                     "send_exemplars", "send_native_histograms", "round_robin_dns", "protobuf_message",
                     "http_headers"),
}


class TLSConfig(_Model):
    """``tls_config``."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: str | None = None
    max_version: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    key_file_password: str | None = Field(default=None, exclude=True)


class Authorization(_Model):
    """``authorization``: a credential of ``type`` (default Bearer)."""

    type: str = "Bearer"
    credentials: str | None = None
    credentials_file: str | None = None


class BasicAuth(_Model):
    """``basic_auth``."""

    username: str = ""
    username_file: str | None = None
    password: str | None = None
    password_file: str | None = None


class StaticConfig(_Model):
    """``static_configs`` entry."""

    targets: list[str] = []
    labels: dict[str, str] = {}


class Namespaces(_Model):
    """``namespaces`` of a Kubernetes SD config."""

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
        if self.authorization is not None:
            return self.authorization.credentials_file
        return self.bearer_token_file

    def token(self) -> str | None:
        """An inline bearer token, if any."""
        if self.authorization is not None:
            return self.authorization.credentials
        return self.bearer_token


class KubernetesSDConfig(_Credentials):
    """``kubernetes_sd_configs`` entry."""

    model_config = ConfigDict(frozen=True, extra="allow")

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
    """``kubelet_sd_configs`` entry, a kubescrape extension (Grafana Alloy's ``discovery.kubelet``): the pods
    of this node from the kubelet's ``/pods``, with the ``pod`` role's labels. ``${VAR}`` in ``url`` is
    taken from the environment (a DaemonSet passes the node's IP with the downward API)."""

    url: str = "https://localhost:10250"
    refresh_interval: Seconds = 5.0
    namespaces: list[str] = []


class ScrapeConfig(_Credentials):
    """``scrape_configs`` entry."""

    model_config = ConfigDict(frozen=True, extra="allow")

    job_name: str
    scrape_interval: Seconds | None = None
    scrape_timeout: Seconds | None = None
    metrics_path: str = "/metrics"
    scheme: str = "http"
    params: dict[str, list[str]] = {}
    honor_labels: bool = False
    honor_timestamps: bool = True
    enable_compression: bool = True
    body_size_limit: Bytes = 0
    sample_limit: int = 0
    label_limit: int = 0
    label_name_length_limit: int = 0
    label_value_length_limit: int = 0
    target_limit: int = 0
    keep_dropped_targets: int = 0
    basic_auth: BasicAuth | None = None
    static_configs: list[StaticConfig] = []
    kubernetes_sd_configs: list[KubernetesSDConfig] = []
    kubelet_sd_configs: list[KubeletSDConfig] = []
    relabel_configs: list[RelabelConfig] = []
    metric_relabel_configs: list[RelabelConfig] = []

    @model_validator(mode="after")
    def _scheme(self) -> ScrapeConfig:
        if self.scheme not in ("http", "https"):
            raise ValueError(f"scheme {self.scheme!r} must be http or https")
        return self


class QueueConfig(_Model):
    """``queue_config`` of a remote write."""

    capacity: int = 10000
    max_shards: int = 50
    min_shards: int = 1
    max_samples_per_send: int = 2000
    batch_send_deadline: Seconds = 5.0
    min_backoff: Seconds = 0.03
    max_backoff: Seconds = 5.0
    retry_on_http_429: bool = Field(default=True, exclude=True)
    sample_age_limit: Seconds = 0.0


class RemoteWriteConfig(_Credentials):
    """``remote_write`` entry."""

    model_config = ConfigDict(frozen=True, extra="allow")

    url: str
    name: str = ""
    remote_timeout: Seconds = 30.0
    headers: dict[str, str] = {}
    basic_auth: BasicAuth | None = None
    queue_config: QueueConfig = QueueConfig()
    write_relabel_configs: list[RelabelConfig] = []


class GlobalSection(_Model):
    """``global``."""

    model_config = ConfigDict(frozen=True, extra="allow")

    scrape_interval: Seconds = 60.0
    scrape_timeout: Seconds = 10.0
    external_labels: dict[str, str] = {}
    body_size_limit: Bytes = 0
    sample_limit: int = 0
    label_limit: int = 0
    label_name_length_limit: int = 0
    label_value_length_limit: int = 0
    target_limit: int = 0
    keep_dropped_targets: int = 0


class PrometheusConfig(_Model):
    """A whole Prometheus configuration file."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    global_: GlobalSection = Field(default=GlobalSection(), alias="global")
    scrape_configs: list[ScrapeConfig] = []
    remote_write: list[RemoteWriteConfig] = []
    source: str = Field(default="", exclude=True)
    warnings: tuple[str, ...] = Field(default=(), exclude=True)

    def interval(self, job: ScrapeConfig) -> float:
        """The job's scrape interval (the global one by default)."""
        return job.scrape_interval if job.scrape_interval is not None else self.global_.scrape_interval

    def timeout(self, job: ScrapeConfig) -> float:
        """The job's scrape timeout: its own, else the global one, never longer than the interval."""
        t = job.scrape_timeout if job.scrape_timeout is not None else self.global_.scrape_timeout
        return min(t, self.interval(job)) if job.scrape_timeout is None else t


def _unimplemented(doc: dict[str, Any]) -> list[str]:
    """Dotted paths of keys Prometheus knows that kubescrape does not implement."""
    found = [k for k in _UNIMPLEMENTED[""] if k in doc]
    g = doc.get("global") or {}
    found += [f"global.{k}" for k in _UNIMPLEMENTED["global"] if isinstance(g, dict) and k in g]
    for i, sc in enumerate(doc.get("scrape_configs") or ()):
        if not isinstance(sc, dict):
            continue
        name = sc.get("job_name", i)
        found += [f"scrape_configs[{name}].{k}" for k in _UNIMPLEMENTED["scrape"] if k in sc]
        for j, sd in enumerate(sc.get("kubernetes_sd_configs") or ()):
            if isinstance(sd, dict):
                found += [f"scrape_configs[{name}].kubernetes_sd_configs[{j}].{k}"
                          for k in _UNIMPLEMENTED["kubernetes_sd"] if k in sd]
        tls = sc.get("tls_config") or {}
        found += [f"scrape_configs[{name}].tls_config.{k}" for k in ("ca", "cert", "key", "max_version")
                  if isinstance(tls, dict) and k in tls]
    for i, rw in enumerate(doc.get("remote_write") or ()):
        if isinstance(rw, dict):
            found += [f"remote_write[{i}].{k}" for k in _UNIMPLEMENTED["remote_write"] if k in rw]
    return found


def _strip(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` without the unimplemented keys, so that the models see only what they implement."""
    out = {k: v for k, v in doc.items() if k not in _UNIMPLEMENTED[""]}
    if isinstance(out.get("global"), dict):
        out["global"] = {k: v for k, v in out["global"].items() if k not in _UNIMPLEMENTED["global"]}
    scs = []
    for sc in out.get("scrape_configs") or ():
        if isinstance(sc, dict):
            sc = {k: v for k, v in sc.items() if k not in _UNIMPLEMENTED["scrape"]}
            if isinstance(sc.get("kubernetes_sd_configs"), list):
                sc["kubernetes_sd_configs"] = [
                    {k: v for k, v in sd.items() if k not in _UNIMPLEMENTED["kubernetes_sd"]}
                    if isinstance(sd, dict) else sd for sd in sc["kubernetes_sd_configs"]]
        scs.append(sc)
    if "scrape_configs" in out:
        out["scrape_configs"] = scs
    if isinstance(out.get("remote_write"), list):
        out["remote_write"] = [{k: v for k, v in rw.items() if k not in _UNIMPLEMENTED["remote_write"]}
                               if isinstance(rw, dict) else rw for rw in out["remote_write"]]
    return out


def _loc(loc: tuple[int | str, ...], doc: dict[str, Any]) -> str:
    parts: list[str] = []
    cur: Any = doc
    for p in loc:
        if isinstance(p, int):
            name = cur[p].get("job_name") if isinstance(cur, list) and p < len(cur) and isinstance(
                cur[p], dict) else None
            parts[-1] += f"[{name or p}]"
            cur = cur[p] if isinstance(cur, list) and p < len(cur) else None
        else:
            parts.append(str(p))
            cur = cur.get(p) if isinstance(cur, dict) else None
    return ".".join(parts)


def load_prometheus_config(path: str | Path, *, strict: bool = False) -> PrometheusConfig:
    """Read a Prometheus configuration file. Raises :class:`ConfigError` naming the file and key."""
    where = str(path)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read the Prometheus configuration: {e.strerror or e}",
                          "check --config", file=where) from e
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise ConfigError(f"not valid YAML: {getattr(e, 'problem', e)}", "fix the YAML syntax", file=where,
                          line=line + 1 if line is not None else None) from e
    if not isinstance(doc, dict):
        raise ConfigError("the file is not a YAML mapping", "a Prometheus configuration starts with "
                          "global:/scrape_configs:", file=where)
    unimplemented = _unimplemented(doc)
    if unimplemented and strict:
        raise ConfigError(f"not implemented by kubescrape: {', '.join(unimplemented)}",
                          "remove these options, or run without --strict to ignore them with a warning",
                          file=where)
    try:
        cfg = PrometheusConfig.model_validate(_strip(doc))
    except ValidationError as e:
        err = e.errors()[0]
        key = _loc(tuple(err["loc"]), doc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"field {err['loc'][-1]} not found in Prometheus' configuration"
        raise ConfigError(msg, "fix or remove the key (see the Prometheus configuration reference)",
                          file=where, key=key) from e
    extra = _extra_keys(cfg)
    if extra:
        raise ConfigError(f"unknown field(s) {', '.join(extra)}",
                          "fix or remove the key (see the Prometheus configuration reference)", file=where)
    names = [j.job_name for j in cfg.scrape_configs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"found multiple scrape configs with job name {dup[0]!r}",
                          "give every scrape config its own job_name", file=where)
    warnings = tuple(f"{where}: {k} is not implemented by kubescrape and is ignored" for k in unimplemented)
    for w in warnings:
        log.warning("%s", w)
    return cfg.model_copy(update={"source": where, "warnings": warnings})


def _extra_keys(cfg: PrometheusConfig) -> list[str]:
    """Keys that are neither Prometheus' nor implemented (models allowing extras, checked here)."""
    out = [k for k in (cfg.model_extra or {})]
    out += [f"global.{k}" for k in (cfg.global_.model_extra or {})]
    for j in cfg.scrape_configs:
        out += [f"scrape_configs[{j.job_name}].{k}" for k in (j.model_extra or {})]
        for i, sd in enumerate(j.kubernetes_sd_configs):
            out += [f"scrape_configs[{j.job_name}].kubernetes_sd_configs[{i}].{k}"
                    for k in (sd.model_extra or {})]
    for i, rw in enumerate(cfg.remote_write):
        out += [f"remote_write[{i}].{k}" for k in (rw.model_extra or {})]
    return out


def scrape_settings(cfg: PrometheusConfig, job: ScrapeConfig) -> ScrapeSettings:
    """What the scrape manager adds to and does with ``job``'s discovered targets."""
    return ScrapeSettings(job=job.job_name, scheme=job.scheme, metrics_path=job.metrics_path,
                          interval=cfg.interval(job), timeout=cfg.timeout(job), params=job.params,
                          relabel_configs=tuple(job.relabel_configs))


def target_template(cfg: PrometheusConfig, job: ScrapeConfig) -> Target:
    """Every option of ``job``'s targets but the URL and labels (the scrape manager fills those in)."""
    tls = job.tls_config
    basic = job.basic_auth
    password = basic.password if basic is not None else None
    if basic is not None and basic.password_file:
        try:
            password = Path(basic.password_file).read_text().strip()
        except OSError as e:
            raise ConfigError(f"cannot read basic_auth.password_file {basic.password_file}: {e.strerror}",
                              "make the file readable", file=cfg.source, key=f"scrape_configs[{job.job_name}]"
                              ) from e
    body_limit = job.body_size_limit or cfg.global_.body_size_limit
    return Target(
        url="", name=job.job_name, labels=(), interval=cfg.interval(job), timeout=cfg.timeout(job),
        honor_labels=job.honor_labels, honor_timestamps=job.honor_timestamps,
        enable_compression=job.enable_compression, body_size_limit=body_limit,
        tls=TLSSettings(use_tls=True, ca_file=tls.ca_file, cert_file=tls.cert_file, key_file=tls.key_file,
                        server_name=tls.server_name, insecure_skip_verify=tls.insecure_skip_verify,
                        min_version=_tls_version(tls.min_version)),
        bearer_token_file=job.token_file(), bearer_token_string=job.token(),
        username=basic.username if basic is not None else None, password=password,
        headers=(), metric_relabel_configs=tuple(job.metric_relabel_configs), ignore_metrics=(),
        ignore_label_keys=(),
        sample_limit=job.sample_limit or cfg.global_.sample_limit,
        label_limit=job.label_limit or cfg.global_.label_limit,
        label_name_length_limit=job.label_name_length_limit or cfg.global_.label_name_length_limit,
        label_value_length_limit=job.label_value_length_limit or cfg.global_.label_value_length_limit,
    )


def _tls_version(text: str | None) -> str | None:
    """Prometheus' ``TLS12`` → ``1.2``."""
    if not text:
        return None
    m = re.fullmatch(r"TLS1(\d)", text.strip())
    return f"1.{m.group(1)}" if m else None


def api_config(sd: KubernetesSDConfig, *, environ: dict[str, str] | None = None) -> ApiConfig:
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
                         client_factory: Callable[[ApiConfig], ApiClient] = ApiClient,
                         metrics: DiscoveryMetrics | None = None) -> KubernetesDiscovery:
    """The discovery of one ``kubernetes_sd_configs`` entry (not started)."""
    cfg = api_config(sd)
    namespaces = list(sd.namespaces.names)
    if sd.namespaces.own_namespace and cfg.namespace not in namespaces:
        namespaces.append(cfg.namespace)
    return KubernetesDiscovery(client_factory(cfg), sd.role, on_update, namespaces=namespaces,
                               selectors=[RoleSelector(s.role, s.label, s.field) for s in sd.selectors],
                               metrics=metrics)


def static_groups(job: ScrapeConfig) -> list[TargetGroup]:
    """``static_configs`` as target groups (source ``static/<job>/<index>``, as Prometheus' ``static/0``)."""
    return [TargetGroup(f"static/{job.job_name}/{i}", tuple({"__address__": t} for t in sc.targets),
                        dict(sc.labels)) for i, sc in enumerate(job.static_configs)]


def kubelet_discovery(sd: KubeletSDConfig, on_update: OnUpdate, *,
                      client_factory: Callable[[ApiConfig], ApiClient] = ApiClient,
                      environ: dict[str, str] | None = None,
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


Discovery = KubernetesDiscovery | KubeletDiscovery


def attach_jobs(cfg: PrometheusConfig, manager: ScrapeManager, *,
                client_factory: Callable[[ApiConfig], ApiClient] = ApiClient,
                metrics: DiscoveryMetrics | None = None) -> list[Discovery]:
    """Register every scrape job with ``manager``, feed it the static targets, and return the (not yet
    started) Kubernetes discoveries that will feed it the rest. The caller owns them: ``await d.start()``
    each, ``manager.start()``, and on shutdown ``await d.stop()`` and ``await d.client.close()``."""
    discoveries: list[Discovery] = []
    for job in cfg.scrape_configs:
        manager.add_job(scrape_settings(cfg, job), target_template(cfg, job))
        manager.update(job.job_name, static_groups(job))

        def feed(groups: list[TargetGroup], name: str = job.job_name) -> None:
            manager.update(name, groups)

        for sd in job.kubernetes_sd_configs:
            discoveries.append(kubernetes_discovery(sd, feed, client_factory=client_factory, metrics=metrics))
        for ksd in job.kubelet_sd_configs:
            discoveries.append(kubelet_discovery(ksd, feed, client_factory=client_factory, metrics=metrics))
    return discoveries


def writer_settings(cfg: PrometheusConfig) -> list[WriterSettings]:
    """``remote_write`` entries as delivery settings: ``queue_config`` maps to batch (max_samples_per_send),
    queue capacity, shards, backoff and flush deadline (batch_send_deadline). Options the sender cannot
    honour (bearer credentials, write_relabel_configs) are named in a warning."""
    out = []
    for i, rw in enumerate(cfg.remote_write):
        q = rw.queue_config
        basic = rw.basic_auth
        password = basic.password if basic is not None else None
        if basic is not None and basic.password_file:
            password = Path(basic.password_file).read_text().strip()
        unsupported = [k for k in ("authorization", "bearer_token", "bearer_token_file",
                                   "write_relabel_configs") if getattr(rw, k)]
        if rw.tls_config.server_name or rw.tls_config.min_version:
            unsupported.append("tls_config.server_name/min_version")
        for k in unsupported:
            log.warning("%s: remote_write[%d].%s is not implemented by kubescrape's sender and is ignored",
                        cfg.source, i, k)
        out.append(WriterSettings(
            url=rw.url, name=rw.name or rw.url.split("://", 1)[-1].rstrip("/"),
            headers=tuple(rw.headers.items()),
            basic_auth=(basic.username, password or "") if basic is not None else None,
            timeout=rw.remote_timeout, batch=q.max_samples_per_send, queue_capacity=q.capacity,
            min_shards=q.min_shards, max_shards=q.max_shards, min_backoff=q.min_backoff,
            max_backoff=q.max_backoff, flush_deadline=q.batch_send_deadline,
            ca_file=rw.tls_config.ca_file, cert_file=rw.tls_config.cert_file, key_file=rw.tls_config.key_file,
            insecure_skip_verify=rw.tls_config.insecure_skip_verify,
        ))
    return out
