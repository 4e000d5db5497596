"""The optimiser and its schedule, as YOLOv5 v7.0's ``train.py`` sets them up.

- Three SGD parameter groups chosen by a rule, not by names: 0 = biases (no weight decay), 1 = every
  other weight (weight decay), 2 = normalisation-layer weights (no weight decay). Group 0 first because
  the bias warmup addresses it by position, as YOLOv5 does.
- Nominal batch (``train.nominal_batch``, YOLOv5: 64): gradients accumulate over
  ``round(64 / batch_size)`` batches before a step, and the weight decay is scaled by
  ``batch_size * accumulate / 64`` so its strength per image does not change. ``None`` (YOLOX's recipe):
  one step per batch and the weight decay as given.
- Learning rate per epoch: cosine "one cycle" from ``lr0`` to ``lr0 * lrf`` over the run.
- Warmup over the first ``warmup_epochs * steps_per_epoch`` iterations: bias lr falls from
  ``warmup_bias_lr``, the other lrs rise from 0, momentum rises from ``warmup_momentum``, and the
  accumulation rises from 1, all linearly, to their epoch values.

``train.schedule: yolox_cosine`` is YOLOX's ``yoloxwarmcos`` instead (``yolox/utils/lr_scheduler.py``), per
iteration: a quadratic warmup from 0 over ``warmup_epochs``, then a cosine from ``lr0`` to ``lr0 * lrf``
ending where the last ``no_aug_epochs`` (``data.augment.close_mosaic``) begin, which hold ``lr0 * lrf``;
one lr for every group, constant momentum, no bias or momentum warmup.

``train.schedule: multistep`` is torchvision's detection reference (``MultiStepLR`` per epoch after a
``LinearLR`` warmup) and MMDetection's ``policy='step'`` with ``warmup='linear'``, which compute the same
values: at 0-based iteration ``i`` of 0-based epoch ``e``,
``lr = lr0 * lr_gamma ** #{milestones <= e} * (warmup_ratio + (1 - warmup_ratio) * i / warmup_iters)``,
the last factor only while ``i < warmup_iters`` (MMCV: ``1 - (1 - i / W) * (1 - ratio)``; torch's LinearLR
with ``start_factor`` = ratio). One lr for every group, constant momentum. Milestones are epochs, given
as ``train.lr_steps`` in epochs (>= 1) or fractions of the run (< 1, rounded to the nearest epoch, halves
up), so a config keeps its shape when a sweep changes ``train.epochs``. torchvision caps its warmup at
1000 iterations inside the first epoch; MMDetection's (500) may run into the second; ours is
``train.warmup_iters`` as given.

The warmup length is ``train.warmup_iters`` when set, else ``train.warmup_epochs`` epochs' worth, for every
shape. ``train.nesterov`` and ``train.weight_decay_scope`` choose torch.optim.SGD's plain momentum and
weight decay on every parameter (torchvision and MMDetection) instead of YOLO's Nesterov and decay on
conv/linear weights only; the three groups stay, so the bias warmup still finds group 0.

Everything is a pure function of (iteration, epoch), so a resumed run recomputes the same values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

NOMINAL_BATCH = 64  # YOLOv5's nbs: the batch size the hyperparameters were tuned for
BIAS_GROUP, DECAY_GROUP, NORM_GROUP = 0, 1, 2
# Every normalisation layer (BatchNorm*, GroupNorm, LayerNorm, ...), picked once by class name.
_NORM_TYPES = tuple(v for k, v in vars(nn).items() if "Norm" in k and isinstance(v, type))


def accumulate_steps(batch_size: int, nominal_batch: int | None = NOMINAL_BATCH) -> int:
    """Batches per optimiser step so that a step sees about ``nominal_batch`` images (None: 1)."""
    return 1 if nominal_batch is None else max(round(nominal_batch / batch_size), 1)


def scaled_weight_decay(weight_decay: float, batch_size: int, nominal_batch: int | None = NOMINAL_BATCH) -> float:
    """Weight decay per step for a step of ``batch_size * accumulate`` images instead of the nominal 64."""
    if nominal_batch is None:
        return weight_decay
    return weight_decay * batch_size * accumulate_steps(batch_size, nominal_batch) / nominal_batch


def parameter_groups(modules: Iterable[nn.Module]) -> tuple[list[nn.Parameter], ...]:
    """``(biases, decayed weights, norm weights)`` over every parameter of ``modules``, each once."""
    groups: tuple[list[nn.Parameter], ...] = ([], [], [])
    seen: set[int] = set()
    for root in modules:
        for module in root.modules():
            for name, param in module.named_parameters(recurse=False):
                if id(param) in seen:
                    continue
                seen.add(id(param))
                if name == "bias":
                    groups[BIAS_GROUP].append(param)
                elif name == "weight" and isinstance(module, _NORM_TYPES):
                    groups[NORM_GROUP].append(param)
                else:
                    groups[DECAY_GROUP].append(param)
    return groups


def build_sgd(
    modules: Iterable[nn.Module], *, lr: float, momentum: float, weight_decay: float, fused: bool = False,
    nesterov: bool = True, weight_decay_scope: str = "weights",
) -> torch.optim.SGD:
    """SGD (Nesterov unless ``nesterov`` is False) over the three groups; ``weight_decay`` (already scaled)
    applies to group 1 only, or to every group with ``weight_decay_scope="all"`` (torch's default).

    Multi-tensor updates (one call per group instead of ~6 ops per tensor; bit-identical on the CPU);
    ``fused`` (for CUDA): one kernel per group, and ``GradScaler.step`` then needs no host sync for its
    inf check (issue 13)."""
    if weight_decay_scope not in ("weights", "all"):
        raise ValueError(f"weight_decay_scope: expected 'weights' or 'all', got {weight_decay_scope!r}")
    biases, weights, norms = parameter_groups(modules)
    undecayed = weight_decay if weight_decay_scope == "all" else 0.0
    optimizer = torch.optim.SGD(
        [
            {"params": biases, "weight_decay": undecayed},
            {"params": weights, "weight_decay": weight_decay},
            {"params": norms, "weight_decay": undecayed},
        ],
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        foreach=not fused,
        fused=fused,
    )
    return optimizer


def set_multi_tensor(optimizer: torch.optim.SGD, *, fused: bool) -> None:
    """Back to ``build_sgd``'s choice after ``load_state_dict``, whose saved groups carry the choice of
    the device that saved them (a run saved on CUDA may resume on the CPU and the reverse)."""
    for group in optimizer.param_groups:
        group["fused"] = fused
        group["foreach"] = not fused


def one_cycle(y1: float, y2: float, steps: int):
    """Half a cosine from ``y1`` at x = 0 to ``y2`` at x = ``steps`` (YOLOv5's ``one_cycle``)."""
    return lambda x: ((1 - math.cos(x * math.pi / steps)) / 2) * (y2 - y1) + y1


def warm_cos_lr(iters: int, *, lr: float, min_lr_ratio: float, total_iters: int, warmup_iters: int,
                no_aug_iters: int) -> float:
    """YOLOX's ``yolox_warm_cos_lr`` with ``warmup_lr_start`` 0; ``iters`` counts from 1 (their
    ``progress_in_iter + 1``)."""
    min_lr = lr * min_lr_ratio
    if iters <= warmup_iters:
        return lr * (iters / float(warmup_iters)) ** 2
    if iters >= total_iters - no_aug_iters:
        return min_lr
    # Their expression, operation for operation, so that the lrs are equal bit for bit.
    return min_lr + 0.5 * (lr - min_lr) * (
        1.0 + math.cos(math.pi * (iters - warmup_iters) / (total_iters - warmup_iters - no_aug_iters)))


def resolve_milestones(lr_steps: Iterable[float], epochs: int) -> tuple[int, ...]:
    """``train.lr_steps`` as 0-based epoch indices where the lr drops: a value < 1 is a fraction of
    ``epochs`` rounded to the nearest epoch (halves up: 0.5 of 5 epochs is 3), a value >= 1 an epoch."""
    return tuple(int(math.floor(step * epochs + 0.5)) if step < 1 else int(step) for step in lr_steps)


def multistep_lr(iteration: int, epoch: int, *, lr: float, milestones: tuple[int, ...], gamma: float,
                 warmup_iters: int, warmup_ratio: float) -> float:
    """torchvision's MultiStepLR after LinearLR / MMCV's step policy with linear warmup (module docstring)."""
    passed = sum(1 for m in milestones if m <= epoch)
    lr = lr * gamma**passed
    if iteration < warmup_iters:
        lr *= warmup_ratio + (1.0 - warmup_ratio) * iteration / warmup_iters
    return lr


@dataclass(frozen=True)
class StepSettings:
    lrs: tuple[float, float, float]  # per group: bias, decayed weights, norm weights
    momentum: float
    accumulate: int  # batches per optimiser step


@dataclass(frozen=True)
class Schedule:
    """lr, momentum and accumulation at each iteration. Epochs count from 0 here (YOLOv5's ``epoch``)."""

    lr0: float
    lrf: float
    epochs: int
    momentum: float
    batch_size: int
    warmup_iters: int
    warmup_bias_lr: float
    warmup_momentum: float
    nominal_batch: int | None = NOMINAL_BATCH
    shape: str = "cosine"  # train.schedule: cosine (YOLOv5), yolox_cosine or multistep
    steps_per_epoch: int = 0  # yolox_cosine counts iterations over the whole run
    no_aug_epochs: int = 0  # yolox_cosine: the last epochs held at lr0 * lrf
    milestones: tuple[int, ...] = ()  # multistep: 0-based epochs from which the lr is lr_gamma times lower
    lr_gamma: float = 0.1  # multistep
    warmup_ratio: float = 0.001  # multistep: the warmup's first lr is lr0 * warmup_ratio

    @classmethod
    def from_config(cls, train_cfg, *, steps_per_epoch: int, no_aug_epochs: int = 0) -> Schedule:
        """Warmup lasts ``warmup_epochs`` epochs. (YOLOv5 also forces at least 100 iterations; the config
        says epochs, and on a short CPU run 100 iterations would be the whole run, so we do not.)
        ``no_aug_epochs``: the run's last epochs without mosaic (``yolox_cosine`` holds its minimum lr there).
        ``train.warmup_iters``, when set, gives the warmup in iterations instead."""
        warmup_iters = train_cfg.warmup_iters
        return cls(
            lr0=train_cfg.lr0,
            lrf=train_cfg.lrf,
            epochs=train_cfg.epochs,
            momentum=train_cfg.momentum,
            batch_size=train_cfg.batch_size,
            warmup_iters=round(train_cfg.warmup_epochs * steps_per_epoch) if warmup_iters is None else warmup_iters,
            warmup_bias_lr=train_cfg.warmup_bias_lr,
            warmup_momentum=train_cfg.warmup_momentum,
            nominal_batch=train_cfg.nominal_batch,
            shape=train_cfg.schedule,
            steps_per_epoch=steps_per_epoch,
            no_aug_epochs=no_aug_epochs,
            milestones=resolve_milestones(train_cfg.lr_steps, train_cfg.epochs),
            lr_gamma=train_cfg.lr_gamma,
            warmup_ratio=train_cfg.warmup_ratio,
        )

    def epoch_lr(self, epoch: int) -> float:
        """lr of every group after warmup in 0-based ``epoch``: cosine from lr0 to lr0 * lrf."""
        return self.lr0 * one_cycle(1.0, self.lrf, self.epochs)(epoch)

    def at(self, iteration: int, epoch: int) -> StepSettings:
        """Settings for global 0-based ``iteration``, which falls in 0-based ``epoch``."""
        full_accumulate = accumulate_steps(self.batch_size, self.nominal_batch)
        if self.shape == "yolox_cosine":
            lr = warm_cos_lr(iteration + 1, lr=self.lr0, min_lr_ratio=self.lrf,
                             total_iters=self.epochs * self.steps_per_epoch, warmup_iters=self.warmup_iters,
                             no_aug_iters=self.no_aug_epochs * self.steps_per_epoch)
            return StepSettings((lr, lr, lr), self.momentum, full_accumulate)
        if self.shape == "multistep":
            lr = multistep_lr(iteration, epoch, lr=self.lr0, milestones=self.milestones, gamma=self.lr_gamma,
                              warmup_iters=self.warmup_iters, warmup_ratio=self.warmup_ratio)
            return StepSettings((lr, lr, lr), self.momentum, full_accumulate)
        lr = self.epoch_lr(epoch)
        if self.warmup_iters <= 0 or iteration > self.warmup_iters:
            return StepSettings((lr, lr, lr), self.momentum, full_accumulate)
        span = [0, self.warmup_iters]
        bias_lr = float(np.interp(iteration, span, [self.warmup_bias_lr, lr]))
        weight_lr = float(np.interp(iteration, span, [0.0, lr]))
        momentum = float(np.interp(iteration, span, [self.warmup_momentum, self.momentum]))
        # np.round: half to even, like YOLOv5's ``np.interp(...).round()``.
        ramp_end = 1.0 if self.nominal_batch is None else self.nominal_batch / self.batch_size
        accumulate = max(1, int(np.round(np.interp(iteration, span, [1, ramp_end]))))
        return StepSettings((bias_lr, weight_lr, weight_lr), momentum, accumulate)


def apply_settings(optimizer: torch.optim.Optimizer, settings: StepSettings) -> None:
    for group, lr in zip(optimizer.param_groups, settings.lrs, strict=True):
        group["lr"] = lr
        group["momentum"] = settings.momentum
