"""Prometheus' configuration file (``prometheus.yml``) as a native format: :func:`load_prometheus`.

A Prometheus-agent user's file runs unmodified. What maps where:

* ``global``: ``scrape_interval`` (default 1m) and ``scrape_timeout`` (default 10s) are every job's
  defaults; ``external_labels`` are added to every series that lacks them, as Prometheus' remote write
  does (:attr:`~kubescrape.scrape.targets.Target.external_labels`); ``evaluation_interval`` has nothing to
  apply to and is ignored silently. No ``agent_hostname`` label is added (Prometheus adds none).
* each ``scrape_configs`` entry becomes one :class:`~kubescrape.config.models.InstanceConfig` with
  ``job_name`` set, so :func:`~kubescrape.scrape.targets.build_targets` gives its ``static_configs`` targets
  Prometheus' target labels exactly (``relabel_configs`` → ``target_relabel_configs``, with ``job``,
  ``instance``, ``__address__``, ``__scheme__``, ``__metrics_path__``, ``__param_*``,
  ``__scrape_interval__``/``__scrape_timeout__``); ``metric_relabel_configs``, ``honor_labels``,
  ``honor_timestamps``, the limits, ``tls_config``, ``authorization``, ``bearer_token[_file]``,
  ``basic_auth``, ``enable_compression`` and ``track_timestamps_staleness`` keep their meaning.
  ``body_size_limit`` defaults to 0 (no limit), as in Prometheus.
* ``remote_write``: ``url``, ``headers``, ``basic_auth``, ``authorization``/``bearer_token[_file]``,
  ``tls_config``, ``remote_timeout`` (default 30s) and ``queue_config`` (``min_shards``, ``max_shards``,
  ``min_backoff``, ``max_backoff``; ``max_samples_per_send`` → batch and ``capacity`` → queue capacity,
  shared by all writers, taken from the first that sets them). A queue_config option left unset keeps
  kubescrape's default (Prometheus' 200 shards would be far too many for a node agent).
* ``write_relabel_configs``: every writer receives every series, so they apply when all ``remote_write``
  entries have the same rules (the usual single one): after metric relabeling and external labels, to
  scraped series; a synthetic series (``up`` …) is relabeled but never dropped by them. Different rules
  per writer are named as unsupported.
* Secret files (``password_file``, ``credentials_file``/``bearer_token_file`` of a writer or of a
  non-Bearer ``authorization``) are read once at load; a scrape job's Bearer token file is re-read by the
  scrape loop, as the kubelet token must be. Relative paths are relative to the file's directory, as in
  Prometheus.

Known differences, each small: a series whose metric relabeling removes ``__name__`` keeps its old name
(Prometheus fails that scrape); ``label_limit`` counts the external labels too (Prometheus adds them after
the check); a job's ``kubernetes_sd_configs`` are kept on the instance, as written, for the discovery module,
but not run yet. Where Prometheus would accept a file that cannot work (``scheme: ftp``, an ``ftp://``
remote-write URL) the loader refuses it at once.

Options Prometheus has and kubescrape does not implement (service discovery other than static_configs,
``rule_files``, ``alerting``, ``remote_read``, OAuth2, proxies, native
histograms …) are named in a warning with ``file:line`` — an error with ``strict=True``. An option Prometheus
does not know, or a value it would refuse, is a :class:`~kubescrape.errors.ConfigError` with the file,
line, key, what is expected and the fix.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kubescrape.config.models import (
    AgentConfig,
    GlobalConfig,
    InstanceConfig,
    StaticConfig,
    WriterConfig,
    WriterOptions,
    parse_prometheus_duration,
)
from kubescrape.errors import ConfigError
from kubescrape.redact import redact_text, redact_url
from kubescrape.relabel import RelabelConfig

__all__ = ["load_prometheus", "load_scrape_config_file", "parse_prometheus_yaml"]

Path_ = tuple[str | int, ...]

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SIZE = re.compile(r"(\d+)(B|KB|MB|GB|TB|PB|EB|KiB|MiB|GiB|TiB|PiB|EiB)")
_SIZE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40, "PB": 1 << 50,
               "EB": 1 << 60}
_TLS_VERSIONS = {"TLS10": "1.0", "TLS11": "1.1", "TLS12": "1.2", "TLS13": "1.3"}
# Prometheus refuses these in remote_write headers: the client sets them itself.
_RESERVED_HEADERS = {"authorization", "host", "content-encoding", "content-length", "content-type",
                     "user-agent", "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                     "www-authenticate", "accept-encoding", "x-prometheus-remote-write-version",
                     "x-prometheus-remote-read-version", "x-prometheus-scrape-timeout-seconds",
                     "transfer-encoding", "te", "trailer", "upgrade"}

DEFAULT_SCRAPE_INTERVAL = 60.0
DEFAULT_SCRAPE_TIMEOUT = 10.0
DEFAULT_REMOTE_TIMEOUT = 30.0

_TOP_IMPLEMENTED = {"global", "scrape_configs", "remote_write"}
_TOP_UNSUPPORTED = {"rule_files", "alerting", "remote_read", "scrape_config_files", "storage", "tracing",
                    "otlp", "runtime"}
_GLOBAL_IMPLEMENTED = {"scrape_interval", "scrape_timeout", "external_labels", "evaluation_interval",
                       "body_size_limit", "sample_limit", "label_limit", "label_name_length_limit",
                       "label_value_length_limit", "target_limit"}
_GLOBAL_UNSUPPORTED = {"query_log_file", "keep_dropped_targets", "scrape_protocols", "rule_query_offset",
                       "scrape_failure_log_file", "metric_name_validation_scheme",
                       "metric_name_escaping_scheme", "always_scrape_classic_histograms",
                       "convert_classic_histograms_to_nhcb", "scrape_native_histograms"}
_LIMITS = ("sample_limit", "label_limit", "label_name_length_limit", "label_value_length_limit",
           "target_limit")
_HTTP_UNSUPPORTED = {"oauth2", "proxy_url", "no_proxy", "proxy_from_environment", "proxy_connect_header",
                     "follow_redirects", "enable_http2", "sigv4", "azuread", "http_headers"}
_SCRAPE_IMPLEMENTED = {"job_name", "honor_labels", "honor_timestamps", "params", "scrape_interval",
                       "scrape_timeout", "metrics_path", "scheme", "body_size_limit", *_LIMITS,
                       "relabel_configs", "metric_relabel_configs", "static_configs", "tls_config",
                       "authorization", "bearer_token", "bearer_token_file", "basic_auth",
                       "enable_compression", "track_timestamps_staleness", "kubernetes_sd_configs",
                       "kubelet_sd_configs"}
_SCRAPE_UNSUPPORTED = {"scrape_classic_histograms", "native_histogram_bucket_limit",
                       "native_histogram_min_bucket_factor", "scrape_protocols", "keep_dropped_targets",
                       "always_scrape_classic_histograms", "convert_classic_histograms_to_nhcb",
                       "scrape_failure_log_file", "metric_name_validation_scheme",
                       "metric_name_escaping_scheme", "fallback_scrape_protocol", "scrape_native_histograms",
                       *_HTTP_UNSUPPORTED}
_WRITE_IMPLEMENTED = {"url", "name", "remote_timeout", "headers", "queue_config", "tls_config",
                      "authorization", "bearer_token", "bearer_token_file", "basic_auth",
                      "write_relabel_configs"}
_WRITE_UNSUPPORTED = {"send_exemplars", "send_native_histograms",
                      "metadata_config", "protobuf_message", "round_robin_dns", "google_iam",
                      *_HTTP_UNSUPPORTED}
_QUEUE_IMPLEMENTED = {"capacity", "max_shards", "min_shards", "max_samples_per_send", "min_backoff",
                      "max_backoff"}
_QUEUE_UNSUPPORTED = {"batch_send_deadline", "retry_on_http_429", "sample_age_limit"}
_TLS_IMPLEMENTED = {"ca_file", "cert_file", "key_file", "server_name", "insecure_skip_verify",
                    "min_version", "max_version"}
_TLS_UNSUPPORTED = {"ca", "cert", "key", "ca_ref", "cert_ref", "key_ref"}


# --- YAML with line numbers ---------------------------------------------------------------------------


@dataclass
class _Doc:
    """The parsed file: plain data, and the 1-based line of every key and list item by path."""

    path: Path
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    raw: dict[Path_, str] = field(default_factory=dict)
    """The text of every scalar: Go's YAML decoder gives a string option the text as written (``true``,
    ``1e3``), where Python's has already made a bool or a number of it."""

    def line(self, at: Path_) -> int | None:
        while at:
            if at in self.lines:
                return self.lines[at]
            at = at[:-1]
        return None


