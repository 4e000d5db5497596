"""Faster R-CNN and Cascade R-CNN as families of the detector contract (``detectors.api.Family``).

Torch-free on import (the builders import the network when called), so that ``detectors.zoo`` and the
config validation read it cheaply. Tap sets: ``taps.py``; the network: ``model.py``; the loss and why
it runs the RoI heads: ``loss.py``; weights: ``weights.py``.

Recipes (the engine's ``multistep`` schedule; both: plain-momentum SGD 0.9, weight decay 1e-4 on every
parameter, lr 0.02 for 16 images with one step per batch and the loss not multiplied by the batch size,
linear warmup from lr x 0.001, horizontal flips only, no EMA, no gradient clipping; lr0 is for batch 16:
scale it linearly with ``train.batch_size``):

- Faster R-CNN: torchvision's detection reference (``references/detection/train.py``): 26 epochs, lr x
  0.1 at epochs 16 and 22 (``lr_steps`` as fractions of the run), 1000 warmup iterations.
- Cascade R-CNN: MMDetection's ``cascade_rcnn_r50_fpn_1x`` (``schedule_1x.py``): 12 epochs, lr x 0.1 at
  epochs 8 and 11, 500 warmup iterations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detectors.api import DetectionLoss, Family, Recipe
from detectors.rcnn.taps import DEFAULT_TAPS, TAP_SETS

FASTER_SIZES = ("fasterrcnn_resnet50_fpn", "fasterrcnn_tiny")
CASCADE_SIZES = ("cascadercnn_resnet50_fpn", "cascadercnn_tiny")

_COMMON = dict(
    lr0=0.02, lrf=0.01, momentum=0.9, weight_decay=1e-4, warmup_epochs=1.0, warmup_momentum=0.9,
    warmup_bias_lr=0.0, ema_decay=0.9999, nominal_batch=None, loss_scaled_by_batch=False, schedule="multistep",
    lr_gamma=0.1, warmup_ratio=0.001, nesterov=False, weight_decay_scope="all", ema=False, grad_clip=None,
    stride_multiple=64,  # the "pool" level: every level of a batch then tiles the image exactly
    augment={
        "mosaic": 0.0, "mixup": 0.0, "degrees": 0.0, "translate": 0.0, "scale": [1.0, 1.0], "shear": 0.0,
        "perspective": 0.0, "affine_without_mosaic": False, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0,
        "flipud": 0.0, "fliplr": 0.5, "close_mosaic": 0,
    },
)
FASTER_RECIPE = Recipe(lr_steps=(16 / 26, 22 / 26), warmup_iters=1000, **_COMMON)
CASCADE_RECIPE = Recipe(lr_steps=(8 / 12, 11 / 12), warmup_iters=500, **_COMMON)


def build_model(size: str, num_classes: int, taps: Any = None, **options: Any):
    from detectors.rcnn.model import TwoStageDetector

    return TwoStageDetector(size, num_classes, taps=taps, **options)


def build_loss(model: Any, cfg: Any) -> DetectionLoss:
    """``RCNNLoss`` bound to ``model``: it runs the model's RPN loss and RoI heads (``loss.py``)."""
    from detectors.rcnn.loss import RCNNLoss

    return RCNNLoss(model)


def load_weights(model: Any, path: Path):
    """torchvision checkpoints / our state dicts, and MMDetection Cascade R-CNN checkpoints (``weights.py``)."""
    from detectors.rcnn.weights import load_weights as load

    return load(model, path)


FASTER_RCNN = Family(
    name="faster_rcnn", sizes=FASTER_SIZES, build_model=build_model, build_loss=build_loss,
    load_weights=load_weights, recipe=FASTER_RECIPE, tap_sets=TAP_SETS, default_taps=DEFAULT_TAPS,
    small_size="fasterrcnn_tiny",
)
CASCADE_RCNN = Family(
    name="cascade_rcnn", sizes=CASCADE_SIZES, build_model=build_model, build_loss=build_loss,
    load_weights=load_weights, recipe=CASCADE_RECIPE, tap_sets=TAP_SETS, default_taps=DEFAULT_TAPS,
    small_size="cascadercnn_tiny",
)
