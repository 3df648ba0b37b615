"""SeriesCache: the fast path must accept and produce exactly what the full parser does."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubescrape.errors import LabelLimitError, ParseError, SampleLimitError, ScrapeError
from kubescrape.remote_write.encode import decode_write_request, is_stale_nan
from kubescrape.scrape.cache import MAX_AGE_MS, MAX_AHEAD_MS, ScrapeLimits, ScrapeResult, SeriesCache
from kubescrape.scrape.parser import Sample, parse, render

NOW = 1_764_000_000_000  # a realistic scrape time in ms
Decoded = list[tuple[dict[str, str], list[tuple[float, int]]]]


class Labeler:
    """Adds target labels, drops series whose name starts with ``drop_``; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, name: str, labels: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
        self.calls.append(name)
        if name.startswith("drop_"):
            return None
        return [("__name__", name), *labels, ("instance", "node-1"), ("job", "kubelet")]


def decode(result: ScrapeResult) -> Decoded:
    return decode_write_request(b"".join(chunk.data for chunk in result.chunks))


def expected(text: str, scrape_ts: int, honor: bool = True) -> Decoded:
    """What the cache must produce, computed from the full parser: relabeled, own timestamps outside
    the window a receiver accepts dropped, deduplicated."""
    labeler = Labeler()
    out: Decoded = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for sample in parse(text):
        final = labeler(sample.name, list(sample.labels))
        if final is None:
            continue
        if honor and sample.timestamp_ms is not None and not (
            scrape_ts - MAX_AGE_MS <= sample.timestamp_ms <= scrape_ts + MAX_AHEAD_MS
        ):
            continue
        labels = {name: value for name, value in final if value}
        identity = tuple(sorted(labels.items()))
        if identity in seen:
            continue
        seen.add(identity)
        ts = sample.timestamp_ms if honor and sample.timestamp_ms is not None else scrape_ts
        out.append((labels, [(sample.value, ts)]))
    return out


