"""The one strict config layer: params sections (plain mappings) -> frozen, typed dataclasses.

Stage scripts read the params file and hand its sections to :func:`parse`; nothing under src/
opens the params file itself, so every function is testable with a literal config. Parsing is
strict because a typo must fail the stage, not silently train the default: an unknown key, a
missing key, a wrong type, or a value outside a ``Literal[...]`` set raises :class:`ConfigError`
naming the section and key (``train.scheduler: must be one of ['onecycle', 'constant'], got
'onecylce'``). Dataclass defaults equal the values in the params file (``tests/test_config.py``
checks), so there is one set of defaults.
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A params value that cannot be used; the message starts with its dotted key."""


def _fail(where: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{where}: {message}")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; JSON/YAML lists become tuples."""
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, where)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            _fail(where, f"must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            _fail(where, f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            _fail(where, f"expected a list of {len(args)} values, got {list(value)!r}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is bool and not isinstance(value, bool):
        _fail(where, f"expected true or false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        _fail(where, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(where, f"expected a number, got {value!r}")
        return float(value)
    if tp is str and not isinstance(value, str):
        _fail(where, f"expected a string, got {value!r}")
    return value


def _fields(cls: type, data: Any, where: str) -> tuple[dict[str, Any], list[dataclasses.Field]]:
    if not isinstance(data, Mapping):
        _fail(where, f"expected a mapping, got {type(data).__name__}")
    fields = [f for f in dataclasses.fields(cls) if f.init]
    allowed = [f.name for f in fields]
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        _fail(where, f"unknown key(s) {unknown}; allowed: {allowed}")
    return typing.get_type_hints(cls), fields


def parse(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, strictly; errors name `where` and the key."""
    hints, fields = _fields(cls, data, where)
    missing = [f.name for f in fields if f.name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        _fail(where, f"missing key(s) {missing}")
    values = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # a __post_init__ range check
        _fail(where, str(exc))


def check_overrides(cls: type, data: Any, where: str) -> None:
    """Check a partial mapping meant to update a `cls` section: known keys, right types."""
    hints, _ = _fields(cls, data, where)
    for key, value in data.items():
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, Mapping):
            check_overrides(hints[key], value, f"{where}.{key}")
        else:
            _coerce(hints[key], value, f"{where}.{key}")


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` updated by `overrides`, recursing into nested mappings (overrides win)."""
    out = dict(base)
    for key, value in overrides.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = merged(out[key], value) if both else value
    return out


def jsonable(value: Any) -> Any:
    """Plain JSON types: dataclasses become dicts, tuples become lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    return value


def section(params: Mapping[str, Any], name: str) -> Any:
    """The params value at dotted `name` ('models.meshnet'); a missing key names itself."""
    node: Any = params
    for depth, part in enumerate(name.split(".")):
        if not isinstance(node, Mapping) or part not in node:
            _fail(".".join(name.split(".")[:depth + 1]), "missing from the params file")
        node = node[part]
    return node


@contextlib.contextmanager
def params_errors(path: str | Path) -> Iterator[None]:
    """In a stage script: a bad params value ends the stage with one line naming the file and
    key, before any work, instead of a traceback."""
    try:
        yield
    except ConfigError as exc:
        raise SystemExit(f"{path}: {exc}") from None


def read_params(path: str | Path) -> dict[str, Any]:
    """Load a YAML mapping safely; an empty file is an empty mapping."""
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data
