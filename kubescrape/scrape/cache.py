"""The scrape cache: exposition bytes straight to remote-write bytes.

Like Prometheus' scrape cache, it maps the raw series text of a line (everything before the value) to
what the series becomes after relabeling: here, the pre-encoded bytes that precede the value in a
remote-write ``timeseries`` field (or "dropped"). A series seen for the first time is fully parsed,
handed to the labeler (target labels + relabeling) and encoded once.

Steady state is the point. Targets expose their series in a stable order, so the series order of the
previous scrape predicts each line: a ``bytes.startswith`` at the line's offset confirms it without
slicing or hashing a ~300-byte key. Then the line costs a ``partition`` of the value part, a
``float()`` with cheap guards for what Go's ``ParseFloat`` rejects (skipped when the same value text was
seen recently), a per-scrape memo of encoded timestamps and three byte strings appended to a list. On a
misprediction a dict keyed by the series text is used. Lines the fast path is not sure about (comments,
leading blanks, tabs, unusual whitespace, non-ASCII, odd timestamps) take the full validating parser,
so the cache accepts exactly what :func:`~kubescrape.scrape.parser.parse` accepts. A body served as
``application/openmetrics-text`` is parsed by :mod:`~kubescrape.scrape.openmetrics` instead (no fast
path: no kubelet endpoint serves it) and shares the same series cache.

A gzip body is parsed as it is inflated, piece by piece (:class:`BodyPieces`, see
:class:`kubescrape.client.GzipBody`): the loop runs over segments of whole lines and carries its state
(position in the predicted order, packed samples, pieces, metadata) from one to the next, so the 14 MB
text of a 250-pod cAdvisor body never exists at once (with the agent's allocator tuning, a whole body
was a fresh mapping faulted in again at every scrape: ~3,300 of the ~5,800 minor faults per scrape).

The warm loop also exists compiled (``_fastpath.c``, a C extension that ``setup.py`` builds at install time
when a C compiler is present; about 4× faster on the emulator's cAdvisor payload, see ``bench/parse.py``).
It takes the predicted lines it is sure about and stops at the first line that needs any other decision,
which this module's loop then makes, so both produce the same bytes, counts and errors
(``tests/scrape/test_fastpath.py`` proves it). Without the extension, or with ``KUBESCRAPE_PURE_PYTHON=1``
in the environment, the pure-Python loop runs alone.

Per-sample validity is decided here, where the scrape still knows which target a sample came from, so
that one target's bad timestamps can never cost another target's data at the receiver (a remote-write
backend refuses a whole request for one sample it cannot append). See :data:`MAX_AHEAD_MS` and
:data:`MAX_AGE_MS`. The scrape limits (:class:`ScrapeLimits`) have Prometheus' semantics: exceeding one
fails the whole scrape.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator
from itertools import compress as select
from types import ModuleType
from typing import NamedTuple, Protocol

from kubescrape.errors import LabelLimitError, ParseError, SampleLimitError, ScrapeError
from kubescrape.remote_write import Chunk
from kubescrape.remote_write.encode import STALE_NAN_BYTES, compress, encode_labels, sample_head, varint
from kubescrape.scrape.openmetrics import is_openmetrics, iter_openmetrics, label_pairs
from kubescrape.scrape.parser import Metadata, decode_line, parse, parse_float, parse_line

__all__ = [
    "COMPILED",
    "DROPPED",
    "MAX_AGE_MS",
    "MAX_AHEAD_MS",
    "BodyPieces",
    "Labeler",
    "ScrapeLimits",
    "ScrapeResult",
    "SeriesCache",
]


def _load_compiled() -> ModuleType | None:
    """The compiled warm loop (``kubescrape.scrape._fastpath``), or ``None``: not built (no C compiler
    at install time) or ``KUBESCRAPE_PURE_PYTHON=1`` in the environment."""
    if os.environ.get("KUBESCRAPE_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from kubescrape.scrape import _fastpath
    except ImportError:
        return None
    return _fastpath


_compiled = _load_compiled()
COMPILED = _compiled is not None
"""Whether :class:`SeriesCache` runs its warm loop compiled by default (same bytes either way)."""

Labeler = Callable[[str, list[tuple[str, str]]], list[tuple[str, str]] | None]
"""Metric name + exposed labels -> final labels including ``__name__``, or ``None`` to drop the series."""

DROPPED = b""
"""Cache value of a series the labeler dropped."""

# Cached series heads assume a 6-byte timestamp varint (2^35..2^42 ms: the years 1971-2109); any
# other timestamp length is encoded in full.
_TAIL_LEN = 7
_INT64_MAX = (1 << 63) - 1
_pack_double = struct.Struct("<d").pack
# Series order: two parallel lists, the raw series text + b" " of each series and its head (or DROPPED).
# Two lists cost 16 B a series; a list of (key, head) tuples cost 64 B.
_Order = tuple[list[bytes], list[bytes]]
# Tail marker of a sample the fast path hands to the full parser.
_ODD = b"odd"
# Validated comment lines a cache remembers from one scrape to the next, and the longest remembered: a
# hostile target with millions of distinct or huge comment lines can make it hold at most ~2 MiB.
_COMMENTS_KEPT = 4096
_COMMENT_KEPT_LEN = 512

MAX_AHEAD_MS = 10 * 60 * 1000
"""A sample whose own timestamp is more than this ahead of the scrape time is dropped (``too_far_future``).

