"""Go (RE2) regular expressions with Python's ``re``: the spellings that occur in relabel configs.

Here, apart from :mod:`kubescrape.relabel`, because both the relabel engine and the configuration's
validation (:mod:`kubescrape.config.schema`, :mod:`kubescrape.config.resolve`) compile rules' regexes.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["compile_go_regex"]

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
