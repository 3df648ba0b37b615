"""Prometheus relabeling (``model/relabel/relabel.go``), with Go regexp semantics where Python differs.

* Regexes are fully anchored, as Prometheus anchors them with ``^(?:…)$``.
* ``$1``, ``${1}``, ``$name``, ``${name}`` and ``$$`` in ``replacement``/``target_label`` expand like Go's
  ``Regexp.Expand``: the longest run of letters, digits and ``_`` after ``$`` is the name (``$1x`` is group
  ``1x``, which does not exist, so it expands to nothing); missing groups expand to nothing.
* Setting a label to the empty string deletes it, and labels with empty values are absent from the result.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr, field_validator, model_validator

__all__ = [
    "Action", "RelabelConfig", "RelabelStep", "compile_go_regex", "go_expand", "relabel", "relabel_steps",
]

Action = Literal[
    "replace",
    "keep",
    "drop",
    "keepequal",
    "dropequal",
    "hashmod",
    "labelmap",
    "labeldrop",
    "labelkeep",
    "lowercase",
    "uppercase",
]

DEFAULT_REGEX = "(.*)"
DEFAULT_REPLACEMENT = "$1"
DEFAULT_SEPARATOR = ";"

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Prometheus' relabelTarget: a label name that may contain $var / ${var} references.
_RELABEL_TARGET = re.compile(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$", re.ASCII)

_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7F",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1F\\x7F",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_LEADING_FLAGS = re.compile(r"^\(\?([imsU]+)\)")


@lru_cache(maxsize=1024)
def compile_go_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Go (RE2) regex for full-string matching with Python's ``re``.

    Translates the Go-only spellings that occur in relabel configs: ``(?<name>…)``, ``\\z`` and POSIX
    classes such as ``[[:alpha:]]``; leading flags ``(?i)`` are kept global. Raises ``re.error`` otherwise.
    """
    body = pattern
    flags = ""
    m = _LEADING_FLAGS.match(body)
    if m:
        if "U" in m.group(1):
            raise re.error("the Go ungreedy flag (?U) is not supported; use lazy quantifiers such as .*?")
        flags, body = m.group(1), body[m.end():]
    body = body.replace("(?<", "(?P<").replace("(?P<=", "(?<=").replace("(?P<!", "(?<!")
    body = body.replace("\\z", "\\Z")
    for name, chars in _POSIX_CLASSES.items():
        body = body.replace(f"[:{name}:]", chars).replace(f"[:^{name}:]", "")
    prefix = f"(?{flags})" if flags else ""
    # ASCII: Go's \d, \w, \s and \b are ASCII-only.
    return re.compile(f"{prefix}(?:{body})", re.ASCII)


def go_expand(template: str, match: re.Match[str]) -> str:
    """Expand ``template`` with the groups of ``match`` exactly as Go's ``Regexp.ExpandString`` does."""
    if "$" not in template:
        return template
    out: list[str] = []
    rest = template
    names = match.re.groupindex
    ngroups = match.re.groups
    while rest:
        before, sep, after = rest.partition("$")
        out.append(before)
        if not sep:
            return "".join(out)
        rest = after
        if rest.startswith("$"):
            out.append("$")
            rest = rest[1:]
            continue
        parsed = _extract(rest)
        if parsed is None:
            # Malformed reference: the '$' is kept as text.
            out.append("$")
            continue
        name, num, rest = parsed
        if num >= 0:
            if num <= ngroups:
                out.append(match.group(num) or "")
        elif name in names:
            out.append(match.group(name) or "")
    return "".join(out)


def _extract(s: str) -> tuple[str, int, str] | None:
    """Go's regexp ``extract``: parse a ``name`` or ``{name}`` after ``$``; num is -1 for non-numbers."""
    if not s:
        return None
    brace = s[0] == "{"
    if brace:
        s = s[1:]
    i = 0
    while i < len(s) and (s[i].isalpha() or s[i].isdecimal() or s[i] == "_"):
        i += 1
    if i == 0:
        return None
    name = s[:i]
    if brace:
        if i >= len(s) or s[i] != "}":
            return None
        i += 1
    num = int(name) if name.isascii() and name.isdigit() and len(name) <= 8 else -1
    if name[0] == "0" and len(name) > 1:
        num = -1
    return name, num, s[i:]


