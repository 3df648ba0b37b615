"""Prometheus text exposition format 0.0.4: parse, validate and render.

The grammar follows Prometheus' own scrape parser (``model/textparse/promlex.l`` and ``promparse.go``):

* spaces and tabs may separate any two tokens and may start a blank, comment or metadata line, but not a
  sample line: Prometheus 2.42 takes them into the metric name (``p.series`` starts at the line's first
  byte), which is then invalid and fails the scrape;
* ``#`` followed by whitespace and ``HELP``/``TYPE`` plus whitespace starts a metadata line, any other
  ``#`` line is a comment; the metric name of a metadata line must be valid;
* a sample line is ``name[{labels}] value [timestamp]``; label pairs may be separated by a comma or by
  nothing at all, and a trailing comma is allowed;
* label values are double-quoted; ``\\\\``, ``\\"`` and ``\\n`` are unescaped, any other escaped character
  is kept as written (backslash included);
* the value is a Go ``strconv.ParseFloat`` number without ``_``, ``p`` or ``P`` (so ``NaN``, ``+Inf``,
  ``-Inf``, ``Inf``, ``Infinity`` in any case, but not ``+NaN`` and not out-of-range ``1e400``);
* the timestamp is an unsigned decimal int64 in milliseconds.

Anything else is a :class:`~kubescrape.errors.ParseError` naming the line, and, as in Prometheus, one
bad line fails the whole scrape. A repeated ``TYPE`` or ``HELP`` line, or a family split into two groups
that each repeat its ``TYPE``, is accepted as Prometheus' scrape parser accepts it (the stricter reference
parser of ``prometheus/common`` is not what a scrape uses); the last one wins. Unlike Prometheus, a raw
newline inside a quoted label value is rejected rather than taken into the value: the format is line
based and no client library emits one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import NamedTuple

from kubescrape.errors import ParseError

__all__ = [
    "METRIC_TYPES",
    "Metadata",
    "Sample",
    "decode_line",
    "escape_label_value",
    "format_value",
    "has_invalid_utf8",
    "parse",
    "parse_float",
    "parse_line",
    "parse_metadata",
    "parse_sample_line",
    "parse_series",
    "render",
]

METRIC_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})

_INT64_MAX = (1 << 63) - 1


class Sample(NamedTuple):
    """One sample of an exposition. ``labels`` are in exposition order and never contain ``__name__``."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    timestamp_ms: int | None


# A whole sample line. Possessive quantifiers reproduce the lexer's longest-match tokens: ``foo1`` is
# one metric name, never the name ``foo`` followed by the value ``1``.
_PAIRS = (
    r"(?:[ \t]*+[a-zA-Z_][a-zA-Z0-9_]*+[ \t]*+=[ \t]*+\"(?:[^\"\\]++|\\.)*+\"[ \t]*+(?:,[ \t]*+)?+)*+[ \t]*+"
)
_SAMPLE_LINE = re.compile(
    r"[ \t]*+([a-zA-Z_:][a-zA-Z0-9_:]*+)[ \t]*+"
    r"(?:\{(" + _PAIRS + r")\})?+"
    r"[ \t]*+([^{ \t]++)(?:[ \t]++([0-9]++))?+[ \t]*+\Z"
)
# The series part only: name and optional label set, surrounded by optional blanks.
_SERIES = re.compile(
    r"[ \t]*+([a-zA-Z_:][a-zA-Z0-9_:]*+)[ \t]*+"
    r"(?:\{((?:[^\"}]++|\"(?:[^\"\\]++|\\.)*+\")*+)\})?+[ \t]*+\Z"
)
# One label pair inside braces with its optional separating comma.
_LABEL_PAIR = re.compile(
    r"[ \t]*+([a-zA-Z_][a-zA-Z0-9_]*+)[ \t]*+=[ \t]*+\"((?:[^\"\\]++|\\.)*+)\"[ \t]*+(?:,[ \t]*+)?+"
)
_LABEL_SET = re.compile(
    r"(?:[ \t]*+[a-zA-Z_][a-zA-Z0-9_]*+[ \t]*+=[ \t]*+\"(?:[^\"\\]++|\\.)*+\"[ \t]*+(?:,[ \t]*+)?+)*+"
    r"[ \t]*+\Z"
)
# What Go's strconv.ParseFloat accepts once Prometheus has rejected ``_``, ``p`` and ``P``.
_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)"
    r"|[nN][aA][nN]",
    re.ASCII,
)
_META = re.compile(r"#[ \t]++(HELP|TYPE)[ \t]++(.*)\Z", re.DOTALL)
_META_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*+")
_LABEL_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_HELP_ESCAPE = re.compile(r"\\([\\n])")
_LABEL_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_SEPARATORS = " \t,="