def _bits(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


def same(a: Decoded, b: Decoded) -> bool:
    """Equal, comparing values bit for bit (NaN == NaN, -0.0 != 0.0)."""
    if len(a) != len(b):
        return False
    for (la, sa), (lb, sb) in zip(a, b, strict=True):
        if la != lb or len(sa) != len(sb):
            return False
        for (va, ta), (vb, tb) in zip(sa, sb, strict=True):
            if ta != tb or (_bits(va) != _bits(vb) and not (math.isnan(va) and math.isnan(vb))):
                return False
    return True


CADVISOR = (
    "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.\n"
    "# TYPE container_cpu_usage_seconds_total counter\n"
    'container_cpu_usage_seconds_total{container="app",cpu="total",id="/kubepods/pod1/c1",image="app:1",'
    'name="c1",namespace="default",pod="app-1"} 12.5 1763999990000\n'
    'container_cpu_usage_seconds_total{container="",cpu="total",id="/kubepods/pod1",image="",name="",'
    'namespace="default",pod="app-1"} 13.25 1763999991000\n'
    "# HELP container_memory_usage_bytes Current memory usage in bytes.\n"
    "# TYPE container_memory_usage_bytes gauge\n"
    'container_memory_usage_bytes{container="app",id="/kubepods/pod1/c1",namespace="default",pod="app-1"} '
    "1.048576e+06 1763999990000\n"
    "drop_me 1\n"
    "machine_cpu_cores 8\n"
)


def test_first_scrape_matches_parser_and_second_is_all_hits() -> None:
    labeler = Labeler()
    cache = SeriesCache(labeler)
    first = cache.process(CADVISOR.encode(), NOW)
    assert same(decode(first), expected(CADVISOR, NOW))
    assert (first.samples_scraped, first.samples_post_relabel, first.series_added) == (5, 4, 4)
    assert len(labeler.calls) == 5
    second_text = CADVISOR.replace("12.5 ", "99.5 ").replace("1763999990000", "1764000005000")
    second = cache.process(second_text.encode(), NOW + 15_000)
    assert same(decode(second), expected(second_text, NOW + 15_000))
    assert (second.samples_scraped, second.samples_post_relabel, second.series_added) == (5, 4, 0)
    assert len(labeler.calls) == 5  # every series was a cache hit, the labeler was not called again


def test_dropped_series_stay_dropped_without_labeler_calls() -> None:
    labeler = Labeler()
    cache = SeriesCache(labeler)
    for i in range(3):
        result = cache.process(f'drop_a 1\ndrop_b{{x="y"}} {i}\nkeep 2\n', NOW)
        assert (result.samples_scraped, result.samples_post_relabel) == (3, 1)
        assert [labels["__name__"] for labels, _ in decode(result)] == ["keep"]
    assert labeler.calls == ["drop_a", "drop_b", "keep"]


@pytest.mark.parametrize("honor", [True, False])
def test_honor_timestamps(honor: bool) -> None:
    cache = SeriesCache(Labeler(), honor_timestamps=honor)
    text = "a 1 1763999990000\nb 2\n"
    for _ in range(2):  # cold then warm
        got = decode(cache.process(text, NOW))
        stamps = [samples[0][1] for _, samples in got]
        assert stamps == ([1763999990000, NOW] if honor else [NOW, NOW])


def test_explicit_timestamp_still_validated_when_not_honored() -> None:
    cache = SeriesCache(Labeler(), honor_timestamps=False)
    cache.process("a 1 1763999990000\n", NOW)
    with pytest.raises(ParseError) as info:
        cache.process("a 1 17639x9990000\n", NOW)
    assert info.value.line_no == 1


def test_chunks_are_cut_at_batch() -> None:
    text = "".join(f'm{{i="{i}"}} {i}\n' for i in range(25))
    cache = SeriesCache(Labeler(), batch=10)
    for _ in range(2):
        result = cache.process(text, NOW)
        assert [chunk.samples for chunk in result.chunks] == [10, 10, 5]
        for chunk in result.chunks:
            assert len(decode_write_request(chunk.data)) == chunk.samples
        assert same(decode(result), expected(text, NOW))


@pytest.mark.parametrize("compiled", [False, None])
def test_snappy_chunks_hold_the_same_bytes_compressed(compiled: bool | None) -> None:
    text = "".join(f'm{{i="{i}"}} {i}\n' for i in range(25)) + "drop_me 1\nm{i=\"x\"} 2 1764000000000\n"
    plain, packed = (SeriesCache(Labeler(), batch=10, compiled=compiled) for _ in range(2))
    for step in range(2):  # a first (cold) and a second (warm) scrape
        want = plain.process(text, NOW + step)
        got = packed.process(text, NOW + step, snappy=True)
        assert all(c.snappy for c in got.chunks) and not any(c.snappy for c in want.chunks)
        assert [(c.plain(), c.samples) for c in got.chunks] == [(c.data, c.samples) for c in want.chunks]
        assert got._replace(chunks=[]) == want._replace(chunks=[])


def test_empty_scrape_has_no_chunks() -> None:
    result = SeriesCache(Labeler()).process(b"# only comments\n\n", NOW)
    assert result == ScrapeResult([], 0, 0, 0, 0)


def test_series_added_counts_series_new_since_previous_scrape() -> None:
    cache = SeriesCache(Labeler())
    assert cache.process("a 1\nb 1\n", NOW).series_added == 2
    assert cache.process("a 2\nb 2\n", NOW).series_added == 0
    assert cache.process("a 3\nc 3\n", NOW).series_added == 1
    # b comes back: it is still cached (no labeler call) but it is new since the previous scrape.
    assert cache.process("a 3\nb 3\nc 3\n", NOW).series_added == 1
    # Reordered lines are all cache hits through the dict, nothing is added.
    assert cache.process("c 4\nb 4\na 4\n", NOW).series_added == 0


@pytest.mark.parametrize("compiled", [False, None])
@pytest.mark.parametrize("generation", [1, 4])
def test_series_added_counts_series_whose_last_samples_were_out_of_the_window(
    compiled: bool | None, generation: int
) -> None:
    cache = SeriesCache(Labeler(), compiled=compiled, generation=generation)
    old = NOW - MAX_AGE_MS - 1
    result = cache.process(f"a 1 {old}\nb 1\nd 1 {old}\nd 2\n", NOW)
    assert (result.series_added, result.dropped) == (2, {"too_old": 2})
    # Same order, all in the window: no series added (the order predicts every line).
    assert cache.process(f"a 1 {NOW}\nb 1\nd 1 {NOW}\nd 2\n", NOW).series_added == 0
    # a had no sample in the last scrape that changed the order, d had one: a and c are new.
    result = cache.process(f"a 1 {NOW}\nb 1\nd 1 {NOW}\nc 1\n", NOW)
    assert result.series_added == 2
    assert cache.process(f"a 1 {old}\nb 1\nc 1\n", NOW).series_added == 0
    assert cache.process("a 1\nb 1\nc 1\ne 1\n", NOW).series_added == 2


@pytest.mark.parametrize("compiled", [False, None])
def test_a_stable_target_keeps_its_series_cached_after_the_order_changes(compiled: bool | None) -> None:
    labeler = Labeler()
    cache = SeriesCache(labeler, generation=2, compiled=compiled)
    text = 'a{x="1"} 1\nb 2\ndrop_me 3\nc 4\n'
    for _ in range(5):  # more than ``generation`` scrapes in the same order
        result = cache.process(text, NOW)
    assert (len(cache), result.series_added) == (4, 0)
    # Reordered, one series gone, one new: the known series are not labeled again.
    text = 'c 5\ndrop_me 6\nd 7\na{x="1"} 8\n'
    result = cache.process(text, NOW)
    assert decode(result)[:3] == expected(text, NOW)
    assert (result.series_added, result.samples_stale, result.dropped) == (1, 1, {"relabel": 1})
    assert labeler.calls == ["a", "b", "drop_me", "c", "d"]
    for _ in range(5):
        assert cache.process(text, NOW).series_added == 0
    result = cache.process(text + "e 9\n", NOW)
    assert result.series_added == 1 and labeler.calls[5:] == ["e"]


def test_churn_is_evicted() -> None:
    labeler = Labeler()
    cache = SeriesCache(labeler, generation=2)
    for scrape in range(20):
        text = "".join(f'm{{pod="p{scrape}-{i}"}} 1\n' for i in range(50)) + "stable 1\n"
        result = cache.process(text, NOW)
        assert result.samples_post_relabel == 51
        assert len(cache) <= 2 * 51 + 1
    assert labeler.calls.count("stable") == 1  # a series present in every scrape is never evicted


def test_duplicate_series_keep_the_first_sample() -> None:
    cache = SeriesCache(Labeler())
    text = 'a{x="1",y="2"} 1\na{y="2",x="1"} 2\nb 3\nb 4\n'
    for _ in range(2):
        result = cache.process(text, NOW)
        assert result.samples_scraped == 4
        assert result.samples_duplicate == 2
        assert [samples[0][0] for _, samples in decode(result)] == [1.0, 3.0]


def test_parse_error_fails_whole_scrape_and_keeps_state() -> None:
    labeler = Labeler()
    cache = SeriesCache(labeler)
    good = "a 1\nb 2\n"
    cache.process(good, NOW)
    with pytest.raises(ParseError) as info:
        cache.process("a 1\nb 2\nc 1_000\n", NOW)
    assert (info.value.line_no, info.value.line) == (3, "c 1_000")
    with pytest.raises(ParseError) as info:
        cache.process('a 1\nb{x="1} 2\n', NOW)
    assert info.value.line_no == 2
    # The failed scrapes left the cache as it was: the next good scrape is all hits.
    again = cache.process(good, NOW)
    assert again.series_added == 0
    assert labeler.calls == ["a", "b"]


@pytest.mark.parametrize(
    ("bad", "line_no"),
    [
        ("a 1\r\n", 1),
        ("a 1\nb +NaN\n", 2),
        ("a 1\nb 1e999\n", 2),
        ("a 1 -5\n", 1),
        ("a 1 2 3\n", 1),
        ("a 1\n# TYPE a counter\n# TYPE a gauges\n", 3),
        ("a ١\n", 1),
        ("a 1\t\x0b\n", 1),
        ("a +nan\t\n", 1),
        ("a 1\n b 2\n", 2),
        ("a 1e999\t5\n", 1),
    ],
)
def test_fast_path_rejects_what_prometheus_rejects(bad: str, line_no: int) -> None:
    cache = SeriesCache(Labeler())
    cache.process("a 1\nb 2\n", NOW)  # warm: a and b are cached
    with pytest.raises(ParseError) as info:
        cache.process(bad, NOW)
    assert info.value.line_no == line_no


def test_unusual_but_valid_lines_take_the_full_parser() -> None:
    text = (
        'a\t1\nb  2\nc{x="ü"}   3   1763999990000  \nd{x="1"}4\ne 5 17\nf NaN\ng -Inf\n'
        "h NaN\t\ni +Inf \t1763999990000\nj \t2\t\n"
    )
    cache = SeriesCache(Labeler())
    for _ in range(3):
        assert same(decode(cache.process(text, NOW)), expected(text, NOW))


def test_odd_timestamp_lengths() -> None:
    cache = SeriesCache(Labeler())
    text = "a 1 5\nb 2 1763999990000\na 3 1763999990001\n"
    for ts in (1000, NOW):
        result = cache.process(text, ts)
        assert same(decode(result), expected(text, ts))
    # At NOW the first sample of a (1970) is too old and dropped, so the second is no duplicate.
    assert result.samples_duplicate == 0
    assert result.dropped == {"too_old": 1}


def test_invalid_utf8_in_label_value_is_a_parse_error() -> None:
    cache = SeriesCache(Labeler())
    with pytest.raises(ParseError, match="UTF-8"):
        cache.process(b'a{x="\xff"} 1\n', NOW)
    assert same(
        decode(cache.process(b"# caf\xe9\na 1\n", NOW)),
        [({"__name__": "a", "instance": "node-1", "job": "kubelet"}, [(1.0, NOW)])],
    )


def test_relabeling_away_the_name_is_an_error() -> None:
    cache = SeriesCache(lambda name, labels: [("job", "x")])
    with pytest.raises(ScrapeError, match="__name__"):
        cache.process("a 1\n", NOW)


def test_invalidate_calls_the_labeler_again() -> None:
    labeler = Labeler()
    cache = SeriesCache(labeler)
    cache.process("a 1\n", NOW)
    cache.invalidate()
    assert cache.process("a 1\n", NOW).series_added == 1
    assert labeler.calls == ["a", "a"]


def test_stale_values_and_specials() -> None:
    text = "a NaN\nb +Inf\nc -Inf\nd -0\ne 1e-400\nf Infinity\n"
    cache = SeriesCache(Labeler())
    for _ in range(2):
        assert same(decode(cache.process(text, NOW)), expected(text, NOW))


# Property: for any sequence of scrapes, the cache agrees with the full parser (samples or line number).
_names = st.sampled_from(["a", "b", "m_total", "drop_x", "c:d"])
_values = st.sampled_from(
    ["1", "0", "-2.5", "1e3", "NaN", "+Inf", "-Inf", "1_0", "+nan", "1e400", "x", "0x1"]
)
_stamps = st.sampled_from(
    ["", " 1763999990000", " 5", " -1", " 1.5", " 99999999999999999999", "\t", " \t1763999990000", "\t "]
)
_label_sets = st.sampled_from(
    ["", '{x="1"}', '{x="1",y="2"}', '{y="2",x="1"}', '{x="\\"}"}', '{x="1",}', "{}"]
)
_seps = st.sampled_from([" ", " ", " ", "  ", "\t"])
_lines = st.builds(
    lambda name, labels, sep, value, stamp: f"{name}{labels}{sep}{value}{stamp}",
    _names,
    _label_sets,
    _seps,
    _values,
    _stamps,
) | st.sampled_from(["# TYPE a counter", "# HELP a help", "", "# comment", "garbage{", "a{x=1} 1"])
_scrape = st.lists(_lines, max_size=8).map(lambda lines: "\n".join(lines) + "\n")


def _check(cache: SeriesCache, text: str, honor: bool) -> None:
    try:
        want = expected(text, NOW, honor)
    except ParseError as err:
        with pytest.raises(ParseError) as info:
            cache.process(text.encode(), NOW)
        assert info.value.line_no == err.line_no
        return
    result = cache.process(text.encode(), NOW)
    got = decode(result)
    # Staleness markers for series of the previous scrape come last; the parser knows nothing of them.
    fresh, stale = got[: len(got) - result.samples_stale], got[len(got) - result.samples_stale :]
    assert same(fresh, want)
    assert all(is_stale_nan(v) and ts == NOW for _, points in stale for v, ts in points)


@settings(max_examples=300, deadline=None)
@given(st.lists(_scrape, min_size=1, max_size=4), st.booleans())
def test_cache_agrees_with_parser(scrapes: list[str], honor: bool) -> None:
    cache = SeriesCache(Labeler(), honor_timestamps=honor, batch=3, generation=2)
    for text in scrapes:
        _check(cache, text, honor)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.builds(
            Sample,
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from([(), (("x", "1"),), (("x", 'é\n\\"'),)]),
            st.floats(),
            st.one_of(st.none(), st.integers(0, 2**63 - 1)),
        ),
        max_size=6,
    ),
    st.integers(0, 3),
)
def test_cache_agrees_on_rendered_samples(samples: list[Sample], repeat: int) -> None:
    text = render(samples)
    cache = SeriesCache(Labeler())
    for _ in range(repeat + 1):
        _check(cache, text, True)


