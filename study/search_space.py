"""Search spaces: which config values a sweep varies, and how.

A search space is a YAML file with one mapping, ``params``, whose keys are dotted config key paths
(as printed by ``mssd config show``, i.e. ``flatten_config`` of a ``RunConfig``) and whose values
name a distribution::

    # search_spaces/mssd.yaml
    description: the default MSSD space      # optional, free text
    params:
      losses.mssd.gamma: {distribution: loguniform, low: 1.0e-3, high: 1.0}
      losses.mad.sigma2: {distribution: loguniform, low: 0.5, high: 8.0}
      train.batch_size: {distribution: int, low: 8, high: 32}
      losses.mssd.detach_teacher: {distribution: choice, values: [true, false]}

Distributions:

``uniform`` / ``loguniform``  floats in [low, high] (``low < high``; ``loguniform`` needs ``low > 0``)
``int``                       integers in [low, high], both included (``low < high``)
``choice``                    one of ``values`` (a non-empty list), sampled
``grid``                      every one of ``values`` (a non-empty list) is run

A space is either all ``grid`` (every point of the cartesian product runs once per ``--samples``)
or has no ``grid`` entry at all (Optuna samples it).

A grid space may set ``design: one_at_a_time`` (a screening design): the first value of every param is
the reference point, and each other value is run with every other param at its reference, so k readings
of two values cost k + 1 points, not 2^k. Params marked ``crossed: true`` (typically ``seed``) are crossed
with every point, so each variant pairs with the reference on the same seeds (``mssd report``'s
``effects.md`` then gives each variant's paired delta to the reference with its CI)::

    design: one_at_a_time
    params:
      seed: {distribution: grid, values: [1, 2, 3], crossed: true}
      losses.mssd.detach: {distribution: grid, values: [teacher, none]}   # reference first
      losses.mad.sigma2: {distribution: grid, values: [2.0, 8.0]} Every mistake stops with one line naming the
file and line: an unknown key path, a key that is not a single value (a section), ``low >= high``, a
non-positive bound for ``loguniform``, an empty or missing ``values``, a value the config schema
rejects (e.g. a negative ``gamma``).

Public API: ``load_search_space(path) -> SearchSpace``, ``SearchSpace.apply(cfg_dict, params)``.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.config import RunConfig, config_to_dict, flatten_config, parse_config
from detectors.errors import ConfigError
from study.config import apply_overrides, read_yaml
from study.mlflow_view import short_name, short_value

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice", "grid")
DESIGNS = ("factorial", "one_at_a_time")
_FIELDS = {"distribution", "low", "high", "values", "crossed"}
# The one Tune key of a one_at_a_time study: each grid value is one design point, ``{"params": {dotted
# key: value}, "label": "detach=none seed=2"}``; ``point_params`` turns a trial's config back into params.
POINT_KEY = "design_point"


@dataclass(frozen=True)
class Param:
    """One searched config value."""

    key: str  # dotted config path, e.g. losses.mssd.gamma
    distribution: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()
    line: int = 0  # 1-based line in the space file, for messages
    crossed: bool = False  # one_at_a_time design: crossed with every point (e.g. the seed)


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    params: tuple[Param, ...]
    description: str = ""
    text: str = field(default="", repr=False)  # the file as written, logged as an artifact
    design: str = "factorial"  # grid spaces: factorial (every combination) or one_at_a_time

    @property
    def is_grid(self) -> bool:
        return all(p.distribution == "grid" for p in self.params)

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    @property
    def varied_keys(self) -> list[str]:
        """The factors whose effects a report estimates: not the crossed blocking params (seeds)."""
        return [p.key for p in self.params if not p.crossed]

    def grid_size(self) -> int:
        if not self.is_grid:
            return 0
        if self.design == "one_at_a_time":
            return len(self.design_points())
        return math.prod(len(p.values) for p in self.params)

    def design_points(self) -> list[dict[str, Any]]:
        """A one_at_a_time space's points (``POINT_KEY`` values): the reference, then each param's other
        values alone, each crossed with every combination of the crossed params."""
        crossed = [p for p in self.params if p.crossed]
        varied = [p for p in self.params if not p.crossed]
        names = {k: short_name(k, self.keys) for k in self.keys}
        reference = {p.key: p.values[0] for p in varied}
        singles: list[tuple[dict[str, Any], str]] = [(reference, "")]
        for p in varied:
            singles += [({**reference, p.key: v}, f"{names[p.key]}={short_value(v)}") for v in p.values[1:]]
        points = []
        for single, label in singles:
            for combo in itertools.product(*(p.values for p in crossed)):
                blocks = dict(zip((p.key for p in crossed), combo, strict=True))
                text = " ".join([label or "reference", *(f"{names[k]}={short_value(v)}" for k, v in blocks.items())])
                points.append({"params": {**single, **blocks}, "label": text})
        return points


def point_params(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's dotted params: its Tune config, with a one_at_a_time design point unpacked."""
    if POINT_KEY not in config:
        return dict(config)
    rest = {k: v for k, v in config.items() if k != POINT_KEY}
    return {**config[POINT_KEY]["params"], **rest}


