"""The start-up resolver (kubescrape/config/resolve.py) against the pydantic models, over generated input.

For every section the resolver either declines (None) or builds exactly what the pydantic model builds from
the same values; over whole generated Categraf directories, loading with the resolver gives the same
configuration, or the same ConfigError message, as loading through pydantic alone.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kubescrape.config import resolve
from kubescrape.config.categraf import load_categraf
from kubescrape.config.models import GlobalConfig, InstanceConfig, LogConfig, WriterConfig, WriterOptions
from kubescrape.config.plain import Plain
from kubescrape.errors import ConfigError
from kubescrape.relabel import RelabelConfig

# ---- values: valid ones of every kind, and the invalid or converted ones next to them --------------------

NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,4}", fullmatch=True)
TEXT = st.text(st.characters(codec="utf-8"), max_size=6)
NOT_STR: st.SearchStrategy[Any] = st.integers(-2, 2) | st.booleans() | st.just([]) | st.just(1.5)
STR = TEXT | st.sampled_from(["", " x ", "$HOSTNAME", "a-b"]) | NOT_STR
STRS = st.lists(st.sampled_from(["a", "up", "x_y", ""]), max_size=3) | st.just([1]) | st.just("a")
BOOL = st.booleans() | st.sampled_from([0, 1, "true"])
INT = st.integers(-3, 6) | st.sampled_from([2**40, 2.0, "5", True])
DURATION = (
    st.integers(-5, 700)
    | st.floats(-1, 100, allow_nan=False)
    | st.sampled_from([math.inf, -math.inf, math.nan, 1e-5, 0.0005, 0.5, True, [1]])
    | st.sampled_from(["15s", "1m", "500ms", "0", "-1s", "abc", "1ns", "", "0.5s", "1h2m3.5s", "2", "+3s"])
)
LABELS = st.dictionaries(NAMES | st.sampled_from(["0bad", "a-b", "é"]), STR, max_size=3) | st.just({"a": 1})
URL = st.sampled_from([
    "http://127.0.0.1:9100/metrics", "https://h:10250/metrics/cadvisor", "http://u:p@h:1/w",
    "http://u@h:2/w", "http://u:p%2Fx@h:3/w", "ftp://h/m", "http://h:0/", "http:// h/", "http://:80/",
    "http://h:99999/", "http://${HOSTNAME}:9100/m", "https://[::1]:10250/metrics", "http://h:x/",
])
HEADERS = (st.lists(st.sampled_from(["X-A", "1", "Authorization", "Bearer t"]), max_size=5)
           | st.dictionaries(st.sampled_from(["X-A", "X-B"]), STR, max_size=2) | st.just(["a", 1]))
TLS_VERSION = st.sampled_from(["1.0", "1.1", "1.2", "1.3", "1.4", "", 1.2])
REGEX = st.sampled_from(["(.*)", "x.*", "(", "[[:alpha:]]+", "(?U)a", "(?i)ab", "a{2", "(?<n>a)", ""])
ACTION = st.sampled_from(["replace", "Keep", "DROP", "hashmod", "labelmap", "labeldrop", "labelkeep",
                          "keepequal", "dropequal", "lowercase", "uppercase", "bogus", "", 3])
TARGET = st.sampled_from(["", "a", "${1}", "bad-name", "$1x", "x_$1", "0a"])
REPLACEMENT = st.sampled_from(["$1", "", "${1}", "a", "$$", "bad-name", 5])


def section(
    fields: dict[str, st.SearchStrategy[Any]], extra: bool = False
) -> st.SearchStrategy[dict[str, Any]]:
    """A mapping holding some of ``fields`` (and, with ``extra``, now and then an unknown key)."""
    keys = st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=len(fields))

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out = {key: draw(fields[key]) for key in draw(keys)}
        if extra and draw(st.integers(0, 9)) == 0:
            out["bogus_option"] = 1
        return out

    return build()


RELABEL = section({
    "source_labels": st.lists(st.sampled_from(["a", "__name__", "0bad", "b"]), max_size=2) | st.just("a"),
    "separator": st.sampled_from([";", "", ","]), "regex": REGEX, "modulus": st.integers(-1, 3),
    "target_label": TARGET, "replacement": REPLACEMENT, "action": ACTION,
})
GLOBAL = section({
    "hostname": STR, "omit_hostname": BOOL, "interval": DURATION, "labels": LABELS, "providers": STRS,
    "concurrency": INT, "precision": st.sampled_from(["ms", "", "s"]), "print_configs": BOOL,
    "allow_short_intervals": st.booleans(),
})
WRITER_OPT = section({"batch": INT, "chan_size": INT})
WRITER = section({
    "url": URL, "basic_auth_user": STR, "basic_auth_pass": STR, "headers": HEADERS, "timeout": DURATION,
    "dial_timeout": DURATION, "max_idle_conns_per_host": INT, "tls_ca": STR, "insecure_skip_verify": BOOL,
    "min_shards": INT, "max_shards": INT, "max_retries": INT, "min_backoff": DURATION,
    "max_backoff": DURATION, "use_tls": BOOL,
})
LOG = section({"file_name": st.sampled_from(["stdout", "stderr", "", "  ", 3]), "max_size": INT,
               "max_age": INT, "max_backups": INT, "local_time": BOOL, "compress": BOOL})
INSTANCE = section({
    "urls": st.lists(URL, max_size=2) | URL, "url_label_key": st.sampled_from(["", "-", "instance",
                                                                                        "a b", "x"]),
    "url_label_value": STR, "url_label_pair": LABELS, "labels": LABELS, "interval_times": INT,
    "timeout": DURATION, "bearer_token_file": STR, "username": STR, "password": STR, "headers": HEADERS,
    "ignore_metrics": STRS, "metrics_drop": STRS, "name_prefix": STR, "use_tls": BOOL,
    "insecure_skip_verify": BOOL, "tls_min_version": TLS_VERSION, "tls_max_version": TLS_VERSION,
    "relabel_configs": st.lists(RELABEL, max_size=2), "metric_relabel_configs": st.lists(RELABEL, max_size=2),
    "target_relabel_configs": st.lists(RELABEL, max_size=1), "job": STR, "honor_labels": BOOL,
    "honor_timestamps": BOOL, "enable_compression": BOOL, "body_size_limit": INT, "sample_limit": INT,
    "label_limit": INT, "target_limit": INT, "track_timestamps_staleness": BOOL, "duplication_allowed": BOOL,
}, extra=True)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- each section on its own ------------------------------------------------------------------------------


def _agrees(
    cls: type[Plain], resolver: Callable[[dict[str, Any]], Plain | None], values: dict[str, Any]
) -> None:
    built = resolver(values)
    if built is None:
        return
    expected = cls(**values)  # the pydantic model accepts what the resolver accepted …
    assert built == expected  # … and builds the same object
    assert built.model_fields_set == expected.model_fields_set


@SETTINGS
@given(GLOBAL)
def test_global(values: dict[str, Any]) -> None:
    _agrees(GlobalConfig, resolve.resolve_global, values)


@SETTINGS
@given(WRITER_OPT)
def test_writer_options(values: dict[str, Any]) -> None:
    _agrees(WriterOptions, resolve.resolve_writer_options, values)


@SETTINGS
@given(WRITER.map(lambda v: {k: x for k, x in v.items() if k != "use_tls"}))
def test_writer(values: dict[str, Any]) -> None:
    _agrees(WriterConfig, resolve.resolve_writer, values)


@SETTINGS
@given(LOG)
def test_log(values: dict[str, Any]) -> None:
    _agrees(LogConfig, resolve.resolve_log, values)


@SETTINGS
@given(RELABEL)
def test_relabel(values: dict[str, Any]) -> None:
    _agrees(RelabelConfig, resolve.resolve_relabel, values)


@SETTINGS
@given(INSTANCE.map(lambda v: {k: x for k, x in v.items() if k != "bogus_option"}))
def test_instance(values: dict[str, Any]) -> None:
    _agrees(InstanceConfig, resolve.resolve_instance, values)


def test_the_resolver_builds_the_typical_sections_itself() -> None:
    # Not a vacuous agreement: the plain values of a real file are resolved, not declined.
    assert resolve.resolve_global({"hostname": "$HOSTNAME", "interval": 15, "providers": ["local"]})
    assert resolve.resolve_writer({"url": "http://u:p@h:9090/api/v1/write", "timeout": 5.0})
    assert resolve.resolve_instance({
        "urls": ["https://127.0.0.1:10250/metrics"], "bearer_token_file": "/t", "use_tls": True,
        "labels": {"job": "kubelet"}, "timeout": "3s",
        "relabel_configs": [{"source_labels": ["__name__"], "regex": "go_.*", "action": "drop"}],
    })
    assert resolve.resolve_relabel({"action": "labelmap", "regex": "__meta_(.+)", "replacement": "$1"})


def test_an_invalid_value_is_declined_and_pydantic_words_the_error() -> None:
    values = {"urls": ["ftp://h/m"]}
    assert resolve.resolve_instance(values) is None
    with pytest.raises(ValidationError, match="is not an http"):
        InstanceConfig(**values)  # type: ignore[arg-type]


# ---- whole directories: the same configuration, or the same error ----------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int | str):
        return json.dumps(v, ensure_ascii=False) if isinstance(v, str) else str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        pairs = (f"{json.dumps(k, ensure_ascii=False)} = {_toml_value(x)}" for k, x in v.items())
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(v)


def _table(header: str, values: dict[str, Any]) -> str:
    return header + "\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())


@st.composite
def categraf_dirs(draw: st.DrawFn) -> tuple[str, str]:
    main = [_table("[global]", draw(GLOBAL))]
    if draw(st.booleans()):
        main.append(_table("[writer_opt]", draw(WRITER_OPT)))
    for writer in draw(st.lists(WRITER.filter(lambda w: "url" in w), max_size=2)):
        main.append(_table("[[writers]]", writer))
    if draw(st.booleans()):
        main.append(_table("[log]", draw(LOG)))
    inputs = []
    if draw(st.booleans()):
        inputs.append(f"interval = {_toml_value(draw(DURATION))}\n")
    for instance in draw(st.lists(INSTANCE, min_size=1, max_size=3)):
        inputs.append(_table("[[instances]]", instance))
    return "\n".join(main), "\n".join(inputs)


@contextmanager
def _resolver(enabled: bool) -> Iterator[None]:
    saved = resolve.ENABLED
    resolve.ENABLED = enabled
    try:
        yield
    finally:
        resolve.ENABLED = saved


def _load(config_dir: Path, enabled: bool) -> Any:
    with _resolver(enabled):
        try:
            config = load_categraf(config_dir, env={"HOSTNAME": "node-1", "HOSTIP": "10.0.0.1"})
        except ConfigError as exc:
            return ("error", str(exc))
    return ("config", config, config.log.model_fields_set)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(categraf_dirs())
def test_loading_with_the_resolver_equals_loading_through_pydantic(files: tuple[str, str]) -> None:
    main, inputs = files
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp)
        (conf / "input.prometheus").mkdir()
        (conf / "config.toml").write_text(main)
        (conf / "input.prometheus" / "prometheus.toml").write_text(inputs)
        assert _load(conf, True) == _load(conf, False)