def _by_name(result: ScrapeResult) -> dict[str, list[tuple[float, int]]]:
    return {labels["__name__"]: points for labels, points in decode(result)}


def test_a_series_that_disappears_gets_a_staleness_marker_once() -> None:
    cache = SeriesCache(Labeler())
    cache.process(b"a 1\nb 2\n", NOW)
    second = cache.process(b"a 1\n", NOW + 15_000)
    got = _by_name(second)
    assert set(got) == {"a", "b"}
    [(value, ts)] = got["b"]
    assert is_stale_nan(value) and ts == NOW + 15_000
    assert (second.samples_post_relabel, second.samples_stale) == (1, 1)
    assert sum(c.samples for c in second.chunks) == 2
    third = cache.process(b"a 1\n", NOW + 30_000)
    assert set(_by_name(third)) == {"a"} and third.samples_stale == 0


def test_series_with_their_own_timestamps_get_no_staleness_marker() -> None:
    # As Prometheus: explicit timestamps (cAdvisor's) bypass staleness tracking.
    cache = SeriesCache(Labeler(), honor_timestamps=True)
    cache.process(b"a 1 1700000000000\nb 2\n", NOW)
    second = cache.process(b"c 3\n", NOW + 15_000)
    got = _by_name(second)
    assert set(got) == {"b", "c"} and is_stale_nan(got["b"][0][0])
    assert second.samples_stale == 1


