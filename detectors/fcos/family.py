"""FCOS as a family of the detector contract (``detectors.api.Family``): sizes, recipe, tap sets, builders.

Torch-free on import (the builders import the network when called), so that ``detectors.zoo`` and the
config validation can read it cheaply. Tap sets: ``taps.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detectors.api import DetectionLoss, Family, Recipe, TapSet
from detectors.fcos.taps import DEFAULT_TAPS, TAP_SETS

# fcos_resnet50_fpn: torchvision's model; fcos_tiny: the narrow test size (base width 16, FPN 64);
# fcos_resnet50_fpn_mmdet2: MMDetection 2.x's fcos_r50_caffe_fpn_gn-head (the preset of the paper's counts).
SIZES = ("fcos_resnet50_fpn", "fcos_tiny", "fcos_resnet50_fpn_mmdet2")

# torchvision's detection reference (references/detection/README, "FCOS ResNet-50 FPN": --epochs 26
# --lr-steps 16 22 --lr 0.01 --amp, 8 GPUs x 2 images; train.py's SGD, engine.py's warmup), in our engine's terms:
# - plain SGD (no Nesterov), momentum 0.9, weight decay 1e-4 on every parameter (train.weight_decay_scope
#   all), lr 0.01 for batch 16, one step per batch (no nominal batch), the loss a mean over the batch's
#   foreground points (not multiplied by the batch size).
# - train.schedule multistep: lr x 0.1 at 16/26 and 22/26 of the run; linear warmup from lr0 / 1000 over
#   1000 iterations (torchvision caps it at the first epoch's length - 1: configs/fcos-kitti.yaml sets one
#   epoch). MMDetection's FCOS 1x: 500 iterations from lr0 / 3, steps at epochs 8 and 11 of 12.
# - No EMA, no gradient clipping; horizontal flip is the only augmentation.
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
    from detectors.fcos.model import FCOS

    return FCOS(size, num_classes, taps=taps, **options)


def build_loss(model: Any, cfg: Any) -> DetectionLoss:
    """``FCOSLoss`` for ``model`` (its strides, centre-sampling radius and point layout)."""
    from detectors.fcos.loss import FCOSLoss

    return FCOSLoss(model.strides, center_sampling_radius=model.center_sampling_radius,
                    point_offset=model.point_offset)


def load_weights(model: Any, path: Path):
    """torchvision and MMDetection FCOS checkpoints, plain state dicts (``weights.py``)."""
    from detectors.fcos.weights import load_weights as load

    return load(model, path)


FAMILY = Family(
    name="fcos", sizes=SIZES, build_model=build_model, build_loss=build_loss, load_weights=load_weights,
    recipe=RECIPE, tap_sets=TAP_SETS, default_taps=DEFAULT_TAPS, small_size="fcos_tiny",
)
