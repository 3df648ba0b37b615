"""The pydantic models of the agent configuration: the validator, and the wording of every error.

Each model validates the class of the same name in :mod:`kubescrape.config.models` (and
:class:`kubescrape.relabel.RelabelConfig`): constructing one of those, or calling its ``model_validate``,
runs the model here and turns the result into the plain object (:mod:`kubescrape.config.plain`). Field
names, types and defaults are the same in both (tests/config/test_plain.py compares them); the bounds, the
conversions (durations, Categraf's header lists, URL credentials) and the checks are here, through the
plain functions of :mod:`kubescrape.config.checks` that the start-up resolver
(:mod:`kubescrape.config.resolve`) calls as well. See :mod:`kubescrape.config.models` for the bounds.

Imported only when something is not plainly valid, or built in Python: a plain configuration file starts
the agent without pydantic.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from kubescrape.config.checks import (
    DEFAULT_REGEX,
    DEFAULT_REPLACEMENT,
    DEFAULT_SEPARATOR,
    LABEL_NAME,
    at_least_min,
    check_label_names,
    check_url,
    finite,
    headers_from_categraf,
    positive_or_default,
    relabel_rule_error,
    to_seconds,
)
from kubescrape.goregex import compile_go_regex
from kubescrape.redact import split_userinfo

__all__ = [
    "AgentConfig", "GlobalConfig", "InstanceConfig", "LogConfig", "RelabelConfig", "Seconds", "StaticConfig",
    "WriterConfig", "WriterOptions",
]

Seconds = Annotated[float, BeforeValidator(to_seconds)]
"""A duration in seconds; accepts a number of seconds or a Go duration string."""

Headers = Annotated[dict[str, str], BeforeValidator(headers_from_categraf)]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


# Default factories written in Python rather than the builtins ``list``/``dict``: pydantic reads every default
# factory's signature when it builds a model, and a builtin's is parsed from its text signature with
# ``tokenize`` (whose large regex is compiled on first use): 1.7 % of the instructions to the first scrape.
def _empty_list() -> list[Any]:
    return []


def _empty_dict() -> dict[Any, Any]:
    return {}


Action = Literal[
    "replace", "keep", "drop", "keepequal", "dropequal", "hashmod", "labelmap", "labeldrop", "labelkeep",
    "lowercase", "uppercase",
]


class RelabelConfig(BaseModel):
    """One relabel rule, with Prometheus' defaults and validation (``Config.Validate``)."""

    model_config = _FROZEN

    source_labels: list[str] = Field(default_factory=_empty_list)
    separator: str = DEFAULT_SEPARATOR
    regex: str = DEFAULT_REGEX
    modulus: int = 0
    target_label: str = ""
    replacement: str = DEFAULT_REPLACEMENT
    action: Action = "replace"

    @field_validator("action", mode="before")
    @classmethod
    def _action_lower(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    @field_validator("source_labels")
    @classmethod
    def _source_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not LABEL_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid label name in source_labels")
        return v

    @field_validator("modulus")
    @classmethod
    def _modulus_non_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError("modulus must not be negative")
        return v

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, v: str) -> str:
        try:
            compile_go_regex(v)
        except re.error as exc:
            raise ValueError(f"regex {v!r} does not compile: {exc}") from None
        return v

    @model_validator(mode="after")
    def _validate(self) -> RelabelConfig:
        problem = relabel_rule_error(self.action, self.source_labels, self.separator, self.regex,
                                     self.modulus, self.target_label, self.replacement)
        if problem is not None:
            raise ValueError(problem)
        return self


