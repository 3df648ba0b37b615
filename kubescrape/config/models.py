"""Pydantic models of the agent configuration.

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
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from kubescrape.errors import ConfigError
from kubescrape.redact import SECRET, SECRET_HEADERS, redact_text, redact_url, safe_name, split_userinfo
from kubescrape.relabel import RelabelConfig

__all__ = [
    "MIN_DURATION",
    "MIN_INTERVAL",
    "AgentConfig",
    "GlobalConfig",
    "InstanceConfig",
    "LogConfig",
    "Seconds",
    "StaticConfig",
    "WriterConfig",
    "WriterOptions",
    "check_url",
    "format_prometheus_duration",
    "has_discovery",
    "parse_go_duration",
    "parse_prometheus_duration",
]

MIN_DURATION = 0.001
"""Shortest interval, timeout or backoff accepted anywhere (s): Prometheus' duration resolution."""

MIN_INTERVAL = 1.0
"""Shortest scrape interval a config file may set without ``[global] allow_short_intervals = true`` (s)."""

_GO_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.ParseDuration`` string (``"1h2m3.5s"``, ``"300ms"``, ``"0"``) into seconds.

    Raises ValueError on anything Go would reject (for example a bare number other than ``0``).
    """
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _GO_DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(
                f"invalid duration {text!r}: expected a number with a unit (ns, us, ms, s, m, h)"
            )
        total += float(m.group(1)) * _GO_DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


_PROM_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_PROM_UNITS_MS = (365 * 86400_000, 7 * 86400_000, 86400_000, 3600_000, 60_000, 1000, 1)


def parse_prometheus_duration(text: str) -> float:
    """Parse a Prometheus duration (``model.ParseDuration``: ``"1m30s"``, ``"1d"``, ``"500ms"``, ``"0"``;
    integers with the units y, w, d, h, m, s, ms in that order) into seconds. Raises ValueError otherwise."""
    if text == "0":
        return 0.0
    if text == "":
        raise ValueError("empty duration string")
    m = _PROM_DURATION.match(text)
    if m is None:
        raise ValueError(f"not a valid duration string: {text!r} (expected integers with the units y, w, "
                         "d, h, m, s, ms in that order, such as \"15s\" or \"1m30s\")")
    ms = sum(int(g) * unit for g, unit in zip(m.groups(), _PROM_UNITS_MS, strict=True) if g is not None)
    return ms / 1000.0


def format_prometheus_duration(seconds: float) -> str:
    """Prometheus' ``model.Duration.String``: ``90`` → ``"1m30s"``, ``0`` → ``"0s"`` (the value of the
    ``__scrape_interval__``/``__scrape_timeout__`` target labels)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = ""
    for unit, mult, exact in (("y", _PROM_UNITS_MS[0], True), ("w", _PROM_UNITS_MS[1], True),
                              ("d", _PROM_UNITS_MS[2], False), ("h", _PROM_UNITS_MS[3], False),
                              ("m", _PROM_UNITS_MS[4], False), ("s", 1000, False), ("ms", 1, False)):
        if exact and ms % mult:
            continue
        value = ms // mult
        if value > 0:
            out += f"{value}{unit}"
            ms -= value * mult
    return out


