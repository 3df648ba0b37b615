"""The one redaction helper: URL userinfo split off for auth, never shown; secrets in text replaced."""

from __future__ import annotations

import pytest

from kubescrape.redact import SECRET, redact_text, redact_url, safe_name, split_userinfo


@pytest.mark.parametrize(
    ("url", "clean", "user", "password"),
    [
        ("http://alice:PASS@host:9100/metrics", "http://host:9100/metrics", "alice", "PASS"),
        ("https://alice@host/m", "https://host/m", "alice", None),
        ("https://alice:@host/m", "https://host/m", "alice", ""),
        # Percent-encoded userinfo is decoded, as Go's url.User returns it.
        ("http://a%40b:p%3Ass%2F@h:1/m?x=1#f", "http://h:1/m?x=1#f", "a@b", "p:ss/"),
        # An unencoded "@" in the password: the host is after the last "@".
        ("http://u:p@ss@h:1/m", "http://h:1/m", "u", "p@ss"),
        ("http://[::1]:9100/metrics", "http://[::1]:9100/metrics", None, None),
        ("http://u:p@[::1]:9100/metrics", "http://[::1]:9100/metrics", "u", "p"),
        ("http://host/m", "http://host/m", None, None),
    ],
)
def test_split_userinfo(url: str, clean: str, user: str | None, password: str | None) -> None:
    assert split_userinfo(url) == (clean, user, password)
    assert redact_url(url) == clean


def test_redact_url_never_raises_and_still_strips() -> None:
    # urlsplit rejects this (bad IPv6 literal); the credentials must go all the same.
    assert redact_url("http://u:secret@[::1/metrics") == "http://[::1/metrics"
    assert redact_url("not a url") == "not a url"


def test_redact_text_hides_urls_and_listed_secrets() -> None:
    text = ("GET http://alice:PASS@h:1/m failed; retry https://bob:pw@w/api/v1/write "
            "with token abc%2Fdef and abc/def")
    out = redact_text(text, ["abc/def", None, ""])
    assert "PASS" not in out and "pw@" not in out and "alice" not in out
    assert "http://h:1/m" in out and "https://w/api/v1/write" in out
    assert out.endswith(f"token {SECRET} and {SECRET}")


def test_safe_name_is_stable_and_free_of_credentials() -> None:
    assert safe_name("https://rw.example:9090/api/v1/write") == "rw.example:9090/api/v1/write"
    assert safe_name("https://u:hunter2@rw.example:9090/api/v1/write/") == "rw.example:9090/api/v1/write"
    assert safe_name("http://h") == "h"


def test_redact_text_hides_a_password_with_an_unencoded_slash() -> None:
    # Not a valid userinfo (URL parsing reads "alice" as the host), but what a user may write.
    out = redact_text("bad url 'http://alice:pa/ss#x@h:1/m': port is not a number")
    assert out == "bad url 'http://h:1/m': port is not a number"
