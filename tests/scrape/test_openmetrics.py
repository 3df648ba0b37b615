"""OpenMetrics as Prometheus 2.42 parses it (the differential test in tests/e2e/test_acceptance.py checks
the same cases against the real binary)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubescrape.errors import ParseError
from kubescrape.remote_write.encode import decode_write_request
from kubescrape.scrape.cache import ScrapeResult, SeriesCache
from kubescrape.scrape.openmetrics import is_openmetrics, parse_openmetrics
from kubescrape.scrape.parser import Sample

OM = "application/openmetrics-text; version=1.0.0; charset=utf-8"
NOW = 1_796_193_070_000  # ms; 2 s after the seconds timestamp of finding 3


def _labels(**kv: str) -> tuple[tuple[str, str], ...]:
    return tuple(kv.items())


VALID: list[tuple[str, str, list[Sample]]] = [
    ("timestamp in seconds", "om_total 5 1796193068\n# EOF\n", [Sample("om_total", (), 5.0, 1796193068000)]),
    ("float seconds truncated to ms", "a 1 1.0015\n# EOF\n", [Sample("a", (), 1.0, 1001)]),
    ("negative seconds", "a 1 -1\n# EOF\n", [Sample("a", (), 1.0, -1000)]),
    ("huge seconds become the minimum int64", "a 1 1e300\n# EOF\n", [Sample("a", (), 1.0, -(1 << 63))]),
    (
        "exemplar with and without timestamps",
        '# TYPE foo counter\nfoo_total 1 # {trace_id="abc"} 1 1.5\nfoo_total{a="b"} 2 3 # {} 0.5\n# EOF\n',
        [Sample("foo_total", (), 1.0, None), Sample("foo_total", (("a", "b"),), 2.0, 3000)],
    ),
    (
        "created, unit, help, repeated TYPE",
        "# TYPE x_seconds counter\n# UNIT x_seconds seconds\n# HELP x_seconds Time.\n"
        "# TYPE x_seconds counter\nx_seconds_total 1\nx_seconds_created 1.7e9\n# EOF",
        [Sample("x_seconds_total", (), 1.0, None), Sample("x_seconds_created", (), 1.7e9, None)],
    ),
    (
        "info, stateset, gaugehistogram are plain series",
        '# TYPE b info\nb_info{v="1"} 1\n# TYPE s stateset\ns{s="a"} 1\n# TYPE g gaugehistogram\n'
        'g_bucket{le="+Inf"} 2\ng_gcount 2\ng_gsum 3\n# EOF\n',
        [
            Sample("b_info", _labels(v="1"), 1.0, None),
            Sample("s", _labels(s="a"), 1.0, None),
            Sample("g_bucket", _labels(le="+Inf"), 2.0, None),
            Sample("g_gcount", (), 2.0, None),
            Sample("g_gsum", (), 3.0, None),
        ],
    ),
    (
        "escapes",
        'a{q="\\"",b="\\\\",n="\\n",t="\\t"} 1\n# EOF\n',
        [Sample("a", _labels(q='"', b="\\", n="\n", t="\\t"), 1.0, None)],
    ),
    ("empty label set", "a{} 1\n# EOF\n", [Sample("a", (), 1.0, None)]),
    ("only EOF", "# EOF\n", []),
]

INVALID: list[tuple[str, str, int, str]] = [
    ("no EOF", "a 1\n", 2, "does not end with # EOF"),
    ("empty body", "", 1, "does not end with # EOF"),
    ("data after EOF", "# EOF\na 1\n", 2, "after # EOF"),
    ("blank line after EOF", "a 1\n# EOF\n\n", 3, "after # EOF"),
    ("blank line", "a 1\n\n# EOF\n", 2, "blank line"),
    ("plain comment", "# hi\n# EOF\n", 1, "no plain comments"),
    ("two blanks", "a  1\n# EOF\n", 1, "exactly one space"),
    ("trailing blank", "a 1 \n# EOF\n", 1, "exactly one space"),
    ("CRLF", "a 1\r\n# EOF\n", 1, "carriage return"),
    ("trailing comma", 'a{x="1",} 1\n# EOF\n', 1, "label set"),
    ("blank in label set", 'a{x="1", y="2"} 1\n# EOF\n', 1, "without blanks"),
    ("NaN timestamp", "a 1 NaN\n# EOF\n", 1, "invalid timestamp"),
    ("exemplar on a gauge", 'a 1 # {x="1"} 1\n# EOF\n', 1, "does not support exemplars"),
    ("untyped is text 0.0.4 only", "# TYPE a untyped\n# EOF\n", 1, "invalid metric type"),
    ("unit not a suffix", "# UNIT a_bytes seconds\n# EOF\n", 1, "not a suffix"),
    ("HELP without text", "# HELP a\n# EOF\n", 1, "blank after HELP"),
    ("duplicate label", 'a{x="1",x="2"} 1\n# EOF\n', 1, "not unique"),
    ("invalid UTF-8", 'a{x="\udcff"} 1\n# EOF\n', 1, "UTF-8"),
    ("value with underscore", "a 1_0\n# EOF\n", 1, "invalid float"),
]


@pytest.mark.parametrize(("text", "want"), [(t, w) for _, t, w in VALID], ids=[n for n, *_ in VALID])
def test_valid(text: str, want: list[Sample]) -> None:
    assert parse_openmetrics(text) == want


@pytest.mark.parametrize(
    ("text", "line_no", "fragment"), [(t, n, f) for _, t, n, f in INVALID], ids=[n for n, *_ in INVALID]
)
def test_invalid(text: str, line_no: int, fragment: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_openmetrics(text)
    assert info.value.line_no == line_no
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("content_type", "om"),
    [
        (OM, True),
        ("application/openmetrics-text", True),
        ("Application/OpenMetrics-Text; version=0.0.1", True),
        ("text/plain; version=0.0.4; charset=utf-8", False),
        ("", False),
        ("application/openmetrics-text; version", False),  # malformed: Prometheus falls back to text
    ],
)
def test_content_type_selects_the_parser(content_type: str, om: bool) -> None:
    assert is_openmetrics(content_type) is om


class Labeler:
    def __call__(self, name: str, labels: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
        return None if name.startswith("drop_") else [("__name__", name), *labels, ("job", "j")]


def _decoded(result: ScrapeResult) -> list[tuple[dict[str, str], list[tuple[float, int]]]]:
    return decode_write_request(b"".join(c.data for c in result.chunks))


def test_cache_reads_openmetrics_timestamps_as_seconds() -> None:
    # Finding 3: "om_total 5 1796193068" from an OpenMetrics target was shipped as 1970-01-21 (ms).
    cache = SeriesCache(Labeler())
    body = b"# TYPE om counter\nom_total 5 1796193068 # {id=\"x\"} 1\nom_created 1796190000\n# EOF\n"
    for _ in range(2):
        result = cache.process(body, NOW, content_type=OM)
        assert _decoded(result) == [
            ({"__name__": "om_total", "job": "j"}, [(5.0, 1796193068000)]),
            ({"__name__": "om_created", "job": "j"}, [(1796190000.0, NOW)]),
        ]
    # The same body read as text 0.0.4 is invalid (the exemplar), as Prometheus finds it.
    with pytest.raises(ParseError):
        cache.process(body, NOW)


def test_openmetrics_drops_and_limits_like_text() -> None:
    cache = SeriesCache(Labeler())
    body = b"fut 1 4102444800\npast 1 1\ndrop_x 1\nok 1\nok 2\n# EOF\n"
    result = cache.process(body, NOW, content_type=OM)
    assert [labels["__name__"] for labels, _ in _decoded(result)] == ["ok"]
    assert result.dropped == {"too_far_future": 1, "too_old": 1, "relabel": 1, "duplicate": 1}


_lines = st.builds(
    lambda name, labels, value, ts: f"{name}{labels} {value}{ts}",
    st.sampled_from(["a", "b_total", "drop_x", "c_bucket"]),
    st.sampled_from(["", '{x="1"}', '{x="1",y="2"}', "{}", '{x="1",}']),
    st.sampled_from(["1", "NaN", "-Inf", "1e3", "x"]),
    st.sampled_from(["", " 1796193060", " 1796193069.5", " 1", " NaN", ' # {t="1"} 2']),
) | st.sampled_from(["# TYPE a gauge", "# HELP a x", "# UNIT a_s s", "", "# EOF"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_lines, max_size=6), min_size=1, max_size=3), st.booleans())
def test_cache_agrees_with_parse_openmetrics(scrapes: list[list[str]], eof: bool) -> None:
    cache = SeriesCache(Labeler())
    for lines in scrapes:
        text = "\n".join([*lines, "# EOF"] if eof else lines) + "\n"
        try:
            samples = parse_openmetrics(text)
        except ParseError as err:
            with pytest.raises(ParseError) as info:
                cache.process(text, NOW, content_type=OM)
            assert info.value.line_no == err.line_no
            continue
        result = cache.process(text, NOW, content_type=OM)
        fresh = _decoded(result)[: len(_decoded(result)) - result.samples_stale]
        want = []
        seen = set()
        for s in samples:
            if s.name.startswith("drop_"):
                continue
            if s.timestamp_ms is not None and not NOW - 55 * 60_000 <= s.timestamp_ms <= NOW + 600_000:
                continue
            key = (s.name, s.labels)
            if key in seen:
                continue
            seen.add(key)
            want.append(({"__name__": s.name, **dict(s.labels), "job": "j"}, s.value, s.timestamp_ms or NOW))
        assert len(fresh) == len(want)
        for (labels, [(value, ts)]), (want_labels, want_value, want_ts) in zip(fresh, want, strict=True):
            assert labels == want_labels and ts == want_ts
            assert value == want_value or (math.isnan(value) and math.isnan(want_value))
