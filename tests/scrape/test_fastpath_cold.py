"""The compiled cold path (a series seen for the first time) against the pure-Python one.

``_fastpath.cold_parse`` splits the sample lines it is sure about and returns ``None`` for every other
line, which the validating parser then decides; ``_fastpath.cold_head`` encodes a labeled series. Both
must agree exactly with the Python code they replace: a line the C code takes must parse to the same
name, labels, value (bit for bit), timestamp and series end; and two caches, one compiled and one pure,
must produce the same bytes, counts and errors on generated expositions full of hostile text (escapes,
invalid UTF-8, duplicate and ``__name__`` labels, empty values, huge labels, odd numbers).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kubescrape.config.models import AgentConfig, GlobalConfig, InstanceConfig
from kubescrape.emulator.payloads import NodePayloads
from kubescrape.errors import ParseError
from kubescrape.remote_write.encode import encode_labels, sample_head
from kubescrape.scrape.cache import COMPILED, ScrapeLimits, SeriesCache
from kubescrape.scrape.parser import Metadata, decode_line, parse_line
from kubescrape.scrape.targets import PlainLabeler, build_targets, make_labeler
from kubescrape.testing import FakeClock
from tests.scrape.test_fastpath import assert_same, outcome

pytestmark = pytest.mark.skipif(
    not COMPILED, reason="the compiled fast path is not built here (or KUBESCRAPE_PURE_PYTHON is set)"
)

NOW = 1_764_000_000_000

if TYPE_CHECKING or COMPILED:
    from kubescrape.scrape import _fastpath


def python_split(line: bytes) -> tuple[object, ...]:
    """What ``SeriesCache._slow_line`` gets from the validating parser for ``line``, with the series end
    in bytes and the value as its bits; or the error."""
    text, check_utf8 = decode_line(line)
    try:
        parsed = parse_line(text, Metadata(), check_utf8)
    except ParseError as exc:
        return ("error", exc.message)
    if parsed is None:
        return ("none",)
    name, labels, value, timestamp, series_end = parsed
    end = len(text[:series_end].encode("utf-8", "surrogateescape"))
    return ("ok", name, labels, struct.pack("<d", value), timestamp, end)


def compiled_split(line: bytes) -> tuple[object, ...] | None:
    split = _fastpath.cold_parse(line)
    if split is None:
        return None
    name, labels, value, timestamp, key = split
    assert key == line[: len(key) - 1] + b" "
    return ("ok", name, labels, struct.pack("<d", value), timestamp, len(key) - 1)


# -- generated lines -------------------------------------------------------------------------------------

# Mostly valid choices (so that many lines reach the C code's full path), with hostile ones among them.
_names = st.sampled_from(
    ["a", "foo_bar", "a:b:c", "_x", ":x", "X1", "container_cpu"] * 3 + ["1a", "", "a-b", "é"]
)
_label_names = st.sampled_from(
    ["a", "b", "A_1", "_x", "container", "pod", "namespace"] * 4 + ["__name__", "1a", "a-b", "", "é", "a b"]
)
# Label value text, escapes written out: plain text, every escape, quotes, braces, blanks, control and
# non-ASCII characters, and raw bytes that are not UTF-8 (``\udcff`` stands for the byte 0xff).
_value_pieces = st.sampled_from(
    [
        "x",
        "/kubepods/burstable/pod1",
        "",
        " ",
        "\\\\",
        '\\"',
        "\\n",
        "\\t",
        "\\q",
        "\\",
        '"',
        "}",
        "{",
        ",",
        "=",
        "é",
        "日本",
        "\x00",
        "\r",
        "\x7f",
        "\udcff",
        "\udce9",
        "\U0001f600",
        "\\é",
        "\\\udcff",
    ]
)
_plain_pieces = st.sampled_from(["x", "/kubepods/pod1", "", " ", "é", "\\\\", '\\"', "\\n", "\\q"])
_label_values = st.one_of(
    st.lists(_plain_pieces, max_size=4).map("".join),
    st.lists(_value_pieces, max_size=6).map("".join),
    st.sampled_from(["v" * 300, "é" * 5000]),
)
_pair_seps = st.sampled_from([","] * 12 + ["", " ,", ", ", "\t,", ",,"])
_numbers = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "-0",
            "+1",
            "1.",
            ".5",
            "+.5e-3",
            "1E5",
            "1e+06",
            "2.80129098947e+11",
            "1e400",
            "-1e400",
            "1e-400",
            "4.9e-324",
            "1.7976931348623157e308",
            "1.8e308",
            "NaN",
            "+Inf",
            "-Inf",
            "inf",
            "Infinity",
            "+nan",
            "1_0",
            "0x1p3",
            "0x10",
            ".",
            "+",
            "-",
            "e5",
            "1e",
            "1e+",
            "1.5.1",
            "",
            "x",
            "\u0663",
            "1\r",
            "00012",
            "1" * 70,
            "0." + "1" * 70,
        ]
    ),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f"{f:e}"),
    st.integers(-(10**25), 10**25).map(str),
)
_stamps = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            f" {NOW}",
            " 0",
            " 00012",
            " -1",
            " 1.5",
            " 9223372036854775807",
            " 9223372036854775808",
            " 99999999999999999999",
            " 18446744073709551616",
            f" {NOW} x",
            f"  {NOW}",
            f"\t{NOW}",
            " 1e3",
            f" {NOW} ",
        ]
    ),
    st.integers(0, 2**64).map(lambda ts: f" {ts}"),
)


_clean_numbers = st.one_of(
    st.sampled_from(["0", "-0", "+1", "1.", ".5", "+.5e-3", "1E5", "2.80129098947e+11", "1e-400", "1e400"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(10**25), 10**25).map(str),
)
_clean_stamps = st.one_of(st.just(""), st.integers(0, 2**63 + 10).map(lambda ts: f" {ts}"))


def _pick(draw: st.DrawFn, clean: bool, usual: str, hostile: list[str]) -> str:
    return usual if clean else draw(st.sampled_from([usual] * 8 + hostile))


@st.composite
def _lines(draw: st.DrawFn) -> bytes:
    """One sample line: either well formed in structure (hostile label values and numbers only), or
    with hostile pieces anywhere."""
    clean = draw(st.booleans())
    name = draw(_names)
    series = name
    if draw(st.booleans()):
        pairs = draw(st.lists(st.tuples(_label_names, _label_values), max_size=6))
        body = ""
        for i, (label, value) in enumerate(pairs):
            if i:
                body += _pick(draw, clean, ",", ["", " ,", ", ", "\t,", ",,"])
            assign = _pick(draw, clean, "=", [" = ", "", "=="])
            quote = _pick(draw, clean, '"', ["", "'"])
            body += f"{label}{assign}{quote}{value}{quote}"
        trailing: bool = draw(st.booleans())
        if pairs and trailing:
            body += _pick(draw, clean, ",", [" ,", ",,", "\t"])
        close = _pick(draw, clean, "}", ["", "}}", " }"])
        series = f"{name}{_pick(draw, clean, '', [' '])}{{{body}{close}"
    blank = _pick(draw, clean, " ", ["  ", "\t", ""])
    lead = _pick(draw, clean, "", [" ", "#"])
    number = draw(_clean_numbers if clean else _numbers)
    stamp = draw(_clean_stamps if clean else _stamps)
    return f"{lead}{series}{blank}{number}{stamp}".encode("utf-8", "surrogateescape")


def test_cold_parse_takes_the_plain_lines() -> None:
    """The usual kubelet lines are split in C (so the differential tests below compare real work)."""
    line = (
        b'container_cpu_usage_seconds_total{container="app",cpu="total",id="/kubepods/pod1/c1",'
        b'image="registry.k8s.io/app:1.0",name="c1",namespace="default",pod="app-1"} 2.80129098947e+11'
        b" 1699999991122"
    )
    assert compiled_split(line) == python_split(line)
    assert compiled_split(b'a{b="x\\\\y\\"z\\nw\\q",c="\xc3\xa9",} -0') == python_split(
        b'a{b="x\\\\y\\"z\\nw\\q",c="\xc3\xa9",} -0'
    )
    assert compiled_split(b"a 1 9223372036854775807") is not None
    assert compiled_split(b"a{} .5") is not None


@pytest.mark.parametrize(
    "line",
    [
        b'a{b="\xff"} 1',  # invalid UTF-8
        b'a{b="\xed\xa0\x80"} 1',  # an encoded surrogate
        b'a{b="1",b="2"} 1',  # duplicate label
        b'a{__name__="b"} 1',
        b"a NaN",
        b"a +Inf",
        b"a 1e400",
        b"a 1_0",
        b"a 1 9223372036854775808",
        b"a  1",
        b"a\t1",
        b"a 1 ",
        b'a{b="1" c="2"} 1',  # pairs without a comma: valid, but left to Python
        b'a{ b="1"} 1',
        b'a{b="1"',
        b" a 1",
        b"# HELP a x",
        b"",
        b"a{" + b",".join(b'l%d="v"' % i for i in range(65)) + b"} 1",  # more labels than it tracks
    ],
)
def test_cold_parse_leaves_the_rest_to_python(line: bytes) -> None:
    assert compiled_split(line) is None


@settings(max_examples=3000, deadline=None)
@given(_lines())
@example(b'a{b="\\\\\xff"} 1')
@example(b'a{b="x\\"} 1')
@example(b'a{b="x"} 1e308')
def test_cold_parse_agrees_with_the_parser(line: bytes) -> None:
    """Whatever the C code takes, the validating parser accepts with the very same result."""
    got = compiled_split(line)
    if got is not None:
        assert got == python_split(line)


# -- cold_head -------------------------------------------------------------------------------------------

_head_labels = st.lists(
    st.tuples(
        st.sampled_from(["__name__", "a", "b", "job", "é", "", "__name__", "\udcff"]),
        st.sampled_from(["", "x", "v" * 200, "é" * 3000, "\x00", "\udcff", "m"]),
    ),
    max_size=8,
)


def python_head(labels: list[tuple[str, str]]) -> tuple[object, ...]:
    try:
        return ("ok", sample_head(encode_labels(labels), 6))
    except ValueError as exc:
        return ("error", type(exc), str(exc))


def compiled_head(labels: list[tuple[str, str]]) -> tuple[object, ...] | None:
    try:
        head = _fastpath.cold_head(labels)
    except ValueError as exc:
        return ("error", type(exc), str(exc))
    return None if head is None else ("ok", head)


@settings(max_examples=1500, deadline=None)
@given(_head_labels)
@example([("__name__", "a")])
@example([("__name__", "")])
@example([("__name__", ""), ("__name__", "x")])
@example([("a", "b")])
@example([("__name__", "x"), ("a", "\udcff")])
@example([("__name__", "x"), ("\udcff", "")])
@example([("__name__", "x"), ("\udcff", "y")])
def test_cold_head_agrees_with_encode_labels(labels: list[tuple[str, str]]) -> None:
    """Same bytes, same error (no or empty ``__name__``; a value that is not UTF-8)."""
    assert compiled_head(labels) == python_head(labels)


def test_cold_head_leaves_unusual_lists_to_python() -> None:
    assert _fastpath.cold_head((("__name__", "a"),)) is None
    assert _fastpath.cold_head([("__name__", "a", "x")]) is None
    assert _fastpath.cold_head([["__name__", "a"]]) is None
    assert _fastpath.cold_head([("__name__", b"a")]) is None


# -- whole scrapes ---------------------------------------------------------------------------------------


def labeler(name: str, labels: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """Target labels; ``drop_*`` series are dropped, ``noname_*`` lose their name (an error)."""
    if name.startswith("drop_"):
        return None
    if name.startswith("noname_"):
        return list(labels)
    return [("__name__", name), *labels, ("instance", "node-1:10250"), ("job", "kubelet")]


_good_lines = st.builds(
    lambda name, pairs, value, stamp: (
        f"{name}{{{','.join(f'{k}={chr(34)}{v}{chr(34)}' for k, v in pairs)}}} {value}{stamp}".encode(
            "utf-8", "surrogateescape"
        )
    ),
    st.sampled_from(["a", "b_total", "drop_x", "noname_y", "c:d"]),
    st.lists(
        st.tuples(st.sampled_from(["x", "y", "z", "pod"]), _label_values),
        max_size=3,
        unique_by=lambda p: p[0],
    ),
    st.sampled_from(["1", "-0", "2.5e3", "NaN", ".5"]),
    st.sampled_from(["", f" {NOW}", f" {NOW - 1}", " 5", f" {NOW + 3_600_000}"]),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.one_of(_good_lines, _good_lines, _good_lines, _lines()), min_size=1, max_size=15),
    st.sampled_from([None, ScrapeLimits(sample_limit=3), ScrapeLimits(label_value_length_limit=50)]),
)
def test_cold_scrapes_agree(lines: list[bytes], limits: ScrapeLimits | None) -> None:
    """First scrape (every series new) and a second one with churn: same bytes, counts and errors."""
    first = b"\n".join(lines) + b"\n"
    second = b"\n".join(reversed(lines)) + b"\n"
    assert_same([(first, NOW), (second, NOW + 15_000)], limits=limits, labeler=labeler)


def churning_scrapes(count: int = 4) -> list[tuple[bytes, int]]:
    """Successive cAdvisor payloads of an emulated 12-pod node that replaces pods, 15 s apart, with their
    scrape times."""
    clock = FakeClock(autojump=False)
    node = NodePayloads("node-1", "10.0.0.1", 12, churn_per_min=20.0, seed=3, clock=clock)
    scrapes = []
    for _ in range(count):
        scrapes.append((node.cadvisor(), int(clock.time() * 1000)))
        clock.advance(15.0)
    return scrapes


def test_cold_scrapes_agree_on_the_kubelet_payload_with_churn() -> None:
    """The emulator's cAdvisor payload: a first scrape, then scrapes with pods replaced."""
    outcomes = assert_same(churning_scrapes(), labeler=labeler)
    first = outcomes[0]
    assert first[0] == "ok"
    assert isinstance(first[2], int) and first[2] > 1000
    assert first[4] == first[2]  # every series of the first scrape is new