def _unescape_label(match: re.Match[str]) -> str:
    char = match.group(1)
    return _LABEL_UNESCAPES.get(char, match.group(0))


def _unescape_help(match: re.Match[str]) -> str:
    return "\\" if match.group(1) == "\\" else "\n"


def parse_float(text: str) -> float:
    """Parse a sample value exactly as Prometheus does; raise ``ValueError`` on anything else."""
    if _FLOAT.fullmatch(text) is None:
        raise ValueError(f"invalid float {text!r}")
    value = float(text)
    if math.isinf(value) and text[-1] in "0123456789.":
        # Go's ParseFloat reports out-of-range literals such as 1e400 as an error.
        raise ValueError(f"float {text!r} is out of range")
    return value


def _labels(blob: str, validated: bool = False) -> list[tuple[str, str]]:
    """Split a label-set body into (name, unescaped value) pairs; reject duplicates."""
    if not validated and _LABEL_SET.match(blob) is None:
        raise ParseError(_label_set_problem(blob))
    if "\\" not in blob:
        # A valid label set without backslashes has no escaped quote: its quotes delimit the values, and
        # the text between two values is the separator, the name and "=" (blanks allowed).
        parts = blob.split('"')
        pairs = list(zip([part.strip(_SEPARATORS) for part in parts[0:-1:2]], parts[1::2], strict=True))
    else:
        pairs = [
            (name, _LABEL_ESCAPE.sub(_unescape_label, value) if "\\" in value else value)
            for name, value in _LABEL_PAIR.findall(blob)
        ]
    if len(pairs) > 1 and len({name for name, _ in pairs}) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise ParseError(f"label name {name!r} is not unique")
            seen.add(name)
    return pairs


def _label_set_problem(blob: str) -> str:
    """Say what is wrong with a label-set body that failed validation."""
    pos = 0
    while True:
        match = _LABEL_PAIR.match(blob, pos)
        if match is None or match.end() == pos:
            break
        pos = match.end()
    rest = blob[pos:].lstrip(" \t")
    if not rest:
        return "malformed label set"
    if re.match(r"[a-zA-Z_][a-zA-Z0-9_]*[ \t]*=", rest):
        return f"expected a double-quoted label value at {rest[:40]!r}"
    if re.match(r"[a-zA-Z_][a-zA-Z0-9_]*", rest):
        return f"expected '=' after label name at {rest[:40]!r}"
    return f"expected label name at {rest[:40]!r}"


def parse_series(series: str) -> tuple[str, list[tuple[str, str]]]:
    """Parse the ``name{a="b",…}`` part of a sample line into the name and its labels.

    Raises :class:`ParseError` without line information; callers add it.
    """
    match = _SERIES.match(series)
    if match is None:
        raise ParseError(_series_problem(series))
    name, blob = match.group(1), match.group(2)
    if not blob:
        return name, []
    if "__name__" in blob:
        _check_name_label(blob)
    return name, _labels(blob)


def _check_name_label(blob: str) -> None:
    for label, _ in _LABEL_PAIR.findall(blob):
        if label == "__name__":
            raise ParseError("label name '__name__' is not unique: the metric name is already set")


_LABEL_BLOCK = re.compile(r"\{((?:[^\"}]++|\"(?:[^\"\\]++|\\.)*+\")*+)\}")


