"""Typed dataclass configs from plain dicts: field rules, and conversion with key-path errors.

A field built with ``rule(default, ge=..., choices=...)`` carries its checks as metadata; ``build(cls,
data, path)`` converts a plain dict (from YAML) into ``cls``, failing on the first unknown key (or a key
listed in the class's ``RENAMED``), wrong type or out-of-range value with the dotted key path in the
message. ``detectors.config`` defines the schema with these; nothing here knows a config section.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import field
from typing import Any, Literal, Union

from detectors.errors import ConfigError


def rule(default: Any = dataclasses.MISSING, *, factory: Any = None, **checks: Any) -> Any:
    """A dataclass field carrying validation checks (``gt``, ``ge``, ``lt``, ``le``, ``choices``)."""
    if factory is not None:
        return field(default_factory=factory, metadata=checks)
    return field(default=default, metadata=checks)




def describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {describe(typing.get_args(tp)[0])}"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(tp)))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(value, arg, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {describe(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected {describe(tp)}, got {value!r}")
        return build(tp, value, path)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {describe(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads exponent forms without a dot (1e-3) as strings; so does ".inf".
            text = value.strip().lower()
            if text in ("inf", ".inf", "+inf", "+.inf"):
                return math.inf
            try:
                return float(text)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - schema bug, not user input
        raise TypeError(f"unsupported config type {tp!r} at {path}")
    raise ConfigError(f"{path}: expected {describe(tp)}, got {value!r}")


def check_rules(value: Any, checks: dict[str, Any], path: str) -> None:
    if value is None:
        return
    if "choices" in checks and value not in checks["choices"]:
        choices = [str(c) for c in checks["choices"]]
        close = difflib.get_close_matches(str(value), choices, n=1)  # yolo5s -> yolov5s, Car -> car
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"{path}: expected one of {', '.join(choices)}, got {value!r}{hint}")
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{path}: expected a number, got nan")
    bounds = (("gt", ">", lambda v, b: v > b), ("ge", ">=", lambda v, b: v >= b),
              ("lt", "<", lambda v, b: v < b), ("le", "<=", lambda v, b: v <= b))
    for key, _symbol, ok in bounds:
        if key in checks and not ok(value, checks[key]):
            wanted = " and ".join(f"{s} {checks[k]}" for k, s, _ in bounds if k in checks)
            raise ConfigError(f"{path}: expected a value {wanted}, got {value!r}")


def build(cls: type, data: dict, path: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key in getattr(cls, "RENAMED", {}):
            raise ConfigError(f"{join(path, str(key))}: renamed to {join(path, cls.RENAMED[key])}")
        if key not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"{join(path, str(key))}: unknown key (expected one of: {known})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            key_path = join(path, name)
            value = convert(data[name], hints[name], key_path)
            check_rules(value, dict(f.metadata), key_path)
            kwargs[name] = value
    return cls(**kwargs)


def rename_keys(cls: type, data: Any) -> Any:
    """``data`` (a config mapping for dataclass ``cls``) with every ``RENAMED`` key under its new name,
    recursively: how a config saved by an older release is read (a user's file still gets the error)."""
    if not isinstance(data, dict) or not dataclasses.is_dataclass(cls):
        return data
    renamed = getattr(cls, "RENAMED", {})
    out = {renamed.get(key, key) if renamed.get(key, key) not in data else key: value for key, value in data.items()}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        inner = next((a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)), hint)
        if f.name in out and dataclasses.is_dataclass(inner):
            out[f.name] = rename_keys(inner, out[f.name])
    return out


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
