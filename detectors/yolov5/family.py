"""YOLOv5 as a family of the detector contract (``detectors.api.Family``): sizes, recipe, tap sets, builders.

Torch-free on import (the builders import the network when called), so that ``detectors.zoo`` and the
config validation can read it cheaply. Tap sets are defined and documented in ``taps.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectors.api import DetectionLoss, Family, Recipe, TapSet
from detectors.config_fields import rule
from detectors.yolov5.taps import DEFAULT_TAPS, TAP_SETS

SIZES = ("yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x", "yolov5s_convnext")
# Detector name -> (YOLOv5 size of the neck and head, backbone replacing CSPDarknet). Table 4 of the paper:
# YOLOv5s with a ConvNeXt-T backbone (detectors/backbones/convnext.py; 1x1 Convs to the neck's channels).
BACKBONE_VARIANTS = {"yolov5s_convnext": ("yolov5s", "convnext_tiny")}
# Stochastic depth of the ConvNeXt backbone: ConvNeXt-T's ImageNet-1k setting (the paper gives none).
CONVNEXT_DROP_PATH = 0.1

# Ultralytics YOLOv5 v7.0 data/hyps/hyp.scratch-low.yaml and train.py (nominal batch 64, loss * batch),
# except lrf 0.1 (cosine to lr0 * 0.1, the paper's section 4.1 setting; hyp.scratch-low has 0.01).
# augment: empty, since the data layer's own defaults are hyp.scratch-low's.
RECIPE = Recipe(
    lr0=0.01, lrf=0.1, momentum=0.937, weight_decay=0.0005, warmup_epochs=3.0, warmup_momentum=0.8,
    warmup_bias_lr=0.1, ema_decay=0.9999, nominal_batch=64, loss_scaled_by_batch=True,
)


@dataclass
class YOLOv5GtConfig:
    """``losses.gt`` of YOLOv5: Ultralytics' loss gains (hyp.scratch-low), before ``loss.py`` scales them
    by levels, classes and image size as their train.py does."""

    box: float = rule(0.05, ge=0.0)
    obj: float = rule(1.0, ge=0.0)
    cls: float = rule(0.5, ge=0.0)
    anchor_t: float = rule(4.0, gt=1.0)  # a target matches an anchor within this width/height ratio
    label_smoothing: float = rule(0.0, ge=0.0, lt=1.0)


def build_model(size: str, num_classes: int, taps: TapSet | None = None, **options: Any):
    from detectors.yolov5.model import YOLOv5

    if size in BACKBONE_VARIANTS:
        from detectors.backbones.convnext import build_convnext

        size, variant = BACKBONE_VARIANTS[size]
        options.setdefault("backbone", build_convnext(variant, drop_path_rate=CONVNEXT_DROP_PATH))
    return YOLOv5(size, num_classes, taps=taps, **options)


def build_loss(model: Any, cfg: Any) -> DetectionLoss:
    """``YOLOv5Loss`` with the gains of ``cfg.losses.gt`` (a ``RunConfig``) at ``cfg.data.img_size``."""
    from detectors.yolov5.loss import YOLOv5Loss

    return YOLOv5Loss(model, img_size=cfg.data.img_size, gains=cfg.losses.gt)


def load_weights(model: Any, path: Path):
    """Ultralytics ``.pt`` checkpoints (restricted unpickler) and plain state dicts (``weights.py``); for
    ``yolov5s_convnext`` also a ConvNeXt ImageNet checkpoint (official or timm names) into its backbone."""
    from detectors.yolov5.weights import load_weights as load

    return load(model, path)


FAMILY = Family(
    name="yolov5", sizes=SIZES, build_model=build_model, build_loss=build_loss, load_weights=load_weights,
    recipe=RECIPE, tap_sets=TAP_SETS, default_taps=DEFAULT_TAPS, gt_config=YOLOv5GtConfig,
)
