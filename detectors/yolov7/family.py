"""YOLOv3, YOLOv4-CSP and YOLOv7 (WongKinYiu/yolov7) as three families of the detector contract.

Torch-free on import (the builders import the network when called), so that ``detectors.zoo`` and the
config validation read it cheaply. The three share one network (``model.py``, driven by ``layers.py``'s
tables), one loader of upstream checkpoints (``weights.py``) and one recipe; they differ in sizes, tap sets
(``taps.py``: YOLOv3's neck is FPN-only) and loss (``loss.py``: ``ComputeLoss`` for YOLOv3 / YOLOv4-CSP,
``ComputeLossOTA`` for YOLOv7).

Recipe: upstream's ``data/hyp.scratch.p5.yaml`` with their train.py's conventions (SGD momentum 0.937,
Nesterov, three groups with decay on weights only; nominal batch 64, weight decay scaled to it; loss
multiplied by the batch size; cosine ("linear_lr" off) from lr0 0.01 to lr0 * lrf 0.1 after 3 warmup
epochs; EMA 0.9999). Augmentation as hyp.scratch.p5: mosaic 1.0, mixup 0.15, translate 0.2, scale 0.9,
HSV gains 0.015 / 0.7 / 0.4, fliplr 0.5; their ``paste_in`` (0.15) has no counterpart in our data layer
and is not applied. YOLOv7-tiny trains upstream with ``hyp.scratch.tiny.yaml`` (lrf 0.01, translate 0.1,
scale 0.5, mixup 0.05, loss gains cls 0.5 / obj 1.0): a recipe is per family, so the tiny configs
(``configs/yolov7-smoke.yaml``) set those keys explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detectors.api import DetectionLoss, Family, Recipe, TapSet
from detectors.yolov7.gt_config import YOLOv7GtConfig, YOLOv7RepoGtConfig
from detectors.yolov7.taps import FPN_DEFAULT_TAPS, FPN_TAP_SETS, PAN_DEFAULT_TAPS, PAN_TAP_SETS

RECIPE = Recipe(
    lr0=0.01, lrf=0.1, momentum=0.937, weight_decay=0.0005, warmup_epochs=3.0, warmup_momentum=0.8,
    warmup_bias_lr=0.1, ema_decay=0.9999, nominal_batch=64, loss_scaled_by_batch=True,
    grad_clip=None,  # their train.py clips no gradients
    augment={
        "style": "yolov5", "mosaic": 1.0, "mixup": 0.15, "degrees": 0.0, "translate": 0.2, "scale": 0.9,
        "shear": 0.0, "perspective": 0.0, "hsv_mode": "gain", "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4,
        "flipud": 0.0, "fliplr": 0.5,
    },
)


def build_model(size: str, num_classes: int, taps: TapSet | None = None, **options: Any):
    from detectors.yolov7.model import YOLOv7Family

    return YOLOv7Family(size, num_classes, taps=taps, **options)


def build_loss(model: Any, cfg: Any) -> DetectionLoss:
    """The yolov7 repository's loss for ``model`` (``detectors/yolov7/loss.py``), settings from ``cfg``."""
    from detectors.yolov7.loss import build_loss as build

    return build(model, cfg)


def load_weights(model: Any, path: Path):
    """Upstream ``.pt`` checkpoints (restricted unpickler) and plain state dicts (``weights.py``)."""
    from detectors.yolov7.weights import load_weights as load

    return load(model, path)


YOLOV3 = Family(
    name="yolov3", sizes=("yolov3", "yolov3_spp"), build_model=build_model, build_loss=build_loss,
    load_weights=load_weights, recipe=RECIPE, tap_sets=FPN_TAP_SETS, default_taps=FPN_DEFAULT_TAPS,
    gt_config=YOLOv7RepoGtConfig,
)
YOLOV4 = Family(
    name="yolov4", sizes=("yolov4_csp",), build_model=build_model, build_loss=build_loss,
    load_weights=load_weights, recipe=RECIPE, tap_sets=PAN_TAP_SETS, default_taps=PAN_DEFAULT_TAPS,
    gt_config=YOLOv7RepoGtConfig,
)
YOLOV7 = Family(
    name="yolov7", sizes=("yolov7_tiny", "yolov7", "yolov7x"), build_model=build_model, build_loss=build_loss,
    load_weights=load_weights, recipe=RECIPE, tap_sets=PAN_TAP_SETS, default_taps=PAN_DEFAULT_TAPS,
    small_size="yolov7_tiny",
    gt_config=YOLOv7GtConfig,
)
