"""Typed configs from plain mappings. Stage scripts read params and build these; nothing under
src/ reads the params file itself, so every function is testable with a literal config."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def from_mapping(cls: type[T], mapping: dict[str, Any] | None, section: str = "") -> T:
    """Build dataclass `cls` from `mapping`, refusing unknown keys (a typo must not pass silently)."""
    mapping = dict(mapping or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(mapping) - names)
    if unknown:
        where = f" in params section {section!r}" if section else ""
        raise ValueError(f"unknown key(s){where}: {unknown}; expected some of {sorted(names)}")
    return cls(**mapping)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Load a YAML mapping safely; an empty file is an empty mapping."""
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data