class RelabelConfig(BaseModel):
    """One relabel rule, with Prometheus' defaults and validation (``Config.Validate``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_labels: list[str] = []
    separator: str = DEFAULT_SEPARATOR
    regex: str = DEFAULT_REGEX
    modulus: int = 0
    target_label: str = ""
    replacement: str = DEFAULT_REPLACEMENT
    action: Action = "replace"

    _compiled: re.Pattern[str] = PrivateAttr()

    @field_validator("action", mode="before")
    @classmethod
    def _action_lower(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    @field_validator("source_labels")
    @classmethod
    def _source_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _LABEL_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid label name in source_labels")
        return v

    @field_validator("modulus")
    @classmethod
    def _modulus_non_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError("modulus must not be negative")
        return v

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, v: str) -> str:
        try:
            compile_go_regex(v)
        except re.error as exc:
            raise ValueError(f"regex {v!r} does not compile: {exc}") from None
        return v

    @model_validator(mode="after")
    def _validate(self) -> RelabelConfig:
        a, t = self.action, self.target_label
        if a == "hashmod" and self.modulus == 0:
            raise ValueError("relabel configuration for hashmod requires non-zero modulus")
        if a in ("replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal") and not t:
            raise ValueError(f"relabel configuration for {a} action requires 'target_label' value")
        if a == "replace" and "$" not in t and not _LABEL_NAME.match(t):
            raise ValueError(f"{t!r} is invalid 'target_label' for {a} action")
        if a == "replace" and "$" in t and not _RELABEL_TARGET.match(t):
            raise ValueError(f"{t!r} is invalid 'target_label' for {a} action")
        if a in ("lowercase", "uppercase", "keepequal", "dropequal", "hashmod") and not _LABEL_NAME.match(t):
            raise ValueError(f"{t!r} is invalid 'target_label' for {a} action")
        if a in ("lowercase", "uppercase", "keepequal", "dropequal") and (
            self.replacement != DEFAULT_REPLACEMENT
        ):
            raise ValueError(f"'replacement' can not be set for {a} action")
        if a == "labelmap" and not _RELABEL_TARGET.match(self.replacement):
            raise ValueError(f"{self.replacement!r} is invalid 'replacement' for {a} action")
        if a in ("keepequal", "dropequal") and (
            self.regex != DEFAULT_REGEX or self.modulus != 0 or self.separator != DEFAULT_SEPARATOR
        ):
            raise ValueError(
                f"{a} action requires only 'source_labels' and `target_label`, and no other fields"
            )
        if a in ("labeldrop", "labelkeep") and (
            self.source_labels
            or t
            or self.modulus != 0
            or self.separator != DEFAULT_SEPARATOR
            or self.replacement != DEFAULT_REPLACEMENT
        ):
            raise ValueError(f"{a} action requires only 'regex', and no other fields")
        return self

    def model_post_init(self, __context: object) -> None:
        self._compiled = compile_go_regex(self.regex)

    @property
    def pattern(self) -> re.Pattern[str]:
        """The compiled, full-match regex."""
        return self._compiled


def relabel(labels: dict[str, str], configs: Sequence[RelabelConfig]) -> dict[str, str] | None:
    """Apply ``configs`` in order to a copy of ``labels``; return the new labels, or None if dropped.

    Labels with empty values are removed from the result, as in Prometheus.
    """
    lb = {k: v for k, v in labels.items() if v != ""}
    for cfg in configs:
        if not _apply(cfg, lb):
            return None
    return lb


@dataclass(frozen=True)
class RelabelStep:
    """One rule of a :func:`relabel_steps` trace: the labels after ``rule``, or None if it dropped them."""

    index: int
    rule: RelabelConfig
    labels: dict[str, str] | None

    @property
    def dropped(self) -> bool:
        return self.labels is None


def relabel_steps(labels: dict[str, str], configs: Sequence[RelabelConfig]) -> list[RelabelStep]:
    """Apply ``configs`` like :func:`relabel`, recording the labels after every rule, for people debugging
    a configuration (the status pages). The trace ends at the rule that dropped the labels, if one did;
    otherwise the last step's labels equal what :func:`relabel` returns. Not for the hot path: it copies
    the labels once per rule.
    """
    lb = {k: v for k, v in labels.items() if v != ""}
    steps: list[RelabelStep] = []
    for index, cfg in enumerate(configs):
        if not _apply(cfg, lb):
            steps.append(RelabelStep(index, cfg, None))
            break
        steps.append(RelabelStep(index, cfg, dict(lb)))
    return steps


def _set(lb: dict[str, str], name: str, value: str) -> None:
    if value:
        lb[name] = value
    else:
        lb.pop(name, None)


def _apply(cfg: RelabelConfig, lb: dict[str, str]) -> bool:
    val = cfg.separator.join(lb.get(n, "") for n in cfg.source_labels)
    action = cfg.action
    rx = cfg.pattern
    if action == "drop":
        return rx.fullmatch(val) is None
    if action == "keep":
        return rx.fullmatch(val) is not None
    if action == "dropequal":
        return lb.get(cfg.target_label, "") != val
    if action == "keepequal":
        return lb.get(cfg.target_label, "") == val
    if action == "replace":
        if (
            val == ""
            and cfg.regex == DEFAULT_REGEX
            and "$" not in cfg.target_label
            and "$" not in cfg.replacement
        ):
            _set(lb, cfg.target_label, cfg.replacement)
            return True
        m = rx.fullmatch(val)
        if m is None:
            return True
        target = go_expand(cfg.target_label, m)
        if not _LABEL_NAME.match(target):
            return True
        _set(lb, target, go_expand(cfg.replacement, m))
    elif action == "lowercase":
        _set(lb, cfg.target_label, val.lower())
    elif action == "uppercase":
        _set(lb, cfg.target_label, val.upper())
    elif action == "hashmod":
        digest = hashlib.md5(val.encode(), usedforsecurity=False).digest()
        _set(lb, cfg.target_label, str(int.from_bytes(digest[8:], "big") % cfg.modulus))
    elif action == "labelmap":
        for name, value in sorted(lb.items()):
            m = rx.fullmatch(name)
            if m is not None:
                _set(lb, go_expand(cfg.replacement, m), value)
    elif action == "labeldrop":
        for name in [n for n in lb if rx.fullmatch(n)]:
            del lb[name]
    elif action == "labelkeep":
        for name in [n for n in lb if not rx.fullmatch(n)]:
            del lb[name]
    return True
