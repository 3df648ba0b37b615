"""Parser tests: tables of exposition text -> samples or error, plus round-trip and fuzz properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubescrape.errors import ParseError
from kubescrape.scrape.parser import (
    Sample,
    format_value,
    parse,
    parse_float,
    parse_metadata,
    parse_series,
    render,
)

INF = math.inf

VALID: list[tuple[str, str, list[Sample]]] = [
    ("empty", "", []),
    ("blank lines only", "\n\n  \n\t\n", []),
    ("bare name", "up 1\n", [Sample("up", (), 1.0, None)]),
    ("no trailing newline", "up 1", [Sample("up", (), 1.0, None)]),
    ("colon in name", "job:up:sum 2", [Sample("job:up:sum", (), 2.0, None)]),
    ("timestamp", "up 1 1700000000000\n", [Sample("up", (), 1.0, 1700000000000)]),
    ("timestamp zero", "up 1 0", [Sample("up", (), 1.0, 0)]),
    ("int64 max timestamp", "up 1 9223372036854775807", [Sample("up", (), 1.0, 9223372036854775807)]),
    ("labels", 'm{a="1",b="2"} 3', [Sample("m", (("a", "1"), ("b", "2")), 3.0, None)]),
    ("label order kept", 'm{b="2",a="1"} 3', [Sample("m", (("b", "2"), ("a", "1")), 3.0, None)]),
    ("trailing comma", 'm{a="1",} 3', [Sample("m", (("a", "1"),), 3.0, None)]),
    ("empty label set", "m{} 3", [Sample("m", (), 3.0, None)]),
    ("no comma between pairs", 'm{a="1" b="2"} 3', [Sample("m", (("a", "1"), ("b", "2")), 3.0, None)]),
    (
        "blanks between every token",
        'm \t{ a = "1" , b\t=\t"2" , } \t 3 \t 17 \t',
        [Sample("m", (("a", "1"), ("b", "2")), 3.0, 17)],
    ),
    ("value glued to brace", 'm{a="1"}3', [Sample("m", (("a", "1"),), 3.0, None)]),
    ("value glued to name", "m+3", [Sample("m", (), 3.0, None)]),
    ("escaped backslash", r'm{a="x\\y"} 1', [Sample("m", (("a", "x\\y"),), 1.0, None)]),
    ("escaped quote", r'm{a="x\"y"} 1', [Sample("m", (("a", 'x"y'),), 1.0, None)]),
    ("escaped newline", r'm{a="x\ny"} 1', [Sample("m", (("a", "x\ny"),), 1.0, None)]),
    ("unknown escape kept", r'm{a="x\ty"} 1', [Sample("m", (("a", "x\\ty"),), 1.0, None)]),
    ("backslash then n", r'm{a="x\\ny"} 1', [Sample("m", (("a", "x\\ny"),), 1.0, None)]),
    ("braces and commas in value", 'm{a="},{=\\""} 1', [Sample("m", (("a", '},{="'),), 1.0, None)]),
    ("unicode value", 'm{a="日本 ü"} 1', [Sample("m", (("a", "日本 ü"),), 1.0, None)]),
    ("empty value", 'm{a=""} 1', [Sample("m", (("a", ""),), 1.0, None)]),
    ("+Inf", "m +Inf", [Sample("m", (), INF, None)]),
    ("-Inf", "m -Inf", [Sample("m", (), -INF, None)]),
    ("Inf", "m Inf", [Sample("m", (), INF, None)]),
    ("infinity any case", "m -iNfInItY", [Sample("m", (), -INF, None)]),
    ("exponent", "m 1.5e3", [Sample("m", (), 1500.0, None)]),
    ("negative exponent", "m -2E-2", [Sample("m", (), -0.02, None)]),
    ("leading dot", "m .5", [Sample("m", (), 0.5, None)]),
    ("trailing dot", "m 5.", [Sample("m", (), 5.0, None)]),
    ("negative zero", "m -0", [Sample("m", (), -0.0, None)]),
    ("underflow is zero", "m 1e-400", [Sample("m", (), 0.0, None)]),
    ("comment", "# just a comment\nm 1", [Sample("m", (), 1.0, None)]),
    ("comment without blank", "#comment\nm 1", [Sample("m", (), 1.0, None)]),
    ("indented comment", "  # HELP m x\nm 1", [Sample("m", (), 1.0, None)]),
    ("lone hash", "#\nm 1", [Sample("m", (), 1.0, None)]),
    ("HELP-like comment", "# HELPER text\nm 1", [Sample("m", (), 1.0, None)]),
    ("other keyword comment", "# UNIT m seconds\nm 1", [Sample("m", (), 1.0, None)]),
    ("help with no text", "# HELP m\nm 1", [Sample("m", (), 1.0, None)]),
    (
        "histogram",
        '# TYPE h histogram\nh_bucket{le="0.5"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1.5\nh_count 2\n',
        [
            Sample("h_bucket", (("le", "0.5"),), 1.0, None),
            Sample("h_bucket", (("le", "+Inf"),), 2.0, None),
            Sample("h_sum", (), 1.5, None),
            Sample("h_count", (), 2.0, None),
        ],
    ),
    (
        "summary",
        '# TYPE s summary\ns{quantile="0.99"} NaN\ns_sum 0\ns_count 0\n',
        [
            Sample("s", (("quantile", "0.99"),), math.nan, None),
            Sample("s_sum", (), 0.0, None),
            Sample("s_count", (), 0.0, None),
        ],
    ),
    (
        # Finding 7 of issue 15: Prometheus' scrape parser accepts a repeated TYPE (and HELP) line and a
        # family split in two groups that repeat it; prometheus/common's stricter parser is not used.
        "duplicate TYPE and split family",
        "# HELP m first\n# TYPE m counter\nm{a=\"1\"} 1\n# TYPE m counter\nother 2\n"
        "# HELP m again\n# TYPE m counter\nm{a=\"2\"} 3\n",
        [
            Sample("m", (("a", "1"),), 1.0, None),
            Sample("other", (), 2.0, None),
            Sample("m", (("a", "2"),), 3.0, None),
        ],
    ),
    (
        "same name with different TYPE names",
        "# TYPE a counter\n# TYPE b gauge\n# TYPE a_total untyped\na 1\n",
        [Sample("a", (), 1.0, None)],
    ),
]

INVALID: list[tuple[str, str, int, str]] = [
    ("value missing", "up\n", 1, "expected a value"),
    ("name and digits are one token", "up1", 1, "expected a value"),
    ("underscore in value", "up 1_000", 1, "invalid float"),
    ("hex value", "up 0x10", 1, "invalid float"),
    ("hex float", "up 0x1p3", 1, "invalid float"),
    ("signed NaN", "up -NaN", 1, "invalid float"),
    ("plus NaN", "up +nan", 1, "invalid float"),
    ("out of range", "up 1e400", 1, "out of range"),
    ("negative out of range", "up -1e999", 1, "out of range"),
    ("carriage return (CRLF body)", "up 1\r\n", 1, "invalid float"),
    ("CRLF with timestamp", "up 1 5\r\n", 1, "timestamp"),
    ("vertical tab in value", "up 1\x0b", 1, "invalid float"),
    ("non-ASCII digits", "up ١", 1, "invalid float"),
    ("negative timestamp", "up 1 -5", 1, "timestamp"),
    ("float timestamp", "up 1 1.5", 1, "timestamp"),
    ("timestamp overflow", "up 1 9223372036854775808", 1, "int64"),
    ("text after timestamp", "up 1 2 3", 1, "after the timestamp"),
    ("second line bad", "up 1\nup{", 2, "unterminated"),
    ("unterminated label set", 'm{a="1" 1', 1, "unterminated"),
    ("unterminated label value", 'm{a="1} 1', 1, "unterminated"),
    ("unquoted label value", "m{a=1} 1", 1, "double-quoted"),
    ("single quotes", "m{a='1'} 1", 1, "double-quoted"),
    ("missing equals", 'm{a"1"} 1', 1, "expected '='"),
    ("double comma", 'm{a="1",,b="2"} 1', 1, "expected label name"),
    ("leading comma", 'm{,a="1"} 1', 1, "expected label name"),
    # Prometheus 2.42 takes leading blanks into the metric name, which is then invalid (differential test).
    ("blank before the name", "m 1\n  m2 2\n", 2, "blank before the metric name"),
    ("tab before the name", "\tm 1\n", 1, "blank before the metric name"),
    ("colon in label name", 'm{a:b="1"} 1', 1, "expected '='"),
    ("label name starts with digit", 'm{1a="1"} 1', 1, "expected label name"),
    ("duplicate label", 'm{a="1",a="2"} 1', 1, "not unique"),
    ("__name__ label", 'm{__name__="x"} 1', 1, "not unique"),
    ("no metric name", '{a="1"} 1', 1, "metric name"),
    ("name starts with digit", "1m 1", 1, "metric name"),
    ("second label set", 'm{a="1"}{b="2"} 1', 1, "'{'"),
    ("raw newline in label value", 'm{a="x\ny"} 1', 1, "unterminated"),
    ("bad TYPE", "# TYPE m gauges\nm 1", 1, "invalid metric type"),
    ("TYPE without type", "# TYPE m\n", 1, "invalid metric type"),
    ("TYPE with two blanks", "# TYPE m  counter\n", 1, "invalid metric type"),
    ("TYPE with trailing blank", "# TYPE m counter \n", 1, "invalid metric type"),
    ("HELP with bad name", "# HELP 1m text\n", 1, "metric name after HELP"),
    ("TYPE with bad name", "# TYPE -m counter\n", 1, "metric name after TYPE"),
    ("NUL byte", "up\x001\n", 1, "invalid"),
]


def _same(a: list[Sample], b: list[Sample]) -> bool:
    """Sample lists equal, NaN equal to NaN, -0.0 distinct from 0.0."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if (x.name, x.labels, x.timestamp_ms) != (y.name, y.labels, y.timestamp_ms):
            return False
        if math.isnan(x.value) or math.isnan(y.value):
            if not (math.isnan(x.value) and math.isnan(y.value)):
                return False
        elif x.value != y.value or math.copysign(1, x.value) != math.copysign(1, y.value):
            return False
    return True


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in VALID], ids=[n for n, _, _ in VALID])
def test_valid_exposition(text: str, expected: list[Sample]) -> None:
    assert _same(parse(text), expected)


