"""What ``mssd train`` checks before it writes anything: a refused command changes nothing on disk or in MLflow.

``plan_training`` loads and validates the config, reads the data (every label file parsed, every image's
header read), checks ``--weights`` and, for ``--resume``, finds the checkpoint (a checkpoint file, the
folder holding ``last.pt``, or the run folder), reads it fully and refuses a changed config -- all
before the run folder, ``config.yaml`` or the MLflow run are touched.
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.config import RunConfig
from detectors.errors import ConfigError
from study.config import load_config

RUN_META = "run.json"


@dataclass(frozen=True)
class TrainPlan:
    cfg: RunConfig
    run_dir: Path
    resume: Path | None = None  # the checkpoint file to continue from
    run_id: str | None = None  # the MLflow run a resumed run continues
    history: list[dict[str, Any]] = field(default_factory=list)  # the epochs the checkpoint holds


def check_data(cfg: RunConfig) -> None:
    """Read both splits as training will: labels parsed and image headers read, one line naming the file;
    for a teacher method (losses.method kd / fgfi / defeat) also load the teacher from distill.teacher.weights
    (a missing or incompatible file is one line naming it). ``mssd tune`` runs this before Ray starts too."""
    from detectors.comparators.teacher import check_teacher
    from detectors.data import load_samples

    check_teacher(cfg)
    for split in ("train", "val"):
        load_samples(cfg.data, split)


def check_weights(path: str | Path) -> None:
    """``--weights``: an existing PyTorch file (a zip archive, as ``torch.save`` writes since torch 1.6)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--weights {path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"--weights {path}: not a PyTorch weights file (expected a checkpoint or an "
                          "Ultralytics .pt)")


def run_folder(checkpoint: Path) -> Path:
    """``RUN/checkpoints/last.pt`` -> ``RUN``; a checkpoint elsewhere -> the folder holding it."""
    folder = checkpoint.parent
    return folder.parent if folder.name == "checkpoints" else folder


def plan_training(config: str | Path, overrides: list[str], workdir: str | Path, *, resume: str | Path | None = None,
                  weights: str | Path | None = None) -> TrainPlan:
    """Every check of ``mssd train``, nothing written (module docstring)."""
    from detectors.engine.checkpoint import check_resumable, load_checkpoint, resolve_checkpoint

    cfg = load_config(config, overrides)
    if weights is not None:
        check_weights(weights)
    if resume is None:
        check_data(cfg)
        run_dir = Path(workdir) / "train" / f"{Path(config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        return TrainPlan(cfg, run_dir)
    try:
        checkpoint = resolve_checkpoint(resume)
    except Exception as exc:
        raise ConfigError(f"--resume {resume}: {exc}") from None
    state = load_checkpoint(checkpoint)
    check_resumable(state["config"], cfg, checkpoint)
    check_data(cfg)
    run_dir = run_folder(checkpoint)
    meta_path = run_dir / RUN_META
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return TrainPlan(cfg, run_dir, checkpoint, meta.get("run_id"), list(state.get("history") or []))