Prometheus 2.42 drops such samples at scrape time (``scrape.go``: ``timeLimitAppender`` with
``maxAheadTime = 10 * time.Minute`` returns ``ErrOutOfBounds``, logged as "too old or too far into the
future"), and Mimir/Cortex refuse them at the receiver with the same 10 min creation grace period. Shipping
one anyway is worse than losing it: a Prometheus receiver appends it, its head's max time jumps ahead,
and from then on every request from every target is older than ``max time - 1 h`` and refused with
``400 out of bounds``.
"""

MAX_AGE_MS = 55 * 60 * 1000
"""A sample whose own timestamp is more than this behind the scrape time is dropped (``too_old``).

A Prometheus TSDB (the scraper itself, or a remote-write receiver) appends only at or after
``max(head min valid time, head max time - chunk range / 2)`` (``tsdb/head_append.go``
``appendableMinValidTime``): with the default 2 h chunk range and a head kept current by other targets,
one hour before now. Older samples are ``ErrOutOfBounds``: Prometheus' own scrape drops that sample, a
receiver refuses the whole request. The five minutes of margin cover the time a sample spends in the
queue and the receiver's clock running ahead of ours.
"""


class BodyPieces(Protocol):
    """A scrape body its reader produces in pieces (:class:`kubescrape.client.GzipBody`: a gzip body
    inflated piece by piece), so that the whole text never has to exist at once."""

    def pieces(self) -> Iterator[bytes]:
        """The body in order, cut anywhere (inside a line too); may raise :class:`ScrapeError`."""
        ...

    def whole(self) -> bytes:
        """The whole body, or the :class:`ScrapeError` reading it whole gives."""
        ...


class ScrapeLimits(NamedTuple):
    """Per-target limits with Prometheus' semantics (``scrape_config``); 0 means no limit.

    ``sample_limit`` counts samples after relabeling, duplicates and out-of-window ones included (as
    Prometheus' ``limitAppender`` does); the label limits apply to each series' final label set
    (``__name__`` and target labels included; lengths in bytes). Exceeding any fails the whole scrape.
    """

    sample_limit: int = 0
    label_limit: int = 0
    label_name_length_limit: int = 0
    label_value_length_limit: int = 0


class ScrapeResult(NamedTuple):
    """What one scrape produced.

    ``series_added`` counts series (after relabeling) not present in the previous scrape;
    ``samples_duplicate`` counts later samples of a series already seen in the same scrape, which are
    left out as Prometheus does (a remote-write backend would reject the whole request).
    ``samples_stale`` counts the staleness markers (stale NaN) in ``chunks`` for series of the previous
    scrape that are gone; they are in the chunks' sample counts, not in ``samples_post_relabel``.
    ``dropped`` counts the scraped samples that are not in ``chunks``, by reason: ``duplicate``,
    ``too_old``, ``too_far_future`` (see :data:`MAX_AGE_MS`, :data:`MAX_AHEAD_MS`) and ``relabel``
    (dropped by relabeling or metric filters); so ``samples_scraped = samples_post_relabel +
    sum(dropped.values())``.
    """

    chunks: list[Chunk]
    samples_scraped: int
    samples_post_relabel: int
    series_added: int
    samples_duplicate: int = 0
    samples_stale: int = 0
    dropped: dict[str, int] = {}  # noqa: RUF012  (never mutated; every result gets its own)


def _labels_of(head: bytes) -> bytes:
    """The label bytes inside a cached head (see :func:`sample_head`)."""
    start = 1
    while head[start] & 0x80:
        start += 1
    return head[start + 1 : -3]


class SeriesCache:
    """Per-target cache from raw series text to pre-encoded, relabeled label bytes.

    Two levels: the series of the previous scrape, in order, predict the series of each line (targets
    expose their series in a stable order, so a ``str.startswith`` at the line's offset replaces
    slicing and hashing a ~300-byte key); on a misprediction a dict keyed by the series text is used.
    Every ``generation`` scrapes (or as soon as it holds twice the series of the scrape) the dict is
    rebuilt from the series of that scrape, so entries of series that went away (pod churn) are evicted
    and memory stays bounded; a failed scrape takes back the entries it added.
    """

    def __init__(
        self,
        labeler: Labeler,
        *,
        honor_timestamps: bool = True,
        track_timestamps_staleness: bool = False,
        batch: int = 2000,
        generation: int = 4,
        limits: ScrapeLimits | None = None,
        max_ahead_ms: int = MAX_AHEAD_MS,
        max_age_ms: int = MAX_AGE_MS,
        compiled: bool | None = None,
    ) -> None:
        """``compiled``: run the warm loop compiled (``None``: whenever the extension is available;
        ``False``: the pure-Python loop). The output is the same; the differential test proves it.

        ``track_timestamps_staleness`` (Prometheus' scrape option of the same name, 2.48+): series that
        carry their own timestamp get a staleness marker too when they disappear. Off, as in Prometheus,
        only series stamped with the scrape time are tracked, so a stopped container's cAdvisor series
        (which carry cAdvisor's housekeeping time) linger in queries for the 5 min lookback."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._labeler = labeler
        self._limits = limits if limits is not None else ScrapeLimits()
        self._check_labels = any(self._limits[1:])
        self._max_ahead = max_ahead_ms
        self._max_age = max_age_ms
        # Per scrape: the accepted timestamp window, out-of-window drops by reason, keys added to the
        # cache (forgotten again if the scrape fails, so failing scrapes cannot grow it).
        self._lo = self._hi = 0
        self._window_drops: dict[str, int] = {}
        self._new_keys: list[bytes] = []
        self._honor = honor_timestamps
        self._track_all = track_timestamps_staleness
        self._batch = batch
        self._generation = max(1, generation)
        # Series text + b" " -> head. The same key objects are shared with the order list. Only a
        # misprediction or a new series needs it: after ``generation`` scrapes in a row that the order
        # predicted whole it is dropped (~31 B a series) and rebuilt from the order when needed again.
        self._entries: dict[bytes, bytes] | None = {}
        self._stable = 0
        self._order: _Order = ([], [])
        self._order_had_duplicates = False
        # Value text -> packed double, for the pure-Python loop (the compiled one parses in place and
        # keeps none). Many series (limits, specs, idle counters) keep their value between scrapes; a
        # dict hit is cheaper than float() + pack. Bounded to about one scrape.
        self._values: dict[bytes, bytes] = {}
        self._values_old: dict[bytes, bytes] = {}
        self._scrapes = 0
        # The series (heads) of the previous scrape, for ``series_added``. Like the dict, dropped after
        # ``generation`` predicted scrapes (~50 B a series): they are the non-dropped heads of the order,
        # less those whose every sample was dropped as out of the timestamp window (``_unkept``, usually
        # empty; ``_window_heads`` collects them per scrape), and rebuilt when the order changes.
        self._previous: set[bytes] | None = set()
        self._unkept: set[bytes] = set()
        self._window_heads: list[bytes] = []
        # Series of the previous scrape that get a staleness marker when they disappear: those without a
        # timestamp of their own, or all with ``track_timestamps_staleness`` (Prometheus' scrape.go:
        # ``if parsedTimestamp == nil || sl.trackTimestampsStaleness { trackStaleness }``).
        self._tracked: set[bytes] = set()
        self._odd_heads: dict[bytes, bytes] = {}
        self._stale_count = 0
        # Comment and metadata lines (HELP, TYPE) of the last scrape that validated: their validation
        # depends on the line alone, so the same line is not parsed again (~290 per scrape of a kubelet's
        # /metrics and /metrics/cadvisor). At most _COMMENTS_KEPT lines of up to _COMMENT_KEPT_LEN bytes.
        self._comments: set[bytes] = set()
        if compiled and _compiled is None:
            raise ValueError("the compiled fast path is not available (not built, or KUBESCRAPE_PURE_PYTHON)")
        self._compiled = _compiled if compiled is not False else None
        # New series of a plainly labeled target are labeled and encoded by the compiled cold loop.
        self._cold_target = (
            _plain_target(labeler) if self._compiled is not None and not self._check_labels else None
        )

    @property
    def compiled(self) -> bool:
        """Whether this cache runs the compiled warm loop."""
        return self._compiled is not None

    def __len__(self) -> int:
        if self._entries is None:
            return len(set(self._order[0]))
        return len(self._entries)

    def _entries_dict(self) -> dict[bytes, bytes]:
        """The dict of cached series, rebuilt from the order if it was dropped."""
        entries = self._entries
        if entries is None:
            entries = self._entries = dict(zip(*self._order, strict=True))
        return entries

    def _forget_new_keys(self) -> None:
        """Take back the entries a failed scrape added."""
        if self._entries is not None:
            for key in self._new_keys:
                self._entries.pop(key, None)
        self._new_keys = []

    def invalidate(self) -> None:
        """Forget every entry, e.g. after the relabel configuration or target labels changed."""
        self._entries = {}
        self._order = ([], [])
        self._order_had_duplicates = False
        self._values = {}
        self._values_old = {}
        self._previous = set()
        self._unkept = set()
        self._tracked = set()
        self._new_keys = []
        self._comments = set()

    def process(
        self,
        body: bytes | str | BodyPieces,
        scrape_ts_ms: int,
        *,
        content_type: str = "",
        snappy: bool = False,
    ) -> ScrapeResult:
        """Validate a whole exposition and encode its samples into chunks of ``batch`` samples.

        ``snappy``: each chunk is snappy-compressed as soon as it is assembled (``Chunk.snappy``), as the
        spool stores it and a request carries it; then only one uncompressed chunk exists at a time
        (at 250 pods the uncompressed chunks of a scrape are ~21 MB, compressed ~5 MB).

        ``content_type`` is the response's Content-Type: ``application/openmetrics-text`` selects the
        OpenMetrics parser, anything else text 0.0.4 (as Prometheus decides). Samples without a
        timestamp (or all samples when ``honor_timestamps`` is off) get ``scrape_ts_ms``; samples whose
        own timestamp is outside the window a receiver accepts are dropped and counted in
        ``dropped``. A malformed line raises :class:`ParseError` with its line number, an exceeded
        limit :class:`SampleLimitError` or :class:`LabelLimitError`; then nothing of the scrape is
        returned and nothing of it stays referenced (the exception carries no traceback into the
        parser's frames, which hold the body).

        A body given in pieces (:class:`BodyPieces`) is parsed piece by piece, with the same result; if
        that fails, the body is read whole and processed as such, so the error is the one a whole body
        gives (the reader's own error first, e.g. a gzip stream that ends early).
        """
        data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        del body
        self._odd_heads = {}
        self._stale_count = 0
        self._window_drops = {}
        self._window_heads = []
        self._new_keys = []
        self._lo = scrape_ts_ms - self._max_age
        self._hi = scrape_ts_ms + self._max_ahead
        error: ScrapeError | None = None
        try:
            pieces, scraped, order = self._encode_any(data, scrape_ts_ms, content_type)
        except ScrapeError as exc:
            error = exc
        if error is not None:
            del data
            self._forget_new_keys()
            raise error.with_traceback(None)
        self._new_keys = []
        window_dropped = sum(self._window_drops.values())
        offered = _count(pieces) + window_dropped
        self._scrapes += 1
        if order is self._order and not self._order_had_duplicates:
            # Same series in the same order as last time: nothing added, no duplicates.
            added = duplicates = 0
            self._stable += 1
            if self._stable >= self._generation:
                self._entries = self._previous = None
        else:
            if isinstance(pieces, _Packed):
                pieces = pieces.unpack()
            heads = pieces[0::3]
            if self._odd_heads:
                # Samples with an unusual timestamp length: identify their series by the usual head.
                canonical = self._odd_heads.get
                heads = [canonical(head, head) for head in heads]
            current = set(heads)
            duplicates = 0
            if len(current) != len(heads):
                pieces, duplicates = _drop_duplicates(pieces, heads)
            self._stable = 0
            previous = self._previous if self._previous is not None else self._previous_series()
            added = len(current - previous)
            self._previous = current
            self._unkept = {head for head in self._window_heads if head not in current}
            self._order_had_duplicates = duplicates > 0
            self._order = order
            pieces = self._mark_stale(pieces, current, scrape_ts_ms)
        # Rebuild every ``generation`` scrapes, or at once when churn has doubled the cache: a target that
        # exposes a million new series per scrape must not hold ``generation`` million entries.
        series = len(order[0])
        entries = self._entries
        if entries is not None and len(entries) > series and (
            self._scrapes % self._generation == 0 or len(entries) > 2 * series + 1024
        ):
            self._entries = dict(zip(*order, strict=True))
        kept = _count(pieces) - self._stale_count
        chunks = self._chunks(pieces, snappy)
        dropped = dict(self._window_drops)
        if duplicates:
            dropped["duplicate"] = duplicates
        if scraped > offered:
            dropped["relabel"] = scraped - offered
        return ScrapeResult(chunks, scraped, kept, added, duplicates, self._stale_count, dropped)

    def _previous_series(self) -> set[bytes]:
        """The series (heads) of the previous scrape's samples: those of its order, less the dropped
        ones and those whose samples were all out of the timestamp window."""
        previous = set(self._order[1])
        previous.discard(DROPPED)
        previous -= self._unkept
        return previous

    def _chunks(self, pieces: list[bytes] | _Packed, snappy: bool) -> list[Chunk]:
        """``pieces`` (head, value, tail per sample, or packed) joined into chunks of ``batch`` samples,
        each compressed right away with ``snappy``."""
        if isinstance(pieces, _Packed):
            return self._packed_chunks(pieces, snappy)
        step = 3 * self._batch
        join = self._compiled.join_range if self._compiled is not None else None
        chunks: list[Chunk] = []
        for start in range(0, len(pieces), step):
            stop = min(start + step, len(pieces))
            data = join(pieces, start, stop) if join is not None else b"".join(pieces[start:stop])
            samples = (stop - start) // 3
            chunks.append(Chunk(compress(data), samples, 0, True) if snappy else Chunk(data, samples))
            del data
        return chunks

    def _packed_chunks(self, packed: _Packed, snappy: bool) -> list[Chunk]:
        """:meth:`_chunks` for packed samples: each chunk built by the compiled ``join_packed``."""
        assert self._compiled is not None  # packed samples come from the compiled loop only
        join = self._compiled.join_packed
        chunks: list[Chunk] = []
        index = offset = 0
        while offset < packed.size:
            data, index, end = join(packed.heads, packed.data, index, packed.stop, offset, self._batch)
            samples = (end - offset) // _PACKED_SAMPLE
            offset = end
            chunks.append(Chunk(compress(data), samples, 0, True) if snappy else Chunk(data, samples))
            del data
        return chunks

    def _encode_any(
        self, data: bytes | BodyPieces, scrape_ts_ms: int, content_type: str
    ) -> tuple[list[bytes] | _Packed, int, _Order]:
        """Encode with the parser the content type selects, then apply the sample limit."""
        result: tuple[list[bytes] | _Packed, int, _Order]
        if not isinstance(data, bytes):
            if is_openmetrics(content_type):  # no kubelet endpoint serves it: read whole
                return self._encode_any(data.whole(), scrape_ts_ms, content_type)
            try:
                result = self._encode(_lines(data.pieces()), scrape_ts_ms)
            except ScrapeError:
                # The whole body decides the error (its reader's, or the line number of a parse error).
                self._forget_new_keys()
                self._odd_heads = {}
                self._window_drops = {}
                self._window_heads = []
                return self._encode_any(data.whole(), scrape_ts_ms, content_type)
        elif is_openmetrics(content_type):
            result = self._encode_openmetrics(data, scrape_ts_ms)
        else:
            text = data if data.endswith(b"\n") else data + b"\n"
            try:
                result = self._encode(((text, 0, len(text)),), scrape_ts_ms)
            except ParseError as exc:
                if exc.line_no:
                    raise
                # The fast loop does not count lines; the full parser finds the line and says what is wrong.
                parse(data.decode("utf-8", "surrogateescape"))
                raise
        limit = self._limits.sample_limit
        if limit and _count(result[0]) + sum(self._window_drops.values()) > limit:
            self._sample_limit_error(_count(result[0]) + sum(self._window_drops.values()))
        return result

    def _sample_limit_error(self, count: int) -> None:
        limit = self._limits.sample_limit
        raise SampleLimitError(
            f"the target exposes more than sample_limit = {limit} samples after relabeling "
            f"({count} so far); the whole scrape is discarded, as Prometheus does",
            "raise sample_limit for this instance, or drop series with metrics_drop / "
            "metric_relabel_configs (action: drop)",
        )

    def _label_limit_error(self, final: list[tuple[str, str]]) -> None:
        """Raise :class:`LabelLimitError` if ``final`` breaks a label limit (Prometheus'
        ``verifyLabelLimits``)."""
        limits = self._limits
        metric = next((value for name, value in final if name == "__name__"), "")[:50]
        present = [(name, value) for name, value in final if value]
        if limits.label_limit and len(present) > limits.label_limit:
            raise LabelLimitError(
                f"series {metric} has {len(present)} labels, more than label_limit = {limits.label_limit}",
                "raise label_limit for this instance, or remove labels with metric_relabel_configs "
                "(action: labeldrop) or ignore_label_keys",
                reason="label_limit",
            )
        for name, value in present:
            if limits.label_name_length_limit and len(name.encode("utf-8", "surrogateescape")) > (
                limits.label_name_length_limit
            ):
                raise LabelLimitError(
                    f"series {metric} has label name {name[:50]!r} longer than label_name_length_limit = "
                    f"{limits.label_name_length_limit} bytes",
                    "raise label_name_length_limit for this instance, or drop the label with "
                    "metric_relabel_configs (action: labeldrop)",
                    reason="label_name_length_limit",
                )
            if limits.label_value_length_limit and len(value.encode("utf-8", "surrogateescape")) > (
                limits.label_value_length_limit
            ):
                raise LabelLimitError(
                    f"series {metric} has a value of label {name[:50]!r} of "
                    f"{len(value.encode('utf-8', 'surrogateescape'))} bytes, more than "
                    f"label_value_length_limit = {limits.label_value_length_limit}",
                    "raise label_value_length_limit for this instance, or shorten or drop the label with "
                    "metric_relabel_configs",
                    reason="label_value_length_limit",
                )

    def _encode_openmetrics(self, data: bytes, scrape_ts_ms: int) -> tuple[list[bytes], int, _Order]:
        """Parse an OpenMetrics body (no fast path) into pieces, the sample count and the series order."""
        pieces: list[bytes] = []
        order: _Order = ([], [])
        scraped = 0
        add = self._add
        known = self._entries_dict()
        for line_no, line, parsed in iter_openmetrics(data.decode("utf-8", "surrogateescape")):
            if parsed is None:
                continue
            series_text, name, block, value, timestamp = parsed
            key = series_text.encode("utf-8", "surrogateescape") + b" "
            # A series seen before was validated then (same text, same labels): skip its label set.
            try:
                labels = [] if key in known else label_pairs(block)
            except ParseError as exc:
                raise ParseError(exc.message, line_no=line_no, line=line) from None
            scraped += add(
                key, True, series_text, name, labels, value, timestamp, scrape_ts_ms, pieces, order
            )
        return pieces, scraped, order

    def _mark_stale(self, pieces: list[bytes], current: set[bytes], scrape_ts_ms: int) -> list[bytes]:
        """Append a staleness marker (Prometheus' stale NaN) for every tracked series of the previous
        scrape that this one no longer has, and track this scrape's series without own timestamps (all
        of them with ``track_timestamps_staleness``).

        Runs only when the series order changed, so a stable target pays nothing for it.
        """
        default_tail = b"\x10" + varint(scrape_ts_ms)
        canonical = self._odd_heads.get
        heads = pieces[0::3]
        tails = pieces[2::3]
        if self._track_all:
            tracked = current
        else:
            own = select(heads, map(default_tail.__eq__, tails))
            tracked = {canonical(h, h) for h in own} if self._odd_heads else set(own)
        gone = [h for h in self._tracked if h not in current]
        self._tracked = tracked
        self._stale_count = 0
        if not gone or len(default_tail) != _TAIL_LEN:
            return pieces
        for head in gone:
            pieces.extend((head, STALE_NAN_BYTES, default_tail))
        self._stale_count = len(gone)
        return pieces

    def stale_all(self, scrape_ts_ms: int) -> list[Chunk]:
        """Staleness markers for every tracked series, as Prometheus writes them after a failed scrape;
        the next successful scrape starts afresh (all its series count as added)."""
        default_tail = b"\x10" + varint(scrape_ts_ms)
        gone, self._tracked = self._tracked, set()
        self._previous = set()
        self._unkept = set()
        self._entries_dict()  # the series stay cached: keep them before the order goes
        self._order = ([], [])
        if not gone or len(default_tail) != _TAIL_LEN:
            return []
        pieces = [piece for head in gone for piece in (head, STALE_NAN_BYTES, default_tail)]
        step = 3 * self._batch
        return [
            Chunk(b"".join(pieces[start : start + step]), len(pieces[start : start + step]) // 3)
            for start in range(0, len(pieces), step)
        ]

    def _encode(
        self, segments: Iterable[_Segment], scrape_ts_ms: int
    ) -> tuple[list[bytes] | _Packed, int, _Order]:
        """The hot loop, on the raw body in segments of whole lines (see :func:`_lines`): three pieces
        (head, value, tail) per kept sample (or, when the compiled loop found every series where the
        previous order predicts, the same samples packed: :class:`_Packed`), the sample count, and the
        series order of this scrape (the previous order object itself when every series was where it
        predicted). Everything but the segment (the position in the predicted order, the packed
        buffer, pieces, order, metadata) runs on from one segment to the next.

        The order is two parallel lists: each series' text + b" " (its key) and its head; the key's
        trailing blank makes
        ``startswith`` check the separator too. Nothing here needs the body decoded: label values are
        decoded (and their UTF-8 validated) when their series is first seen; values and timestamps are
        ASCII or invalid.
        """
        entries_get = None  # bound at the first misprediction (the dict may have to be rebuilt)
        values = self._values
        if len(values) > len(self._order[0]) + 1024:
            # Start a new generation; values of the last one are still found (and carried over).
            self._values_old = values
            values = self._values = {}
        values_get = values.get
        old_values_get = self._values_old.get
        honor = self._honor
        pack = _pack_double
        pieces: list[bytes] = []
        extend = pieces.extend
        order: _Order = ([], [])
        order_keys, order_heads = order
        # Once diverged, the lines the previous order predicts are not appended one by one: the order
        # gets keys[pending:index] (and their heads) in one go before anything else is appended.
        pending = 0
        diverged = False
        default_tail = b"\x10" + varint(scrape_ts_ms)
        tails: dict[bytes, bytes] = {}
        tails_get = tails.get
        lo, hi = self._lo, self._hi
        metadata = Metadata()
        # A scrape time outside 1971-2109 does not fit the cached heads: every line takes the full parser.
        warm = len(default_tail) == _TAIL_LEN
        predicted = self._order if warm else ([], [])
        keys, heads = predicted
        npredicted = len(keys)
        # The compiled loop takes the predicted lines it is sure about and stops at the first other one,
        # which this loop handles as usual (lo and hi always fit an int64 for a 1971-2109 scrape time).
        compiled = self._compiled
        in_range = lo >= -_INT64_MAX - 1 and hi <= _INT64_MAX
        warm_run = compiled.run if compiled is not None and in_range else None
        cold_target = self._cold_target
        cold_run = None
        if compiled is not None and cold_target is not None and in_range:
            cold_run = compiled.cold_run
        entries: dict[bytes, bytes] | None = None
        # Packed mode (compiled, while every line is where the previous order predicts): the value and
        # tail of each kept sample go into one buffer, the heads being those of the predicted entries;
        # no per-sample objects. Left (unpacked into pieces) as soon as the order diverges.
        vt = bytearray(_PACKED_SAMPLE * npredicted) if warm_run is not None and npredicted else None
        vt_len = 0
        slow = self._slow_line
        comments_seen = self._comments
        comments: set[bytes] = set()
        # ``index`` counts the samples of this scrape; ``p`` is where the next line is predicted in the
        # previous order. They part when series come or go: a new series does not move ``p`` (the next line
        # is still predicted to be keys[p]); a known series found elsewhere moves it to just after that
        # series (``positions``, built at the first such line), so the compiled loop takes over again.
        index = 0
        p = 0
        positions: dict[bytes, int] | None = None

        for data, pos, size in segments:
            # Python's float() strips \v, \f and \r where Prometheus' lexer keeps them in the value token:
            # the lines of a segment with any of them take the full parser (lines never straddle segments).
            fast = (
                warm
                and data.find(b"\r", pos, size) < 0
                and data.find(b"\x0b", pos, size) < 0
                and data.find(b"\x0c", pos, size) < 0
            )
            if not fast and not diverged:
                # As for a whole body that is not fast: the order is rebuilt (so the staleness tracking is
                # redone), whichever segment holds the odd byte.
                diverged = True
                if vt is not None:
                    _unpack(heads, p, vt, vt_len, pieces)
                    vt = None
            run = warm_run if fast else None
            find = data.find
            startswith = data.startswith
            while pos < size:
                if run is not None and p < npredicted:
                    pos, reached, vt_len = run(
                        data,
                        pos,
                        size,
                        keys,
                        heads,
                        p,
                        pieces,
                        tails,
                        default_tail,
                        honor,
                        lo,
                        hi,
                        vt,
                        vt_len,
                    )
                    index += reached - p
                    p = reached
                    if pos >= size:
                        break
                if fast and p < npredicted:
                    key = keys[p]
                    hit = startswith(key, pos)
                else:  # past the previous scrape's series (every line of a first scrape)
                    hit = False
                if hit:
                    head = heads[p]
                    start = pos + len(key)
                    end = find(b"\n", start)
                    value, _, stamp = data[start:end].partition(b" ")
                else:
                    end = find(b"\n", pos)
                    line = data[pos:end]
                    if not line:
                        pos = end + 1
                        continue
                    if line[0] == 35:  # "#": a comment or metadata line, validated; never a sample
                        if line not in comments_seen:
                            slow(line, metadata, scrape_ts_ms, pieces, order)
                        if len(comments) < _COMMENTS_KEPT and len(line) <= _COMMENT_KEPT_LEN:
                            comments.add(line)
                        pos = end + 1
                        continue
                    if not diverged:
                        diverged = True
                        if vt is not None:
                            _unpack(heads, p, vt, vt_len, pieces)
                            vt = None
                    if pending < p:
                        order_keys.extend(keys[pending:p])
                        order_heads.extend(heads[pending:p])
                        pending = p
                    if line[0] in b" \t" or not fast or not line.isascii():
                        index += slow(line, metadata, scrape_ts_ms, pieces, order)
                        pos = end + 1
                        continue
                    brace = line.rfind(b"}")
                    key = (line.partition(b" ")[0] if brace < 0 else line[: brace + 1]) + b" "
                    if entries_get is None:
                        entries = self._entries_dict()
                        entries_get = entries.get
                    cached = entries_get(key)
                    if cached is None or not line.startswith(key):
                        if cached is None and cold_run is not None and entries is not None:
                            # A new series: this one and the new ones after it, labeled in C.
                            pos, added = cold_run(
                                data,
                                pos,
                                size,
                                cold_target,
                                entries,
                                self._new_keys,
                                order_keys,
                                order_heads,
                                pieces,
                                default_tail,
                                honor,
                                lo,
                                hi,
                                self._max_pieces(),
                            )
                            if added:
                                index += added
                                continue
                        index += slow(line, metadata, scrape_ts_ms, pieces, order)
                        pos = end + 1
                        continue
                    head = cached
                    value, _, stamp = line[len(key) :].partition(b" ")
                packed = values_get(value)
                if packed is None:
                    packed = old_values_get(value)
                    if packed is not None:
                        values[value] = packed
                    elif b"_" not in value:  # float() takes "1_0", Go's ParseFloat does not
                        try:
                            number = float(value)
                        except ValueError:
                            pass
                        else:
                            # NaN and ±Inf: only the spellings Go's ParseFloat takes (no +NaN, no 1e400).
                            if not (number - number) or _special_ok(value):
                                packed = values[value] = pack(number)
                if stamp:
                    tail = tails_get(stamp) or _tail(stamp, tails, lo, hi)
                    if not honor and tail is not _ODD:
                        tail = default_tail
                else:
                    tail = default_tail
                if packed is None or tail is _ODD:
                    # Unusual, maybe valid (tabs, odd timestamp length) or not: the full parser decides.
                    if not diverged:
                        diverged = True
                        if vt is not None:
                            _unpack(heads, p, vt, vt_len, pieces)
                            vt = None
                    if pending < p:
                        order_keys.extend(keys[pending:p])
                        order_heads.extend(heads[pending:p])
                    index += slow(data[pos:end], metadata, scrape_ts_ms, pieces, order)
                    if hit:
                        p += 1
                    else:
                        p, positions = _resync(keys, key, p, positions)
                    pending = p
                    pos = end + 1
                    continue
                pos = end + 1
                index += 1
                if hit:
                    p += 1
                else:  # found through the dict, not where the order predicted
                    order_keys.append(key)
                    order_heads.append(head)
                    p, positions = _resync(keys, key, p, positions)
                    pending = p
                if head:
                    if vt is not None:  # packed mode: not diverged
                        vt[vt_len : vt_len + 8] = packed
                        vt[vt_len + 8 : vt_len + _PACKED_SAMPLE] = tail
                        vt_len += _PACKED_SAMPLE
                    else:
                        extend((head, packed, tail))
        self._comments = comments
        if not diverged and p == npredicted:
            if vt is not None:
                return _Packed(heads, index, vt, vt_len), index, predicted
            return pieces, index, predicted
        order_keys.extend(keys[pending:p])
        order_heads.extend(heads[pending:p])
        if vt is not None:  # not diverged
            _unpack(heads, p, vt, vt_len, pieces)
        return pieces, index, order

    def _slow_line(
        self,
        line: bytes,
        metadata: Metadata,
        scrape_ts_ms: int,
        pieces: list[bytes],
        order: _Order,
    ) -> int:
        """Fully parse one line, fill the cache on a miss and append its pieces; return 1 per sample.

        With the compiled extension, a plain sample line is split in C (``cold_parse``); it returns
        ``None`` for every line it is not sure about, which the validating parser then decides.
        """
        compiled = self._compiled
        if compiled is not None:
            split = compiled.cold_parse(line)
            if split is not None:
                name, labels, value, timestamp, key = split
                # Sure lines end their series at the closing brace or the name's blank: always cacheable.
                return self._add(key, True, key, name, labels, value, timestamp, scrape_ts_ms, pieces, order)
        text, check_utf8 = decode_line(line)
        parsed = parse_line(text, metadata, check_utf8)
        if parsed is None:
            return 0
        name, labels, value, timestamp, series_end = parsed
        series_text = text[:series_end]
        series = series_text.encode("utf-8", "surrogateescape")
        key = series + b" "
        brace = line.rfind(b"}")
        fast_key = line.partition(b" ")[0] if brace < 0 else line[: brace + 1]
        return self._add(
            key, fast_key == series, series_text, name, labels, value, timestamp, scrape_ts_ms, pieces, order
        )

    def _add(
        self,
        key: bytes,
        cacheable: bool,
        series_text: str | bytes,
        name: str,
        labels: list[tuple[str, str]],
        value: float,
        timestamp: int | None,
        scrape_ts_ms: int,
        pieces: list[bytes],
        order: _Order,
    ) -> int:
        """Label (once per series), check limits and the timestamp window, and append one sample's
        pieces; return 1 (one sample scraped). ``series_text`` is only for the error message."""
        entries = self._entries_dict()
        head = entries.get(key) if cacheable else None
        if head is None:
            final = self._labeler(name, labels)
            if final is None:
                head = DROPPED
            else:
                if self._check_labels:
                    self._label_limit_error(final)
                try:
                    compiled = self._compiled
                    made = compiled.cold_head(final) if compiled is not None else None
                    head = made if made is not None else sample_head(encode_labels(final), _TAIL_LEN - 1)
                except ValueError:
                    if isinstance(series_text, bytes):
                        series_text = series_text.decode("utf-8", "surrogateescape")
                    raise ScrapeError(
                        f"relabeling removed the metric name of series {series_text.strip()!r}",
                        "a series must keep a non-empty __name__ label; fix the metric_relabel_configs "
                        "rule that drops or empties __name__ (drop the series with action: drop instead)",
                        reason="relabel",
                    ) from None
            if cacheable:
                entries[key] = head
                self._new_keys.append(key)
        # Any validated series text predicts the next scrape's line, cacheable by key or not.
        order[0].append(key)
        order[1].append(head)
        if head:
            if self._honor and timestamp is not None:
                ts = timestamp
                if not self._lo <= ts <= self._hi:
                    reason = "too_old" if ts < self._lo else "too_far_future"
                    self._window_drops[reason] = self._window_drops.get(reason, 0) + 1
                    self._window_heads.append(head)
                    if self._limits.sample_limit:
                        self._limit_check(pieces)
                    return 1
            else:
                ts = scrape_ts_ms
            tail = _TAILS.get(ts)
            if tail is None:
                tail = _new_tail(ts)
            if len(tail) != _TAIL_LEN:
                odd_head = sample_head(_labels_of(head), len(tail) - 1)
                self._odd_heads[odd_head] = head
                head = odd_head
            pieces.append(head)
            pieces.append(_pack_double(value))
            pieces.append(tail)
            if self._limits.sample_limit:
                self._limit_check(pieces)
        return 1

    def _max_pieces(self) -> int:
        """How many pieces the compiled cold loop may fill before the sample limit is Python's to raise."""
        limit = self._limits.sample_limit
        if not limit:
            return _UNLIMITED
        return max(0, limit - sum(self._window_drops.values())) * 3

    def _limit_check(self, pieces: list[bytes]) -> None:
        """Fail as soon as the sample limit is exceeded (new series take this path, so a target with a
        million new series fails after ``sample_limit`` of them, not after parsing them all)."""
        limit = self._limits.sample_limit
        if limit:
            count = len(pieces) // 3 + sum(self._window_drops.values())
            if count > limit:
                self._sample_limit_error(count)


_UNLIMITED = (1 << 62) - 1

_RESYNC_AHEAD = 256
"""How far ahead of the predicted position a known series is looked for before the whole order is."""


def _resync(
    keys: list[bytes], key: bytes, p: int, positions: dict[bytes, int] | None
) -> tuple[int, dict[bytes, int] | None]:
    """Where the line after ``key`` (a known series not where the order predicted) is predicted: just after
    ``key``'s place in the previous order ``keys``, looked for a little ahead of ``p`` first (series that
    went away leave short gaps), then in the whole order (``positions``, built on first use and returned);
    ``p`` itself when ``key`` was not in the previous scrape."""
    try:
        return keys.index(key, p, p + _RESYNC_AHEAD) + 1, positions
    except ValueError:
        pass
    if positions is None:
        positions = dict(zip(keys, range(len(keys)), strict=True))
    found = positions.get(key)
    return (p if found is None else found + 1), positions


def _plain_target(labeler: Labeler) -> tuple[tuple[bytes, bytes], ...] | None:
    """The target labels of a :class:`~kubescrape.scrape.targets.PlainLabeler`, UTF-8, for the compiled
    cold loop; None for any other labeler, or target labels it should not handle (``__name__``, a
    repeated name, text that is not UTF-8)."""
    labels: tuple[tuple[str, str], ...] | None = getattr(labeler, "plain_target_labels", None)
    if labels is None:
        return None
    try:
        encoded = tuple((name.encode("utf-8"), value.encode("utf-8")) for name, value in labels)
    except UnicodeEncodeError:
        return None
    names = {name for name, _ in encoded}
    if b"__name__" in names or len(names) != len(encoded):
        return None
    return encoded


_Segment = tuple[bytes, int, int]
"""Whole lines of a body: ``data[start:stop]``, each line ending in a newline."""


def _lines(pieces: Iterable[bytes]) -> Iterator[_Segment]:
    """The body given in ``pieces`` (cut anywhere) as segments of whole lines, without copying the
    pieces: a line cut between two pieces is joined into a segment of its own. The last line gets a
    newline if it has none, and an empty body is one empty line, as :meth:`SeriesCache._encode_any` makes
    a whole body."""
    carry: list[bytes] = []  # the start of a line cut at the end of the last piece(s)
    empty = True
    for piece in pieces:
        if not piece:
            continue
        empty = False
        start = 0
        if carry:
            newline = piece.find(b"\n")
            if newline < 0:
                carry.append(piece)  # a line longer than a piece
                continue
            start = newline + 1
            carry.append(piece[:start])
            line = b"".join(carry)
            carry.clear()
            yield line, 0, len(line)
        stop = piece.rfind(b"\n") + 1
        if stop > start:
            yield piece, start, stop
        else:
            stop = start
        if stop < len(piece):
            carry.append(piece[stop:])
    if carry or empty:
        carry.append(b"\n")
        line = b"".join(carry)
        carry.clear()
        yield line, 0, len(line)


# Tails (0x10 + varint) of timestamps met by new series: cAdvisor stamps repeat across a scrape's
# series. Bounded; cleared when full.
_TAILS: dict[int, bytes] = {}


def _new_tail(ts: int) -> bytes:
    """``0x10 + varint(ts)``, memoised in ``_TAILS``."""
    if len(_TAILS) >= 4096:
        _TAILS.clear()
    tail = _TAILS[ts] = b"\x10" + varint(ts)
    return tail


def _tail(stamp: bytes, tails: dict[bytes, bytes], lo: int, hi: int) -> bytes:
    """Encode an explicit timestamp as ``0x10 + varint``; memoised per scrape.

    Returns ``_ODD`` (hand the line to the full parser) for anything but a plain int64 within
    ``lo..hi`` whose varint fits the cached heads: the full parser decides whether the line is valid,
    says what is wrong, and drops and counts a sample outside the window.
    """
    if not stamp.isdigit():  # ASCII digits only, for bytes
        return _ODD
    ts = int(stamp)
    if ts > _INT64_MAX or not lo <= ts <= hi:
        return _ODD
    tail = b"\x10" + varint(ts)
    if len(tail) != _TAIL_LEN:
        return _ODD
    tails[stamp] = tail
    return tail


def _special_ok(value: bytes) -> bool:
    """Whether a value ``float()`` read as NaN or ±Inf is spelled the way Go's ParseFloat accepts."""
    try:
        parse_float(value.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def _drop_duplicates(pieces: list[bytes], heads: list[bytes]) -> tuple[list[bytes], int]:
    """Keep the first sample of each series in a scrape; return the pieces and how many were left out.

    ``heads`` identifies the series of each sample (one per three pieces).
    """
    kept: list[bytes] = []
    seen: set[bytes] = set()
    duplicates = 0
    for i in range(0, len(pieces), 3):
        head = heads[i // 3]
        if head in seen:
            duplicates += 1
            continue
        seen.add(head)
        kept.extend(pieces[i : i + 3])
    return kept, duplicates


_PACKED_SAMPLE = 15
"""Bytes of a packed sample: the value's 8, then the 7-byte tail (0x10 + 6-byte timestamp varint)."""


class _Packed(NamedTuple):
    """The kept samples of a scrape whose every line was where the previous order predicted (compiled
    loop): their heads are those of ``heads[:stop]`` that are not :data:`DROPPED`, in order, and
    ``data[:size]`` holds each one's value and tail (:data:`_PACKED_SAMPLE` bytes)."""

    heads: list[bytes]
    stop: int
    data: bytearray
    size: int

    @property
    def samples(self) -> int:
        return self.size // _PACKED_SAMPLE

    def unpack(self) -> list[bytes]:
        pieces: list[bytes] = []
        _unpack(self.heads, self.stop, self.data, self.size, pieces)
        return pieces


def _unpack(heads: list[bytes], stop: int, data: bytearray, size: int, pieces: list[bytes]) -> None:
    """Append the (head, value, tail) pieces of packed samples (see :class:`_Packed`) to ``pieces``."""
    offset = 0
    for head in heads[:stop]:
        if head:
            value, tail = offset + 8, offset + _PACKED_SAMPLE
            pieces += (head, bytes(data[offset:value]), bytes(data[value:tail]))
            offset = tail
    if offset != size:
        raise AssertionError(f"packed samples: {size} bytes for {offset // _PACKED_SAMPLE} kept entries")


def _count(pieces: list[bytes] | _Packed) -> int:
    """Samples in ``pieces`` (three per sample) or in packed samples."""
    return pieces.samples if isinstance(pieces, _Packed) else len(pieces) // 3
