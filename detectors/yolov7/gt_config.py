"""``losses.gt`` of the YOLOv3, YOLOv4 and YOLOv7 families: the keys of WongKinYiu/yolov7's
``data/hyp.scratch.p5.yaml`` that its ``utils/loss.py`` reads, with their values as defaults.

Torch-free (``family.py`` names these classes; the config validation reads them). The gains are given
before ``loss.py`` scales them by levels, classes and image size, as upstream's train.py scales ``hyp``.
"""

from __future__ import annotations

from dataclasses import dataclass

from detectors.config_fields import rule


@dataclass
class YOLOv7RepoGtConfig:
    """YOLOv3 / YOLOv4-CSP: ``ComputeLoss`` by default (``ota: false``)."""

    box: float = rule(0.05, ge=0.0)
    obj: float = rule(0.7, ge=0.0)
    cls: float = rule(0.3, ge=0.0)
    cls_pw: float = rule(1.0, gt=0.0)  # BCE positive weight of the class term
    obj_pw: float = rule(1.0, gt=0.0)  # BCE positive weight of the objectness term
    anchor_t: float = rule(4.0, gt=1.0)  # a target matches an anchor within this width/height ratio
    fl_gamma: float = rule(0.0, ge=0.0)  # focal loss gamma on both BCE terms (alpha 0.25); 0: plain BCE
    label_smoothing: float = rule(0.0, ge=0.0, lt=1.0)  # their train.py's --label-smoothing
    # ComputeLossOTA's assignment (3 cells per anchor match, then SimOTA-style dynamic k on IoU and class
    # cost). Upstream's train.py uses it whenever hyp.loss_ota is 1 (hyp.scratch.p5's value), also for these
    # baseline configs; false gives ComputeLoss, the loss the YOLOv3 / YOLOv4 papers trained with.
    ota: bool = False


@dataclass
class YOLOv7GtConfig(YOLOv7RepoGtConfig):
    """YOLOv7: ``ComputeLossOTA`` (hyp.scratch.p5's ``loss_ota: 1``). YOLOv7-tiny's hyp.scratch.tiny has
    cls 0.5 and obj 1.0: its configs set them."""

    ota: bool = True