def parse_prometheus_yaml(text: str, path: Path) -> _Doc:
    """Parse YAML keeping the line of every mapping key and sequence item; duplicate keys are errors (as
    in Prometheus' strict YAML decoding)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"not valid YAML: {problem}",
            "fix the YAML syntax at that line: indent with spaces, quote values holding ': ' or '#'",
            file=str(path), line=mark.line + 1 if mark is not None else None,
        ) from None
    finally:
        loader.dispose()
    doc = _Doc(path, None)
    doc.data = {} if node is None else _convert(node, (), doc, loader)
    return doc


def _convert(node: yaml.Node, at: Path_, doc: _Doc, loader: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            key = str(key)
            here = (*at, key)
            if key in out:
                raise ConfigError(
                    f"key {key!r} is defined twice (first on line {doc.lines.get(here)})",
                    "remove one of the two definitions",
                    file=str(doc.path), key=_dotted(here), line=key_node.start_mark.line + 1,
                )
            doc.lines[here] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, here, doc, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            doc.lines[(*at, i)] = item.start_mark.line + 1
            items.append(_convert(item, (*at, i), doc, loader))
        return items
    if isinstance(node, yaml.ScalarNode):
        doc.raw[at] = node.value
    return loader.construct_object(node, deep=True)


def _dotted(at: Path_) -> str:
    out = ""
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# --- the loader ---------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    doc: _Doc
    strict: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def file(self) -> str:
        return str(self.doc.path)

    def where(self, at: Path_) -> str:
        line = self.doc.line(at)
        return f"{self.file}:{line}" if line else self.file

    def error(self, at: Path_, cause: str, fix: str) -> ConfigError:
        return ConfigError(cause, fix, file=self.file, key=_dotted(at), line=self.doc.line(at))

    def unsupported(self, at: Path_, what: str = "") -> None:
        name = _dotted(at)
        text = f"{self.where(at)}: {name} is not implemented by kubescrape; ignored{what}"
        if self.strict:
            raise ConfigError(
                f"{name} is not implemented by kubescrape{what.replace('; ', ': ', 1) if what else ''}",
                "remove the option, or run without --strict to load the file with a warning",
                file=self.file, key=name, line=self.doc.line(at),
            )
        self.warnings.append(text)

    def resolve(self, value: str) -> str:
        """Prometheus resolves relative file paths against the configuration file's directory."""
        p = Path(value)
        return str(p if p.is_absolute() else self.doc.path.parent / p)

    def read_secret(self, at: Path_, value: str) -> str:
        path = self.resolve(value)
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise self.error(at, f"cannot read {path}: {exc.strerror}",
                             "check that the file exists and is readable by the agent") from None


