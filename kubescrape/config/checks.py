"""The plain checks and conversions behind the configuration: durations, URLs, label names, relabel rules.

Pure Python, no pydantic: the pydantic models (:mod:`kubescrape.config.schema`) call them as validators,
and the start-up resolver (:mod:`kubescrape.config.resolve`) calls the same functions directly, so both
accept exactly the same values. Every check raises ValueError with the message a user reads.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlsplit

from kubescrape.redact import redact_text

__all__ = [
    "DEFAULT_REGEX",
    "DEFAULT_REPLACEMENT",
    "DEFAULT_SEPARATOR",
    "LABEL_NAME",
    "MIN_DURATION",
    "MIN_INTERVAL",
    "RELABEL_ACTIONS",
    "at_least_min",
    "check_label_names",
    "check_url",
    "finite",
    "format_prometheus_duration",
    "headers_from_categraf",
    "parse_go_duration",
    "parse_prometheus_duration",
    "relabel_rule_error",
    "to_seconds",
]

MIN_DURATION = 0.001
"""Shortest interval, timeout or backoff accepted anywhere (s): Prometheus' duration resolution."""

MIN_INTERVAL = 1.0
"""Shortest scrape interval a config file may set without ``[global] allow_short_intervals = true`` (s)."""

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

_GO_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.ParseDuration`` string (``"1h2m3.5s"``, ``"300ms"``, ``"0"``) into seconds.

    Raises ValueError on anything Go would reject (for example a bare number other than ``0``).
    """
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _GO_DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(
                f"invalid duration {text!r}: expected a number with a unit (ns, us, ms, s, m, h)"
            )
        total += float(m.group(1)) * _GO_DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


_PROM_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_PROM_UNITS_MS = (365 * 86400_000, 7 * 86400_000, 86400_000, 3600_000, 60_000, 1000, 1)


def parse_prometheus_duration(text: str) -> float:
    """Parse a Prometheus duration (``model.ParseDuration``: ``"1m30s"``, ``"1d"``, ``"500ms"``, ``"0"``;
    integers with the units y, w, d, h, m, s, ms in that order) into seconds. Raises ValueError otherwise."""
    if text == "0":
        return 0.0
    if text == "":
        raise ValueError("empty duration string")
    m = _PROM_DURATION.match(text)
    if m is None:
        raise ValueError(f"not a valid duration string: {text!r} (expected integers with the units y, w, "
                         "d, h, m, s, ms in that order, such as \"15s\" or \"1m30s\")")
    ms = sum(int(g) * unit for g, unit in zip(m.groups(), _PROM_UNITS_MS, strict=True) if g is not None)
    return ms / 1000.0


def format_prometheus_duration(seconds: float) -> str:
    """Prometheus' ``model.Duration.String``: ``90`` → ``"1m30s"``, ``0`` → ``"0s"`` (the value of the
    ``__scrape_interval__``/``__scrape_timeout__`` target labels)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = ""
    for unit, mult, exact in (("y", _PROM_UNITS_MS[0], True), ("w", _PROM_UNITS_MS[1], True),
                              ("d", _PROM_UNITS_MS[2], False), ("h", _PROM_UNITS_MS[3], False),
                              ("m", _PROM_UNITS_MS[4], False), ("s", 1000, False), ("ms", 1, False)):
        if exact and ms % mult:
            continue
        value = ms // mult
        if value > 0:
            out += f"{value}{unit}"
            ms -= value * mult
    return out


