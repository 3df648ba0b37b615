"""Values out of bounds are refused at load time with file, line, key, what is expected and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from kubescrape.config.categraf import load_categraf
from kubescrape.config.models import AgentConfig, GlobalConfig, InstanceConfig, WriterConfig
from kubescrape.errors import ConfigError

WRITER = '[[writers]]\nurl = "http://127.0.0.1:9090/api/v1/write"\n'
INSTANCE = '[[instances]]\nurls = ["http://127.0.0.1:9100/metrics"]\n'


def load(tmp_path: Path, config: str, prometheus: str | None = None) -> AgentConfig:
    (tmp_path / "config.toml").write_text(config)
    if prometheus is not None:
        (tmp_path / "input.prometheus").mkdir(exist_ok=True)
        (tmp_path / "input.prometheus" / "prometheus.toml").write_text(prometheus)
    return load_categraf(tmp_path, env={})


# (config.toml, prometheus.toml, file that is wrong, line, key, words in the cause, words in the fix)
CASES = [
    ("[global]\ninterval = inf\n", None, "config.toml", 2, "global.interval", "finite", "global.interval"),
    ('[global]\ninterval = "1ns"\n', None, "config.toml", 2, "global.interval", "1ms", "global.interval"),
    ('[global]\ninterval = "500ms"\n', None, "config.toml", 2, "global.interval", "shorter than 1s",
     "allow_short_intervals"),
    ("", 'interval = "1ns"\n' + INSTANCE, "prometheus.toml", 1, "interval", "1ms", "interval"),
    ("", 'interval = "200ms"\n' + INSTANCE, "prometheus.toml", 1, "interval", "shorter than 1s",
     "allow_short_intervals"),
    ("", INSTANCE + "timeout = inf\n", "prometheus.toml", 3, "instances[0].timeout", "finite", "duration"),
    (WRITER + "timeout = inf\n", None, "config.toml", 3, "writers[0].timeout", "finite", "duration"),
    (WRITER + "min_backoff = 0\n", None, "config.toml", 3, "writers[0].min_backoff", "greater than 0",
     "at least 1ms"),
    (WRITER + 'min_backoff = "-5s"\n', None, "config.toml", 3, "writers[0].min_backoff", "greater than 0",
     "at least 1ms"),
    (WRITER + 'min_backoff = "10s"\nmax_backoff = "5s"\n', None, "config.toml", 3, "writers[0].min_backoff",
     "greater than max_backoff", "at most max_backoff"),
    (WRITER + "max_retries = -2\n", None, "config.toml", 3, "writers[0].max_retries", "-1",
     "retry forever"),
    ('[[writers]]\nurl = "http://127.0.0.1:99999/api/v1/write"\n', None, "config.toml", 2, "writers[0].url",
     "port '99999'", "http(s) URL"),
    ('[[writers]]\nurl = "http://127.0.0.1:0/api/v1/write"\n', None, "config.toml", 2, "writers[0].url",
     "port 0", "http(s) URL"),
    ("", '[[instances]]\nurls = ["http://127.0.0.1:99999/metrics"]\n', "prometheus.toml", 2,
     "instances[0].urls", "1-65535", "http(s) URLs"),
    ("", '[[instances]]\nurls = ["http://127.0.0.1:9100/my metrics"]\n', "prometheus.toml", 2,
     "instances[0].urls", "contains a space", "http(s) URLs"),
    ("", '[[instances]]\nurls = ["http://:9100/metrics"]\n', "prometheus.toml", 2,
     "instances[0].urls", "no host", "http(s) URLs"),
    ("", INSTANCE + 'tls_min_version = "1.3"\ntls_max_version = "1.2"\n', "prometheus.toml", 3,
     "instances[0].tls_min_version", "no TLS version", "not higher than tls_max_version"),
    (WRITER + "min_shards = 5\nmax_shards = 2\n", None, "config.toml", 3, "writers[0].min_shards",
     "greater than max_shards", "not greater than max_shards"),
    ("", INSTANCE + "sample_limit = -1\n", "prometheus.toml", 3, "instances[0].sample_limit",
     "greater than or equal to 0", "non-negative"),
    ("", INSTANCE + 'target_limit = "many"\n', "prometheus.toml", 3, "instances[0].target_limit",
     "integer", "non-negative"),
]


@pytest.mark.parametrize(("config", "prometheus", "file", "line", "key", "cause", "fix"), CASES,
                         ids=[c[4] + ":" + c[5] for c in CASES])
def test_out_of_bounds_value_is_a_config_error_with_place_and_fix(
    tmp_path: Path, config: str, prometheus: str | None, file: str, line: int, key: str, cause: str, fix: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, config, prometheus)
    err = info.value
    assert Path(err.file or "").name == file, str(err)
    assert (err.line, err.key) == (line, key), str(err)
    assert cause in err.cause, str(err)
    assert err.fix is not None and fix in err.fix, str(err)
    assert "bug" not in str(err)


def test_short_interval_needs_the_opt_in(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[global]\ninterval = "500ms"\nallow_short_intervals = true\n',
               'interval = "250ms"\n' + INSTANCE)
    assert (cfg.global_.interval, cfg.scrape_interval) == (0.5, 0.25)
    # Categraf's "non-positive means the default" still holds.
    cfg = load(tmp_path, "[global]\ninterval = 0\n", INSTANCE + "timeout = 0\n")
    assert (cfg.scrape_interval, cfg.instances[0].timeout) == (15.0, 3.0)
    # Writer timeouts are milliseconds; 0 means the default.
    cfg = load(tmp_path, WRITER + "timeout = 0\ndial_timeout = 250\n")
    assert (cfg.writers[0].timeout, cfg.writers[0].dial_timeout) == (5.0, 0.25)


def test_models_refuse_the_same_values_when_built_in_python() -> None:
    for bad in (float("inf"), float("nan"), "1ns", "1us"):
        with pytest.raises(ValidationError):
            GlobalConfig.model_validate({"interval": bad})
        with pytest.raises(ValidationError):
            InstanceConfig.model_validate({"timeout": bad})
        with pytest.raises(ValidationError):
            WriterConfig.model_validate({"url": "http://h:1/w", "timeout": bad})
    with pytest.raises(ValidationError):
        AgentConfig(input_interval=float("inf"))
    for backoff in (0, -5, "-5s", float("inf")):
        with pytest.raises(ValidationError):
            WriterConfig.model_validate({"url": "http://h:1/w", "min_backoff": backoff})
    for url in ("http://h:65536/w", "http://h:0/w", "http://h w/x", "http://h:1/a\tb", "http://[::1/w"):
        with pytest.raises(ValidationError):
            WriterConfig(url=url)
        with pytest.raises(ValidationError):
            InstanceConfig(urls=[url])
    # Python-built models (tests, generated configs) may use short intervals without the opt-in.
    assert GlobalConfig(interval=0.2).interval == 0.2
    assert WriterConfig.model_validate({"url": "http://h:65535/w", "min_backoff": "1ms"}).min_backoff == 0.001


def test_toml_error_points_at_the_unclosed_bracket(tmp_path: Path) -> None:
    text = ('[global]\nhostname = "a"\n\n[[instances]]\nurls = ["http://127.0.0.1:9100/metrics"\n'
            'labels = { job = "x" }\n')
    (tmp_path / "config.toml").write_text("")
    (tmp_path / "input.prometheus").mkdir()
    (tmp_path / "input.prometheus" / "p.toml").write_text(text)
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        load_categraf(tmp_path, env={})
    assert info.value.line == 5
    assert "line 5 is not closed" in info.value.cause
    assert "urls = [" in info.value.cause


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a = 1\nb = [1,\n2,\nc = 3\n", 2),
        ('a = 1\nb = "abc\nc = 2\n', 2),
        ('a = 1\nb = """abc\nc = 2\n', 2),
        ('# [ not a bracket\n[global]\nhostname = "a[b"\nlabels = { a = "x" \nb = 1\n', 4),
        ("[global\nb = 2\n", 1),
        ("[global]\ninterval = \n", 2),
    ],
)
def test_toml_error_line_is_where_the_fix_goes(tmp_path: Path, text: str, line: int) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        load_categraf(tmp_path, env={})
    assert info.value.line == line, info.value.cause
