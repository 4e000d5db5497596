"""L_gt of the YOLOv3, YOLOv4 and YOLOv7 families: WongKinYiu/yolov7 ``utils/loss.py``, ``ComputeLoss``
(``losses.gt.ota: false``, YOLOv3 / YOLOv4-CSP) and ``ComputeLossOTA`` (``ota: true``, YOLOv7).

The two share everything but the label assignment (``ota_assign`` in ``loss_ota.py`` for OTA, else
``detectors.yolov5.loss.build_targets``, whose arithmetic and row order equal upstream's
``build_targets`` / ``find_3_positive``). Per level i, at the assigned (image, anchor, cell) positions:

- box: ``1 - CIoU`` between the decoded prediction (xy = 2 sigmoid - 0.5, wh = (2 sigmoid)^2 anchor, grid
  units) and the target, mean over positions;
- objectness: BCE over every cell against the detached IoU clamped at 0 at the positions (``gr = 1``, as
  their train.py sets ``model.gr``), times the level's balance 4.0 / 1.0 / 0.4;
- classes (only when nc > 1): BCE against one-hot targets smoothed by ``label_smoothing``.
BCEs carry upstream's ``pos_weight`` (``cls_pw``, ``obj_pw``) and, for ``fl_gamma > 0``, their
``FocalLoss`` wrapper (alpha 0.25). Gains as their train.py scales ``hyp``: ``box * 3/nl``,
``cls * (nc/80 * 3/nl)``, ``obj * ((img/640)^2 * 3/nl)``. The result is ``(box + obj + cls) * batch``
with items ``box``, ``obj``, ``cls`` (upstream's ``lbox``, ``lobj``, ``lcls``).

Where this differs from our YOLOv5 loss (Ultralytics v7.0, the same structure): the CIoU's epsilons
(``_ciou``: heights carry +eps, and again inside the atan, as their ``bbox_iou``); the BCE positive
weights and focal option; the OTA assignment. Their ``autobalance`` is off in train.py and not offered.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors.api import DetectorOutput
from detectors.yolov5.loss import LevelTargets, build_targets
from detectors.yolov7.loss_ota import ota_assign

LEVEL_BALANCE = (4.0, 1.0, 0.4)  # objectness weight per level, strides 8, 16, 32 (upstream's balance)
FOCAL_ALPHA = 0.25  # upstream's FocalLoss default


def _ciou(box1: Tensor, box2: Tensor, eps: float = 1e-7) -> Tensor:
    """Paired CIoU of (n, 4) xywh boxes -> (n,), with the yolov7 repository's eps placement."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
    b1_x1, b1_x2, b1_y1, b1_y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2_x1, b2_x2, b2_y1, b2_y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.min(b1_x2, b2_x2) - torch.max(b1_x1, b2_x1)).clamp(0) * \
        (torch.min(b1_y2, b2_y2) - torch.max(b1_y1, b2_y1)).clamp(0)
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps  # widths and heights from the corners, as upstream
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps
    iou = inter / (w1 * h1 + w2 * h2 - inter + eps)
    cw = torch.max(b1_x2, b2_x2) - torch.min(b1_x1, b2_x1)  # enclosing box
    ch = torch.max(b1_y2, b2_y2) - torch.min(b1_y1, b2_y1)
    c2 = cw**2 + ch**2 + eps
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4
    v = (4 / math.pi**2) * torch.pow(torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps)), 2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def scaled_gains(gains: Any, *, num_levels: int, num_classes: int, img_size: int) -> tuple[float, float, float]:
    """(box, obj, cls) as their train.py leaves ``hyp`` (``hyp[k] *= factor``: the factor first)."""
    return (gains.box * (3.0 / num_levels), gains.obj * ((img_size / 640) ** 2 * 3.0 / num_levels),
            gains.cls * (num_classes / 80.0 * 3.0 / num_levels))