def _name_and_labels_problem(text: str, no_name: str) -> tuple[str | None, bool, str]:
    """Check the metric name and label set at the start of ``text`` (a line known to be bad somewhere).

    Returns ``(problem, had_labels, rest)``: the problem found in them (None if they are fine), whether a
    label set was present, and the text after them.
    """
    stripped = text.lstrip(" \t")
    name = _META_NAME.match(stripped)
    if name is None:
        return no_name, False, ""
    rest = stripped[name.end() :].lstrip(" \t")
    if not rest.startswith("{"):
        return None, False, rest
    close = _LABEL_BLOCK.match(rest)
    if close is None:
        return "unterminated label set or label value", True, ""
    if _LABEL_SET.match(close.group(1)) is None:
        return _label_set_problem(close.group(1)), True, ""
    return None, True, rest[close.end() :].lstrip(" \t")


def _series_problem(series: str) -> str:
    problem, had_labels, _ = _name_and_labels_problem(series, "expected a metric name")
    if problem is not None:
        return problem
    return "unexpected text after the label set" if had_labels else "unexpected text after the metric name"


def parse_sample_line(line: str) -> tuple[str, list[tuple[str, str]], float, int | None, int]:
    """Parse one sample line: name, labels, value, timestamp and where the series text ends."""
    match = _SAMPLE_LINE.match(line)
    if match is None:
        raise ParseError(_sample_problem(line))
    name, blob, value_text, ts_text = match.groups()
    if blob:
        if "__name__" in blob:
            _check_name_label(blob)
        labels = _labels(blob, validated=True)
    else:
        labels = []
    try:
        value = parse_float(value_text)
    except ValueError as exc:
        raise ParseError(f"{exc}: expected a value such as 1, 1.5e3, NaN, +Inf or -Inf") from None
    timestamp: int | None = None
    if ts_text is not None:
        timestamp = int(ts_text)
        if timestamp > _INT64_MAX:
            raise ParseError(f"timestamp {ts_text} does not fit an int64 of milliseconds")
    series_end = match.end(2) + 1 if blob is not None else match.end(1)
    return name, labels, value, timestamp, series_end


def _sample_problem(line: str) -> str:
    problem, _, rest = _name_and_labels_problem(line, "expected a metric name, a comment or a blank line")
    if problem is not None:
        return problem
    if not rest:
        return "expected a value after the metric"
    parts = re.split(r"[ \t]+", rest.rstrip(" \t"))
    if parts[0].startswith("{"):
        return "unexpected '{' after the label set"
    if len(parts) == 2:
        return f"invalid timestamp {parts[1]!r}: expected an integer number of milliseconds"
    if len(parts) > 2:
        return f"unexpected text {' '.join(parts[2:])!r} after the timestamp"
    return f"invalid value {parts[0]!r}"


class Metadata:
    """HELP and TYPE lines seen so far in one exposition."""

    __slots__ = ("helps", "types")

    def __init__(self) -> None:
        self.types: dict[str, str] = {}
        self.helps: dict[str, str] = {}

    def comment(self, line: str) -> None:
        """Validate a line starting with ``#`` (after optional blanks) and record its metadata."""
        match = _META.match(line.lstrip(" \t"))
        if match is None:
            return  # a plain comment
        kind, rest = match.groups()
        name_match = _META_NAME.match(rest)
        if name_match is None:
            raise ParseError(f"expected a metric name after {kind}")
        name = name_match.group(0)
        after = rest[name_match.end() :]
        # Prometheus drops exactly one character (normally the blank) between name and text.
        text = after[1:] if len(after) > 1 else ""
        if kind == "TYPE":
            if text not in METRIC_TYPES:
                raise ParseError(
                    f"invalid metric type {text!r} for {name}: expected counter, gauge, histogram, "
                    "summary or untyped"
                )
            self.types[name] = text
        else:
            if "\\" in text:
                text = _HELP_ESCAPE.sub(_unescape_help, text)
            self.helps[name] = text