@pytest.mark.parametrize("compiled", [False, None])
def test_track_timestamps_staleness_marks_series_with_their_own_timestamps(compiled: bool | None) -> None:
    # Prometheus' track_timestamps_staleness: a series with an explicit timestamp (a stopped
    # container's cAdvisor series) that disappears gets a stale NaN at the scrape time when on, none when off.
    body = b"a 1 %d\nb 2 %d\n" % (NOW - 5_000, NOW - 5_000)
    later = b"a 1 %d\n" % (NOW + 10_000)
    on = SeriesCache(Labeler(), track_timestamps_staleness=True, compiled=compiled)
    off = SeriesCache(Labeler(), compiled=compiled)
    for cache in (on, off):
        first = cache.process(body, NOW)
        assert first.samples_stale == 0 and first.samples_post_relabel == 2
    tracked = on.process(later, NOW + 15_000)
    got = _by_name(tracked)
    assert set(got) == {"a", "b"} and tracked.samples_stale == 1
    [(value, ts)] = got["b"]
    assert is_stale_nan(value) and ts == NOW + 15_000
    assert got["a"] == [(1.0, NOW + 10_000)]
    untracked = off.process(later, NOW + 15_000)
    assert set(_by_name(untracked)) == {"a"} and untracked.samples_stale == 0
    # Marked once only.
    assert on.process(later, NOW + 30_000).samples_stale == 0


