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
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from kubescrape.config.checks import DEFAULT_REGEX, DEFAULT_REPLACEMENT, DEFAULT_SEPARATOR
from kubescrape.config.plain import Plain
from kubescrape.goregex import compile_go_regex

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

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


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


class RelabelConfig(Plain):
    """One relabel rule, with Prometheus' defaults. Constructing one validates it (``Config.Validate``)
    with the pydantic model :class:`kubescrape.config.schema.RelabelConfig`."""

    source_labels: list[str] = field(default_factory=list)
    separator: str = DEFAULT_SEPARATOR
    regex: str = DEFAULT_REGEX
    modulus: int = 0
    target_label: str = ""
    replacement: str = DEFAULT_REPLACEMENT
    action: Action = "replace"

    @classmethod
    def _schema(cls) -> Any:
        from kubescrape.config.schema import RelabelConfig as Schema

        return Schema

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        """The compiled, full-match regex."""
        return compile_go_regex(self.regex)


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