def load_prometheus(
    path: str | Path, *, strict: bool = False, writer_urls: Sequence[str] = ()
) -> AgentConfig:
    """Read a Prometheus configuration file into an :class:`AgentConfig` (see the module docstring).

    ``strict``: an option kubescrape does not implement is an error instead of a warning. ``writer_urls``
    (``--writer-url``), when given, replace the file's ``remote_write``.
    """
    doc = _read(Path(path))
    ctx = _Ctx(doc, strict)
    why_not = "--writer-url replaces the file's remote_write" if writer_urls else ""
    instances, writers, writer_opt, global_cfg = _load_document(ctx, doc.data, write_relabel=why_not)
    if writer_urls:
        writers = [_writer_from_url(u) for u in writer_urls]
    return AgentConfig(global_=global_cfg, writer_opt=writer_opt, writers=writers, instances=instances,
                       warnings=ctx.warnings, files=[str(doc.path)])


def load_scrape_config_file(path: str | Path, *, strict: bool = False) -> tuple[
    list[InstanceConfig], list[WriterConfig], list[str], dict[str, str]
]:
    """Categraf's ``[prometheus] scrape_config_file``: the file's jobs, its writers, the warnings and its
    ``external_labels`` (for the caller to merge into a Categraf configuration)."""
    doc = _read(Path(path))
    ctx = _Ctx(doc, strict)
    instances, writers, _, global_cfg = _load_document(
        ctx, doc.data, write_relabel="config.toml's [[writers]] receive these jobs' series too")
    return instances, writers, ctx.warnings, dict(global_cfg.labels)


def _read(path: Path) -> _Doc:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} not found",
                          "pass --config with the path of a Prometheus configuration file (prometheus.yml)",
                          file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", "check the file exists and is readable",
                          file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc.reason}", "save the file as UTF-8",
                          file=str(path)) from None
    return parse_prometheus_yaml(text, path)


def _writer_from_url(url: str) -> WriterConfig:
    try:
        return WriterConfig(url=url, timeout=DEFAULT_REMOTE_TIMEOUT)
    except ValidationError as exc:
        msg = redact_text(str(exc.errors()[0]["msg"]).removeprefix("Value error, "))
        raise ConfigError(f"--writer-url {redact_url(url)!r} is invalid: {msg}",
                          "pass a full remote-write URL such as http://127.0.0.1:9090/api/v1/write",
                          key="--writer-url") from None