def test_track_timestamps_staleness_marks_every_series_after_a_failed_scrape() -> None:
    on = SeriesCache(Labeler(), track_timestamps_staleness=True)
    off = SeriesCache(Labeler())
    for cache in (on, off):
        cache.process(b"a 1 %d\nb 2\n" % (NOW - 5_000), NOW)
    marked = decode_write_request(b"".join(c.data for c in on.stale_all(NOW + 15_000)))
    assert sorted(labels["__name__"] for labels, _ in marked) == ["a", "b"]
    unmarked = decode_write_request(b"".join(c.data for c in off.stale_all(NOW + 15_000)))
    assert [labels["__name__"] for labels, _ in unmarked] == ["b"]


def test_stale_all_after_a_failed_scrape() -> None:
    cache = SeriesCache(Labeler(), batch=2)
    cache.process(b"a 1\nb 2\nc 3\n", NOW)
    chunks = cache.stale_all(NOW + 15_000)
    assert [c.samples for c in chunks] == [2, 1]
    decoded = decode_write_request(b"".join(c.data for c in chunks))
    assert sorted(labels["__name__"] for labels, _ in decoded) == ["a", "b", "c"]
    assert all(is_stale_nan(v) and ts == NOW + 15_000 for _, points in decoded for v, ts in points)
    assert cache.stale_all(NOW + 30_000) == []  # once only
    back = cache.process(b"a 1\n", NOW + 45_000)
    assert back.series_added == 1 and back.samples_stale == 0


