"""OpenMetrics text 1.0 (``application/openmetrics-text``) as Prometheus' scrape parser reads it.

A target that answers a scrape with this content type is parsed with this grammar instead of text
0.0.4. It follows ``model/textparse/openmetricslex.l`` and ``openmetricsparse.go`` of Prometheus 2.42,
the reference the differential tests run against:

* tokens are separated by exactly one space; no leading blanks, no blank lines, no plain comments;
* ``# HELP name text``, ``# TYPE name type`` (counter, gauge, histogram, gaugehistogram, summary, info,
  stateset, unknown) and ``# UNIT name unit`` (the unit must be the name's ``_unit`` suffix); repeated
  metadata lines are accepted;
* a sample is ``name[{labels}] value [timestamp] [# {exemplar labels} value [timestamp]]``; label pairs
  are comma separated without a trailing comma; label values must be UTF-8;
* the timestamp is a float number of **seconds** (stored as ``int64(ts * 1000)`` milliseconds, as Go
  truncates it); NaN and ±Inf timestamps are errors;
* exemplars are validated and then ignored (only series named ``…_total`` or ``…_bucket`` may carry one);
* the body must end with ``# EOF`` (optionally followed by one newline) and nothing may follow it.

Samples of every type are plain series, as Prometheus 2.42 stores them: ``_created``, ``_total``,
``_bucket``, ``_gcount``/``_gsum`` of a gauge histogram, an info metric's ``_info`` series with value 1
and each state of a stateset.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

from kubescrape.errors import ParseError
from kubescrape.scrape.parser import Sample, has_invalid_utf8, parse_float

__all__ = ["OPENMETRICS_TYPES", "is_openmetrics", "iter_openmetrics", "label_pairs", "parse_openmetrics"]

OPENMETRICS_TYPES = frozenset(
    {"counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset", "unknown"}
)

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*+"
_PAIR = r'[a-zA-Z_][a-zA-Z0-9_]*+="(?:[^"\\]++|\\.)*+"'
_LABELS = r"\{(?:" + _PAIR + r"(?:," + _PAIR + r")*+)?+\}"
_SAMPLE = re.compile(
    r"(" + _NAME + r")(" + _LABELS + r")? ([^ ]++)(?: ([^ ]++))??"
    r"(?: # (" + _LABELS + r") ([^ ]++)(?: ([^ ]++))?)?\Z"
)
_PAIR_PARTS = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*+)="((?:[^"\\]++|\\.)*+)"')
_META = re.compile(r"# (HELP|TYPE|UNIT) (" + _NAME + r") (.*)\Z", re.DOTALL)
_META_START = re.compile(r"# (HELP|TYPE|UNIT) ")
_ESCAPE = re.compile(r"\\([\\\"n])")
_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n"}

OMSample = tuple[str, str, str, float, int | None]
"""Series text (name and label set as written), name, label set as written (``""`` for none), value,
timestamp in ms or None. :func:`label_pairs` turns the label set into pairs (and validates them): the
series cache does that only for a series it has not seen, the costly part of a line."""


def is_openmetrics(content_type: str) -> bool:
    """Whether a response's Content-Type selects the OpenMetrics parser, as Prometheus decides it
    (``mime.ParseMediaType``: case-insensitive media type; a malformed header falls back to text)."""
    if not content_type:
        return False
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "application/openmetrics-text":
        return False
    for param in params.split(";"):
        if param.strip() and not re.fullmatch(r"\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*=\s*\S.*", param):
            return False
    return True


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda m: _UNESCAPES[m.group(1)], value) if "\\" in value else value


def _pairs(block: str) -> list[tuple[str, str]]:
    pairs = [(name, _unescape(value)) for name, value in _PAIR_PARTS.findall(block)]
    for _, value in pairs:
        if has_invalid_utf8(value):
            raise ParseError("label value is not valid UTF-8")
    return pairs


def label_pairs(block: str) -> list[tuple[str, str]]:
    """The (name, unescaped value) pairs of a label set as :func:`iter_openmetrics` yields it; raises
    :class:`ParseError` (without line information) for a repeated name or a value that is not UTF-8."""
    if len(block) <= 2:
        return []
    labels = _pairs(block)
    names = {label for label, _ in labels}
    if len(names) != len(labels) or "__name__" in names:
        raise ParseError("label name is not unique (or repeats the metric name as __name__)")
    return labels


def _seconds_to_ms(text: str, what: str) -> int:
    try:
        seconds = parse_float(text)
    except ValueError as exc:
        raise ParseError(f"{exc}: expected a {what} in seconds such as 1700000000.123") from None
    if math.isnan(seconds) or math.isinf(seconds):
        raise ParseError(f"invalid {what} {text!r}")
    ms = seconds * 1000
    # Go's int64(float) on amd64 gives the minimum int64 for anything out of range.
    return int(ms) if _INT64_MIN <= ms < 2.0**63 else _INT64_MIN


def _sample(line: str) -> OMSample:
    if line.endswith("\r"):
        raise ParseError("carriage return at the end of the line: lines end with a plain newline")
    match = _SAMPLE.match(line)
    if match is None:
        raise ParseError(_problem(line))
    name, block, value_text, ts_text, ex_block, ex_value, ex_ts = match.groups()
    try:
        value = parse_float(value_text)
    except ValueError as exc:
        raise ParseError(f"{exc}: expected a value such as 1, 1.5e3, NaN, +Inf or -Inf") from None
    timestamp = _seconds_to_ms(ts_text, "timestamp") if ts_text is not None else None
    if ex_block is not None:
        if not (name.endswith("_total") or name.endswith("_bucket")):
            raise ParseError(f"metric name {name} does not support exemplars (only _total and _bucket do)")
        _pairs(ex_block)
        try:
            parse_float(ex_value)
        except ValueError as exc:
            raise ParseError(f"exemplar value: {exc}") from None
        if ex_ts is not None:
            _seconds_to_ms(ex_ts, "exemplar timestamp")
    if block is None:
        return name, name, "", value, timestamp
    return line[: len(name) + len(block)], name, block, value, timestamp


def _problem(line: str) -> str:
    """Say what is wrong with a sample line the grammar refused."""
    if not line:
        return "blank line: OpenMetrics allows none"
    if line[0] in " \t":
        return "line starts with a blank"
    if line.startswith("#"):
        return "expected '# HELP', '# TYPE', '# UNIT' or '# EOF': OpenMetrics has no plain comments"
    if "  " in line or "\t" in line or line.endswith(" "):
        return "tokens are separated by exactly one space"
    if "{" in line.split(" ", 1)[0]:
        return "malformed label set: pairs are name=\"value\" separated by single commas, without blanks"
    return "expected 'name[{labels}] value [timestamp] [# {exemplar} value [timestamp]]'"


def _metadata(line: str) -> None:
    match = _META.match(line)
    if match is None:
        kind = line[2:6]
        raise ParseError(f"expected a metric name and a blank after {kind} (e.g. '# {kind} name text')")
    kind, name, text = match.groups()
    if kind == "TYPE":
        if text not in OPENMETRICS_TYPES:
            expected = ", ".join(sorted(OPENMETRICS_TYPES))
            raise ParseError(f"invalid metric type {text!r}: expected one of {expected}")
    elif kind == "UNIT":
        if text and not name.endswith("_" + text):
            raise ParseError(f"unit {text!r} is not a suffix of metric {name}")
    elif has_invalid_utf8(text):
        raise ParseError("help text is not valid UTF-8")


def iter_openmetrics(text: str) -> Iterator[tuple[int, str, OMSample | None]]:
    """Yield ``(line number, line, sample or None for metadata)`` for a whole OpenMetrics body.

    Raises :class:`ParseError` with the line number at the first bad line, or when ``# EOF`` is missing
    or followed by anything but a single newline. Label sets are validated by :func:`label_pairs`.
    """
    lines = text.split("\n")
    last = len(lines)
    for index, line in enumerate(lines):
        line_no = index + 1
        try:
            if line == "# EOF":
                if index == last - 1 or (index == last - 2 and lines[-1] == ""):
                    return
                line_no, line = line_no + 1, lines[index + 1]
                raise ParseError("unexpected data after # EOF: it must be the last line")
            if index == last - 1 and line == "":
                raise ParseError("data does not end with # EOF")
            if line.startswith("#") and _META_START.match(line):
                _metadata(line)
                yield line_no, line, None
            else:
                yield line_no, line, _sample(line)
        except ParseError as exc:
            raise ParseError(exc.message, line_no=line_no, line=line) from None
    raise ParseError("data does not end with # EOF", line_no=last, line=lines[-1])


def parse_openmetrics(text: str) -> list[Sample]:
    """Parse and validate a whole OpenMetrics body; timestamps are returned in milliseconds."""
    samples = []
    for line_no, line, parsed in iter_openmetrics(text):
        if parsed is not None:
            _, name, block, value, timestamp = parsed
            try:
                labels = tuple(label_pairs(block))
            except ParseError as exc:
                raise ParseError(exc.message, line_no=line_no, line=line) from None
            samples.append(Sample(name, labels, value, timestamp))
    return samples