def _to_seconds(value: Any) -> float:
    """Accept seconds as int/float, or a Go duration string, as Categraf's ``config.Duration`` does."""
    if isinstance(value, bool):
        raise ValueError("expected seconds (a number) or a duration string like \"15s\", not a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return parse_go_duration(value)
    raise ValueError(
        f"expected seconds (a number) or a duration string like \"15s\", got {type(value).__name__}"
    )


Seconds = Annotated[float, BeforeValidator(_to_seconds)]
"""A duration in seconds; accepts a number of seconds or a Go duration string."""


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError(f"must be a finite duration such as \"15s\", not {v}")
    return v


def _at_least_min(v: float) -> float:
    """A positive, finite duration of at least 1 ms (a shorter one is a typo, or spins)."""
    _finite(v)
    if v <= 0:
        raise ValueError("must be greater than 0")
    if v < MIN_DURATION:
        raise ValueError(f"{v:g}s is shorter than 1ms, the shortest duration kubescrape (and Prometheus) "
                         "accepts")
    return v


def check_url(url: str) -> str:
    """Validate a scrape or remote-write URL: ``http``/``https``, a host, a port in 1-65535, no whitespace
    or control characters. Returns ``url`` unchanged; raises ValueError whose message shows the URL without
    its credentials."""
    # redact_text, not redact_url: an unencoded "/" or "#" in a password hides the userinfo from URL
    # parsing, and the message must not show it either.
    shown = redact_text(url)
    bad = re.search(r"[\s\x00-\x1f\x7f]", url)
    if bad is not None:
        what = "a space" if bad.group() == " " else f"the control character {bad.group()!r}"
        raise ValueError(f"{shown!r} contains {what}: percent-encode it (%20 for a space) or remove it")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"{shown!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{shown!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"{shown!r} has no host (an unset environment variable in the URL?)")
    try:
        port = parts.port
    except ValueError:
        port_text = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        port_shown = f" {port_text!r}" if "@" not in url else ""  # it may be a password cut short
        raise ValueError(f"{shown!r}: port{port_shown} is not a number in 1-65535") from None
    if port == 0:
        raise ValueError(f"{shown!r}: port 0 is not a port one can connect to; use 1-65535")
    return url


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _check_label_names(labels: dict[str, str]) -> dict[str, str]:
    for name in labels:
        if not _LABEL_NAME.match(name):
            raise ValueError(f"invalid label name {name!r}: expected [a-zA-Z_][a-zA-Z0-9_]*")
    return labels


def _headers_from_categraf(value: Any) -> Any:
    """Categraf writes headers as a flat list ``["k1", "v1", "k2", "v2"]``; a table is accepted too."""
    if isinstance(value, list | tuple):
        if len(value) % 2:
            raise ValueError(
                "headers must hold an even number of strings: [\"Name\", \"value\", …] (got an odd count)"
            )
        if not all(isinstance(v, str) for v in value):
            raise ValueError("headers must be strings: [\"Name\", \"value\", …]")
        return {value[i]: value[i + 1] for i in range(0, len(value), 2)}
    return value


Headers = Annotated[dict[str, str], BeforeValidator(_headers_from_categraf)]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


# Default factories written in Python rather than the builtins ``list``/``dict``: pydantic reads every default
# factory's signature when it builds a model, and a builtin's is parsed from its text signature with
# ``tokenize`` (whose large regex is compiled on first use): 1.7 % of the instructions to the first scrape.
def _empty_list() -> list[Any]:
    return []


def _empty_dict() -> dict[Any, Any]:
    return {}


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
        # Categraf: a non-positive global interval means the 15 s default.
        _finite(v)
        return _at_least_min(v) if v > 0 else 15.0

    @field_validator("labels")
    @classmethod
    def _labels_valid(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_label_names(v)


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
        return _at_least_min(v)

    @property
    def safe_name(self) -> str:
        """host[:port]/path of the endpoint, without credentials: the writer's name and spool directory."""
        return safe_name(self.url)

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
        return _check_label_names(v)


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
        return None if v is None else _at_least_min(v)

    @field_validator("timeout")
    @classmethod
    def _timeout_default(cls, v: float) -> float:
        # Categraf: a non-positive timeout means the 3 s default.
        _finite(v)
        return _at_least_min(v) if v > 0 else 3.0

    @field_validator("urls")
    @classmethod
    def _urls_http(cls, v: list[str]) -> list[str]:
        for url in v:
            check_url(url)
        return v

    @field_validator("labels")
    @classmethod
    def _labels_valid(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_label_names(v)

    @field_validator("url_label_key")
    @classmethod
    def _url_label_key_valid(cls, v: str) -> str:
        if v == "":
            return "instance"
        if v != "-" and not _LABEL_NAME.match(v):
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
        _finite(v)
        return _at_least_min(v) if v > 0 else v

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
