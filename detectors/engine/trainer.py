"""The single-run trainer: ``fit(cfg, workdir)`` trains one detector with eq 7 and returns its metrics.

One epoch = the train loader once (capped at ``train.max_steps_per_epoch``), then, every
``eval_interval`` epochs and at the last, COCO-style evaluation of the EMA weights on the val split,
then ``workdir/checkpoints/last.pt`` (and ``best.pt`` when the fitness improved), then the
``after_epoch`` callbacks. The detector, its loss L_gt and its weight loader come from its family
(``detectors.zoo``, contract in ``detectors.api``); the loop never names a family. Optimisation as
YOLOv5 v7.0's recipe (``detectors.engine.schedule``, ``detectors.engine.ema``): three SGD groups,
warmup, cosine lr, nominal batch (``train.nominal_batch``), EMA, AMP and channels_last on CUDA; the
values come from the config, whose defaults come from the family's ``Recipe`` (YOLOX's per-iteration
cosine, torchvision's / MMDetection's multistep with plain SGD for the ResNet-FPN families).

Each step backpropagates eq 7 in the family's batch convention: YOLOv5's
``batch_size * (L_gt + lambda_distill * L_distill + lambda_mask * L_mask)`` when
``recipe.loss_scaled_by_batch``, else the same sum unscaled, with the distillation modules
(``detectors.distillation``) trained and checkpointed beside the detector. At the start of every epoch
the model, the loss and the training dataset get ``start_epoch(epoch, epochs)`` when they define it.

Callbacks implement any of ``before_train(trainer)``, ``after_step(trainer, step, items)`` (``step`` is
the 1-based iteration count over the whole run; ``items`` the step's per-image loss terms as floats,
keys as ``trainer.loss_terms``), ``after_epoch(trainer, epoch, metrics)`` (after the epoch's checkpoint is on
disk) and ``after_train(trainer, metrics)``. The loop never looks at what a callback is. ``items`` is a
mapping read from the device on first access: a callback that reads it every step syncs every step.

No host-device sync per step (issue 13): the loss terms stay on the device and are read every
``loss_read_interval`` steps and at the end of the epoch (``detectors.engine.loss_log``), with the
non-finite check naming the same epoch, step and term as a check inside the step (it raises at the
read, before any evaluation or checkpoint of that epoch); step time is measured with CUDA events
(``detectors.engine.step_timer``); EMA, SGD and gradient clipping update all tensors per call
(``_foreach``; fused SGD on CUDA). ``train.compile`` compiles the model's forward (``model``) or
forward + eq 7 (``step``) with ``torch.compile``.

One deliberate difference from YOLOv5: gradients still accumulating at the end of an epoch are applied
then, not carried into the next epoch, so that every checkpoint holds the complete training state and a
resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from detectors.config import RunConfig, config_to_dict
from detectors.data import build_dataloader, load_samples
from detectors.data.augment import resolve_augment
from detectors.distillation import build_distillation_for
from detectors.engine.checkpoint import (
    BEST,
    LAST,
    check_resumable,
    copy_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from detectors.engine.ema import ModelEMA
from detectors.engine.loss_log import LossLog, StepLosses
from detectors.engine.schedule import (
    DECAY_GROUP,
    Schedule,
    apply_settings,
    build_sgd,
    scaled_weight_decay,
    set_multi_tensor,
)
from detectors.engine.step_timer import StepTimer
from detectors.engine.term_gradients import TermGradientProbe
from detectors.engine.threads import use_threads
from detectors.engine.validate import eval_loader, fitness, load_model_weights, resolve_device, validate
from detectors.errors import ConfigError
from detectors.zoo import build_detector_for, family_of

log = logging.getLogger(__name__)

EPOCH_HOOK = "start_epoch"  # detectors.api: start_epoch(epoch, epochs) on model, loss, distillation, dataset
# Steps between reads of the loss terms from the device (and non-finite checks); also read at epoch end.
LOSS_READ_INTERVAL = 50
# torch.compile's backend for train.compile (tests swap in "eager" to check the wiring quickly).
COMPILE_BACKEND = "inductor"


def fit(
    cfg: RunConfig,
    workdir: str | Path,
    *,
    callbacks: Iterable[Any] = (),
    resume: str | Path | None = None,
    weights: str | Path | None = None,
) -> dict[str, float]:
    """Train per ``cfg`` in ``workdir``; returns the last epoch's metrics (CONTRIBUTING.md names).

    ``resume``: a checkpoint file, or a folder holding ``last.pt``; training continues at the next epoch.
    ``weights``: initial weights (overrides ``cfg.detector.weights``; ignored when resuming).
    """
    trainer = Trainer(cfg, workdir, callbacks=callbacks, weights=None if resume else weights)
    return trainer.fit(resume=resume)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """The state of one run. Callbacks receive it and may read any attribute; setting
    ``stop_requested = True`` ends the run after the current epoch (its checkpoint is written)."""

    def __init__(
        self,
        cfg: RunConfig,
        workdir: str | Path,
        *,
        callbacks: Iterable[Any] = (),
        weights: str | Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.workdir = Path(workdir)
        self.checkpoint_dir = self.workdir / "checkpoints"
        self.callbacks = list(callbacks)
        self.device = resolve_device(cfg.train.device)
        self.use_cuda = self.device.type == "cuda"
        self.amp = self.use_cuda and cfg.train.amp
        # channels_last (NHWC) on every device: cuDNN's tensor-core kernels want it on GPUs, and on the CPU
        # oneDNN's convolutions made a YOLOv5n training step 15-30% faster, YOLOv5s ~4% (bench_train_step.py).
        self.channels_last = True
        train = cfg.train
        # Before anything runs: the thread count decides speed on a shared CPU and float summation order
        self.threads = use_threads(train.threads)

        seed_everything(cfg.seed)
        self.family = family_of(cfg.detector.name)
        self.model = build_detector_for(cfg)
        weights = weights if weights is not None else cfg.detector.weights
        if weights:
            load_model_weights(self.model, weights, self.family.load_weights)
        # losses.method's training-only module (with its frozen teacher, loaded here, when it has one)
        self.distillation = build_distillation_for(cfg, self.model)
        self.model.to(self.device)
        self.distillation.to(self.device)
        if self.use_cuda:
            torch.backends.cudnn.benchmark = True
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
            self.distillation.to(memory_format=torch.channels_last)
        self.loss_fn = self.family.build_loss(self.model, cfg)
        # Per-image loss terms, logged as ``loss/<name>``; the first non-finite one is named in the error.
        self.loss_terms = ("total", "gt", *(f"gt/{t}" for t in self.loss_fn.term_names),
                           *self.distillation.term_names)
        self.optimizer = build_sgd(
            [self.model, self.distillation],
            lr=train.lr0,
            momentum=train.momentum,
            weight_decay=scaled_weight_decay(train.weight_decay, train.batch_size, train.nominal_batch),
            fused=self.use_cuda,
            nesterov=train.nesterov,
            weight_decay_scope=train.weight_decay_scope,
        )
        self.parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.ema = ModelEMA(self.model, decay=train.ema_decay) if train.ema else None
        self.loss_log = LossLog(self.loss_terms,
                                lambda values, epoch, step: _non_finite_message(values, self.loss_terms, epoch, step))
        self.loss_read_interval = LOSS_READ_INTERVAL
        self.step_timer = StepTimer(self.device)
        self._forward_loss = self._compiled_forward_loss(train.compile)
        self.probe = (TermGradientProbe(train.diagnose_every, self.model.parameters(), train.grad_clip)
                      if train.diagnose_every else None)

        self.train_samples = load_samples(cfg.data, "train")
        self.val_samples = load_samples(cfg.data, "val")
        for key, split, samples in (("train", cfg.data.train, self.train_samples), ("val", cfg.data.val, self.val_samples)):
            if not samples:
                raise ConfigError(f"data.{key}: the split {split!r} under {cfg.data.root} has no images")
        self.train_loader = build_dataloader(
            cfg.data, self.train_samples, batch_size=train.batch_size, augment=True, shuffle=True,
            seed=cfg.seed, pin_memory=self.use_cuda, epochs=train.epochs,  # epochs: close_mosaic's switch-off
            augment_defaults=self.family.recipe.augment,
        )
        self.val_loader = eval_loader(cfg, self.val_samples, pin_memory=self.use_cuda)
        self.steps_per_epoch = min(len(self.train_loader), train.max_steps_per_epoch or len(self.train_loader))
        # The run's last epochs without mosaic (close_mosaic) are where yolox_cosine holds its minimum lr.
        no_aug_epochs = resolve_augment(cfg.data.augment, self.family.recipe.augment).close_mosaic
        self.schedule = Schedule.from_config(train, steps_per_epoch=self.steps_per_epoch, no_aug_epochs=no_aug_epochs)

        self.epoch = 0  # completed epochs
        self.global_step = 0  # completed iterations (batches), over the whole run
        self.best_fitness = -math.inf
        self.history: list[dict[str, float]] = []
        self.last_checkpoint: Path | None = None
        self.best_checkpoint: Path | None = None
        self.stop_requested = False

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated and selected: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    # -----------------------------------------------------------------------------------------
    # the loop

    def fit(self, resume: str | Path | None = None) -> dict[str, float]:
        if resume is not None:
            self.load_state(resolve_checkpoint(resume))
        log.info("training %s on %s (AMP %s, %d CPU threads), %d steps per epoch, epochs %d..%d",
                 self.cfg.detector.name, self.device, self.amp, self.threads, self.steps_per_epoch, self.epoch + 1,
                 self.cfg.train.epochs)
        self._emit("before_train", self)
        metrics = self.history[-1] if self.history else {}
        for epoch in range(self.epoch + 1, self.cfg.train.epochs + 1):
            metrics = self.run_epoch(epoch)
            if self.stop_requested:
                log.info("stop requested by a callback after epoch %d", epoch)
                break
        self._emit("after_train", self, metrics)
        return metrics

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """Train, evaluate when due, checkpoint, then call ``after_epoch``. ``epoch`` counts from 1."""
        started = time.perf_counter()
        self.model.train()
        self.distillation.train()
        self.loss_log.start_epoch()
        self.step_timer.reset()
        nb = self.steps_per_epoch
        first = (epoch - 1) * nb  # global index of this epoch's first iteration
        last_step_at = first - 1  # the previous epoch flushed its gradients
        self.train_loader.sampler.set_epoch(epoch - 1)  # order and augmentation depend on (seed, epoch)
        for part in (self.model, self.loss_fn, self.distillation, self.train_loader.dataset):
            hook = getattr(part, EPOCH_HOOK, None)
            if hook is not None:
                hook(epoch, self.cfg.train.epochs)
        for i, batch in enumerate(self.train_loader):
            if i >= nb:
                break
            iteration = first + i
            settings = self.schedule.at(iteration, epoch - 1)
            apply_settings(self.optimizer, settings)
            self.step_timer.start()
            items = self.train_step(batch, epoch, i + 1, probe=self.probe is not None and self.probe.due(iteration))
            if iteration - last_step_at >= settings.accumulate:
                self.optimizer_step()
                last_step_at = iteration
            self.step_timer.stop()
            if (i + 1) % self.loss_read_interval == 0:
                self.loss_log.read()  # raises NonFiniteLossError naming the first bad step
            self.global_step = iteration + 1
            self._emit("after_step", self, self.global_step, items)
        if last_step_at < first + nb - 1:  # gradients still accumulating: apply them within this epoch
            self.step_timer.start()
            self.optimizer_step()
            self.step_timer.stop()

        metrics: dict[str, float] = {"epoch": epoch, "lr": self.optimizer.param_groups[DECAY_GROUP]["lr"]}
        metrics.update({f"loss/{name}": value for name, value in self.loss_log.means().items()})
        if self.probe is not None:
            metrics.update(self.probe.epoch_metrics())
        metrics["time/train_steps"] = self.step_timer.seconds()
        metrics["time/eval"] = 0.0
        improved = False
        if epoch % self.cfg.train.eval_interval == 0 or epoch == self.cfg.train.epochs:
            eval_started = time.perf_counter()
            metrics.update(self.evaluate())
            metrics["time/eval"] = time.perf_counter() - eval_started
            score = fitness(metrics)
            improved = score > self.best_fitness  # False for NaN
            if improved:
                self.best_fitness = score
        metrics["time/epoch"] = time.perf_counter() - started

        self.epoch = epoch
        self.history.append(metrics)
        self.last_checkpoint = save_checkpoint(self.state_dict(), self.checkpoint_dir / LAST)
        if improved:
            self.best_checkpoint = copy_checkpoint(self.last_checkpoint, self.checkpoint_dir / BEST)
        self._emit("after_epoch", self, epoch, metrics)
        return metrics

    def train_step(self, batch: Any, epoch: int, step: int, *, probe: bool = False) -> StepLosses:
        """Forward, eq 7, backward (no optimiser step). Returns the per-image terms, read lazily: they stay
        on the device until ``loss_log`` reads them (see the module docstring). ``probe``: also take each
        term's gradient first (``train.diagnose_every``; the uncompiled forward, the same graph)."""
        images = batch.images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = batch.targets.to(self.device, non_blocking=True)
        if probe:
            loss, values, parts, scale = self.forward_loss(images, targets, keep_parts=True)
            self.probe.probe(parts, scale)
        else:
            loss, values = self._forward_loss(images, targets)
        items = self.loss_log.add(values, epoch=epoch, step=step, batch_size=images.shape[0])
        self.scaler.scale(loss).backward()
        return items

    def flush_losses(self) -> None:
        """Read the pending loss terms now (raises ``NonFiniteLossError`` for a non-finite one)."""
        self.loss_log.read()

    def forward_loss(self, images: torch.Tensor, targets: torch.Tensor, *, keep_parts: bool = False) -> tuple:
        """Eq 7 in the family's batch convention, and the detached per-image terms in ``loss_terms`` order;
        ``keep_parts``: also the backpropagated loss split by term and the batch scale (the probe's input)."""
        batch_size = images.shape[0]
        with torch.autocast(self.device.type, enabled=self.amp):
            output = self._forward_model(images)
            gt_total, items = self.loss_fn(output, targets)
            terms = self.distillation(output, targets, self.cfg.data.img_size, images=images)
        scale = batch_size if self.family.recipe.loss_scaled_by_batch else 1
        loss = self.distillation.total_loss(gt_total, terms, scale)  # eq 7 in the family's batch convention

        gt_items = [items[k].float() for k in self.loss_fn.term_names]
        per_image = loss.detach() / scale
        values = torch.stack([per_image.float(), torch.stack(gt_items).sum(), *gt_items,
                              *(terms[k].detach().float() for k in self.distillation.term_names)])
        if keep_parts:
            split = getattr(self.distillation, "contributions", None)
            parts = split(gt_total, terms, scale) if split else {"gt": gt_total, "method": loss - gt_total}
            return loss, values, parts, scale
        return loss, values

    def _compiled_forward_loss(self, mode: str):
        """``forward_loss`` as ``train.compile`` asks: plain (``none``), with the model's forward compiled
        (``model``), or compiled whole (``step``: forward + eq 7 in one graph, whose backward AOTAutograd
        compiles too). The compiled module shares ``self.model``'s parameters: checkpoints keep their keys."""
        self._forward_model = torch.compile(self.model, backend=COMPILE_BACKEND) if mode == "model" else self.model
        if mode == "step":
            return torch.compile(self.forward_loss, backend=COMPILE_BACKEND)
        return self.forward_loss

    def optimizer_step(self) -> None:
        if self.cfg.train.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            # foreach: one norm and one scaling call over all gradients (torch's CPU default is a loop)
            norm = torch.nn.utils.clip_grad_norm_(self.parameters, max_norm=self.cfg.train.grad_clip, foreach=True)
            if self.probe is not None:
                self.probe.record_total_norm(norm)
        elif self.probe is not None:
            self.probe.record_total_norm(torch.nn.utils.get_total_norm(
                [p.grad for p in self.parameters if p.grad is not None], foreach=True))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

    def evaluate(self) -> dict[str, float]:
        return validate(self.eval_model, self.val_samples, self.val_loader, self.cfg, device=self.device,
                        amp=self.amp, channels_last=self.channels_last)

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(*args)

    # -----------------------------------------------------------------------------------------
    # checkpoint state

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "detector": self.cfg.detector.name,
            "class_names": list(self.cfg.data.classes),
            "config": config_to_dict(self.cfg),
            "metrics": self.history[-1] if self.history else {},
            "history": self.history,
            "best_fitness": self.best_fitness,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "distillation": self.distillation.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
        }

    def load_state(self, path: Path) -> None:
        state = load_checkpoint(path)
        check_resumable(state["config"], self.cfg, path)
        self.model.load_state_dict(state["model"])
        self.distillation.load_state_dict(state["distillation"])
        if self.ema is not None:
            if state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
            else:  # EMA switched on for the rest of the run: start it from the current weights
                self.ema = ModelEMA(self.model, decay=self.cfg.train.ema_decay)
        self.optimizer.load_state_dict(state["optimizer"])
        set_multi_tensor(self.optimizer, fused=self.use_cuda)  # saved groups carry the saving device's choice
        if self.amp and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.best_fitness = float(state["best_fitness"])
        self.history = list(state["history"])
        restore_rng_state(state["rng"])
        self.last_checkpoint = path
        best = path.parent / BEST
        self.best_checkpoint = best if best.is_file() else None
        log.info("resumed from %s after epoch %d", path, self.epoch)


def _non_finite_message(values: dict[str, float], names: tuple[str, ...], epoch: int, step: int) -> str:
    # Name the component that went bad, not the sums it poisoned (total, gt).
    term = next((k for k in names[2:] if not math.isfinite(values[k])), "total")
    return (f"non-finite loss at epoch {epoch}, step {step}: loss/{term} = {values[term]} "
            f"(loss/total = {values['total']}); lower train.lr0 or check the data; not retried")