class GlobalConfig(BaseModel):
    """Categraf's ``[global]`` table. ``hostname`` holds the already expanded value."""

    model_config = _FROZEN

    hostname: str = ""
    omit_hostname: bool = False
    interval: Seconds = 15.0
    labels: dict[str, str] = Field(default_factory=_empty_dict)
    providers: list[str] = Field(default_factory=lambda: ["local"])
    concurrency: int = -1
    precision: str = "ms"
    print_configs: bool = False
    # kubescrape extra: let config files set intervals under MIN_INTERVAL (tests, demos).
    allow_short_intervals: bool = False

    @field_validator("interval")
    @classmethod
    def _interval_default(cls, v: float) -> float:
        return positive_or_default(v, 15.0)

    @field_validator("labels")
    @classmethod
    def _labels_valid(cls, v: dict[str, str]) -> dict[str, str]:
        return check_label_names(v)


class WriterOptions(BaseModel):
    """Categraf's ``[writer_opt]``: ``batch`` samples per request, ``chan_size`` queue capacity."""

    model_config = _FROZEN

    batch: int = Field(default=2000, gt=0)
    chan_size: int = Field(default=10000, gt=0)


class WriterConfig(BaseModel):
    """One ``[[writers]]`` entry: a remote-write endpoint. Timeouts are seconds here (ms in Categraf TOML)."""

    model_config = _FROZEN

    url: str
    basic_auth_user: str = ""
    basic_auth_pass: str = ""
    headers: Headers = Field(default_factory=_empty_dict)
    timeout: Seconds = 5.0
    dial_timeout: Seconds = 2.5
    max_idle_conns_per_host: int = 100
    # TLS towards the backend (Categraf embeds tls.ClientConfig in the writer).
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_server_name: str | None = None
    insecure_skip_verify: bool = False
    # kubescrape extras: sharding and retries, as Prometheus' queue_config.
    min_shards: int = Field(default=1, ge=1)
    max_shards: int = Field(default=4, ge=1)
    max_retries: int = Field(
        default=-1, ge=-1,
        description="retries of a retryable failure (5xx, 429, network) before the batch is dropped and "
                    "counted (reason retries_exhausted); -1 = retry forever, as Prometheus; 0 = no retry",
    )
    min_backoff: Seconds = 0.03
    max_backoff: Seconds = 5.0

    @model_validator(mode="before")
    @classmethod
    def _credentials_from_url(cls, data: Any) -> Any:
        """``http://user:pass@host/…``: the credentials become basic auth (unless ``basic_auth_user`` is set,
        which wins, as in Categraf) and ``url`` keeps only the endpoint, so it is safe to show anywhere."""
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return data
        try:
            clean, user, password = split_userinfo(data["url"])
        except ValueError:
            return data  # the url validator explains what is wrong
        if user is None:
            return data
        out = {**data, "url": clean}
        if not out.get("basic_auth_user"):
            out["basic_auth_user"] = user
            out["basic_auth_pass"] = password or ""
        return out

    @field_validator("url")
    @classmethod
    def _url_http(cls, v: str) -> str:
        return check_url(v)

    @field_validator("timeout", "dial_timeout", "min_backoff", "max_backoff")
    @classmethod
    def _positive(cls, v: float) -> float:
        return at_least_min(v)

    @model_validator(mode="after")
    def _shards_ordered(self) -> WriterConfig:
        if self.min_shards > self.max_shards:
            raise ValueError(f"min_shards ({self.min_shards}) is greater than max_shards "
                             f"({self.max_shards})")
        if self.min_backoff > self.max_backoff:
            raise ValueError(f"min_backoff ({self.min_backoff}) is greater than max_backoff "
                             f"({self.max_backoff})")
        return self


class StaticConfig(BaseModel):
    """Prometheus' ``static_configs`` entry: targets (``__address__`` values, usually ``host:port``) and
    the labels they share. As in Prometheus an address is checked after relabeling, so a blackbox-style
    ``https://example.org`` target is fine as long as relabeling moves it out of ``__address__``."""

    model_config = _FROZEN

    targets: list[str] = Field(default_factory=_empty_list)
    labels: dict[str, str] = Field(default_factory=_empty_dict)

    @field_validator("labels")
    @classmethod
    def _labels_valid(cls, v: dict[str, str]) -> dict[str, str]:
        return check_label_names(v)