# --- issue 15: per-sample validity, drops by reason, limits, bounded memory ---------------------------


def test_samples_outside_the_receivers_window_are_dropped_and_counted() -> None:
    # Finding 1: a year-2100 or 1970 sample sent to a Prometheus receiver makes it refuse every later
    # request of every target; Prometheus' own scrape drops just that sample.
    text = f"fut 1 4102444800000\npast 1 1000\nok 1\nrecent 2 {NOW - 60_000}\n"
    cache = SeriesCache(Labeler())
    for _ in range(2):  # cold, then warm (the fast path hands out-of-window stamps to the full parser)
        result = cache.process(text, NOW)
        assert _by_name(result) == {"ok": [(1.0, NOW)], "recent": [(2.0, NOW - 60_000)]}
        assert result.dropped == {"too_far_future": 1, "too_old": 1}
        assert (result.samples_scraped, result.samples_post_relabel) == (4, 2)


def test_window_bounds_are_inclusive() -> None:
    text = (
        f"a 1 {NOW + MAX_AHEAD_MS}\nb 1 {NOW + MAX_AHEAD_MS + 1}\n"
        f"c 1 {NOW - MAX_AGE_MS}\nd 1 {NOW - MAX_AGE_MS - 1}\n"
    )
    cache = SeriesCache(Labeler())
    for _ in range(2):
        result = cache.process(text, NOW)
        assert sorted(_by_name(result)) == ["a", "c"]
        assert result.dropped == {"too_far_future": 1, "too_old": 1}


def test_without_honor_timestamps_nothing_is_out_of_window() -> None:
    cache = SeriesCache(Labeler(), honor_timestamps=False)
    result = cache.process("fut 1 4102444800000\npast 1 1000\n", NOW)
    assert _by_name(result) == {"fut": [(1.0, NOW)], "past": [(1.0, NOW)]}
    assert result.dropped == {}


def test_dropped_accounts_for_every_scraped_sample() -> None:
    cache = SeriesCache(Labeler())
    text = "drop_x 1\na 1\na 2\nold 1 1000\nb 3\n"
    for _ in range(2):
        result = cache.process(text, NOW)
        assert result.dropped == {"relabel": 1, "duplicate": 1, "too_old": 1}
        assert result.samples_scraped == result.samples_post_relabel + sum(result.dropped.values()) == 5


