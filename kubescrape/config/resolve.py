"""Start-up without pydantic: build the configuration objects of a plainly valid Categraf file directly.

Importing pydantic and building the config models was 39 % of the instructions from exec to the first
scrape (bench/results/2026-12-02-startup-2.md), and ~10 MiB of RSS. Each function here takes the values of
one section as the Categraf loader prepared them (known keys only, Categraf's defaults applied) and returns
the plain object (:mod:`kubescrape.config.models`) the pydantic model would build — or None when it is not
sure. It is sure only of values of the exact TOML type that pass the very checks the pydantic models run
(:mod:`kubescrape.config.checks`); anything else, every invalid value included, returns None and the loader
hands the section to the pydantic model, which accepts or converts it, or words the error.
tests/config/test_resolve.py checks over generated configurations that both ways agree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from kubescrape.config.checks import (
    LABEL_NAME,
    RELABEL_ACTIONS,
    at_least_min,
    check_url,
    parse_go_duration,
    positive_or_default,
    relabel_rule_error,
)
from kubescrape.config.models import GlobalConfig, InstanceConfig, LogConfig, WriterConfig, WriterOptions
from kubescrape.goregex import compile_go_regex
from kubescrape.redact import split_userinfo
from kubescrape.relabel import RelabelConfig

__all__ = ["ENABLED", "resolve_global", "resolve_instance", "resolve_log", "resolve_seconds",
           "resolve_writer", "resolve_writer_options"]

ENABLED = True
"""False sends every section to pydantic (the differential test compares both ways)."""


class _Unsure(Exception):
    """A value the resolver leaves to pydantic."""


def _str(v: Any) -> str:
    if type(v) is not str:
        raise _Unsure
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise _Unsure
    return v


def _int(v: Any, minimum: int | None = None) -> int:
    if type(v) is not int or (minimum is not None and v < minimum):
        raise _Unsure
    return v


def _str_list(v: Any) -> list[str]:
    if type(v) is not list or any(type(x) is not str for x in v):
        raise _Unsure
    return list(v)


def _str_dict(v: Any) -> dict[str, str]:
    if type(v) is not dict or any(type(x) is not str for x in v.values()):
        raise _Unsure
    return dict(v)


def _labels(v: Any) -> dict[str, str]:
    labels = _str_dict(v)
    if not all(LABEL_NAME.match(name) for name in labels):
        raise _Unsure
    return labels


def _headers(v: Any) -> dict[str, str]:
    if type(v) is dict:
        return _str_dict(v)
    items = _str_list(v)
    if len(items) % 2:
        raise _Unsure
    return {items[i]: items[i + 1] for i in range(0, len(items), 2)}


def _seconds(v: Any) -> float:
    """A Categraf duration as the ``Seconds`` type converts it: finite, not yet bounded."""
    if type(v) is int or type(v) is float:
        seconds = float(v)
    elif type(v) is str:
        try:
            seconds = parse_go_duration(v)
        except ValueError:
            raise _Unsure from None
    else:
        raise _Unsure
    if not math.isfinite(seconds):
        raise _Unsure
    return seconds


def _positive_seconds(v: Any) -> float:
    try:
        return at_least_min(_seconds(v))
    except ValueError:
        raise _Unsure from None


def _seconds_or_default(default: float) -> Callable[[Any], float]:
    """Categraf: a non-positive interval or instance timeout means the default."""
    def convert(v: Any) -> float:
        try:
            return positive_or_default(_seconds(v), default)
        except ValueError:
            raise _Unsure from None
    return convert


def _urls(v: Any) -> list[str]:
    urls = _str_list(v)
    try:
        for url in urls:
            check_url(url)
    except ValueError:
        raise _Unsure from None
    return urls


def _optional_str(v: Any) -> str | None:
    return _str(v)


def _non_negative(v: Any) -> int:
    return _int(v, 0)


def _positive(v: Any) -> int:
    return _int(v, 1)


def _url_label_key(v: Any) -> str:
    key = _str(v)
    if key == "":
        return "instance"
    if key != "-" and not LABEL_NAME.match(key):
        raise _Unsure
    return key


def _tls_version(v: Any) -> str | None:
    version = _str(v)
    if version == "":
        return None
    if version not in ("1.0", "1.1", "1.2", "1.3"):
        raise _Unsure
    return version


def _relabel_rules(v: Any) -> list[RelabelConfig]:
    if type(v) is not list:
        raise _Unsure
    rules = []
    for raw in v:
        rule = resolve_relabel(raw)
        if rule is None:
            raise _Unsure
        rules.append(rule)
    return rules


def _build(cls: Any, values: Mapping[str, Any], fields: Mapping[str, Callable[[Any], Any]]) -> Any:
    if not ENABLED:
        return None
    try:
        converted = {key: fields[key](value) for key, value in values.items()}
    except (_Unsure, KeyError):
        return None
    return cls.model_construct(**converted)


_GLOBAL: dict[str, Callable[[Any], Any]] = {
    "hostname": _str, "omit_hostname": _bool, "interval": _seconds_or_default(15.0), "labels": _labels,
    "providers": _str_list, "concurrency": _int, "precision": _str, "print_configs": _bool,
    "allow_short_intervals": _bool,
}


def resolve_global(values: Mapping[str, Any]) -> GlobalConfig | None:
    """``[global]``, or None when pydantic must decide."""
    built: GlobalConfig | None = _build(GlobalConfig, values, _GLOBAL)
    return built


def resolve_seconds(value: Any) -> float | None:
    """input.prometheus' top-level ``interval`` in seconds, or None. A non-positive value is kept: it means
    "use ``[global] interval``" (:attr:`AgentConfig.scrape_interval`), as in Categraf's input reader."""
    if not ENABLED:
        return None
    try:
        seconds = _seconds(value)
        return _positive_seconds(seconds) if seconds > 0 else seconds
    except _Unsure:
        return None