def apply_params(base: dict, params: dict[str, Any]) -> dict:
    """A copy of the config dict ``base`` with dotted ``params`` set (validated later by parse_config); a
    one_at_a_time design point is unpacked first."""
    return apply_overrides(copy.deepcopy(base), point_params(params))


def with_params(base: RunConfig, params: dict[str, Any]) -> RunConfig:
    """``base`` with a trial's dotted ``params`` set, validated: the one place a sampled point becomes a config."""
    return parse_config(apply_params(config_to_dict(base), params))


def _number(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where}: {name}: expected a number, got {value!r}")
    try:
        number = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    except ValueError:
        raise ConfigError(f"{where}: {name}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: {name}: expected a finite number, got {value!r}")
    return number


def _parse_param(key: str, spec: Any, where: str, known: dict[str, Any]) -> Param:
    if key not in known:
        section = [k for k in known if k.startswith(key + ".")]
        if section:
            raise ConfigError(f"{where}: {key}: is a config section, not a value (e.g. {section[0]})")
        close = difflib.get_close_matches(key, list(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else " (see `mssd config show CONFIG`)"
        raise ConfigError(f"{where}: {key}: unknown config key path{hint}")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: {key}: expected a mapping with distribution and low/high or values, "
                          f"got {spec!r}")
    unknown = set(spec) - _FIELDS
    if unknown:
        raise ConfigError(f"{where}: {key}: unknown field {sorted(unknown)[0]!r} "
                          f"(expected distribution, low, high, values, crossed)")
    crossed = spec.get("crossed", False)
    if not isinstance(crossed, bool):
        raise ConfigError(f"{where}: {key}: crossed: expected true or false, got {crossed!r}")
    dist = spec.get("distribution")
    if dist not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: {key}: distribution: expected one of {', '.join(DISTRIBUTIONS)}, got {dist!r}")
    if dist in ("choice", "grid"):
        if "low" in spec or "high" in spec:
            raise ConfigError(f"{where}: {key}: {dist} takes values, not low/high")
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: {key}: {dist} needs a non-empty list of values, got {values!r}")
        if isinstance(known[key], float):
            values = [_number(v, where, key) for v in values]
        if crossed and dist != "grid":
            raise ConfigError(f"{where}: {key}: crossed applies to grid params only")
        return Param(key, dist, values=tuple(values), crossed=crossed)
    if crossed:
        raise ConfigError(f"{where}: {key}: crossed applies to grid params only")
    if "values" in spec:
        raise ConfigError(f"{where}: {key}: {dist} takes low and high, not values")
    for bound in ("low", "high"):
        if bound not in spec:
            raise ConfigError(f"{where}: {key}: {dist} needs {bound}")
    low, high = _number(spec["low"], where, f"{key}.low"), _number(spec["high"], where, f"{key}.high")
    if low >= high:
        raise ConfigError(f"{where}: {key}: expected low < high, got low={spec['low']!r} high={spec['high']!r}")
    if dist == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: {key}: loguniform needs positive bounds, got low={spec['low']!r}")
    if dist == "int":
        if not (low.is_integer() and high.is_integer()):
            raise ConfigError(f"{where}: {key}: int needs integer bounds, got low={spec['low']!r} high={spec['high']!r}")
        if not isinstance(known[key], int) or isinstance(known[key], bool):
            raise ConfigError(f"{where}: {key}: int distribution on a non-integer config value")
    elif isinstance(known[key], bool) or not isinstance(known[key], (int, float)) and known[key] is not None:
        raise ConfigError(f"{where}: {key}: {dist} needs a numeric config value, {key} is {known[key]!r}")
    return Param(key, dist, low=low, high=high)


def _check_against_schema(param: Param, where: str, base: RunConfig | None = None) -> None:
    """Every value the space can produce must pass the config schema (e.g. gamma >= 0), applied to the
    study's base config when given (``detector.taps`` values depend on its detector's family)."""
    if param.distribution in ("choice", "grid"):
        candidates = list(param.values)
    elif param.distribution == "int":
        candidates = [int(param.low), int(param.high)]
    else:
        candidates = [param.low, param.high]
    defaults = config_to_dict(RunConfig() if base is None else base)
    for value in candidates:
        try:
            parse_config(apply_params(defaults, {param.key: value}))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {param.key}: value {value!r} is not allowed ({exc})") from None


def load_search_space(path: str | Path, base: RunConfig | None = None) -> SearchSpace:
    """Read and validate a search space file; errors are one line ``FILE:LINE: key: what is wrong``.

    ``base``: the study's base config, which the values are checked against (default: the default config,
    whose detector is YOLOv5's, so another family's tap-set names need it)."""
    path = Path(path)
    data, lines = read_yaml(path, kind="search space file")
    if "params" not in data:
        raise ConfigError(f"{path}: expected a top-level 'params' mapping of config key paths")
    extra = set(data) - {"params", "description", "design"}
    if extra:
        key = sorted(extra)[0]
        raise ConfigError(f"{path}:{lines.get(key, 1)}: {key}: unknown top-level key "
                          "(expected params, description, design)")
    design = data.get("design", "factorial")
    if design not in DESIGNS:
        raise ConfigError(f"{path}:{lines.get('design', 1)}: design: expected one of {', '.join(DESIGNS)}, "
                          f"got {design!r}")
    specs = data["params"]
    if not isinstance(specs, dict) or not specs:
        raise ConfigError(f"{path}:{lines.get('params', 1)}: params: expected a non-empty mapping of config key paths")
    known = flatten_config(RunConfig() if base is None else base)  # losses.gt.* keys depend on the family
    params = []
    for key, spec in specs.items():
        line = lines.get(f"params.{key}", lines.get("params", 1))
        where = f"{path}:{line}"
        param = _parse_param(str(key), spec, where, known)
        _check_against_schema(param, where, base)
        params.append(Param(param.key, param.distribution, param.low, param.high, param.values, line, param.crossed))
    kinds = {p.distribution == "grid" for p in params}
    if len(kinds) > 1:
        first = next(p for p in params if p.distribution != "grid")
        raise ConfigError(f"{path}:{first.line}: {first.key}: a space is all grid or has no grid entry; "
                          "this one mixes them")
    _check_design(design, params, path, lines)
    return SearchSpace(path=path, params=tuple(params), description=str(data.get("description") or ""),
                       text=path.read_text(), design=design)


def _check_design(design: str, params: list[Param], path: Path, lines: dict[str, int]) -> None:
    where = f"{path}:{lines.get('design', 1)}"
    if design == "factorial":
        crossed = next((p for p in params if p.crossed), None)
        if crossed is not None:
            raise ConfigError(f"{path}:{crossed.line}: {crossed.key}: crossed means something only with "
                              "design: one_at_a_time (a factorial grid crosses every param)")
        return
    if any(p.distribution != "grid" for p in params):
        raise ConfigError(f"{where}: design: one_at_a_time needs grid params only")
    if not any(not p.crossed and len(p.values) > 1 for p in params):
        raise ConfigError(f"{where}: design: one_at_a_time needs a param that is not crossed and has a value "
                          "besides its reference (the first)")
