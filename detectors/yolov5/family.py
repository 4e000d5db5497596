"""YOLOv5 as a family of the detector contract (``detectors.api.Family``): sizes, recipe, tap sets, builders.

Torch-free on import (the builders import the network when called), so that ``detectors.zoo`` and the
config validation can read it cheaply.

Tap sets (``detector.taps``), layers as in ``model.py``'s layer map; strides 8 / 16 / 32:

- ``fpn_to_pan`` (default, DESIGN.md's reading of the paper's Fig. 1-2): teacher = the shallower
  top-down (FPN) map 15 / 13 / 10, student = the PAN output that feeds Detect 17 / 20 / 23.
- ``pan_to_fpn``: the reverse: the PAN outputs teach the FPN maps (issue 15's alternative reading).
- ``backbone_to_pan``: the backbone's C3 / C4 / C5 outputs (layers 4 / 6 / 9, after SPPF) teach the
  PAN outputs.

Every tap set pairs one teacher with one student per stride; which side learns (the detach) is a
loss switch, not a pairing. The Detect inputs (eq 6's F for mask-assisted detection) are 17 / 20 / 23
whatever the tap set.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from detectors.api import DetectionLoss, Family, Recipe, TapPair, TapSet

if TYPE_CHECKING:
    from torch import nn

    from detectors.config import RunConfig

SIZES = ("yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x")
FPN = {8: "15", 16: "13", 32: "10"}  # top-down maps
PAN = {8: "17", 16: "20", 32: "23"}  # bottom-up maps, the Detect inputs
BACKBONE = {8: "4", 16: "6", 32: "9"}  # C3, C4, C5 (after SPPF)


def _pairs(teachers: dict[int, str], students: dict[int, str]) -> tuple[TapPair, ...]:
    return tuple(TapPair(s, teachers[s], students[s]) for s in (8, 16, 32))


TAP_SETS = {
    "fpn_to_pan": TapSet("fpn_to_pan", _pairs(FPN, PAN), "FPN 15/13/10 teach PAN 17/20/23 (DESIGN.md)"),
    "pan_to_fpn": TapSet("pan_to_fpn", _pairs(PAN, FPN), "PAN 17/20/23 teach FPN 15/13/10 (reverse)"),
    "backbone_to_pan": TapSet("backbone_to_pan", _pairs(BACKBONE, PAN),
                              "backbone C3/C4/C5 (4/6/9) teach PAN 17/20/23"),
}

# Ultralytics YOLOv5 v7.0 data/hyps/hyp.scratch-low.yaml and train.py (nominal batch 64, loss * batch),
# except lrf 0.1 (cosine to lr0 * 0.1, the paper's section 4.1 setting; hyp.scratch-low has 0.01).
# augment: empty, since the data layer's own defaults are hyp.scratch-low's.
RECIPE = Recipe(
    lr0=0.01, lrf=0.1, momentum=0.937, weight_decay=0.0005, warmup_epochs=3.0, warmup_momentum=0.8,
    warmup_bias_lr=0.1, ema_decay=0.9999, nominal_batch=64, loss_scaled_by_batch=True,
)


def build_model(size: str, num_classes: int, taps: TapSet | None = None, **options) -> nn.Module:
    from detectors.yolov5.model import YOLOv5

    return YOLOv5(size, num_classes, taps=taps, **options)


def build_loss(model: nn.Module, cfg: RunConfig) -> DetectionLoss:
    from detectors.yolov5.loss import YOLOv5Loss

    return YOLOv5Loss(model, img_size=cfg.data.img_size, gains=cfg.losses.gt)


def load_weights(model: nn.Module, path: Path):
    from detectors.yolov5.weights import load_weights as load

    return load(model, path)


FAMILY = Family(
    name="yolov5", sizes=SIZES, build_model=build_model, build_loss=build_loss, load_weights=load_weights,
    recipe=RECIPE, tap_sets=TAP_SETS, default_taps="fpn_to_pan",
)
