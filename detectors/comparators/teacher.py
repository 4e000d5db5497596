"""The frozen teacher of the teacher-based comparators (KD, FGFI, DeFeat).

Any detector of the zoo (``distill.teacher.name``, default YOLOv5m) for the run's classes, its weights
from ``distill.teacher.weights``: one of our training checkpoints (its EMA weights when it has them), a
state dict, or the family's official file (Ultralytics ``.pt``), read by the family's loader without
running pickled code. It is frozen for good: eval mode (BatchNorm statistics never move, ``train()``
cannot undo it), ``requires_grad`` false on every parameter, every forward under ``torch.no_grad``.

It is deliberately *not* a submodule of the training-only distillation module that uses it
(``detectors.distillation.MethodDistillation`` holds it outside its module tree and moves it along in
``_apply``): its parameters are never in ``distillation.parameters()`` (so never in the optimizer), nor
in ``distillation.state_dict()`` (checkpoints stay the student's size; a resumed run rebuilds the teacher
from the same file), nor in the training-only parameter count (``mssd model info`` lists it apart).

The teacher reads the same augmented batch on the same device as the student; its taps are its
``head_inputs`` (the maps its head reads) at the student's strides, which must be the same set
(``check_compatible``). Channel counts may differ: each method's adapter maps the student's channels to
the teacher's.

``detectors.distillation.check_teacher(cfg)`` is what ``mssd train`` / ``mssd tune`` run before anything is written: a missing or
incompatible teacher file is one ``TeacherError`` line naming the file and the reason, and a comparator
the run's detector cannot serve one ``ConfigError`` line naming the setting.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detectors.config import TEACHER_METHODS, RunConfig
from detectors.errors import ConfigError, MSSDError
from detectors.zoo import build_detector, family_of

log = logging.getLogger(__name__)


class TeacherError(MSSDError):
    """The teacher's weights file is missing or does not fit ``distill.teacher.name``; names the file."""


class FrozenTeacher(nn.Module):
    """A detector in eval mode with no gradient: ``forward(images)`` -> its ``DetectorOutput`` (no graph)."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        for p in self.model.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenTeacher:
        """Always eval: the teacher's BatchNorm statistics and dropout stay as trained."""
        return super().train(False)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(self.model.strides)

    @property
    def head_input_channels(self) -> dict[int, int]:
        return dict(self.model.head_input_channels)

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    def forward(self, images: torch.Tensor) -> Any:
        with torch.no_grad():
            return self.model(images)


def needs_teacher(cfg: RunConfig) -> bool:
    return cfg.losses.method in TEACHER_METHODS


def build_teacher(cfg: RunConfig, *, load_weights: bool = True) -> FrozenTeacher | None:
    """The run's frozen teacher, or ``None`` when ``losses.method`` needs none.

    ``load_weights=False`` builds the architecture only (``mssd model info`` counts it without a file).
    """
    if not needs_teacher(cfg):
        return None
    name = cfg.distill.teacher.name
    model = build_detector(name, num_classes=cfg.num_classes)
    if load_weights:
        path = cfg.distill.teacher.weights
        if not path:
            raise ConfigError(f"distill.teacher.weights: losses.method {cfg.losses.method} needs the trained "
                              f"teacher's weights (a checkpoint, a state dict or an official .pt), got null")
        load_teacher_weights(model, path, name=name, num_classes=cfg.num_classes)
    return FrozenTeacher(model, name)


def load_teacher_weights(model: nn.Module, path: str | Path, *, name: str, num_classes: int) -> None:
    """Every tensor of ``model`` from ``path``, or one ``TeacherError`` line naming the file and the reason.

    Unlike a student's initial weights, nothing may be left at its initialisation: a teacher whose
    class-prediction layers were skipped (another class count) would teach noise.
    """
    from detectors.engine.checkpoint import check_checkpoint, is_checkpoint
    from detectors.weights import first_mismatch

    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"{path}: distill.teacher.weights: no such file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an official pickle (modules inside): the family's restricted reader handles it
        raw = None
    if is_checkpoint(raw):
        state = check_checkpoint(raw, path)
        saved = state.get("detector")
        if saved and saved != name:
            raise TeacherError(f"{path}: a {saved} checkpoint, but distill.teacher.name is {name}")
        weights = state["ema"]["module"] if state.get("ema") else state["model"]
        mismatch = first_mismatch(model.state_dict(), weights)
        if mismatch:
            raise TeacherError(f"{path}: does not fit teacher {name} with {num_classes} classes: {mismatch}")
        model.load_state_dict(weights)
        return
    try:
        report = family_of(name).load_weights(model, path)
    except MSSDError as exc:
        raise TeacherError(f"distill.teacher.weights: {exc}") from None
    except Exception as exc:  # a loader bug or an unforeseen file: still one line naming the file
        raise TeacherError(f"{path}: cannot load teacher {name} ({type(exc).__name__}: {exc})") from None
    if report.skipped:
        raise TeacherError(f"{path}: the teacher's class-prediction layers do not fit {num_classes} classes "
                           f"({report.skipped[0]} has another shape): train the teacher on the run's classes")
    log.info("teacher %s: %s", name, report.summary())


def check_compatible(teacher: FrozenTeacher, model: nn.Module) -> None:
    """The teacher's taps must sit at the student's strides (channels may differ: adapters map them)."""
    student, theirs = tuple(model.strides), teacher.strides
    if set(student) != set(theirs):
        raise ConfigError(f"distill.teacher.name: teacher {teacher.name} has strides {list(theirs)}, the student "
                          f"{list(student)}: a teacher must tap the student's strides")