class InstanceConfig(BaseModel):
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

    model_config = _FROZEN

    urls: list[str] = Field(default_factory=_empty_list)
    url_label_key: str = "instance"
    url_label_value: str = ""
    url_label_pair: dict[str, str] = Field(default_factory=_empty_dict)
    labels: dict[str, str] = Field(default_factory=_empty_dict)
    interval_times: int = Field(default=1, ge=0)
    timeout: Seconds = 3.0
    bearer_token_file: str | None = None
    bearer_token_string: str | None = None
    username: str | None = None
    password: str | None = None
    headers: Headers = Field(default_factory=_empty_dict)
    ignore_metrics: list[str] = Field(default_factory=_empty_list)
    ignore_label_keys: list[str] = Field(default_factory=_empty_list)
    name_prefix: str = ""
    metrics_name_prefix: str = ""
    metrics_drop: list[str] = Field(default_factory=_empty_list)
    metrics_pass: list[str] = Field(default_factory=_empty_list)
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
    relabel_configs: list[RelabelConfig] = Field(default_factory=_empty_list)
    # kubescrape / Prometheus extras
    job: str | None = None
    honor_labels: bool = False
    honor_timestamps: bool = True
    # Prometheus' scrape option: ask for gzip. Off saves CPU on both sides when the target is on the same
    # node (the kubelet and kube-proxy over 127.0.0.1 or $HOSTIP): there is no network to save.
    enable_compression: bool = True
    body_size_limit: int = Field(default=64 << 20, ge=0, description="bytes; 0 = unlimited")
    # Prometheus' scrape limits, same names and meaning: exceeding one fails the whole scrape (up = 0).
    sample_limit: int = Field(default=0, ge=0, description="samples per scrape after relabeling; 0 = none")
    label_limit: int = Field(default=0, ge=0, description="labels per series; 0 = none")
    label_name_length_limit: int = Field(default=0, ge=0, description="bytes per label name; 0 = none")
    label_value_length_limit: int = Field(default=0, ge=0, description="bytes per label value; 0 = none")
    target_limit: int = Field(
        default=0, ge=0,
        description="targets of this instance after target relabeling; above it every one fails; 0 = none",
    )
    # Prometheus 2.48: staleness markers for series exposed with explicit timestamps too.
    track_timestamps_staleness: bool = False
    metric_relabel_configs: list[RelabelConfig] = Field(default_factory=_empty_list)
    target_relabel_configs: list[RelabelConfig] = Field(default_factory=_empty_list)
    # Prometheus scrape_config (set by the Prometheus loader; job_name switches to its target semantics).
    job_name: str | None = None
    static_configs: list[StaticConfig] = Field(default_factory=_empty_list)
    scheme: str = "http"
    metrics_path: str = "/metrics"
    params: dict[str, list[str]] = Field(default_factory=_empty_dict)
    scrape_interval: Seconds | None = None
    scrape_timeout: Seconds | None = None
    # The job's kubernetes_sd_configs as written (mappings), kept for the discovery module to consume.
    kubernetes_sd_configs: list[dict[str, Any]] = Field(default_factory=_empty_list)
    # kubelet_sd_configs (this node's pods from the kubelet's /pods), likewise read by kubescrape.discovery.
    kubelet_sd_configs: list[dict[str, Any]] = Field(default_factory=_empty_list)
    # remote_write's write_relabel_configs, shared by every writer (see config/prometheus.py).
    write_relabel_configs: list[RelabelConfig] = Field(default_factory=_empty_list)

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if v not in ("http", "https"):
            raise ValueError(f"scheme {v!r} is not supported: expected \"http\" or \"https\"")
        return v

    @field_validator("scrape_interval", "scrape_timeout")
    @classmethod
    def _job_durations(cls, v: float | None) -> float | None:
        return None if v is None else at_least_min(v)

    @field_validator("timeout")
    @classmethod
    def _timeout_default(cls, v: float) -> float:
        return positive_or_default(v, 3.0)

    @field_validator("urls")
    @classmethod
    def _urls_http(cls, v: list[str]) -> list[str]:
        for url in v:
            check_url(url)
        return v

    @field_validator("labels")
    @classmethod
    def _labels_valid(cls, v: dict[str, str]) -> dict[str, str]:
        return check_label_names(v)

    @field_validator("url_label_key")
    @classmethod
    def _url_label_key_valid(cls, v: str) -> str:
        if v == "":
            return "instance"
        if v != "-" and not LABEL_NAME.match(v):
            raise ValueError(
                f"invalid label name {v!r}: expected [a-zA-Z_][a-zA-Z0-9_]* or \"-\" (no url label)"
            )
        return v

    @field_validator("tls_min_version", "tls_max_version")
    @classmethod
    def _tls_version(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if v not in ("1.0", "1.1", "1.2", "1.3"):
            raise ValueError(f"unsupported TLS version {v!r}: expected \"1.0\", \"1.1\", \"1.2\" or \"1.3\"")
        return v

    @model_validator(mode="after")
    def _tls_versions_ordered(self) -> InstanceConfig:
        lo, hi = self.tls_min_version, self.tls_max_version
        if lo is not None and hi is not None and float(lo) > float(hi):
            raise ValueError(f"tls_min_version {lo!r} is higher than tls_max_version {hi!r}: no TLS version "
                             "is left to negotiate")
        return self


class LogConfig(BaseModel):
    """Categraf's ``[log]``: where the agent logs, and how a log file rotates.

    ``file_name``: ``stdout``, ``stderr`` or a path; a file rotates at ``max_size`` MB keeping
    ``max_backups`` old files (Categraf's lumberjack options; as there, ``max_size = 0`` means 100 MB and
    ``max_backups = 0`` keeps all). ``max_age`` and ``compress`` have no equivalent in Python's rotating
    handler: the loader warns when they are set for a log file. ``local_time`` has nothing to apply to
    (rotated files are numbered, not dated). :func:`kubescrape.config.logfile.log_handler` builds the
    handler.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    file_name: str = "stdout"
    max_size: int = Field(default=100, ge=0, description="MB before a log file rotates; 0 = 100")
    max_age: int = Field(default=1, ge=0, description="days (not applied)")
    max_backups: int = Field(default=1, ge=0, description="rotated files kept; 0 = all (as lumberjack)")
    local_time: bool = True
    compress: bool = False

    @field_validator("file_name")
    @classmethod
    def _file_name(cls, v: str) -> str:
        return v.strip() or "stdout"


class AgentConfig(BaseModel):
    """The whole agent configuration, resolved from a Categraf-layout directory.

    ``writers`` may be empty: ``kubescrape run --test`` needs none. The agent calls :meth:`require_writers`
    before it starts sending. ``warnings`` are the non-fatal findings of the loader (unknown options …);
    ``files`` the files that were read.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    global_: GlobalConfig = Field(default_factory=GlobalConfig, validation_alias="global")
    writer_opt: WriterOptions = Field(default_factory=WriterOptions)
    writers: list[WriterConfig] = Field(default_factory=_empty_list)
    instances: list[InstanceConfig] = Field(default_factory=_empty_list)
    input_interval: Seconds | None = Field(
        default=None, description="input.prometheus top-level `interval`; overrides the global interval"
    )
    log: LogConfig = Field(default_factory=LogConfig)
    warnings: list[str] = Field(default_factory=_empty_list)
    files: list[str] = Field(default_factory=_empty_list)

    @field_validator("input_interval")
    @classmethod
    def _input_interval(cls, v: float | None) -> float | None:
        # Non-positive: fall back to [global] interval (see scrape_interval), as Categraf.
        if v is None:
            return None
        finite(v)
        return at_least_min(v) if v > 0 else v
