"""Frozen dataclasses read from JSON with every field checked, and written back in field order.

A record class derives :class:`Record`; its annotations say what each JSON field must be
(:func:`schema`): ``int`` an integer, ``float`` a number, ``str`` a string, ``bool`` true or false,
``tuple[...]`` a list, ``dict[...]`` an object, another record (or a class with ``from_dict``) a
nested object, ``tuple[Record, ...]`` a list of them.  ``X | None`` may be ``null``; a field with
a default may be absent, and a field at a ``None`` default is left out when written, so that a
record read from an older file is written back with the keys it had.  A field that is missing or
of another kind is a :class:`FieldError` naming it (``novelty.threshold is 'x', not a number``).
The index manifest (:mod:`.manifest`) is made of these.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar


class FieldError(ValueError):
    """A JSON field that is missing or of the wrong kind; the message names it."""


class Fields:
    """Typed reads of one JSON object (``where`` names it in errors, e.g. ``novelty``): a field that
    is missing (unless ``optional``), ``null`` (unless ``null``) or of another kind raises
    :class:`FieldError`.  Values are returned as JSON has them, lists as tuples."""

    _TYPES: dict[str, tuple[type, ...]] = {
        "an integer": (int,),
        "a number": (int, float),
        "a string": (str,),
        "true or false": (bool,),
        "a list": (list,),
        "an object": (dict,),
    }

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise FieldError(f"{where or 'the document'} is not an object")
        self.data, self.where = data, where

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: str, *, optional: bool = False, null: bool = False) -> Any:
        if key not in self.data:
            if optional:
                return None
            raise FieldError(f"no {self.name(key)}")
        value = self.data[key]
        if value is None and (null or optional):
            return None
        types = self._TYPES[kind]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise FieldError(f"{self.name(key)} is {value!r}, not {kind}")
        return tuple(value) if isinstance(value, list) else value


_KIND_OF = {int: "an integer", float: "a number", str: "a string", bool: "true or false", tuple: "a list"}
#: A field's kind: a JSON kind (see :class:`Fields`), or ("record", class) for a nested object read
#: with the class's ``from_dict``, or ("records", class) for a list of them.
_Kind = str | tuple[str, type]


def schema(cls: type) -> tuple[tuple[str, _Kind, bool, bool], ...]:
    """(name, kind, optional, nullable) of each field of ``cls``, from its annotations: ``int`` is
    "an integer", ``float`` "a number", ``tuple[...]`` "a list", ``dict[...]`` "an object", a class
    with ``from_dict`` a nested record, ``tuple[Record, ...]`` a list of them; ``X | None`` may be
    ``null``; a field with a default may be absent.  ``extra`` (the unknown keys) is no field of the JSON."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name == "extra":
            continue
        args = typing.get_args(hints[f.name])
        nullable = type(None) in args
        base = next(a for a in args if a is not type(None)) if nullable else hints[f.name]
        origin, inner = typing.get_origin(base) or base, typing.get_args(base)
        kind: _Kind
        if origin is tuple and inner and hasattr(inner[0], "from_dict"):
            kind = ("records", inner[0])
        elif hasattr(origin, "from_dict"):
            kind = ("record", origin)
        else:
            kind = "an object" if origin is dict else _KIND_OF[origin]
        optional = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        out.append((f.name, kind, optional, nullable))
    return tuple(out)


R = typing.TypeVar("R", bound="Record")


def read(cls: type[R], data: Any, where: str) -> R:
    """The record ``cls`` of JSON object ``data``, every field checked against :func:`schema`."""
    f = Fields(data, where)
    values = {}
    for name, kind, optional, nullable in schema(cls):
        if isinstance(kind, str):
            values[name] = f.get(name, kind, optional=optional, null=nullable)
            continue
        many, sub = kind[0] == "records", kind[1]
        raw = f.get(name, "a list" if many else "an object", optional=optional, null=nullable)
        if raw is None:
            values[name] = None
        elif many:
            values[name] = tuple(_parse(sub, x, f"{f.name(name)}[]") for x in raw)
        else:
            values[name] = _parse(sub, raw, f.name(name))
    return cls(**values)


def _parse(cls: type, data: Any, where: str) -> Any:
    """A nested record (``from_dict(data, where)``) or config (``from_dict(data)``)."""
    if issubclass(cls, Record):
        return cls.from_dict(data, where)
    if not isinstance(data, dict):
        raise FieldError(f"{where} is not an object")
    return cls.from_dict(data)  # type: ignore[attr-defined]


def write(record: Any) -> dict[str, Any]:
    """The JSON object of a record: its fields in order, those at a ``None`` default left out (an
    older index did not have them) unless written with another field (``TOGETHER``) that is set."""
    out = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        partner = record.TOGETHER.get(f.name)
        if f.name == "extra" or (
            value is None and f.default is None and (partner is None or getattr(record, partner) is None)
        ):
            continue
        if isinstance(value, tuple) and value and hasattr(value[0], "to_dict"):
            value = [v.to_dict() for v in value]
        elif hasattr(value, "to_dict"):
            value = value.to_dict()
        out[f.name] = value
    return out


class Record:
    """A frozen dataclass read with :func:`read` and written with :func:`write`."""

    KEY: ClassVar[str] = ""  # where it stands in the document, for errors
    TOGETHER: ClassVar[dict[str, str]] = {}  # field -> the field it is written with, even as null

    def to_dict(self) -> dict[str, Any]:
        return write(self)

    @classmethod
    def from_dict(cls: type[R], data: Any, where: str = "") -> R:
        return read(cls, data, where or cls.KEY)