def _load_document(ctx: _Ctx, data: Any, *, write_relabel: str) -> tuple[
    list[InstanceConfig], list[WriterConfig], WriterOptions, GlobalConfig
]:
    """``write_relabel``: empty when write_relabel_configs may apply to every series (every writer gets
    every series), else why they cannot."""
    top = _mapping(ctx, (), data)
    for key in top:
        if key in _TOP_UNSUPPORTED:
            if top[key] not in (None, [], {}):
                ctx.unsupported((key,))
        elif key not in _TOP_IMPLEMENTED:
            raise _unknown(ctx, (key,), _TOP_IMPLEMENTED | _TOP_UNSUPPORTED)
    global_raw = _mapping(ctx, ("global",), top.get("global") or {})
    interval, timeout, external, limits = _load_global(ctx, global_raw)
    # The hostname only seeds the scrape offsets (so agents on different nodes spread their scrapes); no
    # agent_hostname label is added, as Prometheus adds none.
    global_cfg = GlobalConfig(interval=interval, labels=external, omit_hostname=True,
                              hostname=socket.gethostname())

    instances: list[InstanceConfig] = []
    jobs: dict[str, int] = {}
    for i, raw in enumerate(_sequence(ctx, ("scrape_configs",), top.get("scrape_configs") or [])):
        inst = _load_scrape_config(ctx, ("scrape_configs", i), raw, interval, timeout, limits)
        name = inst.job_name or ""
        if name in jobs:
            raise ctx.error(("scrape_configs", i, "job_name"),
                            f"found multiple scrape configs with job name {name!r} (also #{jobs[name] + 1})",
                            "give every scrape config its own job_name")
        jobs[name] = i
        instances.append(inst)

    writers: list[WriterConfig] = []
    batch: int | None = None
    capacity: int | None = None
    rules: list[list[RelabelConfig]] = []
    for i, raw in enumerate(_sequence(ctx, ("remote_write",), top.get("remote_write") or [])):
        writer, w_batch, w_capacity = _load_remote_write(ctx, ("remote_write", i), raw)
        writers.append(writer)
        rules.append(_relabel_list(ctx, ("remote_write", i, "write_relabel_configs"),
                                   raw.get("write_relabel_configs")))
        for what, value, current in (("max_samples_per_send", w_batch, batch),
                                     ("capacity", w_capacity, capacity)):
            if value is not None and current is not None and value != current:
                ctx.warnings.append(f"{ctx.where(('remote_write', i, 'queue_config', what))}: "
                                    f"queue_config.{what} is shared by all writers in kubescrape; "
                                    f"using {current} from the first remote_write that sets it")
        batch = batch if batch is not None else w_batch
        capacity = capacity if capacity is not None else w_capacity
    defaults = WriterOptions()
    writer_opt = WriterOptions(batch=batch or defaults.batch, chan_size=capacity or defaults.chan_size)
    if any(rules):
        instances = _apply_write_relabel(ctx, instances, rules, write_relabel)
    return instances, writers, writer_opt, global_cfg


def _apply_write_relabel(ctx: _Ctx, instances: list[InstanceConfig], rules: list[list[RelabelConfig]],
                         why_not: str) -> list[InstanceConfig]:
    """Every writer receives every series, so write_relabel_configs apply at labeling time when all
    writers have the same rules (the usual single remote_write); otherwise they are named as unsupported."""
    if not why_not and all(r == rules[0] for r in rules):
        return [inst.model_copy(update={"write_relabel_configs": rules[0]}) for inst in instances]
    why = why_not or "the remote_write entries have different rules, and every writer gets every series"
    for i, r in enumerate(rules):
        if r:
            ctx.unsupported(("remote_write", i, "write_relabel_configs"), f"; {why}")
    return instances


def _unknown(ctx: _Ctx, at: Path_, known: set[str]) -> ConfigError:
    return ctx.error(at, f"unknown option {at[-1]!r} (Prometheus refuses it too)",
                     "check the spelling against Prometheus' configuration reference; known here: "
                     + ", ".join(sorted(known)))


# Values of unimplemented options that ask for what kubescrape does anyway (Prometheus' defaults, mostly,
# as generated files spell them out): no warning.
_SATISFIED: dict[str, tuple[Any, ...]] = {
    "follow_redirects": (True,),  # aiohttp follows redirects
    "enable_http2": (True, False),  # HTTP/1.1 either way; Prometheus falls back to it too
    "proxy_from_environment": (False,),
    "scrape_classic_histograms": (False,),
    "always_scrape_classic_histograms": (False,),
    "keep_dropped_targets": (0,),
    "native_histogram_bucket_limit": (0,),
    "send_exemplars": (False,),
    "send_native_histograms": (False,),
    "round_robin_dns": (False,),
}


def _check_keys(ctx: _Ctx, at: Path_, raw: dict[str, Any], implemented: set[str],
                unsupported: set[str], sd: bool = False) -> None:
    for key in raw:
        if key in implemented:
            continue
        if key in unsupported or (sd and key.endswith("_sd_configs")):
            value = raw[key]
            if value is None or value == [] or value == {} or value in _SATISFIED.get(key, ()):
                continue
            if key == "metadata_config" and isinstance(value, dict) and value.get("send") is False:
                continue  # kubescrape sends no metadata
            what = ""
            if key.endswith("_sd_configs"):
                what = "; only static_configs, kubernetes_sd_configs and kubelet_sd_configs are discovered"
            ctx.unsupported((*at, key), what)
            continue
        raise _unknown(ctx, (*at, key), implemented | unsupported)


# --- typed values -------------------------------------------------------------------------------------