def _utf8_problem(text: str) -> bool:
    """True when ``text`` holds lone surrogates (bytes that were not valid UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _is_help(line: str) -> bool:
    match = _META.match(line.lstrip(" \t"))
    return match is not None and match.group(1) == "HELP"


def parse_line(
    line: str, metadata: Metadata, check_utf8: bool = False
) -> tuple[str, list[tuple[str, str]], float, int | None, int] | None:
    """Parse one line: ``None`` for a blank, comment or metadata line, else what
    :func:`parse_sample_line` returns. ``check_utf8`` rejects lone surrogates (undecodable bytes) in
    label values and help text. Raises :class:`ParseError` without line information.
    """
    first = line[:1]
    if not first:
        return None
    if first == "#" or (first in " \t" and line.lstrip(" \t")[:1] in ("#", "")):
        metadata.comment(line)
        if check_utf8 and _utf8_problem(line) and _is_help(line):
            raise ParseError("help text is not valid UTF-8")
        return None
    if first in " \t":
        raise ParseError(
            "blank before the metric name: Prometheus reads it as part of the name, which is then invalid"
        )
    parsed = parse_sample_line(line)
    if check_utf8 and _utf8_problem(line):
        raise ParseError("label value is not valid UTF-8")
    return parsed


def decode_line(line: bytes) -> tuple[str, bool]:
    """One exposition line's text for :func:`parse_line`, and its ``check_utf8``: bytes that are not UTF-8
    are kept as lone surrogates (only label values and help text must be UTF-8; the parser checks those)."""
    try:
        return line.decode("utf-8"), False
    except UnicodeDecodeError:
        return line.decode("utf-8", "surrogateescape"), True


def has_invalid_utf8(text: str) -> bool:
    """True when ``text`` was decoded with ``surrogateescape`` from bytes that are not UTF-8."""
    return not text.isascii() and _utf8_problem(text)


def _parse(text: str, metadata: Metadata) -> list[Sample]:
    samples: list[Sample] = []
    append = samples.append
    check_utf8 = has_invalid_utf8(text)
    for line_no, line in enumerate(text.split("\n"), 1):
        try:
            parsed = parse_line(line, metadata, check_utf8)
        except ParseError as exc:
            raise ParseError(exc.message, line_no=line_no, line=line) from None
        if parsed is not None:
            name, labels, value, timestamp, _ = parsed
            append(Sample(name, tuple(labels), value, timestamp))
    return samples


def parse(text: str) -> list[Sample]:
    """Parse and validate a whole exposition; raise :class:`ParseError` at the first bad line."""
    return _parse(text, Metadata())


def parse_metadata(text: str) -> dict[str, tuple[str, str]]:
    """Validate an exposition and return ``name -> (type, help)`` from its TYPE and HELP lines.

    A name with HELP but no TYPE is ``untyped``; a name with TYPE but no HELP has help ``""``.
    """
    metadata = Metadata()
    _parse(text, metadata)
    names = list(metadata.types) + [name for name in metadata.helps if name not in metadata.types]
    return {name: (metadata.types.get(name, "untyped"), metadata.helps.get(name, "")) for name in names}


def format_value(value: float) -> str:
    """Render a float so that Prometheus (and :func:`parse`) read back exactly the same number."""
    if value != value:
        return "NaN"
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value.is_integer() and -1e15 < value < 1e15:
        # "1" as Prometheus writes it, not Python's "1.0"; "-0" keeps the sign of negative zero
        return str(int(value)) if value or math.copysign(1.0, value) > 0 else "-0"
    return repr(value)


def escape_label_value(value: str) -> str:
    """Escape ``\\``, ``"`` and newline for a label value."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def render(samples: Iterable[Sample]) -> str:
    """Render samples as exposition text, one line each, ending with a newline."""
    lines: list[str] = []
    for sample in samples:
        if sample.labels:
            body = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in sample.labels)
            series = f"{sample.name}{{{body}}}"
        else:
            series = sample.name
        line = f"{series} {format_value(sample.value)}"
        if sample.timestamp_ms is not None:
            line += f" {sample.timestamp_ms}"
        lines.append(line)
    return "\n".join(lines) + "\n" if lines else ""