# -- the compiled cold loop (cold_run): new series of a plainly labeled target ----------------------------


def plain_labeler(labels: dict[str, str]) -> PlainLabeler:
    """The agent's own labeler for a kubelet target with these target labels and no rules: the one the
    series cache hands to the compiled cold loop."""
    target = build_targets(AgentConfig(
        global_=GlobalConfig(hostname="node-1", interval=15.0, omit_hostname=True),
        instances=[InstanceConfig(urls=["https://10.0.0.1:10250/metrics/cadvisor"], labels=labels)],
    ))[0]
    made = make_labeler(target)
    assert isinstance(made, PlainLabeler)
    return made


class CountingLabeler:
    """A plain labeler that counts its calls (the compiled cold loop labels without calling it)."""

    def __init__(self, inner: PlainLabeler) -> None:
        self.plain_target_labels = inner.plain_target_labels
        self.inner = inner
        self.calls = 0

    def __call__(self, name: str, scraped: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
        self.calls += 1
        return self.inner(name, scraped)


# Target labels: usual ones, one with an empty value, non-ASCII text, names that sort before and after
# the scraped ones; scraped label names that clash with them (exported_* renaming, left to Python).
_target_label_sets = st.sampled_from([
    {"instance": "node-1:10250", "job": "kubelet"},
    {"instance": "node-1:10250", "job": "kubelet", "exported_job": "x", "zone": ""},
    {"a": "é", "zz": "日本", "cluster": "c\\\"\n"},
    {},
])
_plain_stamps = st.sampled_from(
    ["", f" {NOW}", f" {NOW - 1}", f" {NOW}", " 5", f" {NOW + 3_600_000}", " 0034359738368", " 34359738367",
     f" {NOW - 700_000_000}"]
)
_plain_lines = st.builds(
    lambda name, pairs, value, stamp: (
        f"{name}{{{','.join(f'{k}={chr(34)}{v}{chr(34)}' for k, v in pairs)}}} {value}{stamp}".encode(
            "utf-8", "surrogateescape"
        )
    ),
    st.sampled_from(["a", "b_total", "c:d", "container_cpu_usage_seconds_total"]),
    st.lists(
        st.tuples(st.sampled_from(["x", "y", "pod", "job", "instance", "exported_job", "zone", "a", "zz"]),
                  _label_values),
        max_size=4,
        unique_by=lambda p: p[0],
    ),
    _clean_numbers,
    _plain_stamps,
)
_other_lines = st.sampled_from(
    [b"", b"# HELP a help text", b"# TYPE a gauge", b"# TYPE b_total counter", b"#", b"a 1", b"a{} 2",
     b"a{x=\"1\",} 3", b" a 1", b"c:d NaN"]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(_plain_lines, _plain_lines, _plain_lines, _other_lines, _lines()), min_size=1, max_size=20
    ),
    _target_label_sets,
    st.booleans(),
    st.sampled_from([None, ScrapeLimits(sample_limit=3), ScrapeLimits(sample_limit=8),
                     ScrapeLimits(label_value_length_limit=50)]),
)
def test_cold_run_scrapes_agree(
    lines: list[bytes], labels: dict[str, str], honor: bool, limits: ScrapeLimits | None
) -> None:
    """A plainly labeled target: the compiled cold loop and the pure-Python path give the same bytes,
    counts and errors on a first scrape, a reordered one with a repeated line, and one with new lines."""
    first = b"\n".join(lines) + b"\n"
    second = b"\n".join([*reversed(lines), lines[0]]) + b"\n"
    third = b"\n".join([*lines, b"new_series{pod=\"p\"} 1", b"new_series{pod=\"q\"} 2"]) + b"\n"
    assert_same(
        [(first, NOW), (second, NOW + 15_000), (third, NOW + 30_000)],
        labeler=plain_labeler(labels),
        honor_timestamps=honor,
        limits=limits,
    )


