"""YOLOv5's detection loss L_gt (Ultralytics YOLOv5 v7.0 ``utils/loss.py`` ``ComputeLoss``), vectorised.

For the same weights, head maps and targets, ``YOLOv5Loss`` returns the same ``box``, ``obj`` and ``cls``
items as Ultralytics' ``ComputeLoss`` with the gains scaled as their ``train.py`` scales ``hyp``:

- label assignment (``build_targets``): a target goes to every anchor of a level whose width and height
  ratios to the target are both within ``anchor_t``, in the cell holding its centre and in the (up to)
  two neighbouring cells whose shared edge is nearer than half a cell (offset g = 0.5);
- box: ``1 - CIoU`` (``detectors.ops.boxes.bbox_iou``) between the decoded prediction and the target, mean
  over assigned predictions;
- objectness: BCE over every cell and anchor against the detached, clamped IoU at assigned positions
  (``gr = 1``), weighted per level by ``4.0 / 1.0 / 0.4`` (strides 8, 16, 32);
- classes: BCE against (optionally smoothed) one-hot targets, only when there is more than one class;
- gains: ``box * 3/nl``, ``cls * nc/80 * 3/nl``, ``obj * (img_size/640)^2 * 3/nl``.

Shapes: ``head_maps[i]`` is ``(B, na, H_i, W_i, 5 + nc)`` raw logits; ``targets`` is ``(M, 6)``
``[image_index, class, cx, cy, w, h]`` with coordinates normalised to the input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors.api import DetectorOutput
from detectors.ops.boxes import bbox_iou

# Objectness weight per level, small to large stride (Ultralytics' ``balance`` for three levels).
LEVEL_BALANCE = (4.0, 1.0, 0.4)
# Neighbour offsets in cells: own cell, then left, up, right, down. A target also trains the cells whose
# centre-side edge it lies within half a cell of, which is why predicted xy spans (-0.5, 1.5).
_NEIGHBOUR_OFFSETS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))
_OFFSET_BIAS = 0.5


@dataclass(frozen=True)
class LevelTargets:
    """The predictions one pyramid level must fit: ``n`` assigned (image, anchor, cell) positions.

    ``box`` is ``(n, 4)``: the target centre relative to the assigned cell's corner (in ``[-0.5, 1.5]``)
    and its width and height, all in grid cells; ``anchor_wh`` is the assigned anchor in grid cells.
    """

    image: Tensor  # (n,) int64
    anchor: Tensor  # (n,) int64
    gj: Tensor  # (n,) int64, row
    gi: Tensor  # (n,) int64, column
    box: Tensor  # (n, 4) float
    anchor_wh: Tensor  # (n, 2) float
    cls: Tensor  # (n,) int64

    def __len__(self) -> int:
        return int(self.image.shape[0])


def build_targets(
    targets: Tensor, anchors: Tensor, grid_shapes: list[tuple[int, int]], anchor_t: float
) -> list[LevelTargets]:
    """Assign targets to anchors and cells per level, as Ultralytics' ``ComputeLoss.build_targets``.

    ``targets``: ``(M, 6)`` normalised ``[image, class, cx, cy, w, h]``; ``anchors``: ``(nl, na, 2)`` in
    grid cells of their level (pixels / stride); ``grid_shapes``: ``(H, W)`` per level.
    Order of the returned rows is offset-major, then anchor-major, then target order, like Ultralytics':
    it decides which IoU wins when two targets land on the same (image, anchor, cell).
    """
    device = targets.device
    offsets = torch.tensor(_NEIGHBOUR_OFFSETS, device=device) * _OFFSET_BIAS  # (5, 2)
    levels = []
    for level, (height, width) in enumerate(grid_shapes):
        level_anchors = anchors[level].to(device=device, dtype=targets.dtype)  # (na, 2)
        gain = torch.tensor([width, height, width, height], device=device, dtype=targets.dtype)
        gxywh = targets[:, 2:6] * gain  # (M, 4) in grid cells

        # Shape match: both wh ratios (either way round) below anchor_t. (na, M)
        ratio = gxywh[None, :, 2:4] / level_anchors[:, None]
        matched = torch.max(ratio, 1.0 / ratio).amax(dim=2) < anchor_t
        anchor_idx, target_idx = matched.nonzero(as_tuple=True)  # anchor-major, like t[j] on (na, M)

        gxy = gxywh[target_idx, :2]  # (n, 2)
        gxy_inverse = gain[:2] - gxy
        # The own cell always; the left/up neighbour when the centre sits in the cell's first half (and is
        # not in the first cell), the right/down one when in the second half (and not in the last cell).
        near_low = (gxy % 1 < _OFFSET_BIAS) & (gxy > 1)
        near_high = (gxy_inverse % 1 < _OFFSET_BIAS) & (gxy_inverse > 1)
        use = torch.stack(
            (torch.ones_like(near_low[:, 0]), near_low[:, 0], near_low[:, 1], near_high[:, 0], near_high[:, 1])
        )  # (5, n)
        offset_idx, row = use.nonzero(as_tuple=True)  # offset-major

        centre = gxy[row]  # (k, 2)
        cell = (centre - offsets[offset_idx]).long()  # truncation == floor: values are >= 0
        cell[:, 0].clamp_(0, width - 1)
        cell[:, 1].clamp_(0, height - 1)
        rows = target_idx[row]
        anchor = anchor_idx[row]
        levels.append(
            LevelTargets(
                image=targets[rows, 0].long(),
                anchor=anchor,
                gj=cell[:, 1],
                gi=cell[:, 0],
                box=torch.cat((centre - cell, gxywh[rows, 2:4]), dim=1),
                anchor_wh=level_anchors[anchor],
                cls=targets[rows, 1].long(),
            )
        )
    return levels


def scaled_gains(gains: Any, *, num_levels: int, num_classes: int, img_size: int) -> tuple[float, float, float]:
    """(box, obj, cls) gains scaled by levels, classes and image size, as YOLOv5's ``train.py`` does."""
    level_scale = 3 / num_levels
    return (
        gains.box * level_scale,
        gains.obj * (img_size / 640) ** 2 * level_scale,
        gains.cls * num_classes / 80 * level_scale,
    )