def resolve_writer_options(values: Mapping[str, Any]) -> WriterOptions | None:
    """``[writer_opt]`` (values ≤ 0 already dropped by the loader), or None."""
    built: WriterOptions | None = _build(WriterOptions, values, {"batch": _positive, "chan_size": _positive})
    return built


_WRITER: dict[str, Callable[[Any], Any]] = {
    "url": _str,  # checked by resolve_writer, after the credentials moved out of it
    "basic_auth_user": _str, "basic_auth_pass": _str, "headers": _headers,
    "timeout": _positive_seconds, "dial_timeout": _positive_seconds, "max_idle_conns_per_host": _int,
    "tls_ca": _optional_str, "tls_cert": _optional_str, "tls_key": _optional_str,
    "tls_server_name": _optional_str, "insecure_skip_verify": _bool, "min_shards": _positive,
    "max_shards": _positive, "max_retries": lambda v: _int(v, -1), "min_backoff": _positive_seconds,
    "max_backoff": _positive_seconds,
}


def resolve_writer(values: Mapping[str, Any]) -> WriterConfig | None:
    """One ``[[writers]]`` entry (timeouts already in seconds), or None."""
    url = values.get("url")
    if type(url) is not str:
        return None
    try:
        clean, user, password = split_userinfo(url)
        check_url(clean)  # the URL the writer keeps (unchanged without credentials)
    except ValueError:
        return None
    if user is not None:
        # As the pydantic model: the URL's credentials become basic auth unless basic_auth_user is set.
        values = {**values, "url": clean}
        if not values.get("basic_auth_user"):
            values["basic_auth_user"] = user
            values["basic_auth_pass"] = password or ""
    built: WriterConfig | None = _build(WriterConfig, values, _WRITER)
    if built is None or built.min_shards > built.max_shards or built.min_backoff > built.max_backoff:
        return None
    return built


_INSTANCE: dict[str, Callable[[Any], Any]] = {
    "urls": _urls, "url_label_key": _url_label_key, "url_label_value": _str, "url_label_pair": _str_dict,
    "labels": _labels, "interval_times": _non_negative, "timeout": _seconds_or_default(3.0),
    "bearer_token_file": _optional_str, "bearer_token_string": _optional_str, "username": _optional_str,
    "password": _optional_str, "headers": _headers, "ignore_metrics": _str_list,
    "ignore_label_keys": _str_list, "name_prefix": _str, "metrics_name_prefix": _str,
    "metrics_drop": _str_list, "metrics_pass": _str_list, "duplication_allowed": _bool, "use_tls": _bool,
    "tls_ca": _optional_str, "tls_cert": _optional_str, "tls_key": _optional_str,
    "tls_key_pwd": _optional_str, "tls_server_name": _optional_str, "insecure_skip_verify": _bool,
    "tls_min_version": _tls_version, "tls_max_version": _tls_version, "relabel_configs": _relabel_rules,
    "job": _optional_str, "honor_labels": _bool, "honor_timestamps": _bool, "enable_compression": _bool,
    "body_size_limit": _non_negative, "sample_limit": _non_negative, "label_limit": _non_negative,
    "label_name_length_limit": _non_negative, "label_value_length_limit": _non_negative,
    "target_limit": _non_negative, "track_timestamps_staleness": _bool,
    "metric_relabel_configs": _relabel_rules, "target_relabel_configs": _relabel_rules,
}


def resolve_instance(values: Mapping[str, Any]) -> InstanceConfig | None:
    """One ``[[instances]]`` entry of input.prometheus, or None."""
    built: InstanceConfig | None = _build(InstanceConfig, values, _INSTANCE)
    if built is None:
        return None
    lo, hi = built.tls_min_version, built.tls_max_version
    if lo is not None and hi is not None and float(lo) > float(hi):
        return None
    return built


def _file_name(v: Any) -> str:
    return _str(v).strip() or "stdout"


_LOG: dict[str, Callable[[Any], Any]] = {
    "file_name": _file_name, "max_size": _non_negative, "max_age": _non_negative,
    "max_backups": _non_negative, "local_time": _bool, "compress": _bool,
}


def resolve_log(values: Mapping[str, Any]) -> LogConfig | None:
    """``[log]``, or None."""
    built: LogConfig | None = _build(LogConfig, values, _LOG)
    return built


_RELABEL: dict[str, Callable[[Any], Any]] = {
    "source_labels": _str_list, "separator": _str, "regex": _str, "modulus": _non_negative,
    "target_label": _str, "replacement": _str, "action": lambda v: _str(v).lower(),
}


def resolve_relabel(values: Any) -> RelabelConfig | None:
    """One relabel rule (a mapping of known keys), or None."""
    if type(values) is not dict:
        return None
    rule: RelabelConfig | None = _build(RelabelConfig, values, _RELABEL)
    if rule is None or rule.action not in RELABEL_ACTIONS:
        return None
    if not all(LABEL_NAME.match(name) for name in rule.source_labels):
        return None
    try:
        compile_go_regex(rule.regex)
    except re.error:
        return None
    if relabel_rule_error(rule.action, rule.source_labels, rule.separator, rule.regex, rule.modulus,
                          rule.target_label, rule.replacement) is not None:
        return None
    return rule
