"""The paper's tables as data: one small YAML per table in ``paper_tables/``, validated when loaded.

Each file is typed by hand from the paper's text (Jia et al. 2024) and says, per row, which config
values make the row (``set``: dotted config keys, as in search spaces) and what the paper reports::

    table: 5
    title: gamma of the stride-8 distillation term (eq 1), YOLOv5s + MSSD
    source: Jia et al. 2024, Table 5
    setting: KITTI 2D object, 640 px, batch 16, 200 epochs       # the paper's setting, free text
    default_detector: yolov5s                                     # the detector the table is about
    metrics: [aps, apm, apl, map]                                 # columns, trainer metric names
    rows:
      - {name: baseline, detector: yolov5s, baseline: true,
         set: {losses.mssd.enabled: false, losses.mad.enabled: false},
         paper: {aps: 18.2, apm: 36.9, apl: 53.5, map: 36.6}}     # in %, as printed

Rules checked by ``load_paper_table`` (one line naming the file, line and key on failure): every key
known; ``metrics`` a non-empty subset of ``METRICS``; every row has a name, a detector, a ``set`` whose
keys and values the config schema accepts, and ``paper`` values in [0, 100] for exactly the table's
metrics; row names unique per detector; exactly one ``baseline: true`` row per detector; the
default detector has rows. Detector names are not checked against the installed families here (a
table may name a family that is not available yet): ``PaperTable.rows_for`` and ``study.reproduce`` do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectors.config import RunConfig, config_to_dict, flatten_config, parse_config
from detectors.errors import ConfigError
from study.config import read_yaml
from study.search_space import apply_params

TABLES_DIR = Path(__file__).resolve().parents[1] / "paper_tables"
# Metric key (the trainer's name) -> column title.
METRICS = {"ap50": "AP50", "ap75": "AP75", "aps": "APs", "apm": "APm", "apl": "APl", "map": "mAP"}
_TOP = {"table", "title", "source", "setting", "default_detector", "metrics", "rows"}
_ROW = {"name", "detector", "baseline", "set", "paper"}


@dataclass(frozen=True)
class PaperRow:
    name: str
    detector: str
    settings: dict[str, Any]  # dotted config key -> value
    paper: dict[str, float]  # metric -> the paper's value in %
    baseline: bool = False


@dataclass(frozen=True)
class PaperTable:
    number: int
    title: str
    source: str
    setting: str
    default_detector: str
    metrics: tuple[str, ...]
    rows: tuple[PaperRow, ...]
    path: Path

    @property
    def detectors(self) -> list[str]:
        """The detectors the table has rows for, in the table's order."""
        return list(dict.fromkeys(r.detector for r in self.rows))

    def rows_for(self, detector: str) -> list[PaperRow]:
        return [r for r in self.rows if r.detector == detector]


def table_path(number: int | str) -> Path:
    return TABLES_DIR / f"table{number}.yaml"


def available_tables() -> list[int]:
    return sorted(int(p.stem[len("table"):]) for p in TABLES_DIR.glob("table*.yaml") if p.stem[5:].isdigit())


