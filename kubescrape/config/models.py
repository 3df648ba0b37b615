"""The agent configuration: plain frozen objects, validated by pydantic models on demand.

The shape follows Categraf (``config.toml`` + ``input.prometheus/*.toml``); :mod:`kubescrape.config.categraf`
reads those files into these models. All durations are stored as float seconds. The models can also be
built directly in Python (tests, generated configs): there, every duration is in seconds and may also be a
Go duration string such as ``"15s"`` or ``"2m30s"``.

Bounds (each violation is a ``ValueError`` naming the value and what is allowed; the Categraf loader turns
it into a :class:`~kubescrape.errors.ConfigError` with file and line):

* every duration is finite (``inf``/``nan`` are rejected);
* scrape intervals and timeouts, writer timeouts and backoffs are at least :data:`MIN_DURATION` (1 ms, the
  resolution of Prometheus durations: ``"1ns"`` is as invalid here as in Prometheus). The Categraf loader
  also requires intervals of at least :data:`MIN_INTERVAL` (1 s) unless ``[global] allow_short_intervals =
  true`` (a kubescrape extra for tests and demos): a sub-second interval in a production file is a typo;
* Categraf's "non-positive means the default" is kept for ``interval`` and instance ``timeout``; writer
  ``timeout``/``dial_timeout``/backoffs must be positive (0 would spin);
* URLs are ``http``/``https`` with a host, a port in 1-65535 and no whitespace or control characters;
  userinfo (``user:pass@``) is allowed and handled by :mod:`kubescrape.redact`.

The classes here are what the agent reads (:mod:`kubescrape.config.plain`): frozen dataclasses, built
without pydantic by the start-up resolver (:mod:`kubescrape.config.resolve`) when a file is plainly valid,
and otherwise — and whenever they are constructed in Python — validated by the pydantic model of the same
name in :mod:`kubescrape.config.schema`, which decides every error and its message.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from kubescrape.config.checks import (
    MIN_DURATION,
    MIN_INTERVAL,
    check_url,
    format_prometheus_duration,
    parse_go_duration,
    parse_prometheus_duration,
)
from kubescrape.config.plain import Plain
from kubescrape.errors import ConfigError
from kubescrape.redact import SECRET, SECRET_HEADERS, redact_url, safe_name
from kubescrape.relabel import RelabelConfig

__all__ = [
    "MIN_DURATION",
    "MIN_INTERVAL",
    "AgentConfig",
    "GlobalConfig",
    "InstanceConfig",
    "LogConfig",
    "StaticConfig",
    "WriterConfig",
    "WriterOptions",
    "check_url",
    "format_prometheus_duration",
    "has_discovery",
    "parse_go_duration",
    "parse_prometheus_duration",
]


class _Model(Plain):
    @classmethod
    def _schema(cls) -> Any:
        from kubescrape.config import schema

        return getattr(schema, cls.__name__)


def _redact_fields(section: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if section.get(key):
            section[key] = SECRET
    if "url" in section:
        section["url"] = redact_url(section["url"])
    headers = section.get("headers")
    if isinstance(headers, dict):
        section["headers"] = {k: SECRET if k.lower() in SECRET_HEADERS else v for k, v in headers.items()}


_SECRET_OPTIONS = {"password", "bearer_token", "credentials", "client_secret"}


def _redact_nested(value: Any) -> Any:
    """Prometheus-style options as written (a discovery's HTTP client settings): secrets hidden."""
    if isinstance(value, dict):
        return {k: SECRET if k in _SECRET_OPTIONS and v else _redact_nested(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_nested(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


class GlobalConfig(_Model):
    """Categraf's ``[global]`` table. ``hostname`` holds the already expanded value."""

    hostname: str = ""
    omit_hostname: bool = False
    interval: float = 15.0
    labels: dict[str, str] = field(default_factory=dict)
    providers: list[str] = field(default_factory=lambda: ["local"])
    concurrency: int = -1
    precision: str = "ms"
    print_configs: bool = False
    # kubescrape extra: let config files set intervals under MIN_INTERVAL (tests, demos).
    allow_short_intervals: bool = False


class WriterOptions(_Model):
    """Categraf's ``[writer_opt]``: ``batch`` samples per request, ``chan_size`` queue capacity."""

    batch: int = 2000
    chan_size: int = 10000


class WriterConfig(_Model):
    """One ``[[writers]]`` entry: a remote-write endpoint. Timeouts are seconds here (ms in Categraf TOML).
    Credentials in the URL have moved to ``basic_auth_user``/``basic_auth_pass``."""

    url: str
    basic_auth_user: str = ""
    basic_auth_pass: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 5.0
    dial_timeout: float = 2.5
    max_idle_conns_per_host: int = 100
    # TLS towards the backend (Categraf embeds tls.ClientConfig in the writer).
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_server_name: str | None = None
    insecure_skip_verify: bool = False
    # kubescrape extras: sharding and retries, as Prometheus' queue_config. max_retries: retries of a
    # retryable failure before the batch is dropped and counted; -1 = forever, as Prometheus; 0 = none.
    min_shards: int = 1
    max_shards: int = 4
    max_retries: int = -1
    min_backoff: float = 0.03
    max_backoff: float = 5.0

    @property
    def safe_name(self) -> str:
        """host[:port]/path of the endpoint, without credentials: the writer's name and spool directory."""
        return safe_name(self.url)


class StaticConfig(_Model):
    """Prometheus' ``static_configs`` entry: targets (``__address__`` values, usually ``host:port``) and
    the labels they share. As in Prometheus an address is checked after relabeling, so a blackbox-style
    ``https://example.org`` target is fine as long as relabeling moves it out of ``__address__``."""

    targets: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)


class InstanceConfig(_Model):
    """One ``[[instances]]`` entry of ``input.prometheus``: Categraf's options plus Prometheus scrape extras.

    ``relabel_configs`` keep their Categraf meaning: they run on every series (``__name__`` included) after
    the target labels are merged, like Prometheus' ``metric_relabel_configs`` (which run first).
    ``target_relabel_configs`` are Prometheus' ``relabel_configs``: they run once on the target labels with
    ``__address__``, ``__scheme__`` and ``__metrics_path__``.

    With ``job_name`` set the instance is one Prometheus ``scrape_config``
    (:mod:`kubescrape.config.prometheus`): its targets are the ``static_configs`` (``urls`` is unused) and
    they get Prometheus' target labels exactly — ``job``, ``instance`` defaulting to ``__address__`` after
    ``target_relabel_configs``, ``__scheme__``/``__metrics_path__``/``__param_*`` from ``scheme``,
    ``metrics_path`` and ``params``, ``__scrape_interval__``/``__scrape_timeout__`` from
    ``scrape_interval``/``scrape_timeout`` — and no Categraf URL label.
    """

    urls: list[str] = field(default_factory=list)
    url_label_key: str = "instance"
    url_label_value: str = ""
    url_label_pair: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    interval_times: int = 1
    timeout: float = 3.0
    bearer_token_file: str | None = None
    bearer_token_string: str | None = None
    username: str | None = None
    password: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    ignore_metrics: list[str] = field(default_factory=list)
    ignore_label_keys: list[str] = field(default_factory=list)
    name_prefix: str = ""
    metrics_name_prefix: str = ""
    metrics_drop: list[str] = field(default_factory=list)
    metrics_pass: list[str] = field(default_factory=list)
    duplication_allowed: bool = False
    use_tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_key_pwd: str | None = None
    tls_server_name: str | None = None
    insecure_skip_verify: bool = False
    tls_min_version: str | None = None
    tls_max_version: str | None = None
    relabel_configs: list[RelabelConfig] = field(default_factory=list)
    # kubescrape / Prometheus extras
    job: str | None = None
    honor_labels: bool = False
    honor_timestamps: bool = True
    # Prometheus' scrape option: ask for gzip. Off saves CPU on both sides when the target is on the same
    # node (the kubelet and kube-proxy over 127.0.0.1 or $HOSTIP): there is no network to save.
    enable_compression: bool = True
    body_size_limit: int = 64 << 20  # bytes; 0 = unlimited
    # Prometheus' scrape limits, same names and meaning: exceeding one fails the whole scrape (up = 0);
    # 0 = none. sample_limit counts samples after relabeling, target_limit targets after target relabeling.
    sample_limit: int = 0
    label_limit: int = 0
    label_name_length_limit: int = 0
    label_value_length_limit: int = 0
    target_limit: int = 0
    # Prometheus 2.48: staleness markers for series exposed with explicit timestamps too.
    track_timestamps_staleness: bool = False
    metric_relabel_configs: list[RelabelConfig] = field(default_factory=list)
    target_relabel_configs: list[RelabelConfig] = field(default_factory=list)
    # Prometheus scrape_config (set by the Prometheus loader; job_name switches to its target semantics).
    job_name: str | None = None
    static_configs: list[StaticConfig] = field(default_factory=list)
    scheme: str = "http"
    metrics_path: str = "/metrics"
    params: dict[str, list[str]] = field(default_factory=dict)
    scrape_interval: float | None = None
    scrape_timeout: float | None = None
    # The job's kubernetes_sd_configs as written (mappings), kept for the discovery module to consume.
    kubernetes_sd_configs: list[dict[str, Any]] = field(default_factory=list)
    # kubelet_sd_configs (this node's pods from the kubelet's /pods), likewise read by kubescrape.discovery.
    kubelet_sd_configs: list[dict[str, Any]] = field(default_factory=list)
    # remote_write's write_relabel_configs, shared by every writer (see config/prometheus.py).
    write_relabel_configs: list[RelabelConfig] = field(default_factory=list)


class LogConfig(_Model):
    """Categraf's ``[log]``: where the agent logs, and how a log file rotates.

    ``file_name``: ``stdout``, ``stderr`` or a path; a file rotates at ``max_size`` MB keeping
    ``max_backups`` old files (Categraf's lumberjack options; as there, ``max_size = 0`` means 100 MB and
    ``max_backups = 0`` keeps all). ``max_age`` and ``compress`` have no equivalent in Python's rotating
    handler: the loader warns when they are set for a log file. ``local_time`` has nothing to apply to
    (rotated files are numbered, not dated). :func:`kubescrape.config.logfile.log_handler` builds the
    handler.
    """

    file_name: str = "stdout"
    max_size: int = 100  # MB before a log file rotates; 0 = 100
    max_age: int = 1  # days (not applied)
    max_backups: int = 1  # rotated files kept; 0 = all (as lumberjack)
    local_time: bool = True
    compress: bool = False


class AgentConfig(_Model):
    """The whole agent configuration, resolved from a Categraf-layout directory.

    ``writers`` may be empty: ``kubescrape run --test`` needs none. The agent calls :meth:`require_writers`
    before it starts sending. ``warnings`` are the non-fatal findings of the loader (unknown options …);
    ``files`` the files that were read. ``input_interval`` is input.prometheus' top-level ``interval``,
    which overrides the global interval.
    """

    global_: GlobalConfig = field(default_factory=GlobalConfig.model_construct)
    writer_opt: WriterOptions = field(default_factory=WriterOptions.model_construct)
    writers: list[WriterConfig] = field(default_factory=list)
    instances: list[InstanceConfig] = field(default_factory=list)
    input_interval: float | None = None
    log: LogConfig = field(default_factory=LogConfig.model_construct)
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def redacted(self) -> dict[str, Any]:
        """The configuration as plain data with every secret replaced by ``<secret>`` and every URL without
        its userinfo: what ``print_configs``, ``--test``, doctor or a status page may show."""
        data = self.model_dump(mode="json", by_alias=True)
        for writer in data.get("writers", []):
            _redact_fields(writer, ("basic_auth_pass",))
        for inst in data.get("instances", []):
            inst["urls"] = [redact_url(u) for u in inst.get("urls", [])]
            _redact_fields(inst, ("password", "bearer_token_string", "tls_key_pwd"))
            inst["kubernetes_sd_configs"] = _redact_nested(inst.get("kubernetes_sd_configs", []))
            inst["kubelet_sd_configs"] = _redact_nested(inst.get("kubelet_sd_configs", []))
        return data

    def require_writers(self) -> None:
        """Raise ConfigError when no remote-write endpoint is configured (all but test mode need one)."""
        if not self.writers:
            where = self.files[0] if self.files else None
            raise ConfigError(
                "no remote-write endpoint: config.toml has no [[writers]] and no --writer-url was given",
                "add a [[writers]] table with url = \"http://…/api/v1/write\" to config.toml, pass "
                "--writer-url, or use --test to scrape once without writing",
                file=where,
                key="writers",
            )

    @property
    def scrape_interval(self) -> float:
        """Base scrape interval (s): input.prometheus ``interval`` if positive, else ``[global] interval``."""
        if self.input_interval is not None and self.input_interval > 0:
            return self.input_interval
        return self.global_.interval


def has_discovery(config: AgentConfig) -> bool:
    """True when some scrape job discovers its targets (``kubernetes_sd_configs`` or ``kubelet_sd_configs``).

    Here, next to the models, so the agent can ask without importing the discovery machinery."""
    return any(inst.job_name is not None and (inst.kubernetes_sd_configs or inst.kubelet_sd_configs)
               for inst in config.instances)
