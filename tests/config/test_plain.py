"""The plain config objects and the pydantic models that validate them declare the same fields.

Each field is declared twice: in :mod:`kubescrape.config.models` (and
:class:`kubescrape.relabel.RelabelConfig`), the frozen dataclasses the agent reads, and in
:mod:`kubescrape.config.schema`, the pydantic models that validate them. These tests keep the two from
drifting apart: same names in the same order, same defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import BaseModel

from kubescrape.config import models, schema
from kubescrape.config.plain import Plain, from_schema
from kubescrape.relabel import RelabelConfig

PAIRS: list[tuple[type[Plain], type[BaseModel]]] = [
    (models.GlobalConfig, schema.GlobalConfig),
    (models.WriterOptions, schema.WriterOptions),
    (models.WriterConfig, schema.WriterConfig),
    (models.StaticConfig, schema.StaticConfig),
    (models.InstanceConfig, schema.InstanceConfig),
    (models.LogConfig, schema.LogConfig),
    (models.AgentConfig, schema.AgentConfig),
    (RelabelConfig, schema.RelabelConfig),
]
_REQUIRED = object()


def _plain_defaults(cls: type[Plain]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        elif f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        else:
            out[f.name] = _REQUIRED
    return out


def _schema_defaults(model: type[BaseModel]) -> dict[str, Any]:
    return {
        name: _REQUIRED if info.is_required() else from_schema(info.get_default(call_default_factory=True))
        for name, info in model.model_fields.items()
    }


@pytest.mark.parametrize(("plain", "model"), PAIRS, ids=[p.__name__ for p, _ in PAIRS])
def test_the_plain_class_and_its_pydantic_model_declare_the_same_fields_and_defaults(
    plain: type[Plain], model: type[BaseModel]
) -> None:
    assert plain.__name__ == model.__name__  # the ValidationError names the class the caller built
    plain_defaults, schema_defaults = _plain_defaults(plain), _schema_defaults(model)
    assert list(plain_defaults) == list(schema_defaults)
    assert plain_defaults == schema_defaults


def test_a_validated_object_equals_the_pydantic_model_field_by_field_and_dumps_the_same() -> None:
    data: dict[str, Any] = {
        "global": {"hostname": "n", "interval": "30s", "labels": {"region": "eu"}},
        "writers": [{"url": "http://u:p%40ss@h:9090/api/v1/write", "headers": ["X-A", "1"], "timeout": 2}],
        "instances": [{"urls": ["https://h:10250/metrics"], "timeout": "0", "tls_min_version": "",
                       "relabel_configs": [{"source_labels": ["a"], "action": "Drop", "regex": "x.*"}],
                       "static_configs": [{"targets": ["h:1"]}]}],
        "log": {"file_name": "  "},
        "input_interval": 0,
    }
    model = schema.AgentConfig.model_validate(data)
    plain = models.AgentConfig.model_validate(data)
    assert plain == from_schema(model)
    assert plain.model_dump(mode="json", by_alias=True) == model.model_dump(mode="json", by_alias=True)
    assert plain.model_dump() == model.model_dump()
    assert plain.log.model_fields_set == model.log.model_fields_set == {"file_name"}
    rule = plain.instances[0].relabel_configs[0]
    assert rule.model_dump(exclude_defaults=True, exclude={"action"}) == \
        model.instances[0].relabel_configs[0].model_dump(exclude_defaults=True, exclude={"action"})
    assert rule.pattern.fullmatch("xyz") is not None


def test_nested_plain_objects_are_validated_again_with_only_the_fields_they_were_given() -> None:
    log = models.LogConfig(max_size=5)
    config = models.AgentConfig(log=log, instances=[models.InstanceConfig(urls=["http://h:1/m"])])
    assert config.log == log and config.log.model_fields_set == {"max_size"}
    assert config.model_copy(update={"files": ["x"]}).files == ["x"]
    assert config.model_copy(update={"files": ["x"]}).model_fields_set == {"log", "instances", "files"}


def test_equality_repr_and_immutability_are_a_frozen_dataclass_s() -> None:
    a, b = models.WriterOptions(batch=5), models.WriterOptions.model_construct(batch=5)
    assert a == b and hash(a) == hash(b) and a != models.WriterOptions()
    assert a.__eq__(models.LogConfig()) is NotImplemented
    assert repr(a) == "WriterOptions(batch=5, chan_size=10000)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        del a.batch
    with pytest.raises(TypeError):
        hash(models.StaticConfig(targets=["h:1"]))  # a list field, as with the pydantic models