class YOLOv7RepoLoss:
    """``detectors.api.DetectionLoss`` of the three families: ``loss(output, targets) -> (total, items)``.

    ``gains``: the family's ``losses.gt`` block (``detectors/yolov7/gt_config.py``): box, obj, cls, cls_pw,
    obj_pw, anchor_t, fl_gamma, label_smoothing, ota. The head (``model.detect``, interface in head.py)
    is read at each call, so moving the model after building the loss is fine.
    """

    term_names = ("box", "obj", "cls")

    def __init__(self, model: nn.Module, *, img_size: int, gains: Any) -> None:
        self._head = model.detect
        self._first_stride = int(self._head.stride[0])  # read here once: in a step it would wait for the device
        self.num_levels, self.num_classes = int(self._head.nl), int(self._head.nc)
        if self.num_levels != len(LEVEL_BALANCE):
            raise ValueError(f"YOLOv7RepoLoss supports {len(LEVEL_BALANCE)} levels, the head has {self.num_levels}")
        self.box_gain, self.obj_gain, self.cls_gain = scaled_gains(
            gains, num_levels=self.num_levels, num_classes=self.num_classes, img_size=img_size)
        self.anchor_t, self.ota = float(gains.anchor_t), bool(gains.ota)
        self.cls_pw, self.obj_pw, self.fl_gamma = float(gains.cls_pw), float(gains.obj_pw), float(gains.fl_gamma)
        # smooth_BCE: positives 1 - eps/2, negatives eps/2
        self.cls_positive, self.cls_negative = 1.0 - 0.5 * gains.label_smoothing, 0.5 * gains.label_smoothing

    def _bce(self, logits: Tensor, target: Tensor, pos_weight: float) -> Tensor:
        """Mean BCE with upstream's positive weight, wrapped in their FocalLoss when fl_gamma > 0."""
        weight = torch.full((1,), pos_weight, device=logits.device)  # a fill, not a copy that waits for the device
        if self.fl_gamma <= 0:
            return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight, reduction="none")
        prob = torch.sigmoid(logits)
        p_t = target * prob + (1 - target) * (1 - prob)
        alpha_factor = target * FOCAL_ALPHA + (1 - target) * (1 - FOCAL_ALPHA)
        loss *= alpha_factor * (1.0 - p_t) ** self.fl_gamma
        return loss.mean()

    def assign(self, head_maps: list[Tensor], targets: Tensor) -> list[LevelTargets]:
        """Per level, the positions each target trains (OTA or the anchor-ratio rule, see the module doc)."""
        targets = targets.to(device=head_maps[0].device, dtype=torch.float32)
        if self.ota:
            return ota_assign(head_maps, targets, self._head.anchors, self._head.stride, self.anchor_t,
                              self._first_stride)
        grid_shapes = [(int(p.shape[2]), int(p.shape[3])) for p in head_maps]
        return build_targets(targets, self._head.anchors, grid_shapes, self.anchor_t)

    def __call__(self, output: DetectorOutput | list[Tensor], targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        head_maps = output.head if isinstance(output, DetectorOutput) else output
        device = head_maps[0].device
        zero = torch.zeros((), device=device)
        box, obj, cls = zero, zero, zero
        for level, (pred, tgt) in enumerate(zip(head_maps, self.assign(head_maps, targets), strict=True)):
            target_obj = torch.zeros(pred.shape[:4], dtype=pred.dtype, device=device)  # (B, na, H, W)
            if len(tgt):
                picked = pred[tgt.image, tgt.anchor, tgt.gj, tgt.gi]  # (n, 5 + nc)
                pxy = picked[:, :2].sigmoid() * 2.0 - 0.5
                pwh = (picked[:, 2:4].sigmoid() * 2) ** 2 * tgt.anchor_wh
                iou = _ciou(torch.cat((pxy, pwh), dim=1), tgt.box)
                box = box + (1.0 - iou).mean()
                target_obj[tgt.image, tgt.anchor, tgt.gj, tgt.gi] = iou.detach().clamp(0).to(target_obj.dtype)
                if self.num_classes > 1:
                    target_cls = torch.full_like(picked[:, 5:], self.cls_negative)
                    target_cls[torch.arange(len(tgt), device=device), tgt.cls] = self.cls_positive
                    cls = cls + self._bce(picked[:, 5:], target_cls, self.cls_pw)
            obj = obj + self._bce(pred[..., 4], target_obj, self.obj_pw) * LEVEL_BALANCE[level]
        box, obj, cls = box * self.box_gain, obj * self.obj_gain, cls * self.cls_gain
        total = (box + obj + cls) * head_maps[0].shape[0]
        return total, {"box": box.detach(), "obj": obj.detach(), "cls": cls.detach()}


def build_loss(model: nn.Module, cfg: Any) -> YOLOv7RepoLoss:
    """The loss of ``cfg.losses.gt`` (the family's block) for ``model`` at ``cfg.data.img_size``."""
    return YOLOv7RepoLoss(model, img_size=cfg.data.img_size, gains=cfg.losses.gt)
