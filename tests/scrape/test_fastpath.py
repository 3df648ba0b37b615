"""The compiled warm loop of the scrape cache against the pure-Python one: same bytes, counts and errors.

Two caches with the same settings see the same scrapes, one with ``compiled=True`` and one with
``compiled=False``; every result (chunk bytes and sample counts, the counters, ``dropped``) and every
error (type, message, line number, reason) must be equal, scrape after scrape, and so must what each
cache keeps. The scrapes are generated (values and timestamps the compiled loop must hand back to
Python, duplicates, limits, churn) or the kubelet emulator's real payloads with pod churn.

A body handed over in pieces (as a gzip body is inflated) must give what the whole body gives, on either
path, wherever the pieces are cut.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubescrape.emulator.payloads import NodePayloads
from kubescrape.errors import ParseError, ScrapeError
from kubescrape.scrape.cache import (
    COMPILED,
    MAX_AGE_MS,
    MAX_AHEAD_MS,
    BodyPieces,
    Labeler,
    ScrapeLimits,
    ScrapeResult,
    SeriesCache,
    _lines,
)
from kubescrape.testing import FakeClock

NOW = 1_764_000_000_000

needs_compiled = pytest.mark.skipif(
    not COMPILED, reason="the compiled fast path is not built here (or KUBESCRAPE_PURE_PYTHON is set)"
)


def labeler(name: str, labels: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """Target labels; series named ``drop_*`` are dropped by relabeling."""
    if name.startswith("drop_"):
        return None
    return [("__name__", name), *labels, ("instance", "node-1:10250"), ("job", "kubelet")]


Outcome = tuple[object, ...]


def outcome(cache: SeriesCache, body: bytes | BodyPieces, ts: int, content_type: str = "") -> Outcome:
    """Everything a scrape hands on (or the error it raises), in comparable form."""
    try:
        result: ScrapeResult = cache.process(body, ts, content_type=content_type)
    except ScrapeError as exc:
        line_no = exc.line_no if isinstance(exc, ParseError) else None
        return ("error", type(exc), str(exc), line_no, exc.reason, len(cache))
    return (
        "ok",
        [(chunk.data, chunk.samples) for chunk in result.chunks],
        result.samples_scraped,
        result.samples_post_relabel,
        result.series_added,
        result.samples_duplicate,
        result.samples_stale,
        result.dropped,
        len(cache),
    )


def assert_same(
    scrapes: list[tuple[bytes, int]],
    *,
    honor_timestamps: bool = True,
    track_timestamps_staleness: bool = False,
    batch: int = 2000,
    generation: int = 4,
    limits: ScrapeLimits | None = None,
    max_age_ms: int = MAX_AGE_MS,
    max_ahead_ms: int = MAX_AHEAD_MS,
    labeler: Labeler = labeler,
) -> list[Outcome]:
    """Run a pure-Python and a compiled cache with these settings over ``scrapes``; return the
    outcomes (equal, or the test fails)."""
    pure, fast = (
        SeriesCache(
            labeler,
            honor_timestamps=honor_timestamps,
            track_timestamps_staleness=track_timestamps_staleness,
            batch=batch,
            generation=generation,
            limits=limits,
            max_age_ms=max_age_ms,
            max_ahead_ms=max_ahead_ms,
            compiled=compiled,
        )
        for compiled in (False, True)
    )
    assert fast.compiled and not pure.compiled
    outcomes = []
    for i, (body, ts) in enumerate(scrapes):
        want = outcome(pure, body, ts)
        got = outcome(fast, body, ts)
        assert got == want, f"scrape {i} differs"
        outcomes.append(got)
    # What the caches keep for the next scrape must agree too: a staleness flush shows it.
    assert pure.stale_all(NOW + 60_000) == fast.stale_all(NOW + 60_000)
    return outcomes


# -- generated scrapes -----------------------------------------------------------------------------------

_series = st.sampled_from(
    [
        "a",
        "b_total",
        "drop_x",
        'c{x="1"}',
        'c{x="2",y="é"}',
        'c{y="2",x="1"}',
        'd{x="\\"}"}',
        'e{x="1",}',
        "f{}",
        'g{long="' + "v" * 40 + '"}',
    ]
)
# Values the compiled loop takes (any float or integer text) ...
_usual_values = st.one_of(
    st.sampled_from(["0", "1", "-0", "-2.5", "12.5", "1e3", "1.048576e+06", "2.80129098947e+11", "0.1"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(10**20), 10**20).map(str),
)
# ... and unusual spellings, mostly ones it must hand back: NaN/Inf spellings Go accepts or rejects,
# underscores, whitespace that float() strips, non-ASCII digits, garbage, overflow.
ODD_VALUES = [
    *("NaN", "+Inf", "-Inf", "Inf", "+nan", "infinity", "1_0", "1e400", "1e-400", "x", "0x1", ""),
    *("1\t", "\u0663", "1.5.1", "+1", ".5", "5.", "1E5", "-0x1p3", " 1", "1__0", "_1"),
]
_odd_values = st.sampled_from(ODD_VALUES)
# Timestamps the compiled loop takes (in the window, 6-byte varint) ...
_usual_stamps = st.one_of(
    st.sampled_from(["", f" {NOW}"]),
    st.integers(NOW - MAX_AGE_MS, NOW + MAX_AHEAD_MS).map(lambda ts: f" {ts}"),
)
# ... and ones it must hand back: outside the window (dropped and counted), other varint lengths, leading
# zeros, not int64, not digits, trailing fields, odd blanks.
ODD_STAMPS = [
    " ",
    f" {NOW - MAX_AGE_MS - 1}",
    f" {NOW + MAX_AHEAD_MS + 1}",
    f" 000{NOW}",
    " 1000",
    " 5",
    " -1",
    " 1.5",
    " 99999999999999999999",
    " 9223372036854775808",
    f" {NOW} x",
    f" {NOW // 10}",
    "\t",
    f"  {NOW}",
]
_odd_stamps = st.sampled_from(ODD_STAMPS)


def _mostly(
    usual: st.SearchStrategy[str], odd: st.SearchStrategy[str], one_in: int
) -> st.SearchStrategy[str]:
    """``odd`` once in ``one_in`` draws, else ``usual``."""
    return st.integers(1, one_in).flatmap(lambda n: odd if n == 1 else usual)


# A first scrape must mostly be valid, so that the next ones take the warm path; in those, a changed
# value or timestamp is odd more often.
_line = st.builds(
    lambda series, value, stamp: f"{series} {value}{stamp}",
    _series,
    _mostly(_usual_values, _odd_values, 16),
    _mostly(_usual_stamps, _odd_stamps, 16),
)
_values = _mostly(_usual_values, _odd_values, 4)
_stamps = _mostly(_usual_stamps, _odd_stamps, 4)
_other = _mostly(
    st.sampled_from(["# TYPE c gauge", "# HELP a help", "", "# comment"]),
    # valid lines with \r or \f (a label value, a HELP text) and an invalid one: not "fast"
    st.sampled_from(
        ["  a 1", "a\t1", "garbage{", "# TYPE a gauge", 'c{x="1\r"} 5', "# HELP b_total \x0c", "a 1\r"]
    ),
    8,
)


@st.composite
def _scrape_sequence(draw: st.DrawFn) -> list[tuple[bytes, int]]:
    """A first scrape, then scrapes that mostly repeat its series in order with new values (the warm
    path), with some lines changed, removed, added or out of order (churn)."""
    base = draw(st.lists(_line, min_size=1, max_size=12))
    scrapes = []
    for n in range(draw(st.integers(1, 5))):
        lines = []
        for line in base:
            action = draw(st.sampled_from(["same"] * 4 + ["value"] * 4 + ["drop", "insert", "other"]))
            if action == "value":
                series = line.rsplit(" ", 2)[0] if line.count(" ") >= 2 else line.rsplit(" ", 1)[0]
                lines.append(f"{series} {draw(_values)}{draw(_stamps)}")
            elif action == "insert":
                lines.extend((draw(_line), line))
            elif action == "other":
                lines.extend((draw(_other), line))
            elif action == "same":
                lines.append(line)
        if draw(st.integers(0, 7)) == 0:
            lines.reverse()
        body = ("\n".join(lines) + ("\n" if draw(st.integers(0, 7)) else "")).encode()
        scrapes.append((body, NOW + n * draw(st.sampled_from([0, 15_000]))))
    return scrapes


@needs_compiled
@settings(max_examples=400, deadline=None)
@given(
    _scrape_sequence(),
    st.booleans(),
    st.sampled_from([1, 3, 2000]),
    st.sampled_from(
        [
            ScrapeLimits(),
            ScrapeLimits(),
            ScrapeLimits(sample_limit=12),
            ScrapeLimits(label_value_length_limit=20),
        ]
    ),
    # The receivers' window, or one so wide that timestamps with other varint lengths are inside it.
    st.sampled_from([(MAX_AGE_MS, MAX_AHEAD_MS), (MAX_AGE_MS, MAX_AHEAD_MS), (1 << 62, 1 << 62)]),
    st.booleans(),
)
def test_generated_scrapes_give_identical_results(
    scrapes: list[tuple[bytes, int]],
    honor: bool,
    batch: int,
    limits: ScrapeLimits,
    window: tuple[int, int],
    track: bool,
) -> None:
    assert_same(
        scrapes,
        honor_timestamps=honor,
        track_timestamps_staleness=track,
        batch=batch,
        generation=2,
        limits=limits,
        max_age_ms=window[0],
        max_ahead_ms=window[1],
    )


@needs_compiled
def test_the_compiled_loop_takes_the_warm_lines_and_hands_back_the_odd_ones() -> None:
    # A stable target (warm path) whose second scrape has one of each kind of line the compiled loop
    # must hand back: every result still agrees, and the odd samples are counted as Python counts them.
    first = f'a 1 {NOW}\nb{{x="1"}} 2 {NOW}\nc 3\nd 4 {NOW}\ne 5 {NOW}\nf 6\n'.encode()
    second = (
        f'a 1_0 {NOW}\nb{{x="1"}} 2 {NOW + MAX_AHEAD_MS + 1}\nc +Inf\nd NaN {NOW - MAX_AGE_MS - 1}\n'
        f"e 5 000{NOW}\nf 7\n"
    ).encode()
    outcomes = assert_same([(first, NOW), (second, NOW), (first, NOW + 15_000)])
    assert outcomes[1][0] == "error"  # 1_0 is not a Go float: the parser names line 1
    assert outcomes[1][3] == 1
    without_bad = second.replace(b"1_0", b"10")
    outcomes = assert_same([(first, NOW), (without_bad, NOW), (without_bad, NOW + 15_000)])
    assert outcomes[1][7] == {"too_far_future": 1, "too_old": 1}


@needs_compiled
@pytest.mark.parametrize("honor", [True, False])
@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize(
    ("value", "stamp"),
    [(value, f" {NOW}") for value in ODD_VALUES] + [("7", stamp) for stamp in ODD_STAMPS],
)
def test_every_odd_value_and_timestamp_on_a_warm_line(
    value: str, stamp: str, honor: bool, wide: bool
) -> None:
    # Each kind of line the compiled loop must hand back, alone in an otherwise warm scrape (so that no
    # other error hides a difference), after a line whose timestamp text it extends or shortens.
    first = f'a 1 {NOW}\nb{{x="1"}} 2 {NOW}\nc 3\n'.encode()
    second = f'a 1 {NOW}\nb{{x="1"}} {value}{stamp}\nc 4\n'.encode()
    window = 1 << 62 if wide else None
    assert_same(
        [(first, NOW), (second, NOW), (first, NOW + 15_000)],
        honor_timestamps=honor,
        max_age_ms=window or MAX_AGE_MS,
        max_ahead_ms=window or MAX_AHEAD_MS,
    )


INTEGER_SPELLINGS = [
    *("0", "-0", "+0", "00", "-00012", "+7", "9", "123456789012345", "-123456789012345", "999999999999999"),
    *("1234567890123456", "9007199254740993", "-9223372036854775809", "1" * 40, "-", "+", "--1", "1-", "+-1"),
]


@needs_compiled
@pytest.mark.parametrize("value", INTEGER_SPELLINGS)
def test_integer_values_on_a_warm_line_are_the_doubles_strtod_gives(value: str) -> None:
    # The compiled loop converts short integers itself: the same double (sign of zero included) as
    # the pure-Python loop, and anything else left to the parser as before.
    first = f'a 1 {NOW}\nb{{x="1"}} 2 {NOW}\n'.encode()
    second = f'a 1 {NOW}\nb{{x="1"}} {value} {NOW}\n'.encode()
    outcomes = assert_same([(first, NOW), (second, NOW), (second, NOW + 1)])
    if value.lstrip("+-").isdigit() and value.count("-") + value.count("+") <= 1:
        assert outcomes[1][0] == "ok"
        chunks = outcomes[1][1]
        assert isinstance(chunks, list)
        assert struct.pack("<d", float(value)) in b"".join(data for data, _ in chunks)


@needs_compiled
@pytest.mark.parametrize("honor", [True, False])
def test_duplicates_and_sample_limit_on_the_warm_path(honor: bool) -> None:
    body = f"a 1 {NOW}\nb 2\na 3 {NOW}\nc 4\n".encode()
    outcomes = assert_same([(body, NOW), (body, NOW), (body, NOW + 15_000)], honor_timestamps=honor)
    assert all(o[5] == 1 and o[7] == {"duplicate": 1} for o in outcomes)
    limited = assert_same([(body, NOW), (body + b"d 5\n", NOW)], limits=ScrapeLimits(sample_limit=4))
    assert limited[1][0] == "error" and limited[1][4] == "sample_limit"


# -- the emulator's real payloads ------------------------------------------------------------------------


def _emulated(pods: int, scrapes: int, churn_per_min: float, endpoint: str) -> list[tuple[bytes, int]]:
    clock = FakeClock(autojump=False)
    node = NodePayloads("node-1", "10.0.0.1", pods, churn_per_min=churn_per_min, seed=3, clock=clock)
    out = []
    for _ in range(scrapes):
        out.append((getattr(node, endpoint)(), int(clock.time() * 1000)))
        clock.advance(15.0)
    return out


@needs_compiled
@pytest.mark.parametrize("endpoint", ["cadvisor", "metrics", "resource", "kube_proxy_metrics"])
@pytest.mark.parametrize("churn", [0.0, 20.0])
def test_emulator_payloads_give_identical_bytes(endpoint: str, churn: float) -> None:
    scrapes = _emulated(12, 6, churn, endpoint)
    outcomes = assert_same(scrapes, batch=500)
    assert all(o[0] == "ok" for o in outcomes)
    scraped = outcomes[-1][2]
    assert isinstance(scraped, int) and scraped > 0


@needs_compiled
def test_the_compiled_loop_keeps_no_value_memo() -> None:
    # The compiled loop parses each value in place: a warm cache holds its series, not one entry per
    # value text seen (those cost ~260 B per series). A value it hands back still goes through the memo.
    scrapes = _emulated(20, 5, 0.0, "cadvisor")
    cache = SeriesCache(labeler, compiled=True)
    for body, ts in scrapes:
        cache.process(body, ts)
    assert len(cache) > 1000
    assert cache._values == {} and cache._values_old == {}
    cache.process(f"a 1 {NOW}\nb 2 {NOW}\n".encode(), NOW)
    cache.process(f"a 1 {NOW}\nb +Inf {NOW}\n".encode(), NOW)  # an infinity: handed back to Python
    assert cache._values == {b"+Inf": struct.pack("<d", float("inf"))}


@needs_compiled
def test_emulator_payloads_with_limits_and_without_honoring_timestamps() -> None:
    scrapes = _emulated(8, 4, 30.0, "cadvisor")
    assert_same(scrapes, honor_timestamps=False, batch=97)
    samples = outcome(SeriesCache(labeler), *scrapes[0])[2]
    assert isinstance(samples, int)
    limited = assert_same(scrapes, limits=ScrapeLimits(sample_limit=samples))
    assert any(o[0] == "ok" for o in limited)


@needs_compiled
def test_emulator_churn_with_timestamp_staleness_tracking_gives_identical_bytes() -> None:
    scrapes = _emulated(8, 6, 30.0, "cadvisor")
    outcomes = assert_same(scrapes, track_timestamps_staleness=True, batch=97)
    untracked = assert_same(scrapes, batch=97)
    # Churn replaced pods: their cAdvisor series (own timestamps) got markers only when tracked.
    tracked_stale = sum(int(str(o[6])) for o in outcomes)
    assert tracked_stale > sum(int(str(o[6])) for o in untracked)


@needs_compiled
def test_join_range_assembles_a_chunk_as_bytes_join_does() -> None:
    from kubescrape.scrape import _fastpath

    pieces = [bytes([i]) * (i % 5) for i in range(40)]
    for start, stop in ((0, 0), (0, 40), (3, 10), (39, 40), (40, 40)):
        assert _fastpath.join_range(pieces, start, stop) == b"".join(pieces[start:stop])
    for start, stop in ((-1, 3), (0, 41), (5, 4)):
        with pytest.raises(ValueError):
            _fastpath.join_range(pieces, start, stop)
    with pytest.raises(TypeError):
        _fastpath.join_range([b"a", "b"], 0, 2)  # type: ignore[list-item]


@needs_compiled
def test_join_packed_puts_each_kept_head_before_its_packed_bytes() -> None:
    from kubescrape.scrape import _fastpath

    heads = [b"" if i % 3 == 0 else b"H%d" % i for i in range(10)]
    kept = [head for head in heads if head]
    packed = bytearray(b"".join(bytes([65 + i]) * 15 for i in range(len(kept))))
    chunks, index, offset = [], 0, 0
    while offset < len(packed):
        data, index, offset = _fastpath.join_packed(heads, packed, index, len(heads), offset, 4)
        chunks.append(data)
    want = [head + bytes([65 + i]) * 15 for i, head in enumerate(kept)]
    assert chunks == [b"".join(want[i : i + 4]) for i in range(0, len(want), 4)]
    assert index == len(heads)
    with pytest.raises(ValueError, match="run short"):
        _fastpath.join_packed(heads, bytearray(15), 0, len(heads), 0, 100)
    with pytest.raises(ValueError):
        _fastpath.join_packed(heads, packed, 0, len(heads) + 1, 0, 4)
    with pytest.raises(TypeError):
        _fastpath.join_packed([b"k", "H"], packed, 0, 2, 0, 4)  # type: ignore[list-item]


# -- bodies in pieces --------------------------------------------------------------------------------------


class Pieces:
    """A body handed over in pieces cut at ``cuts`` (a :class:`BodyPieces`, as a gzip body inflated piece by
    piece is); ``fail_after``: the pieces stop with ``error`` after that many, and so does ``whole()``."""

    def __init__(
        self,
        body: bytes,
        cuts: Sequence[int],
        fail_after: int | None = None,
        error: ScrapeError | None = None,
    ) -> None:
        self.body = body
        self.bounds = [0, *sorted({c for c in cuts if 0 < c < len(body)}), len(body)]
        self.fail_after = fail_after
        self.error = error

    def pieces(self) -> Iterator[bytes]:
        for n, (start, stop) in enumerate(zip(self.bounds, self.bounds[1:], strict=False)):
            if self.fail_after is not None and n == self.fail_after and self.error is not None:
                raise self.error
            yield self.body[start:stop]

    def whole(self) -> bytes:
        if self.fail_after is not None and self.error is not None:
            raise self.error
        return self.body


def assert_same_in_pieces(
    scrapes: list[tuple[bytes, int, Sequence[int]]], *, limits: ScrapeLimits | None = None, **settings: bool
) -> list[Outcome]:
    """Run caches with the whole bodies and caches with the bodies in pieces, on the pure-Python path and
    (when built) the compiled one, over ``scrapes``; return the outcomes (all equal, or the test fails)."""
    paths = (False, True) if COMPILED else (False,)
    whole = [SeriesCache(labeler, batch=3, limits=limits, compiled=c, **settings) for c in paths]
    cut = [SeriesCache(labeler, batch=3, limits=limits, compiled=c, **settings) for c in paths]
    outcomes = []
    for i, (body, ts, cuts) in enumerate(scrapes):
        want = outcome(whole[0], body, ts)
        for cache in whole[1:]:
            assert outcome(cache, body, ts) == want, f"scrape {i}: compiled differs"
        for cache in cut:
            assert outcome(cache, Pieces(body, cuts), ts) == want, f"scrape {i} in pieces {cuts} differs"
        outcomes.append(want)
    flush = whole[0].stale_all(NOW + 60_000)
    assert all(cache.stale_all(NOW + 60_000) == flush for cache in (*whole[1:], *cut))
    return outcomes


@given(st.binary(max_size=60).map(lambda b: b.replace(b"x", b"\n")), st.lists(st.integers(0, 60), max_size=8))
def test_pieces_become_segments_of_whole_lines(body: bytes, cuts: list[int]) -> None:
    segments = list(_lines(Pieces(body, cuts).pieces()))
    assert b"".join(data[start:stop] for data, start, stop in segments) == (
        body if body.endswith(b"\n") else body + b"\n"
    )
    for data, start, stop in segments:
        assert 0 <= start < stop <= len(data) and data[stop - 1] == 10  # ends with a newline


@st.composite
def _scrapes_in_pieces(draw: st.DrawFn) -> list[tuple[bytes, int, Sequence[int]]]:
    return [
        (body, ts, draw(st.lists(st.integers(0, len(body)), max_size=6)))
        for body, ts in draw(_scrape_sequence())
    ]


@settings(max_examples=300, deadline=None)
@given(
    _scrapes_in_pieces(),
    st.booleans(),
    st.sampled_from(
        [ScrapeLimits(), ScrapeLimits(sample_limit=12), ScrapeLimits(label_value_length_limit=20)]
    ),
)
def test_a_body_in_pieces_gives_what_the_whole_body_gives(
    scrapes: list[tuple[bytes, int, Sequence[int]]], honor: bool, limits: ScrapeLimits
) -> None:
    # Cut anywhere: inside a series, a value, a timestamp, right after or before a newline; pieces with a
    # \r or \f (not "fast") among fast ones; errors with their line numbers, duplicates, limits.
    assert_same_in_pieces(scrapes, honor_timestamps=honor, limits=limits)


def test_a_body_cut_at_every_byte_gives_what_the_whole_body_gives() -> None:
    first = f'a 1 {NOW}\nb{{x="1"}} 2 {NOW}\n# HELP c help\nc 3\nd 4 {NOW}\na 5 {NOW}\n'.encode()
    second = first.replace(b" 3\n", b" 30\n")
    crlf = f'a 1 {NOW}\nb{{x="1\r"}} 2 {NOW}\nc 3\nd 4 {NOW}\n'.encode()
    bad = first.replace(b"c 3", b"c 3 x")
    scrapes = [(first, NOW), (second, NOW + 15_000), (crlf, NOW + 30_000), (second, NOW + 45_000),
               (bad, NOW + 60_000), (second.rstrip(b"\n"), NOW + 75_000), (b"", NOW + 90_000)]
    outcomes = assert_same_in_pieces([(body, ts, range(len(body))) for body, ts in scrapes])
    assert [o[0] for o in outcomes] == ["ok", "ok", "ok", "ok", "error", "ok", "ok"]
    assert outcomes[4][3] == 4  # the parse error names its line, as for a whole body
    assert outcomes[1][5] == 1  # "a" twice: the duplicate left out


def test_a_piece_that_is_not_fast_redoes_the_staleness_tracking_as_a_whole_body_does() -> None:
    # A whole body with a \r anywhere rebuilds the series order, and with it which series get a
    # staleness marker when they go; so must a body whose \r is in a piece of comments only.
    first = f"a 1\nb 2 {NOW}\n".encode()
    second = f"a 1 {NOW}\nb 2 {NOW}\n# HELP x \r\n".encode()  # "a" now has its own timestamp
    third = f"b 2 {NOW}\n".encode()  # "a" gone: no marker, it is no longer tracked
    outcomes = assert_same_in_pieces(
        [(first, NOW, []), (second, NOW + 15_000, [second.index(b"#")]), (third, NOW + 30_000, [])]
    )
    assert outcomes[2][6] == 0


def test_a_line_longer_than_a_piece_is_joined_whole() -> None:
    long = 'c{x="' + "v" * 5000 + '"}'
    body = f"a 1\n{long} 2\nb 3\n".encode()
    assert_same_in_pieces([(body, NOW, range(3, len(body), 7)), (body, NOW + 1, range(100, len(body), 100))])


@pytest.mark.parametrize("endpoint", ["cadvisor", "metrics"])
def test_emulator_payloads_in_pieces_give_identical_bytes(endpoint: str) -> None:
    scrapes = _emulated(12, 4, 20.0, endpoint)
    outcomes = assert_same_in_pieces(
        [(body, ts, range(n * 977, len(body), 4093 + n)) for n, (body, ts) in enumerate(scrapes)]
    )
    assert all(o[0] == "ok" for o in outcomes)


def test_a_failing_reader_part_way_gives_its_error_and_keeps_no_series() -> None:
    # The reader's error (e.g. a gzip stream that ends early) wins over whatever the pieces parsed so far:
    # the cache asks for the whole body, which raises it; the series of the failed scrape are forgotten.
    first = f"a 1 {NOW}\nb 2 {NOW}\n".encode()
    second = first + b"".join(b"new_%d 1\n" % i for i in range(50)) + b"oops{\n"
    error = ScrapeError("https://node:10250/metrics sent a gzip body that ends early", "", reason="gzip")
    for compiled in (False, True) if COMPILED else (False,):
        cache = SeriesCache(labeler, compiled=compiled)
        cache.process(Pieces(first, [3]), NOW)
        for fail_after in (0, 2, 5):
            with pytest.raises(ScrapeError) as caught:
                cache.process(Pieces(second, range(0, len(second), 64), fail_after, error), NOW + 15_000)
            assert caught.value is error and len(cache) == 2
        with pytest.raises(ParseError) as parse_error:
            cache.process(Pieces(second, range(0, len(second), 64)), NOW + 15_000)
        assert parse_error.value.line_no == 53 and len(cache) == 2
        result = cache.process(Pieces(first, [5, 9]), NOW + 30_000)
        assert result.samples_scraped == 2 and result.series_added == 0


# -- selection ---------------------------------------------------------------------------------------------


def test_pure_python_can_be_forced_from_the_environment() -> None:
    code = (
        "from kubescrape.scrape.cache import COMPILED, SeriesCache\n"
        "cache = SeriesCache(lambda n, l: [('__name__', n), *l])\n"
        "r = cache.process(b'a 1\\n', 1764000000000)\n"
        "print(COMPILED, cache.compiled, r.samples_post_relabel)\n"
    )
    env = {**os.environ, "KUBESCRAPE_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "1"]


def test_asking_for_the_compiled_path_when_it_is_absent_is_an_error() -> None:
    if COMPILED:
        assert SeriesCache(labeler).compiled
    else:
        assert not SeriesCache(labeler).compiled
        with pytest.raises(ValueError, match="not available"):
            SeriesCache(labeler, compiled=True)