def test_sample_limit_fails_the_scrape_as_prometheus_does() -> None:
    cache = SeriesCache(Labeler(), limits=ScrapeLimits(sample_limit=3))
    # Relabel-dropped samples do not count; a scrape at the limit passes, cold and warm.
    for _ in range(2):
        assert cache.process("a 1\nb 2\nc 3\ndrop_x 4\n", NOW).samples_post_relabel == 3
    # One over: a fourth series, a duplicate, an out-of-window sample (all count, as in Prometheus).
    old = NOW - 2 * MAX_AGE_MS
    for over in ("a 1\nb 2\nc 3\nd 4\n", "a 1\nb 2\nc 3\nc 3\n", f"a 1\nb 2\nc 3\nold 1 {old}\n"):
        with pytest.raises(SampleLimitError) as info:
            cache.process(over, NOW)
        assert info.value.reason == "sample_limit"
        assert "sample_limit = 3" in str(info.value) and "fix: raise sample_limit" in str(info.value)


@pytest.mark.parametrize(
    ("limits", "text", "reason"),
    [
        (ScrapeLimits(label_limit=4), 'a{x="1",y="2"} 1\n', "label_limit"),
        (ScrapeLimits(label_name_length_limit=8), 'a{abcdefghi="1"} 1\n', "label_name_length_limit"),
        (ScrapeLimits(label_value_length_limit=7), 'a{x="éééé"} 1\n', "label_value_length_limit"),
    ],
)
def test_label_limits_fail_the_scrape(limits: ScrapeLimits, text: str, reason: str) -> None:
    # The Labeler adds instance="node-1" and job="kubelet": 'a{x="1"}' is at every limit above (4
    # labels with __name__, names of up to 8 bytes, values of up to 7); lengths count bytes.
    cache = SeriesCache(Labeler(), limits=limits)
    assert cache.process('a{x="1"} 1\n', NOW).samples_post_relabel == 1
    with pytest.raises(LabelLimitError) as info:
        cache.process(text, NOW)
    assert info.value.reason == reason
    assert f"{reason} = " in str(info.value) and "fix: " in str(info.value)


def test_a_failed_scrape_leaves_no_cache_entries_behind() -> None:
    cache = SeriesCache(Labeler(), limits=ScrapeLimits(sample_limit=2))
    cache.process("a 1\n", NOW)
    for i in range(5):  # new series every time: a failing target must not grow the cache
        with pytest.raises(SampleLimitError):
            cache.process("".join(f'm{{i="{i}-{j}"}} 1\n' for j in range(10)), NOW)
        assert len(cache) == 1
    with pytest.raises(ParseError):
        cache.process('n{i="1"} 1\nn{i="2"} 1\nbad line here\n', NOW)
    assert len(cache) == 1


def test_sample_limit_fails_fast_on_a_million_series() -> None:
    labeler = Labeler()
    cache = SeriesCache(labeler, limits=ScrapeLimits(sample_limit=1000))
    body = b"".join(b'm{i="%d"} 1\n' % i for i in range(1_000_000))
    with pytest.raises(SampleLimitError):
        cache.process(body, NOW)
    assert len(labeler.calls) == 1001  # stopped at the first sample over the limit
    assert len(cache) == 0


def test_a_failed_scrape_keeps_no_reference_to_the_body() -> None:
    # Finding 2: an exception whose traceback reaches the parser's frames keeps the body alive until
    # the cycle collector runs.
    body = b"a 1\n" * 100_000 + b"bad 1_0\n"
    with pytest.raises(ParseError) as info:
        SeriesCache(Labeler()).process(body, NOW)
    tb = info.value.__traceback__.tb_next  # type: ignore[union-attr]  # past this test's own frame
    assert tb is not None
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            assert not (isinstance(value, bytes | str) and len(value) >= len(body) - 10), tb.tb_frame
        tb = tb.tb_next


def test_heavy_churn_is_evicted_before_the_generation_ends() -> None:
    cache = SeriesCache(Labeler(), generation=100)
    for scrape in range(10):
        cache.process("".join(f'm{{i="{scrape}-{i}"}} 1\n' for i in range(2000)), NOW)
        assert len(cache) <= 2 * 2000 + 1024


