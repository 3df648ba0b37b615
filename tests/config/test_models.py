"""The configuration models: defaults, duration parsing, Categraf header lists, validation."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from kubescrape.config.models import (
    AgentConfig,
    GlobalConfig,
    InstanceConfig,
    WriterConfig,
    WriterOptions,
    parse_go_duration,
)
from kubescrape.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15s", 15.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("300ms", 0.3),
        ("1.5s", 1.5),
        ("2us", 2e-6),
        ("0", 0.0),
        ("-2s", -2.0),
        ("1h2m3s4ms", 3723.004),
    ],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "15", "1x", "s", "1s2", "ten seconds"])
def test_parse_go_duration_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_global_interval_accepts_seconds_and_duration_strings() -> None:
    assert GlobalConfig(interval=15).interval == 15.0
    assert GlobalConfig.model_validate({"interval": "1m"}).interval == 60.0
    assert GlobalConfig(interval=2.5).interval == 2.5
    # Categraf: non-positive means the 15 s default.
    assert GlobalConfig(interval=0).interval == 15.0
    with pytest.raises(ValidationError):
        GlobalConfig(interval=True)
    with pytest.raises(ValidationError):
        GlobalConfig.model_validate({"interval": "fast"})


def test_defaults() -> None:
    assert WriterOptions() == WriterOptions(batch=2000, chan_size=10000)
    inst = InstanceConfig(urls=["http://127.0.0.1:10249/metrics"])
    assert inst.url_label_key == "instance"
    assert inst.url_label_value == ""
    assert inst.timeout == 3.0
    assert inst.interval_times == 1
    assert inst.honor_labels is False
    assert inst.honor_timestamps is True
    assert inst.body_size_limit == 64 * 1024 * 1024
    w = WriterConfig(url="http://127.0.0.1:9090/api/v1/write")
    assert (w.timeout, w.dial_timeout, w.max_idle_conns_per_host) == (5.0, 2.5, 100)
    assert w.min_shards <= w.max_shards


def test_headers_from_categraf_list_or_table() -> None:
    headers = ["X-From", "categraf", "X-Tenant", "a"]
    w = WriterConfig.model_validate({"url": "http://h:1/w", "headers": headers})
    assert w.headers == {"X-From": "categraf", "X-Tenant": "a"}
    assert WriterConfig(url="http://h:1/w", headers={"A": "b"}).headers == {"A": "b"}
    with pytest.raises(ValidationError, match="even number"):
        WriterConfig.model_validate({"url": "http://h:1/w", "headers": ["X-From"]})
    inst = InstanceConfig.model_validate({"urls": ["http://h:1/m"], "headers": ["X-A", "1"]})
    assert inst.headers == {"X-A": "1"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"urls": ["127.0.0.1:10250/metrics"]}, "not an http"),
        ({"labels": {"bad-name": "x"}}, "invalid label name"),
        ({"url_label_key": "in stance"}, "invalid label name"),
        ({"tls_min_version": "1.4"}, "unsupported TLS version"),
        ({"interval_times": -1}, "greater than or equal"),
        ({"bogus": 1}, "Extra inputs"),
    ],
)
def test_instance_rejects_invalid_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        InstanceConfig(**kwargs)  # type: ignore[arg-type]


def test_writer_validation() -> None:
    with pytest.raises(ValidationError, match="not an http"):
        WriterConfig(url="ftp://x/y")
    with pytest.raises(ValidationError, match="min_shards"):
        WriterConfig(url="http://h:1/w", min_shards=5, max_shards=2)
    with pytest.raises(ValidationError, match="greater than 0"):
        WriterConfig(url="http://h:1/w", timeout=0)


def test_models_are_frozen() -> None:
    g = GlobalConfig(hostname="a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.hostname = "b"  # type: ignore[misc]


def test_agent_config_require_writers_and_interval() -> None:
    cfg = AgentConfig(files=["/etc/categraf/conf/config.toml"])
    with pytest.raises(ConfigError, match="no remote-write endpoint") as info:
        cfg.require_writers()
    assert "--writer-url" in str(info.value)
    assert info.value.file == "/etc/categraf/conf/config.toml"
    AgentConfig(writers=[WriterConfig(url="http://h:1/w")]).require_writers()
    assert AgentConfig(global_=GlobalConfig(interval=20)).scrape_interval == 20.0
    assert AgentConfig(global_=GlobalConfig(interval=20), input_interval=5).scrape_interval == 5.0
    assert AgentConfig(global_=GlobalConfig(interval=20), input_interval=0).scrape_interval == 20.0
    # The "global" alias is accepted, as in the TOML.
    assert AgentConfig.model_validate({"global": {"hostname": "h"}}).global_.hostname == "h"


def test_empty_collection_defaults_are_fresh_for_every_instance() -> None:
    a, b = InstanceConfig(), InstanceConfig()
    assert a.urls == [] and a.labels == {} and a.relabel_configs == [] and a.params == {}
    assert a.urls is not b.urls and a.labels is not b.labels and a.headers is not b.headers
    assert AgentConfig().writers == [] and AgentConfig().writers is not AgentConfig().writers
    assert GlobalConfig().labels == {} and GlobalConfig().providers == ["local"]


def test_no_default_factory_is_a_builtin() -> None:
    # pydantic reads each default factory's signature while building the model; a builtin's (list, dict)
    # is parsed from its text with tokenize, whenever the models are built (kubescrape/config/schema.py).
    from kubescrape.config import schema

    models = (schema.AgentConfig, schema.GlobalConfig, schema.InstanceConfig, schema.LogConfig,
              schema.StaticConfig, schema.WriterConfig, schema.WriterOptions, schema.RelabelConfig)
    factories = [(model.__name__, name, f.default_factory) for model in models
                 for name, f in model.model_fields.items() if f.default_factory is not None]
    assert len(factories) > 20
    assert [(m, n) for m, n, f in factories if getattr(f, "__module__", "") == "builtins"] == []
