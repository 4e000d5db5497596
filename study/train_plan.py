"""What ``mssd train`` checks before it writes anything: a refused command changes nothing on disk or in MLflow.

``plan_training`` loads and validates the config, reads the data (every label file parsed, every image
decoded), loads ``--weights`` (or ``detector.weights``) into the config's detector and, for ``--resume``, finds the checkpoint (a checkpoint file, the
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


def check_data(cfg: RunConfig, *, weights: str | Path | None = None) -> None:
    """Everything a run reads before it trains, checked before anything is written, one line naming the file:
    both splits read as training will (labels parsed, every image decoded: a truncated or corrupt image is
    named here, not mid-run), the initial weights (``weights``, else ``detector.weights``) loaded into the
    config's detector, and for a teacher method (losses.method kd / fgfi / defeat) the teacher from
    distill.teacher.weights. ``mssd tune``, ``ablate`` and ``compare`` run this before Ray starts too."""
    from detectors.data import load_samples
    from detectors.data.image_cache import check_split_images
    from detectors.distillation import check_teacher

    check_teacher(cfg)
    if weights is not None:
        check_initial_weights(cfg, weights, "--weights")
    elif cfg.detector.weights:
        check_initial_weights(cfg, cfg.detector.weights, "detector.weights")
    for split in ("train", "val"):
        check_split_images(cfg.data.cache, load_samples(cfg.data, split), cfg.data.img_size)


def check_weights(path: str | Path, flag: str = "--weights") -> None:
    """``--weights``: an existing PyTorch file (a zip archive, as ``torch.save`` writes since torch 1.6)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{flag} {path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"{flag} {path}: not a PyTorch weights file (expected a checkpoint or an "
                          "Ultralytics .pt)")


def check_initial_weights(cfg: RunConfig, path: str | Path, flag: str) -> None:
    """Load ``path`` into the detector ``cfg`` builds, as the trainer will (``load_model_weights``): a file that
    is no weights file, holds something other than a state dict, fits another detector or holds NaN/Inf is
    refused in one line naming ``flag`` and the file, before any run folder or MLflow run exists."""
    import torch

    from detectors.engine.validate import load_model_weights
    from detectors.errors import MSSDError
    from detectors.zoo import build_detector_for, family_of

    check_weights(path, flag)
    model = build_detector_for(cfg)
    try:
        load_model_weights(model, path, family_of(cfg.detector.name).load_weights)
    except MSSDError as exc:
        text = str(exc)
        text = text[len(f"{path}: "):] if text.startswith(f"{path}: ") else text
        raise ConfigError(f"{flag} {path}: {text}") from None
    except Exception as exc:  # a loader bug or an unforeseen file: still one line naming the file
        raise ConfigError(f"{flag} {path}: cannot load into {cfg.detector.name} ({type(exc).__name__}: {exc})") \
            from None
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ConfigError(f"{flag} {path}: tensor {name} holds NaN or Inf values")


def run_folder(checkpoint: Path) -> Path:
    """``RUN/checkpoints/last.pt`` -> ``RUN``; a checkpoint elsewhere -> the folder holding it."""
    folder = checkpoint.parent
    return folder.parent if folder.name == "checkpoints" else folder


def plan_training(config: str | Path, overrides: list[str], workdir: str | Path, *, resume: str | Path | None = None,
                  weights: str | Path | None = None) -> TrainPlan:
    """Every check of ``mssd train``, nothing written (module docstring)."""
    from detectors.engine.checkpoint import check_resumable, load_checkpoint, resolve_checkpoint

    cfg = load_config(config, overrides)
    if resume is None:
        check_data(cfg, weights=weights)
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