@pytest.mark.parametrize("compiled", [False, None])
def test_comment_lines_seen_valid_are_not_parsed_again_and_bad_ones_still_fail(compiled: bool | None) -> None:
    good = "# HELP m Help.\n# TYPE m gauge\nm 1\n"
    cache = SeriesCache(Labeler(), compiled=compiled)
    cache.process(good, NOW)
    calls: list[bytes] = []
    slow = cache._slow_line

    def counting(line: bytes, *args: object) -> int:
        calls.append(line)
        return slow(line, *args)  # type: ignore[arg-type]

    cache._slow_line = counting  # type: ignore[method-assign,assignment]
    assert same(decode(cache.process(good, NOW + 1)), expected(good, NOW + 1))
    assert not [line for line in calls if line.startswith(b"#")]
    with pytest.raises(ParseError) as caught:
        cache.process(good + "# TYPE m gauge_ish\n", NOW + 2)
    assert caught.value.line_no == 4


def test_remembered_comment_lines_are_bounded() -> None:
    big = "# HELP big " + "x" * 100_000 + "\n"  # first: only its length keeps it out
    text = big + "".join(f"# HELP m{i} Help {i}.\n" for i in range(10_000)) + "m 1\n"
    cache = SeriesCache(Labeler())
    cache.process(text, NOW)
    assert 0 < len(cache._comments) <= 4096
    assert sum(map(len, cache._comments)) <= 4096 * 512


class RunCounter:
    """The compiled module, counting the lines its warm loop (``run``) takes."""

    def __init__(self, compiled: object) -> None:
        self.compiled = compiled
        self.taken = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.compiled, name)

    def run(self, *args: object) -> tuple[int, int, int]:
        result: tuple[int, int, int] = getattr(self.compiled, "run")(*args)  # noqa: B009
        start = args[5]
        assert isinstance(start, int)
        self.taken += result[1] - start
        return result


@pytest.mark.parametrize("compiled", [False, None])
def test_the_prediction_finds_its_place_again_when_series_come_and_go(compiled: bool | None) -> None:
    """Pod churn: series inserted, removed or moved far away do not leave the rest of the scrape
    mispredicted. The output is exact, the order kept for the next scrape holds each series of this one
    once, in order, and the compiled loop takes every line that is where the order predicts it: all but
    the series the previous scrape did not have and the first line after each gap or jump."""
    lines = [f'm{{pod="p{i}",container="c"}} {i}' for i in range(600)]
    inserted = [*lines[:100], 'm{pod="new-1"} 1', 'm{pod="new-2"} 2', *lines[100:]]
    removed = [*lines[:50], *lines[53:300], *lines[301:]]
    moved = [*lines[:10], *lines[500:510], *lines[10:500], *lines[510:]]  # 490 lines ahead, and back
    cache = SeriesCache(Labeler(), compiled=compiled)
    cache.process("\n".join(lines) + "\n", NOW)  # the first scrape: every series new
    for scrape, by_python in ((inserted, 2), (lines, 1), (removed, 2), (lines, 4), (moved, 3), (lines, 3)):
        counter = RunCounter(cache._compiled) if cache.compiled else None
        if counter is not None:
            cache._compiled = counter  # type: ignore[assignment]
        text = "\n".join(scrape) + "\n"
        result = cache.process(text, NOW)
        want = expected(text, NOW)
        assert decode(result)[: len(want)] == want  # then staleness markers for series that went away
        assert [key.decode() for key in cache._order[0]] == [line.rpartition(" ")[0] + " " for line in scrape]
        if counter is not None:
            cache._compiled = counter.compiled  # type: ignore[assignment]
            assert counter.taken == len(scrape) - by_python


def test_a_known_series_with_an_unusual_sample_is_ordered_once() -> None:
    """A series found through the dict whose sample the full parser decides (here: a timestamp outside
    the window) enters the order once."""
    cache = SeriesCache(Labeler())
    cache.process("a 1\nb 1\nc 1\n", NOW)
    old = NOW - MAX_AGE_MS - 1
    result = cache.process(f"a 1\nc 1 {old}\nb 1\n", NOW)
    assert result.dropped == {"too_old": 1}
    assert cache._order[0] == [b"a ", b"c ", b"b "]
