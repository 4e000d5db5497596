"""``<study>/confirm/confirm.json``: what a confirmation concluded, read by ``mssd export``.

Kept apart from ``study.confirm`` (which trains) so that export reads it without Ray or torch. Fields:
``best`` (a configuration's label such as ``t03``, or ``baseline``), ``trial_id`` / ``run_id`` of the
search trial it re-ran (none for the baseline), ``values`` (its searched values), ``baseline_values``
(the switches that turn the method off), ``metric``, ``mode``, ``delta`` / ``ci_low`` / ``ci_high``
(the confirmed best's paired mean delta and 95 % CI, fractions; absent for the baseline), ``seeds``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from study.config import write_text_atomic

CONFIRM_DIR = "confirm"
RECORD = "confirm.json"
BASELINE = "baseline"
AP_KEYS = ("map", "ap50", "ap75", "aps", "apm", "apl")  # fractions, shown x100 (points)


@dataclass(frozen=True)
class ConfirmRecord:
    study: str
    best: str
    metric: str
    mode: str
    seeds: list[int]
    trial_id: str | None = None
    run_id: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    baseline_values: dict[str, Any] = field(default_factory=dict)
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def baseline_wins(self) -> bool:
        return self.best == BASELINE

    def provenance(self) -> str:
        """One line for an exported config's header (AP metrics in points, as the tables show them)."""
        seeds = ", ".join(str(s) for s in self.seeds)
        scale, unit = (100.0, " points") if self.metric in AP_KEYS else (1.0, "")
        if self.baseline_wins:
            return (f"mssd confirm: no configuration beats the baseline beyond seed noise on seeds {seeds}; "
                    f"this is the baseline (method off: "
                    + ", ".join(f"{k}={v!r}" for k, v in self.baseline_values.items()) + ")")
        return (f"confirmed on seeds {seeds}: delta {self.metric} {self.delta * scale:+.2f} "
                f"[{self.ci_low * scale:+.2f}, {self.ci_high * scale:+.2f}]{unit} (95 % CI, paired over seeds) "
                f"against the baseline; search trial {self.best}")


def record_path(study_folder: Path) -> Path:
    return Path(study_folder) / CONFIRM_DIR / RECORD


def write_record(study_folder: Path, record: ConfirmRecord) -> Path:
    path = record_path(study_folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(asdict(record), indent=2, default=str) + "\n")
    return path


def read_record(study_folder: Path) -> ConfirmRecord | None:
    """The study's confirmation, or None when ``mssd confirm`` never completed for it."""
    path = record_path(study_folder)
    if not path.is_file():
        return None
    return ConfirmRecord(**json.loads(path.read_text()))