@pytest.mark.parametrize(
    ("text", "line_no", "fragment"), [(t, n, f) for _, t, n, f in INVALID], ids=[n for n, *_ in INVALID]
)
def test_invalid_exposition(text: str, line_no: int, fragment: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(text)
    err = info.value
    assert err.line_no == line_no
    assert err.line == text.split("\n")[line_no - 1]
    assert fragment in err.message
    assert f"line {line_no}" in str(err)
    assert err.fix  # every error says what to do


def test_invalid_utf8_label_value_is_rejected_but_comment_is_not() -> None:
    raw = b'm{a="\xff"} 1\n'.decode("utf-8", "surrogateescape")
    with pytest.raises(ParseError, match="UTF-8"):
        parse(raw)
    comment = b"# caf\xe9\nm 1\n".decode("utf-8", "surrogateescape")
    assert parse(comment) == [Sample("m", (), 1.0, None)]


def test_metadata() -> None:
    text = (
        "# HELP a Total of a.\n# TYPE a counter\na 1\n"
        "# HELP b Escapes: back\\\\slash and\\nnewline, kept \\t\n"
        "# TYPE c histogram\n"
    )
    assert parse_metadata(text) == {
        "a": ("counter", "Total of a."),
        "c": ("histogram", ""),
        "b": ("untyped", "Escapes: back\\slash and\nnewline, kept \\t"),
    }


def test_metadata_validates_samples_too() -> None:
    with pytest.raises(ParseError):
        parse_metadata("# TYPE a counter\na x\n")


@pytest.mark.parametrize(
    ("series", "name", "labels"),
    [
        ("up", "up", []),
        ('up{job="a"}', "up", [("job", "a")]),
        (' up { job = "a\\"b" , } ', "up", [("job", 'a"b')]),
    ],
)
def test_parse_series(series: str, name: str, labels: list[tuple[str, str]]) -> None:
    assert parse_series(series) == (name, labels)


@pytest.mark.parametrize("series", ["", "1up", 'up{job="a"', "up x", 'up{job="a"} 1', 'up{a="1",a="2"}'])
def test_parse_series_errors(series: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_series(series)
    assert info.value.line_no == 0


@pytest.mark.parametrize(
    ("value", "text"),
    [(math.nan, "NaN"), (INF, "+Inf"), (-INF, "-Inf"), (0.1, "0.1"), (1e300, "1e+300"), (-0.0, "-0"),
     (1.0, "1"), (-3.0, "-3"), (0.0, "0"), (123456789.0, "123456789"), (2.5, "2.5")],
)
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text
    parsed = parse_float(text)
    assert parsed == value or (math.isnan(parsed) and math.isnan(value))


def test_render_escapes_and_timestamps() -> None:
    samples = [
        Sample("m", (("a", 'q"b\\n\nl'),), 1.5, 17),
        Sample("n", (), math.nan, None),
    ]
    text = render(samples)
    assert text == 'm{a="q\\"b\\\\n\\nl"} 1.5 17\nn NaN\n'
    assert _same(parse(text), samples)


# Round trip: any valid sample list renders to text that parses back to the same samples.
_LETTERS = "abcxyzABCXYZ_"
_DIGITS = "0129"
names = st.builds(
    str.__add__, st.sampled_from(_LETTERS + ":"), st.text(_LETTERS + _DIGITS + ":", max_size=12)
)
label_names = st.builds(
    str.__add__, st.sampled_from(_LETTERS), st.text(_LETTERS + _DIGITS, max_size=8)
).filter(lambda n: n != "__name__")
label_values = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
label_sets = st.lists(st.tuples(label_names, label_values), max_size=6, unique_by=lambda pair: pair[0])
samples_strategy = st.builds(
    Sample,
    names,
    label_sets.map(tuple),
    st.floats(allow_nan=True, allow_infinity=True),
    st.one_of(st.none(), st.integers(min_value=0, max_value=2**63 - 1)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(samples_strategy, max_size=6))
def test_round_trip(samples: list[Sample]) -> None:
    assert _same(parse(render(samples)), samples)


# Fuzz: arbitrary text gives samples or a ParseError carrying a line number, never another exception.
exposition_alphabet = st.sampled_from(list('abc_:{}=",# \t\n\\01.+-eEInfNa\r\x0b_日'))


def _parse_or_error(text: str) -> None:
    try:
        result = parse(text)
    except ParseError as err:
        assert err.line_no >= 1
        assert err.line == text.split("\n")[err.line_no - 1]
        return
    assert all(isinstance(sample, Sample) for sample in result)


@settings(max_examples=500, deadline=None)
@given(st.text(exposition_alphabet, max_size=60))
def test_fuzz_structured_alphabet(text: str) -> None:
    _parse_or_error(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_any_text(text: str) -> None:
    _parse_or_error(text)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(samples_strategy, min_size=1, max_size=3),
    st.integers(0, 200),
    st.text(exposition_alphabet, max_size=3),
)
def test_fuzz_mutated_valid_text(samples: list[Sample], where: int, insert: str) -> None:
    text = render(samples)
    where %= len(text) + 1
    _parse_or_error(text[:where] + insert + text[where:])
