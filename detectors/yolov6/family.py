"""YOLOv6 (meituan/YOLOv6 release 0.2.1) as a family of the detector contract: sizes, recipe, L_gt settings,
tap sets, builders.

Torch-free on import (the builders import the network when called), so that ``detectors.zoo`` and the
config validation can read it cheaply. Tap sets: ``taps.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectors.api import DetectionLoss, Family, Recipe, TapSet
from detectors.config_fields import rule
from detectors.yolov6.taps import DEFAULT_TAPS, TAP_SETS

SIZES = ("yolov6n", "yolov6t", "yolov6s", "yolov6m", "yolov6l")
IOU_TYPES = ("giou", "siou", "diou", "ciou", "iou")

# Their configs' solver + data_aug dicts (configs/yolov6s.py) and trainer (yolov6/core/engine.py, solver/build.py),
# in our engine's terms:
# - SGD Nesterov, momentum 0.937, three groups (BN weights, decayed weights, biases: ours), weight decay 5e-4
#   scaled by batch * accumulate / 64 with gradients accumulated to ~64 images (nominal_batch 64: ours).
# - lr: their trainer multiplies the config's lr0 0.01 by batch / 32 (their default batch 32); the recipe
#   cannot scale with the batch, so it holds their lr at our default batch 16, 0.01 * 16 / 32; a config with
#   another batch sets train.lr0 = 0.01 * batch / 32 (yolov6n's config has lr0 0.02: 0.02 * batch / 32).
# - Cosine per epoch, lf(e) = ((1 - cos(e * pi / epochs)) / 2) * (lrf - 1) + 1 with lrf 0.01: YOLOv5's
#   one-cycle form, train.schedule cosine. Warmup 3 epochs (bias lr from 0.1, momentum from 0.8), linear,
#   as ours, but theirs lasts at least 1000 iterations (max(3 epochs, 1000)): the engine cannot express
#   that floor (train.warmup_iters is a fixed count); on short runs set train.warmup_iters yourself.
# - EMA decay 0.9999 with YOLOv5's ramp (their ModelEMA). No gradient clipping. L_gt per batch, not
#   multiplied by the batch size.
# - Augmentation (YOLOv5-style code): mosaic 1.0, mixup 0 (M/L: 0.1, scale 0.9: set in the config), HSV gains
#   0.015 / 0.7 / 0.4, translate 0.1, scale 0.5, flip 0.5, no rotation or shear, mosaic and mixup off in the
#   last 15 epochs (their --stop_aug_last_n_epoch).
RECIPE = Recipe(
    lr0=0.01 * 16 / 32, lrf=0.01, momentum=0.937, weight_decay=5e-4, warmup_epochs=3.0, warmup_momentum=0.8,
    warmup_bias_lr=0.1, ema_decay=0.9999, nominal_batch=64, loss_scaled_by_batch=False, grad_clip=None,
    augment={
        "style": "yolov5", "mosaic": 1.0, "mixup": 0.0, "degrees": 0.0, "translate": 0.1, "scale": 0.5,
        "shear": 0.0, "perspective": 0.0, "hsv_mode": "gain", "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4,
        "flipud": 0.0, "fliplr": 0.5, "close_mosaic": 15,
    },
)


@dataclass
class YOLOv6GtConfig:
    """``losses.gt`` of YOLOv6: their ``ComputeLoss`` constants (defaults are 0.2.1's)."""

    # ATSS assigns in their 0-based epochs < warmup_epoch (our epochs 1..4), TAL after.
    warmup_epoch: int = rule(4, ge=0)
    # Box loss; null: the size's config (giou for s/m/l, siou for n/t).
    iou_type: str | None = rule(None, choices=IOU_TYPES)
    class_weight: float = rule(1.0, ge=0.0)  # varifocal loss
    iou_weight: float = rule(2.5, ge=0.0)
    dfl_weight: float = rule(0.5, ge=0.0)  # distribution focal loss (m/l; the other sizes have no DFL)
    atss_topk: int = rule(9, ge=1)  # candidates per level and object
    tal_topk: int = rule(13, ge=1)
    tal_alpha: float = rule(1.0, ge=0.0)  # alignment metric score ** alpha * IoU ** beta
    tal_beta: float = rule(6.0, ge=0.0)


def build_model(size: str, num_classes: int, taps: TapSet | None = None, **options: Any):
    from detectors.yolov6.model import YOLOv6

    return YOLOv6(size, num_classes, taps=taps, **options)


def build_loss(model: Any, cfg: Any) -> DetectionLoss:
    """``YOLOv6Loss`` for ``model`` with ``cfg.losses.gt`` (a ``YOLOv6GtConfig``; defaults when absent)."""
    from detectors.yolov6.loss import YOLOv6Loss

    settings = getattr(getattr(cfg, "losses", None), "gt", None)
    if not isinstance(settings, YOLOv6GtConfig):
        settings = YOLOv6GtConfig()
    return YOLOv6Loss(model.num_classes, model.strides, reg_max=model.spec.reg_max,
                      iou_type=settings.iou_type or model.spec.iou_type, settings=settings)


def load_weights(model: Any, path: Path):
    """Their ``.pt`` checkpoints (pickled model, restricted reader) and plain state dicts (``weights.py``)."""
    from detectors.yolov6.weights import load_weights as load

    return load(model, path)


FAMILY = Family(
    name="yolov6", sizes=SIZES, build_model=build_model, build_loss=build_loss, load_weights=load_weights,
    recipe=RECIPE, tap_sets=TAP_SETS, default_taps=DEFAULT_TAPS, small_size="yolov6n", gt_config=YOLOv6GtConfig,
)
