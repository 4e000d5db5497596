"""RetinaNet as a family of the detector contract (``detectors.api.Family``): sizes, recipe, tap sets, builders.

Torch-free on import (the builders import the network when called), so that ``detectors.zoo`` and the
config validation can read it cheaply. Tap sets: ``taps.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detectors.api import DetectionLoss, Family, Recipe, TapSet
from detectors.retinanet.taps import DEFAULT_TAPS, TAP_SETS

# retinanet_resnet50_fpn: torchvision's model; retinanet_tiny: the narrow test size (base width 16, FPN 64);
# retinanet_resnet50_fpn_mmdet2: MMDetection 2.x's retinanet_r50_fpn (P6 from C5; model.py).
SIZES = ("retinanet_resnet50_fpn", "retinanet_tiny", "retinanet_resnet50_fpn_mmdet2")

# torchvision's detection reference (references/detection/README, "RetinaNet": --epochs 26 --lr-steps 16 22
# --lr 0.01, 8 GPUs x 2 images; train.py's SGD, engine.py's warmup), in our engine's terms:
# - plain SGD (no Nesterov), momentum 0.9, weight decay 1e-4 on every parameter (train.weight_decay_scope
#   all), lr 0.01 for batch 16, one step per batch (no nominal batch), the loss a mean over images of
#   per-image sums / foreground anchors (not multiplied by the batch size).
# - train.schedule multistep: lr x 0.1 at 16/26 and 22/26 of the run; linear warmup from lr0 / 1000 over
#   1000 iterations (torchvision caps it at the first epoch's length - 1; MMDetection's 1x schedule: 500
#   iterations from 0.001, steps at epochs 8 and 11 of 12, i.e. the same fractions ~0.67 / 0.92).
# - No EMA; no gradient clipping (MMDetection's RetinaNet clips at 35: set train.grad_clip 35 for theirs).
#   Horizontal flip is the only augmentation.
RECIPE = Recipe(
    lr0=0.01, lrf=0.01, momentum=0.9, weight_decay=1e-4, warmup_epochs=0.0, warmup_momentum=0.9,
    warmup_bias_lr=0.0, ema_decay=0.9999, nominal_batch=None, loss_scaled_by_batch=False, schedule="multistep",
    lr_steps=(16 / 26, 22 / 26), lr_gamma=0.1, warmup_iters=1000, warmup_ratio=0.001, nesterov=False,
    weight_decay_scope="all", ema=False, grad_clip=None, stride_multiple=128,
    augment={
        "mosaic": 0.0, "mixup": 0.0, "degrees": 0.0, "translate": 0.0, "scale": [1.0, 1.0], "shear": 0.0,
        "perspective": 0.0, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "flipud": 0.0, "fliplr": 0.5,
        "close_mosaic": 0,
    },
)


def build_model(size: str, num_classes: int, taps: TapSet | None = None, **options: Any):
    from detectors.retinanet.model import RetinaNet

    return RetinaNet(size, num_classes, taps=taps, **options)


def build_loss(model: Any, cfg: Any) -> DetectionLoss:
    """``RetinaNetLoss`` with the model's IoU thresholds (torchvision's 0.5 / 0.4)."""
    from detectors.retinanet.loss import RetinaNetLoss

    return RetinaNetLoss(model.fg_iou_thresh, model.bg_iou_thresh)


def load_weights(model: Any, path: Path):
    """torchvision and MMDetection RetinaNet checkpoints, ImageNet ResNet-50, plain state dicts (``weights.py``)."""
    from detectors.retinanet.weights import load_weights as load

    return load(model, path)


FAMILY = Family(
    name="retinanet", sizes=SIZES, build_model=build_model, build_loss=build_loss, load_weights=load_weights,
    recipe=RECIPE, tap_sets=TAP_SETS, default_taps=DEFAULT_TAPS, small_size="retinanet_tiny",
)