def _mapping(ctx: _Ctx, at: Path_, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ctx.error(at, f"{_dotted(at) or 'the file'} must be a mapping (key: value lines), "
                        f"got {_kind(value)}", "indent the options under it as `key: value` lines")
    return value


def _sequence(ctx: _Ctx, at: Path_, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ctx.error(at, f"{_dotted(at)} must be a list, got {_kind(value)}",
                        "write each entry on its own line starting with '- '")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _string(ctx: _Ctx, at: Path_, value: Any) -> str:
    """A string option: a number or boolean is taken as written, null as empty (as Go's YAML decoder)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, dict | list):
        raise ctx.error(at, f"expected a string, got {_kind(value)}", "write the value as a string")
    return ctx.doc.raw.get(at, str(value))


def _bool(ctx: _Ctx, at: Path_, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ctx.error(at, f"expected true or false, got {_kind(value)}", "write true or false")
    return value


def _uint(ctx: _Ctx, at: Path_, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ctx.error(at, f"expected a non-negative integer, got {value!r}",
                        "write a whole number, 0 = no limit")
    return value


def _positive_int(ctx: _Ctx, at: Path_, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ctx.error(at, f"expected a positive integer, got {value!r}", "write a whole number above 0")
    return value


def _duration(ctx: _Ctx, at: Path_, value: Any) -> float:
    text = value if isinstance(value, str) else repr(value)
    try:
        if not isinstance(value, str):
            raise ValueError(f"not a valid duration string: {text}")
        return parse_prometheus_duration(value)
    except ValueError as exc:
        raise ctx.error(at, f"{exc}",
                        "write a Prometheus duration such as \"15s\", \"1m30s\" or \"500ms\" (integers with "
                        "units y, w, d, h, m, s, ms)") from None


def _positive_duration(ctx: _Ctx, at: Path_, value: Any) -> float:
    seconds = _duration(ctx, at, value)
    if seconds <= 0:
        raise ctx.error(at, f"{_dotted(at)} must be greater than 0, got {value!r}",
                        "write a duration such as \"15s\"")
    return seconds


def _size(ctx: _Ctx, at: Path_, value: Any) -> int:
    """Prometheus' ``units.Base2Bytes``: ``"10MB"``, ``"1GiB512MiB"``; 0 = no limit."""
    if value == 0 or value == "0":
        return 0
    text = value if isinstance(value, str) else ""
    pos, total = 0, 0
    while text and pos < len(text):
        m = _SIZE.match(text, pos)
        if m is None:
            break
        total += int(m.group(1)) * _SIZE_UNITS[m.group(2).replace("i", "")]
        pos = m.end()
    if not text or pos != len(text):
        raise ctx.error(at, f"{value!r} is not a size",
                        "write a size such as \"10MB\" or \"1GB\" (0 = no limit)")
    return total


def _labels(ctx: _Ctx, at: Path_, value: Any) -> dict[str, str]:
    raw = _mapping(ctx, at, value or {})
    out: dict[str, str] = {}
    for name, v in raw.items():
        if not _LABEL_NAME.match(name):
            raise ctx.error((*at, name), f"{name!r} is not a valid label name",
                            "use [a-zA-Z_][a-zA-Z0-9_]* (letters, digits, underscores)")
        out[name] = _string(ctx, (*at, name), v)
    return out


def _relabel_list(ctx: _Ctx, at: Path_, value: Any) -> list[RelabelConfig]:
    out: list[RelabelConfig] = []
    for i, raw in enumerate(_sequence(ctx, at, value or [])):
        here = (*at, i)
        rule = _mapping(ctx, here, raw)
        # YAML reads `regex: 1` or `replacement: true` as a number or a boolean; Prometheus as text.
        data = {k: _string(ctx, (*here, k), v) if k in ("regex", "replacement", "separator", "target_label")
                else v for k, v in rule.items() if v is not None}
        try:
            out.append(RelabelConfig.model_validate(data))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = tuple(str(p) for p in err["loc"])
            key_at = (*here, loc[0]) if loc and loc[0] in rule else here
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown relabel option {loc[0]!r}"
            raise ctx.error(key_at, f"invalid relabel rule: {msg}",
                            "see Prometheus' <relabel_config>: source_labels, separator, regex, modulus, "
                            "target_label, replacement, action") from None
    return out


# --- sections -----------------------------------------------------------------------------------------


def _load_global(ctx: _Ctx, raw: dict[str, Any]) -> tuple[float, float, dict[str, str], dict[str, int]]:
    _check_keys(ctx, ("global",), raw, _GLOBAL_IMPLEMENTED, _GLOBAL_UNSUPPORTED)
    interval = DEFAULT_SCRAPE_INTERVAL
    if "scrape_interval" in raw:
        interval = _positive_duration(ctx, ("global", "scrape_interval"), raw["scrape_interval"])
    timeout = DEFAULT_SCRAPE_TIMEOUT
    if "scrape_timeout" in raw:
        timeout = _positive_duration(ctx, ("global", "scrape_timeout"), raw["scrape_timeout"])
        if timeout > interval:
            raise ctx.error(("global", "scrape_timeout"),
                            "global scrape timeout greater than scrape interval",
                            "make scrape_timeout at most scrape_interval")
    elif timeout > interval:
        timeout = interval
    external = _labels(ctx, ("global", "external_labels"), raw.get("external_labels"))
    limits: dict[str, int] = {}
    for key in _LIMITS:
        if key in raw:
            limits[key] = _uint(ctx, ("global", key), raw[key])
    if "body_size_limit" in raw:
        limits["body_size_limit"] = _size(ctx, ("global", "body_size_limit"), raw["body_size_limit"])
    return interval, timeout, external, limits


def _load_scrape_config(ctx: _Ctx, at: Path_, raw_any: Any, global_interval: float, global_timeout: float,
                        limits: dict[str, int]) -> InstanceConfig:
    raw = _mapping(ctx, at, raw_any)
    _check_keys(ctx, at, raw, _SCRAPE_IMPLEMENTED, _SCRAPE_UNSUPPORTED, sd=True)
    if not raw.get("job_name"):
        raise ctx.error((*at, "job_name") if "job_name" in raw else at, "job_name is empty",
                        "give the scrape config a job_name; it becomes the job label")
    job = _string(ctx, (*at, "job_name"), raw["job_name"])
    interval = global_interval
    if "scrape_interval" in raw:
        interval = _positive_duration(ctx, (*at, "scrape_interval"), raw["scrape_interval"])
    if "scrape_timeout" in raw:
        timeout = _positive_duration(ctx, (*at, "scrape_timeout"), raw["scrape_timeout"])
        if timeout > interval:
            raise ctx.error((*at, "scrape_timeout"),
                            f"scrape timeout greater than scrape interval for scrape config with job name "
                            f"{job!r}", "make scrape_timeout at most scrape_interval")
    else:
        timeout = min(global_timeout, interval)
    fields: dict[str, Any] = {"job_name": job, "scrape_interval": interval, "scrape_timeout": timeout,
                              "timeout": timeout, "body_size_limit": limits.get("body_size_limit", 0)}
    for key in _LIMITS:
        fields[key] = _uint(ctx, (*at, key), raw[key]) if key in raw else limits.get(key, 0)
    if "body_size_limit" in raw:
        fields["body_size_limit"] = _size(ctx, (*at, "body_size_limit"), raw["body_size_limit"])
    for key in ("honor_labels", "honor_timestamps", "enable_compression", "track_timestamps_staleness"):
        if key in raw:
            fields[key] = _bool(ctx, (*at, key), raw[key])
    if "scheme" in raw:
        scheme = _string(ctx, (*at, "scheme"), raw["scheme"])
        if scheme not in ("http", "https"):
            raise ctx.error((*at, "scheme"), f"URL scheme must be 'http' or 'https' but is {scheme!r}",
                            "write scheme: http or scheme: https")
        fields["scheme"] = scheme
    if "metrics_path" in raw:
        fields["metrics_path"] = _string(ctx, (*at, "metrics_path"), raw["metrics_path"])
    if raw.get("params") is not None:
        params: dict[str, list[str]] = {}
        for name, values in _mapping(ctx, (*at, "params"), raw["params"]).items():
            seq = _sequence(ctx, (*at, "params", name), values)
            params[name] = [_string(ctx, (*at, "params", name, j), v) for j, v in enumerate(seq)]
        fields["params"] = params
    fields["target_relabel_configs"] = _relabel_list(ctx, (*at, "relabel_configs"),
                                                     raw.get("relabel_configs"))
    fields["metric_relabel_configs"] = _relabel_list(ctx, (*at, "metric_relabel_configs"),
                                                     raw.get("metric_relabel_configs"))
    statics: list[StaticConfig] = []
    for i, group_any in enumerate(_sequence(ctx, (*at, "static_configs"), raw.get("static_configs") or [])):
        here = (*at, "static_configs", i)
        group = _mapping(ctx, here, group_any)
        for key in group:
            if key not in ("targets", "labels"):
                raise _unknown(ctx, (*here, key), {"targets", "labels"})
        targets = [_string(ctx, (*here, "targets", j), t)
                   for j, t in enumerate(_sequence(ctx, (*here, "targets"), group.get("targets") or []))]
        if not raw.get("relabel_configs"):
            # Prometheus refuses a URL as a target unless relabel_configs could move it out of __address__.
            for j, target in enumerate(targets):
                if "/" in target:
                    raise ctx.error((*here, "targets", j), f"{target!r} is not a valid hostname",
                                    "write host:port; the scheme goes in scheme: and the path in "
                                    "metrics_path:")
        labels = _labels(ctx, (*here, "labels"), group.get("labels"))
        statics.append(StaticConfig(targets=targets, labels=labels))
    fields["static_configs"] = statics
    for sd_key in ("kubernetes_sd_configs", "kubelet_sd_configs"):
        if raw.get(sd_key):
            sds = _sequence(ctx, (*at, sd_key), raw[sd_key])
            fields[sd_key] = [_mapping(ctx, (*at, sd_key, i), sd) for i, sd in enumerate(sds)]
    fields.update(_http_client(ctx, at, raw, scrape=True))
    inst: InstanceConfig = _model(ctx, at, InstanceConfig, fields)
    return inst


def _model(ctx: _Ctx, at: Path_, cls: Callable[..., Any], fields: dict[str, Any]) -> Any:
    try:
        return cls(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = redact_text(str(err["msg"]).removeprefix("Value error, "))
        loc = str(err["loc"][0]) if err["loc"] else ""
        where = (*at, loc) if (*at, loc) in ctx.doc.lines else at
        raise ctx.error(where, msg, "fix the value as described") from None


def _http_client(ctx: _Ctx, at: Path_, raw: dict[str, Any], *, scrape: bool) -> dict[str, Any]:
    """tls_config, authorization, bearer_token(_file) and basic_auth, as InstanceConfig or WriterConfig
    fields (``scrape`` picks which)."""
    out: dict[str, Any] = {}
    headers: dict[str, str] = {}
    auth_kinds = [k for k in ("basic_auth", "authorization", "oauth2") if raw.get(k)]
    if raw.get("bearer_token") or raw.get("bearer_token_file"):
        auth_kinds.append("bearer_token")
    if len(auth_kinds) > 1:
        raise ctx.error((*at, auth_kinds[1]), f"at most one of {', '.join(auth_kinds)} may be configured",
                        "keep a single way of authenticating")
    if raw.get("bearer_token") and raw.get("bearer_token_file"):
        raise ctx.error((*at, "bearer_token_file"), "at most one of bearer_token & bearer_token_file must "
                        "be configured", "keep one of them")
    token: str | None = None
    token_file: str | None = None
    if raw.get("bearer_token"):
        token = _string(ctx, (*at, "bearer_token"), raw["bearer_token"])
    if raw.get("bearer_token_file"):
        token_file = ctx.resolve(_string(ctx, (*at, "bearer_token_file"), raw["bearer_token_file"]))
    if raw.get("authorization"):
        here = (*at, "authorization")
        auth = _mapping(ctx, here, raw["authorization"])
        for key in auth:
            if key not in ("type", "credentials", "credentials_file"):
                raise _unknown(ctx, (*here, key), {"type", "credentials", "credentials_file"})
        kind = _string(ctx, (*here, "type"), auth.get("type") or "Bearer")
        if kind.lower() == "basic":
            raise ctx.error((*here, "type"), "authorization type cannot be set to \"basic\"",
                            "use basic_auth instead")
        if auth.get("credentials") and auth.get("credentials_file"):
            raise ctx.error((*here, "credentials_file"),
                            "at most one of authorization credentials & credentials_file must be configured",
                            "keep one of them")
        if kind == "Bearer":
            if auth.get("credentials"):
                token = _string(ctx, (*here, "credentials"), auth["credentials"])
            elif auth.get("credentials_file"):
                token_file = ctx.resolve(_string(ctx, (*here, "credentials_file"), auth["credentials_file"]))
        else:
            creds = ""
            if auth.get("credentials"):
                creds = _string(ctx, (*here, "credentials"), auth["credentials"])
            elif auth.get("credentials_file"):
                creds = ctx.read_secret((*here, "credentials_file"),
                                        _string(ctx, (*here, "credentials_file"), auth["credentials_file"]))
            headers["Authorization"] = f"{kind} {creds}"
    if token_file is not None and not scrape:
        token = ctx.read_secret((*at, "bearer_token_file"), token_file)
        token_file = None
    if token is not None:
        if scrape:
            out["bearer_token_string"] = token
        else:
            headers["Authorization"] = f"Bearer {token}"
    if token_file is not None:
        out["bearer_token_file"] = token_file
    if raw.get("basic_auth"):
        here = (*at, "basic_auth")
        basic = _mapping(ctx, here, raw["basic_auth"])
        for key in basic:
            if key not in ("username", "password", "password_file"):
                raise _unknown(ctx, (*here, key), {"username", "password", "password_file"})
        if basic.get("password") and basic.get("password_file"):
            raise ctx.error((*here, "password_file"), "at most one of basic_auth password & password_file "
                            "must be configured", "keep one of them")
        user = _string(ctx, (*here, "username"), basic.get("username") or "")
        password = ""
        if basic.get("password"):
            password = _string(ctx, (*here, "password"), basic["password"])
        elif basic.get("password_file"):
            password = ctx.read_secret((*here, "password_file"),
                                       _string(ctx, (*here, "password_file"), basic["password_file"]))
        if scrape:
            out["username"], out["password"] = user, password
        else:
            out["basic_auth_user"], out["basic_auth_pass"] = user, password
    if raw.get("tls_config"):
        out.update(_tls(ctx, (*at, "tls_config"), raw["tls_config"], scrape=scrape))
    if headers:
        out["headers"] = headers
    return out


def _tls(ctx: _Ctx, at: Path_, value: Any, *, scrape: bool) -> dict[str, Any]:
    raw = _mapping(ctx, at, value)
    _check_keys(ctx, at, raw, _TLS_IMPLEMENTED, _TLS_UNSUPPORTED)
    out: dict[str, Any] = {"use_tls": True} if scrape else {}
    for key, name in (("ca_file", "tls_ca"), ("cert_file", "tls_cert"), ("key_file", "tls_key")):
        if raw.get(key):
            out[name] = ctx.resolve(_string(ctx, (*at, key), raw[key]))
    if bool(raw.get("cert_file")) != bool(raw.get("key_file")):
        missing = "key_file" if raw.get("cert_file") else "cert_file"
        raise ctx.error(at, f"tls_config sets only one of cert_file and key_file ({missing} is missing)",
                        "set both cert_file and key_file for a client certificate, or neither")
    if raw.get("server_name"):
        out["tls_server_name"] = _string(ctx, (*at, "server_name"), raw["server_name"])
    if "insecure_skip_verify" in raw:
        out["insecure_skip_verify"] = _bool(ctx, (*at, "insecure_skip_verify"), raw["insecure_skip_verify"])
    for key in ("min_version", "max_version"):
        if raw.get(key):
            text = _string(ctx, (*at, key), raw[key])
            if text not in _TLS_VERSIONS:
                raise ctx.error((*at, key), f"unknown TLS version: {text}",
                                "write one of TLS10, TLS11, TLS12, TLS13")
            if scrape:
                out[f"tls_{key}"] = _TLS_VERSIONS[text]
            elif key == "min_version" and text != "TLS12":
                ctx.unsupported((*at, key), "; the remote-write client negotiates TLS 1.2 or later")
            elif key == "max_version":
                ctx.unsupported((*at, key))
    return out


def _load_remote_write(ctx: _Ctx, at: Path_, raw_any: Any) -> tuple[WriterConfig, int | None, int | None]:
    raw = _mapping(ctx, at, raw_any)
    _check_keys(ctx, at, raw, _WRITE_IMPLEMENTED, _WRITE_UNSUPPORTED)
    if not raw.get("url"):
        raise ctx.error(at, "remote_write needs a url", "add url: http://host:port/api/v1/write")
    url = _string(ctx, (*at, "url"), raw["url"])
    fields: dict[str, Any] = {"url": url, "timeout": DEFAULT_REMOTE_TIMEOUT}
    if "remote_timeout" in raw:
        fields["timeout"] = _positive_duration(ctx, (*at, "remote_timeout"), raw["remote_timeout"])
    headers: dict[str, str] = {}
    for name, value in _mapping(ctx, (*at, "headers"), raw.get("headers") or {}).items():
        if name.lower() in _RESERVED_HEADERS:
            raise ctx.error((*at, "headers", name), f"{name} is a reserved header",
                            "set credentials with basic_auth or authorization; remove the header")
        headers[name] = _string(ctx, (*at, "headers", name), value)
    http = _http_client(ctx, at, raw, scrape=False)
    headers.update(http.pop("headers", {}))
    fields.update(http)
    fields["headers"] = headers
    batch: int | None = None
    capacity: int | None = None
    if raw.get("queue_config"):
        here = (*at, "queue_config")
        queue = _mapping(ctx, here, raw["queue_config"])
        _check_keys(ctx, here, queue, _QUEUE_IMPLEMENTED, _QUEUE_UNSUPPORTED)
        for key in ("min_shards", "max_shards"):
            if key in queue:
                fields[key] = _positive_int(ctx, (*here, key), queue[key])
        for key in ("min_backoff", "max_backoff"):
            if key in queue:
                fields[key] = _positive_duration(ctx, (*here, key), queue[key])
        if "max_samples_per_send" in queue:
            batch = _positive_int(ctx, (*here, "max_samples_per_send"), queue["max_samples_per_send"])
        if "capacity" in queue:
            capacity = _positive_int(ctx, (*here, "capacity"), queue["capacity"])
        # A max below kubescrape's default min (or the reverse) would otherwise be an error the user
        # never wrote: follow the bound the file sets.
        defaults = WriterConfig.__dataclass_fields__
        for low, high in (("min_shards", "max_shards"), ("min_backoff", "max_backoff")):
            if high in fields and low not in fields:
                fields[low] = min(fields[high], defaults[low].default)
            if low in fields and high not in fields:
                fields[high] = max(fields[low], defaults[high].default)
    writer: WriterConfig = _model(ctx, at, WriterConfig, fields)
    return writer, batch, capacity