def to_seconds(value: Any) -> float:
    """Accept seconds as int/float, or a Go duration string, as Categraf's ``config.Duration`` does."""
    if isinstance(value, bool):
        raise ValueError("expected seconds (a number) or a duration string like \"15s\", not a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return parse_go_duration(value)
    raise ValueError(
        f"expected seconds (a number) or a duration string like \"15s\", got {type(value).__name__}"
    )


def finite(v: float) -> float:
    """``v`` unless it is ``inf`` or ``nan``."""
    if not math.isfinite(v):
        raise ValueError(f"must be a finite duration such as \"15s\", not {v}")
    return v


def at_least_min(v: float) -> float:
    """A positive, finite duration of at least 1 ms (a shorter one is a typo, or spins)."""
    finite(v)
    if v <= 0:
        raise ValueError("must be greater than 0")
    if v < MIN_DURATION:
        raise ValueError(f"{v:g}s is shorter than 1ms, the shortest duration kubescrape (and Prometheus) "
                         "accepts")
    return v


def positive_or_default(v: float, default: float) -> float:
    """Categraf's rule for ``[global] interval`` and an instance ``timeout``: a non-positive value means
    ``default``; a positive one must be finite and at least 1 ms."""
    finite(v)
    return at_least_min(v) if v > 0 else default


def check_url(url: str) -> str:
    """Validate a scrape or remote-write URL: ``http``/``https``, a host, a port in 1-65535, no whitespace
    or control characters. Returns ``url`` unchanged; raises ValueError whose message shows the URL without
    its credentials."""
    # redact_text, not redact_url: an unencoded "/" or "#" in a password hides the userinfo from URL
    # parsing, and the message must not show it either.
    shown = redact_text(url)
    bad = re.search(r"[\s\x00-\x1f\x7f]", url)
    if bad is not None:
        what = "a space" if bad.group() == " " else f"the control character {bad.group()!r}"
        raise ValueError(f"{shown!r} contains {what}: percent-encode it (%20 for a space) or remove it")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"{shown!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{shown!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"{shown!r} has no host (an unset environment variable in the URL?)")
    try:
        port = parts.port
    except ValueError:
        port_text = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        port_shown = f" {port_text!r}" if "@" not in url else ""  # it may be a password cut short
        raise ValueError(f"{shown!r}: port{port_shown} is not a number in 1-65535") from None
    if port == 0:
        raise ValueError(f"{shown!r}: port 0 is not a port one can connect to; use 1-65535")
    return url


def check_label_names(labels: dict[str, str]) -> dict[str, str]:
    """``labels`` unless a name is not a Prometheus label name."""
    for name in labels:
        if not LABEL_NAME.match(name):
            raise ValueError(f"invalid label name {name!r}: expected [a-zA-Z_][a-zA-Z0-9_]*")
    return labels


def headers_from_categraf(value: Any) -> Any:
    """Categraf writes headers as a flat list ``["k1", "v1", "k2", "v2"]``; a table is accepted too."""
    if isinstance(value, list | tuple):
        if len(value) % 2:
            raise ValueError(
                "headers must hold an even number of strings: [\"Name\", \"value\", …] (got an odd count)"
            )
        if not all(isinstance(v, str) for v in value):
            raise ValueError("headers must be strings: [\"Name\", \"value\", …]")
        return {value[i]: value[i + 1] for i in range(0, len(value), 2)}
    return value


# --- relabel rules (Prometheus' relabel.Config.Validate) ------------------------------------------------

DEFAULT_REGEX = "(.*)"
DEFAULT_REPLACEMENT = "$1"
DEFAULT_SEPARATOR = ";"
RELABEL_ACTIONS = ("replace", "keep", "drop", "keepequal", "dropequal", "hashmod", "labelmap", "labeldrop",
                   "labelkeep", "lowercase", "uppercase")
# Prometheus' relabelTarget: a label name that may contain $var / ${var} references.
_RELABEL_TARGET = re.compile(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$", re.ASCII)


def relabel_rule_error(
    action: str, source_labels: list[str], separator: str, regex: str, modulus: int, target_label: str,
    replacement: str,
) -> str | None:
    """What is wrong with a relabel rule whose fields each have the right type, as Prometheus words it;
    None when the rule is valid. (The regex is checked separately: it must compile.)"""
    a, t = action, target_label
    if a == "hashmod" and modulus == 0:
        return "relabel configuration for hashmod requires non-zero modulus"
    if a in ("replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal") and not t:
        return f"relabel configuration for {a} action requires 'target_label' value"
    if a == "replace" and "$" not in t and not LABEL_NAME.match(t):
        return f"{t!r} is invalid 'target_label' for {a} action"
    if a == "replace" and "$" in t and not _RELABEL_TARGET.match(t):
        return f"{t!r} is invalid 'target_label' for {a} action"
    if a in ("lowercase", "uppercase", "keepequal", "dropequal", "hashmod") and not LABEL_NAME.match(t):
        return f"{t!r} is invalid 'target_label' for {a} action"
    if a in ("lowercase", "uppercase", "keepequal", "dropequal") and replacement != DEFAULT_REPLACEMENT:
        return f"'replacement' can not be set for {a} action"
    if a == "labelmap" and not _RELABEL_TARGET.match(replacement):
        return f"{replacement!r} is invalid 'replacement' for {a} action"
    if a in ("keepequal", "dropequal") and (
        regex != DEFAULT_REGEX or modulus != 0 or separator != DEFAULT_SEPARATOR
    ):
        return f"{a} action requires only 'source_labels' and `target_label`, and no other fields"
    if a in ("labeldrop", "labelkeep") and (
        source_labels or t or modulus != 0 or separator != DEFAULT_SEPARATOR
        or replacement != DEFAULT_REPLACEMENT
    ):
        return f"{a} action requires only 'regex', and no other fields"
    return None