def load_paper_table(number_or_path: int | str | Path) -> PaperTable:
    """Read and validate one paper table (module docstring); ``ConfigError`` with file:line otherwise."""
    if isinstance(number_or_path, Path) or (isinstance(number_or_path, str) and not number_or_path.isdigit()):
        path = Path(number_or_path)
    else:
        path = table_path(number_or_path)
        if not path.is_file():
            raise ConfigError(f"TABLE: no paper table {number_or_path} in {TABLES_DIR} "
                              f"(available: {', '.join(map(str, available_tables()))})")
    data, lines = read_yaml(path, kind="paper table file")

    def where(key: str) -> str:
        return f"{path}:{lines.get(key, 1)}: {key}"

    unknown = sorted(set(data) - _TOP)
    if unknown:
        raise ConfigError(f"{where(unknown[0])}: unknown key (expected one of {', '.join(sorted(_TOP))})")
    missing = sorted(_TOP - set(data))
    if missing:
        raise ConfigError(f"{path}: missing key {missing[0]!r}")
    number = data["table"]
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise ConfigError(f"{where('table')}: expected the table's number (an integer >= 1), got {number!r}")
    for key in ("title", "source", "setting", "default_detector"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise ConfigError(f"{where(key)}: expected non-empty text, got {data[key]!r}")
    metrics = data["metrics"]
    if not isinstance(metrics, list) or not metrics or any(m not in METRICS for m in metrics) \
            or len(set(metrics)) != len(metrics):
        raise ConfigError(f"{where('metrics')}: expected a non-empty list of distinct metrics from "
                          f"{', '.join(METRICS)}, got {metrics!r}")
    if not isinstance(data["rows"], list) or not data["rows"]:
        raise ConfigError(f"{where('rows')}: expected a non-empty list of rows")
    known = flatten_config(RunConfig())
    defaults = config_to_dict(RunConfig())
    rows = [_parse_row(item, f"rows[{i}]", where, tuple(metrics), known, defaults)
            for i, item in enumerate(data["rows"])]
    seen: set[tuple[str, str]] = set()
    for i, row in enumerate(rows):
        if (row.detector, row.name) in seen:
            raise ConfigError(f"{where(f'rows[{i}].name')}: {row.name!r} appears twice for {row.detector}")
        seen.add((row.detector, row.name))
    for detector in dict.fromkeys(r.detector for r in rows):
        count = sum(r.baseline for r in rows if r.detector == detector)
        if count != 1:
            raise ConfigError(f"{where('rows')}: expected exactly one 'baseline: true' row for {detector}, "
                              f"got {count}")
    if not any(r.detector == data["default_detector"] for r in rows):
        raise ConfigError(f"{where('default_detector')}: {data['default_detector']!r} has no rows")
    return PaperTable(number, data["title"], data["source"], data["setting"], data["default_detector"],
                      tuple(metrics), tuple(rows), path)


def _parse_row(item: Any, key: str, where: Any, metrics: tuple[str, ...], known: dict[str, Any],
               defaults: dict) -> PaperRow:
    if not isinstance(item, dict):
        raise ConfigError(f"{where(key)}: expected a mapping with {', '.join(sorted(_ROW))}, got {item!r}")
    unknown = sorted(set(item) - _ROW)
    if unknown:
        raise ConfigError(f"{where(f'{key}.{unknown[0]}')}: unknown key (expected one of {', '.join(sorted(_ROW))})")
    for field in ("name", "detector"):
        if not isinstance(item.get(field), str) or not item[field].strip():
            raise ConfigError(f"{where(f'{key}.{field}')}: expected non-empty text, got {item.get(field)!r}")
    baseline = item.get("baseline", False)
    if not isinstance(baseline, bool):
        raise ConfigError(f"{where(f'{key}.baseline')}: expected true/false, got {baseline!r}")
    settings = item.get("set")
    if not isinstance(settings, dict) or not settings:
        raise ConfigError(f"{where(f'{key}.set')}: expected a mapping of dotted config keys to values")
    for name, value in settings.items():
        if name not in known or name.startswith("detector."):
            raise ConfigError(f"{where(f'{key}.set.{name}')}: not a config value a row may set "
                              "(see `mssd config show`; the detector is the row's 'detector')")
        try:
            parse_config(apply_params(defaults, {name: value}))
        except ConfigError as exc:
            raise ConfigError(f"{where(f'{key}.set.{name}')}: value {value!r} is not allowed ({exc})") from None
    paper = item.get("paper")
    if not isinstance(paper, dict) or set(paper) != set(metrics):
        raise ConfigError(f"{where(f'{key}.paper')}: expected the paper's value of each of {', '.join(metrics)}, "
                          f"got {paper!r}")
    for metric, value in paper.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value <= 100) \
                or math.isnan(value):
            raise ConfigError(f"{where(f'{key}.paper.{metric}')}: expected a percentage in [0, 100], got {value!r}")
    return PaperRow(item["name"], item["detector"], dict(settings), {m: float(paper[m]) for m in metrics}, baseline)
