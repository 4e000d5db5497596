"""YAML <-> RunConfig: loading with ``FILE:LINE`` errors, ``--set a.b.c=value`` overrides, dumping.

The schema and its validation live in ``detectors.config`` (the trainer consumes it); this module
only adds what a user of files and command lines needs.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml

from detectors.atomic_write import write_atomic
from detectors.config import RunConfig, config_to_dict, parse_config, parse_saved_config, used_config_dict
from detectors.errors import ConfigError

_KEY_PATH = re.compile(r"^([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)")


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr0=0.02"`` -> ``("train.lr0", 0.02)``; the value is read as YAML (so 1e-3, true, [a, b])."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not _KEY_PATH.fullmatch(key):
        raise ConfigError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. train.lr0=0.02")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({exc.problem})") from None
    return key, value


def apply_overrides(data: dict, overrides: list[str] | dict[str, Any]) -> dict:
    """Set dotted key paths in a nested dict (in place) and return it.

    Unknown paths are caught afterwards by schema validation, which names them.
    """
    pairs = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in pairs:
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(parts[: i + 1])}: is a value, cannot set {key!r} inside it")
            node = child
        node[parts[-1]] = value
    return data


def _key_lines(node: yaml.Node, prefix: str = "") -> dict[str, int]:
    """Map each dotted key path in a composed YAML document to its 1-based line."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[path] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, path))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[f"{prefix}[{i}]"] = item.start_mark.line + 1
            lines.update(_key_lines(item, f"{prefix}[{i}]"))
    return lines


def read_yaml(path: str | Path, kind: str = "config file") -> tuple[dict, dict[str, int]]:
    """A YAML mapping and the line of each key path. Errors name the file (and line) and its ``kind``."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {kind}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level of this {kind}")
    return data, _key_lines(node) if node is not None else {}


_UNKNOWN_KEY = re.compile(r"^(?P<key>[\w.]+): unknown key \(expected one of: (?P<known>[^)]*)\)$")


def _suggest(message: str) -> str:
    """``a.b: unknown key (expected one of: ...)`` -> the same with ``did you mean a.c?`` when one is close."""
    match = _UNKNOWN_KEY.match(message)
    if not match:
        return message
    key = match["key"]
    parent, _, name = key.rpartition(".")
    close = difflib.get_close_matches(name, [k.strip() for k in match["known"].split(",")], n=1)
    if not close:
        return message
    return f"{key}: unknown key; did you mean {parent + '.' if parent else ''}{close[0]}? (expected one of: {match['known']})"


def _locate(message: str, source: Path, lines: dict[str, int], overrides: dict[str, Any]) -> str:
    match = _KEY_PATH.match(message)
    key = match.group(1) if match else ""
    message = _suggest(message)
    # An error at, under or above an override (a section only the override names, e.g. a misspelt
    # `--set trian.epochs=3`) comes from the command line, not the file.
    for name in overrides:
        if key == name or key.startswith(name + ".") or (name.startswith(key + ".") and key not in lines):
            return f"--set {message}"
    while key:
        if key in lines:
            return f"{source}:{lines[key]}: {message}"
        key = key.rpartition(".")[0]
    return f"{source}: {message}"


def load_config(path: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> RunConfig:
    """Load and validate a run config; every error is one line naming the file:line or the --set."""
    source = Path(path)
    data, lines = read_yaml(source)
    overrides = overrides or []
    pairs = dict(overrides) if isinstance(overrides, dict) else dict(map(parse_override, overrides))
    apply_overrides(data, pairs)
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(_locate(str(exc), source, lines, pairs)) from None


def load_saved_config(path: str | Path) -> RunConfig:
    """A config file this platform wrote (a study's ``base-config.yaml``), read as ``load_config`` reads a
    user's, except that an older release's keys are taken through today's schema
    (``detectors.config.parse_saved_config``: renamed keys, other families' ``losses.gt`` keys dropped)."""
    source = Path(path)
    data, lines = read_yaml(source)
    try:
        return parse_saved_config(data)
    except ConfigError as exc:
        raise ConfigError(_locate(str(exc), source, lines, {})) from None


def config_to_yaml(cfg: RunConfig, header: list[str] | None = None, *, used_only: bool = False) -> str:
    """The YAML text of a config; ``header`` lines become leading ``#`` comments (e.g. provenance).

    ``used_only``: what the run uses (``detectors.config.used_config_dict``: the active method's blocks
    only), for configs a person reads and runs; else every block, for a study's base config, from which
    runs with another ``losses.method`` are made."""
    data = used_config_dict(cfg) if used_only else config_to_dict(cfg)
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    comments = "".join(f"# {line}\n" for line in (header or []))
    return comments + body


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file so that readers see the old content or the new, never a partial one."""
    write_atomic(Path(path), lambda handle: handle.write(text.encode()))


def save_config(cfg: RunConfig, path: str | Path, header: list[str] | None = None) -> None:
    """Write the config a run uses (``used_only``) as YAML that ``load_config`` reads back to the same run."""
    write_text_atomic(path, config_to_yaml(cfg, header, used_only=True))