def _detect_head(model: nn.Module) -> nn.Module:
    """The ``Detect`` module: ``model.detect``, else the last entry of ``model.model`` (Ultralytics' tree)."""
    head = getattr(model, "detect", None)
    if head is None:
        head = model.model[-1]
    for attr in ("anchors", "nl", "na", "nc"):
        if not hasattr(head, attr):
            raise TypeError(f"{type(model).__name__}.model[-1] has no {attr!r}: expected YOLOv5's Detect head")
    return head


class YOLOv5Loss:
    """L_gt of a YOLOv5 model (``detectors.api.DetectionLoss``): ``loss_fn(output, targets) -> (total, items)``.

    ``output`` is the model's ``DetectorOutput`` (or its ``head``, the list of per-level maps, as the
    Ultralytics parity scripts pass it).

    ``items`` are the gained per-image ``box``, ``obj``, ``cls`` terms (detached 0-dim tensors, so reading
    them costs no device sync until logged); ``total = (box + obj + cls) * batch_size`` carries the graph.
    The anchors are read from the model at each call, so moving the model to a device after building the
    loss is fine.
    """

    term_names = ("box", "obj", "cls")

    def __init__(self, model: nn.Module, *, img_size: int, gains: Any) -> None:
        # gains: box, obj, cls, anchor_t, label_smoothing, as ``detectors.config.GtLossConfig`` holds them
        # (hyp.scratch-low by default); not imported here, since the config reads the family table.
        self._head = _detect_head(model)
        self.num_levels = int(self._head.nl)
        self.num_classes = int(self._head.nc)
        if self.num_levels != len(LEVEL_BALANCE):
            raise ValueError(f"YOLOv5Loss supports {len(LEVEL_BALANCE)} levels, the model has {self.num_levels}")
        self.box_gain, self.obj_gain, self.cls_gain = scaled_gains(
            gains, num_levels=self.num_levels, num_classes=self.num_classes, img_size=img_size
        )
        self.anchor_t = gains.anchor_t
        # Label smoothing (Mueller et al. 2019, eq 3): positives 1 - eps/2, negatives eps/2.
        self.cls_positive = 1.0 - 0.5 * gains.label_smoothing
        self.cls_negative = 0.5 * gains.label_smoothing

    def __call__(self, output: DetectorOutput | list[Tensor], targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        head_maps = output.head if isinstance(output, DetectorOutput) else output
        device = head_maps[0].device
        grid_shapes = [(int(p.shape[2]), int(p.shape[3])) for p in head_maps]
        assigned = build_targets(targets.to(device=device, dtype=torch.float32), self._head.anchors, grid_shapes,
                                 self.anchor_t)
        zero = torch.zeros((), device=device)
        box, obj, cls = zero, zero, zero
        for level, (pred, tgt) in enumerate(zip(head_maps, assigned, strict=True)):
            target_obj = torch.zeros(pred.shape[:4], dtype=pred.dtype, device=device)  # (B, na, H, W)
            if len(tgt):
                picked = pred[tgt.image, tgt.anchor, tgt.gj, tgt.gi]  # (n, 5 + nc)
                pxy = picked[:, :2].sigmoid() * 2 - 0.5
                pwh = (picked[:, 2:4].sigmoid() * 2) ** 2 * tgt.anchor_wh
                iou = bbox_iou(torch.cat((pxy, pwh), dim=1), tgt.box, ciou=True).squeeze(-1)  # (n,)
                box = box + (1.0 - iou).mean()
                # Objectness learns the quality of its box: target = detached IoU, floored at 0 (gr = 1).
                target_obj[tgt.image, tgt.anchor, tgt.gj, tgt.gi] = iou.detach().clamp(0).to(target_obj.dtype)
                if self.num_classes > 1:  # one class needs no class loss (objectness says it all)
                    logits = picked[:, 5:]
                    target_cls = torch.full_like(logits, self.cls_negative)
                    target_cls[torch.arange(len(tgt), device=device), tgt.cls] = self.cls_positive
                    cls = cls + F.binary_cross_entropy_with_logits(logits, target_cls)
            obj = obj + F.binary_cross_entropy_with_logits(pred[..., 4], target_obj) * LEVEL_BALANCE[level]

        box, obj, cls = box * self.box_gain, obj * self.obj_gain, cls * self.cls_gain
        batch_size = head_maps[0].shape[0]
        total = (box + obj + cls) * batch_size
        return total, {"box": box.detach(), "obj": obj.detach(), "cls": cls.detach()}
