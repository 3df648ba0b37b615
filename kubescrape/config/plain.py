"""The base of the resolved configuration objects: frozen dataclasses that pydantic validates on demand.

The agent reads its configuration as plain frozen objects (:mod:`kubescrape.config.models`,
:class:`kubescrape.relabel.RelabelConfig`). Building one with its constructor or ``model_validate`` runs
the pydantic model of the same name (:mod:`kubescrape.config.schema`): same conversions, same checks, the
same ``ValidationError``. ``model_construct`` builds one from values already known to be valid, without
pydantic: that is how :mod:`kubescrape.config.resolve` builds a plainly valid configuration at start-up,
where importing pydantic and building its models was 39 % of the instructions to the first scrape.

The few pydantic methods the code base uses are kept with pydantic's meaning (``model_validate``,
``model_construct``, ``model_copy``, ``model_dump``, ``model_fields_set``), so callers did not change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self, dataclass_transform

__all__ = ["Plain"]

_CLASSES: dict[str, type[Plain]] = {}


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(dataclasses.field,))
class Plain:
    """A frozen dataclass whose constructor validates through the pydantic model ``_schema()`` returns.

    Every subclass becomes a frozen dataclass; the type checker sees its fields as keyword parameters of
    the constructor (as it saw the pydantic models'), while at run time ``__init__`` hands them to the
    pydantic model. Field names and defaults are the pydantic model's (tests/config/test_plain.py).

    ``dataclass`` only collects the fields here: equality, hashing, ``repr`` and immutability are the
    generic methods below, with a dataclass's meaning. Generating them per class (``exec`` of their source,
    57 fields for InstanceConfig) cost 2.4 % of the instructions to the first scrape.
    """

    _FIELDS: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(init=False, repr=False, eq=False)(cls)  # in place, fields only
        cls._FIELDS = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        _CLASSES[cls.__name__] = cls

    def __init__(self, **data: Any) -> None:
        built = type(self).model_validate(data)
        for name, value in vars(built).items():
            object.__setattr__(self, name, value)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Plain)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"{type(self).__qualname__}({fields})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    @classmethod
    def _schema(cls) -> Any:
        """The pydantic model that validates this class (imported on first use)."""
        raise NotImplementedError

    @classmethod
    def model_validate(cls, data: Any) -> Self:
        """Validate ``data`` (a mapping; nested values may be plain objects) with the pydantic model, as
        pydantic's ``model_validate``: raises ``pydantic.ValidationError``."""
        validated = cls._schema().model_validate(_as_input(data))
        built = from_schema(validated)
        assert isinstance(built, cls)
        return built

    @classmethod
    def model_construct(cls, _fields_set: Iterable[str] | None = None, **values: Any) -> Self:
        """An object from valid ``values`` without validation; missing fields take their defaults."""
        obj = object.__new__(cls)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in values:
                value = values[f.name]
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                value = f.default
            object.__setattr__(obj, f.name, value)
        object.__setattr__(obj, "_fields_set", frozenset(values if _fields_set is None else _fields_set))
        return obj

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Self:
        """A copy with ``update`` applied, not validated (as pydantic's ``model_copy``)."""
        values = {name: getattr(self, name) for name in self._FIELDS}
        values.update(update or {})
        return type(self).model_construct(self.model_fields_set | set(update or ()), **values)

    @property
    def model_fields_set(self) -> set[str]:
        """The fields given explicitly, as pydantic's ``model_fields_set``."""
        fields_set: frozenset[str] = self.__dict__["_fields_set"]
        return set(fields_set)

    def model_dump(
        self, *, mode: str = "python", by_alias: bool = False, exclude_defaults: bool = False,
        exclude: Iterable[str] = (),
    ) -> dict[str, Any]:
        """The fields as plain data (nested objects as dicts), as pydantic's ``model_dump``. ``by_alias``
        changes nothing: no field has a serialization alias (``AgentConfig.global_`` is ``global`` only as
        input)."""
        out: dict[str, Any] = {}
        skip = set(exclude)
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name in skip:
                continue
            value = getattr(self, f.name)
            if exclude_defaults and value == _default(f):
                continue
            out[f.name] = _dump(value, mode, by_alias)
        return out


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _dump(value: Any, mode: str, by_alias: bool) -> Any:
    if isinstance(value, Plain):
        return value.model_dump(mode=mode, by_alias=by_alias)
    if isinstance(value, list | tuple):
        items = [_dump(v, mode, by_alias) for v in value]
        return items if mode == "json" or isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        return {k: _dump(v, mode, by_alias) for k, v in value.items()}
    return value


def _as_input(value: Any) -> Any:
    """Nested plain objects as the mappings of their explicitly set fields, for pydantic to validate again
    (validation is idempotent: a valid object's fields validate to themselves)."""
    if isinstance(value, Plain):
        return {k: _as_input(getattr(value, k)) for k in value.model_fields_set}
    if isinstance(value, list):
        return [_as_input(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_input(v) for k, v in value.items()}
    return value


def from_schema(value: Any) -> Any:
    """The plain counterpart of a validated pydantic model (and of the models nested in it)."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        cls = _CLASSES[type(value).__name__]
        values = {name: from_schema(getattr(value, name)) for name in type(value).model_fields}
        return cls.model_construct(value.model_fields_set, **values)
    if isinstance(value, list):
        return [from_schema(v) for v in value]
    return value