def test_cold_run_labels_new_series_itself_on_the_kubelet_payload_with_churn() -> None:
    """The emulator's cAdvisor payload with pods replaced: same outcomes as the pure-Python path, and the
    compiled cache labels the first scrape's series without calling the labeler."""
    scrapes = churning_scrapes()
    inner = plain_labeler({"instance": "node-1:10250", "job": "kubelet"})
    counting = CountingLabeler(inner)
    compiled = SeriesCache(counting, compiled=True)
    pure = SeriesCache(inner, compiled=False)
    for i, (body, ts) in enumerate(scrapes):
        got = outcome(compiled, body, ts)
        assert got == outcome(pure, body, ts), f"scrape {i} differs"
        assert got[0] == "ok"
        if i == 0:
            assert isinstance(got[2], int) and got[2] > 1000
            assert counting.calls == 0  # every series of the first scrape labeled by cold_run
    assert counting.calls == 0


def test_cold_run_leaves_clashes_and_label_limits_to_python() -> None:
    """A scraped label that clashes with a target label is labeled by Python (exported_job); with label
    limits set the compiled cold loop is not used at all."""
    inner = plain_labeler({"instance": "node-1:10250", "job": "kubelet"})
    body = b'a{pod="p"} 1\na{job="j",pod="p"} 2\n'
    counting = CountingLabeler(inner)
    assert outcome(SeriesCache(counting, compiled=True), body, NOW) == outcome(
        SeriesCache(inner, compiled=False), body, NOW
    )
    assert counting.calls == 1
    limited = CountingLabeler(inner)
    SeriesCache(limited, compiled=True, limits=ScrapeLimits(label_limit=10)).process(body, NOW)
    assert limited.calls == 2


def test_cold_run_rejects_wrong_arguments() -> None:
    tail = b"\x10" + b"\x80" * 5 + b"\x01"
    cold_run: Any = _fastpath.cold_run  # called with wrong arguments on purpose
    args: list[object] = [b"a 1\n", 0, 4, (), {}, [], [], [], [], tail, True, 0, 1 << 62, 1 << 62]
    assert cold_run(*args) == (4, 1)
    with pytest.raises(TypeError):
        cold_run(*args[:-1])
    with pytest.raises(TypeError):
        cold_run(*args[:3], ((b"job", "kubelet"),), *args[4:])
    with pytest.raises(ValueError):
        cold_run(args[0], 0, 99, *args[3:])
