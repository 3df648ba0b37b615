from __future__ import annotations

from kubescrape.errors import (
    ConfigError,
    HTTPStatusError,
    KubescrapeError,
    ParseError,
    RemoteWriteError,
    ScrapeError,
)


def test_message_is_cause_then_fix() -> None:
    err = KubescrapeError("kubelet answered 401 Unauthorized", "check bearer_token_file")
    assert str(err) == "kubelet answered 401 Unauthorized; fix: check bearer_token_file"
    assert str(KubescrapeError("no fix known")) == "no fix known"


def test_config_error_names_file_line_and_key() -> None:
    err = ConfigError("expected an integer", "write timeout = 5000", file="conf/config.toml", key="timeout",
                      line=12)
    assert str(err) == "conf/config.toml:12 [timeout]: expected an integer; fix: write timeout = 5000"
    assert (err.file, err.line, err.key) == ("conf/config.toml", 12, "timeout")


def test_reasons_label_self_metrics() -> None:
    assert HTTPStatusError("401", status=401).reason == "http_401"
    assert RemoteWriteError("503", status=503).reason == "http_503"
    assert ParseError("bad value", line_no=3, line="up x").reason == "parse"
    assert ScrapeError("x", reason="internal").reason == "internal"


def test_parse_error_shows_line_number_and_text() -> None:
    err = ParseError("invalid value", line_no=7, line="up{job=\"a\"} x", target="https://n:10250/metrics")
    assert "line 7" in str(err) and "up{job=" in str(err)
    assert err.target == "https://n:10250/metrics"
    assert isinstance(err, ScrapeError)
