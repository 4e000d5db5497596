"""Evaluation of a detector on a split: predict, map boxes back to the original image, score COCO-style.

``validate`` is what the trainer runs every ``eval_interval`` epochs (on the EMA weights);
``evaluate_checkpoint`` is what ``mssd eval`` runs on a finished checkpoint or a weights file.
Metric names are CONTRIBUTING.md's: ``map, ap50, ap75, aps, apm, apl`` and ``ap/<class>``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detectors.api import Detections, WeightsReport
from detectors.config import RunConfig

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("map", "ap50", "ap75", "aps", "apm", "apl")


def fitness(metrics: dict[str, float]) -> float:
    """YOLOv5's model-selection score: 0.1 * AP50 + 0.9 * AP@[.5:.95]."""
    return 0.1 * float(metrics["ap50"]) + 0.9 * float(metrics["map"])


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device if there is one, else the CPU; otherwise as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from detectors.errors import ConfigError

        raise ConfigError(f"train.device: {name!r} asked for, but CUDA is not available; use cpu or auto")
    return device


@torch.no_grad()
def predict_batches(
    model: nn.Module, batches: Iterable[Any], *, conf: float, iou: float, max_det: int, device: torch.device,
    amp: bool = False, channels_last: bool = False,
) -> dict[int, Any]:
    """``{image_id: Detections}`` (numpy) in original-image pixels for every image of ``batches``."""
    was_training = model.training
    model.eval()
    predictions: dict[int, Detections] = {}
    autocast = torch.autocast(device.type, enabled=amp) if device.type == "cuda" else contextlib.nullcontext()
    try:
        for batch in batches:
            images = batch.images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast:
                per_image = model.predict(images, conf=conf, iou=iou, max_det=max_det)
            for detections, meta, image_id in zip(per_image, batch.metas, batch.image_ids, strict=True):
                boxes, scores, classes = detections.numpy()
                predictions[image_id] = Detections(meta.to_original(boxes), scores, classes)
    finally:
        model.train(was_training)
    return predictions


def summarise(result: dict[str, Any], class_names: list[str]) -> dict[str, float]:
    """``evaluate``'s dict -> flat metrics: the summary numbers plus ``ap/<class>``."""
    metrics = {key: float(result[key]) for key in SUMMARY_KEYS}
    per_class = result.get("per_class", {})
    for name in class_names:
        metrics[f"ap/{name}"] = float(per_class.get(name, float("nan")))
    return metrics


def validate(
    model: nn.Module, samples: list, loader: Iterable[Any], cfg: RunConfig, *, device: torch.device,
    amp: bool = False, channels_last: bool = False,
) -> dict[str, float]:
    """COCO-style metrics of ``model`` on ``samples`` (``loader`` yields their batches, unaugmented)."""
    from detectors.engine.evaluation import evaluate

    predictions = predict_batches(
        model, loader, conf=cfg.eval.conf, iou=cfg.eval.iou, max_det=cfg.eval.max_det, device=device,
        amp=amp, channels_last=channels_last,
    )
    classes = list(cfg.data.classes)
    return summarise(evaluate(samples, predictions, classes, backend=cfg.eval.backend), classes)


def eval_loader(cfg: RunConfig, samples: list, *, pin_memory: bool = False):
    """Unaugmented batches of ``samples``: rectangular ones (``eval.rect``, each letterboxed to its own
    minimal shape, ``detectors.data.rect_eval``) or square ``img_size`` ones; ``data.cache`` applies."""
    from detectors.data import build_dataloader

    batch_size = cfg.eval.batch_size or cfg.train.batch_size * 2
    if cfg.eval.rect:
        from detectors.data.image_cache import build_image_cache
        from detectors.data.rect_eval import build_rect_eval_loader
        from detectors.zoo import family_of

        return build_rect_eval_loader(
            samples, img_size=cfg.data.img_size, batch_size=batch_size, workers=cfg.data.workers,
            stride=family_of(cfg.detector.name).recipe.stride_multiple,
            cache=build_image_cache(cfg.data.cache, samples, cfg.data.img_size), pin_memory=pin_memory)
    return build_dataloader(cfg.data, samples, batch_size=batch_size, augment=False, shuffle=False,
                            seed=cfg.seed, pin_memory=pin_memory)


def load_model_weights(
    model: nn.Module, path: str | os.PathLike, family_loader: Callable[[nn.Module, Path], WeightsReport]
) -> None:
    """Load weights into ``model``: one of our checkpoints (its EMA weights when it has them, as YOLOv5
    does), or anything the family's loader reads (``Family.load_weights``: state dicts, official files)."""
    from detectors.engine.checkpoint import check_checkpoint, is_checkpoint
    from detectors.errors import MSSDError
    from detectors.weights import first_mismatch

    path = Path(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MSSDError(f"{path}: weights file not found") from None
    except Exception:  # an official Ultralytics pickle: not weights-only loadable; their reader handles it
        raw = None
    if is_checkpoint(raw):
        state = check_checkpoint(raw, path)
        weights = state["ema"]["module"] if state.get("ema") else state["model"]
        mismatch = first_mismatch(model.state_dict(), weights)
        if mismatch:
            saved = f"a {state['detector']} checkpoint" if state.get("detector") else "checkpoint"
            raise MSSDError(f"{path}: {saved} does not fit this {type(model).__name__} "
                            f"(another detector or class count?): {mismatch}")
        model.load_state_dict(weights)
        return
    report = family_loader(model, path)
    log.info("initial weights: %s", report.summary())


def evaluate_checkpoint(cfg: RunConfig, weights: str | os.PathLike) -> dict[str, float]:
    """Metrics of ``weights`` (a checkpoint or weights file) on ``cfg``'s val split, for ``mssd eval``."""
    from detectors.data import load_samples
    from detectors.zoo import build_detector_for, family_of

    device = resolve_device(cfg.train.device)
    model = build_detector_for(cfg)
    load_model_weights(model, weights, family_of(cfg.detector.name).load_weights)
    model.to(device)
    use_cuda = device.type == "cuda"
    model.to(memory_format=torch.channels_last)  # as the trainer: faster convolutions on GPU and CPU
    samples = load_samples(cfg.data, "val")
    loader = eval_loader(cfg, samples, pin_memory=use_cuda)
    return validate(model, samples, loader, cfg, device=device, amp=use_cuda and cfg.train.amp,
                    channels_last=True)
