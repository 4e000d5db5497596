"""YOLOX as a family of the detector contract (``detectors.api.Family``): sizes, recipe, tap sets, builders.

Torch-free on import (the builders import the network when called), so that ``detectors.zoo`` and the
config validation can read it cheaply. Tap sets: ``taps.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectors.api import DetectionLoss, Family, Recipe, TapSet
from detectors.config_fields import rule
from detectors.yolox.taps import DEFAULT_TAPS, TAP_SETS

SIZES = ("yolox_nano", "yolox_tiny", "yolox_s", "yolox_m", "yolox_l", "yolox_x")

# Megvii's exps/default/yolox_s.py + yolox/exp/yolox_base.py, in our engine's terms:
# - SGD (Nesterov), momentum 0.9, weight decay 5e-4 on conv weights only (the engine's three groups are
#   theirs: BN weights and biases undecayed); lr 0.01 per 64 images (``basic_lr_per_img`` 0.01 / 64) with
#   one step per batch (no nominal batch) and the loss not multiplied by the batch size. The recipe cannot
#   scale lr0 with the batch, so it holds YOLOX's lr at the default batch 16, 0.01 * 16 / 64; a config with
#   another batch sets train.lr0 = 0.01 * batch / 64 (configs/yolox_s-kitti.yaml does).
# - train.schedule yolox_cosine (their yoloxwarmcos): quadratic warmup from 0 over 5 epochs, cosine to
#   lr0 * 0.05 (min_lr_ratio), held there for the last no_aug_epochs; no momentum or bias warmup (the
#   warmup_* values are unused by that schedule). EMA decay 0.9998. They clip no gradients: the engine's
#   train.grad_clip is not part of a recipe, set it to null for their exact recipe.
# - Augmentation (data.augment, style yolox): mosaic 1.0, mixup 1.0, HSV (additive, OpenCV units 5 / 30 /
#   30), flip 0.5, degrees 10, translate 0.1, mosaic scale [0.1, 2], shear 2, no affine without a mosaic,
#   and no mosaic or mixup in the last 15 epochs (no_aug_epochs), when the loss also turns its L1 term on
#   (``YOLOXLoss.start_epoch``). yolox_tiny / yolox_nano's exps use scale [0.5, 1.5] and no mixup (nano
#   also mosaic 0.5): set them in the config.
RECIPE = Recipe(
    lr0=0.01 * 16 / 64, lrf=0.05, momentum=0.9, weight_decay=5e-4, warmup_epochs=5.0, warmup_momentum=0.9,
    warmup_bias_lr=0.0, ema_decay=0.9998, nominal_batch=None, loss_scaled_by_batch=False,
    schedule="yolox_cosine",
    augment={
        "style": "yolox", "mosaic": 1.0, "mixup": 1.0, "degrees": 10.0, "translate": 0.1, "scale": [0.1, 2.0],
        "shear": 2.0, "perspective": 0.0, "affine_without_mosaic": False, "hsv_mode": "shift", "hsv_h": 5.0,
        "hsv_s": 30.0, "hsv_v": 30.0, "flipud": 0.0, "fliplr": 0.5, "close_mosaic": 15,
    },
)


@dataclass
class YOLOXGtConfig:
    """``losses.gt`` of YOLOX: its loss has no gains; the one setting is SimOTA's geometry prior."""

    # "main" (Megvii's main branch: a cell centre within 1.5 strides of the box centre) or "0.3.0" (their
    # release: inside the box or within 2.5 strides); see assignment.py.
    simota_prior: str = rule("main", choices=("main", "0.3.0"))


def build_model(size: str, num_classes: int, taps: TapSet | None = None, **options: Any):
    from detectors.yolox.model import YOLOX

    return YOLOX(size, num_classes, taps=taps, **options)


def build_loss(model: Any, cfg: Any) -> DetectionLoss:
    """``YOLOXLoss`` for ``model``; ``cfg`` (a ``RunConfig``) gives the SimOTA prior and the L1 switch."""
    from detectors.yolox.loss import YOLOXLoss

    # L1 is on exactly when mosaic is off: data.augment.close_mosaic when set, else this recipe's (the
    # value the data layer and the schedule resolve too).
    close_mosaic = cfg.data.augment.close_mosaic
    no_aug_epochs = RECIPE.augment["close_mosaic"] if close_mosaic is None else close_mosaic
    return YOLOXLoss(model.num_classes, model.strides, simota_prior=cfg.losses.gt.simota_prior,
                     no_aug_epochs=no_aug_epochs)


def load_weights(model: Any, path: Path):
    """Megvii's ``.pth`` checkpoints (restricted reader) and plain state dicts (``weights.py``)."""
    from detectors.yolox.weights import load_weights as load

    return load(model, path)


FAMILY = Family(
    name="yolox", sizes=SIZES, build_model=build_model, build_loss=build_loss, load_weights=load_weights,
    recipe=RECIPE, tap_sets=TAP_SETS, default_taps=DEFAULT_TAPS, gt_config=YOLOXGtConfig,
)
