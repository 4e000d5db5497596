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

Nothing in the loss or its backward reads the device (a wait on a GPU): ``build_candidates`` keeps every
(offset, anchor, target) row with a mask of the ones the rule assigns, the box and class terms are masked
sums over the rows divided by the assigned count, the objectness target takes the last assigned row per
position. ``build_targets``, the assigned rows alone (one ``nonzero`` per level), is what YOLOv7 starts from.

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


@dataclass(frozen=True)
class LevelCandidates(LevelTargets):
    """Every (offset, anchor, target) row of one level, ``n = 5 * na * M``, fields as ``LevelTargets``, and
    ``valid``: the rows ``build_targets`` keeps. Fixed size, so building and using them needs no read of the
    device. An invalid row's cell is still inside the grid; its box is whatever the arithmetic gave."""

    valid: Tensor  # (n,) bool

    def kept(self) -> LevelTargets:
        """The valid rows, in order (one ``nonzero``: a read of the device)."""
        keep = self.valid.nonzero(as_tuple=True)[0]
        return LevelTargets(image=self.image[keep], anchor=self.anchor[keep], gj=self.gj[keep], gi=self.gi[keep],
                            box=self.box[keep], anchor_wh=self.anchor_wh[keep], cls=self.cls[keep])


def _neighbour_offsets(like: Tensor) -> Tensor:
    """``_NEIGHBOUR_OFFSETS * _OFFSET_BIAS`` as a (5, 2) tensor filled on ``like``'s device (copying a host
    tensor there would wait for the device)."""
    offsets = like.new_zeros(len(_NEIGHBOUR_OFFSETS), 2)
    for k, pair in enumerate(_NEIGHBOUR_OFFSETS):
        for axis, value in enumerate(pair):
            if value:
                offsets[k, axis] = value * _OFFSET_BIAS
    return offsets


def build_candidates(
    targets: Tensor, anchors: Tensor, grid_shapes: list[tuple[int, int]], anchor_t: float
) -> list[LevelCandidates]:
    """Every (offset, anchor, target) row per level, with the rows Ultralytics' ``build_targets`` keeps marked.

    ``targets``: ``(M, 6)`` normalised ``[image, class, cx, cy, w, h]``; ``anchors``: ``(nl, na, 2)`` in
    grid cells of their level (pixels / stride); ``grid_shapes``: ``(H, W)`` per level.
    Rows are offset-major, then anchor-major, then in target order, like Ultralytics' selected rows: the
    order decides which IoU wins when two targets land on the same (image, anchor, cell).
    """
    offsets = _neighbour_offsets(targets)  # (5, 2)
    num_offsets, num_targets = offsets.shape[0], targets.shape[0]
    levels = []
    for level, (height, width) in enumerate(grid_shapes):
        level_anchors = anchors[level].to(device=targets.device, dtype=targets.dtype)  # (na, 2)
        num_anchors = level_anchors.shape[0]
        rows = (num_offsets, num_anchors, num_targets)
        gain = targets.new_full((4,), width)  # [W, H, W, H], filled on the device
        gain[1::2] = height
        gxywh = targets[:, 2:6] * gain  # (M, 4) in grid cells

        # Shape match: both wh ratios (either way round) below anchor_t. (na, M)
        ratio = gxywh[None, :, 2:4] / level_anchors[:, None]
        matched = torch.max(ratio, 1.0 / ratio).amax(dim=2) < anchor_t

        gxy = gxywh[:, :2]  # (M, 2)
        gxy_inverse = gain[:2] - gxy
        # The own cell always; the left/up neighbour when the centre sits in the cell's first half (and is
        # not in the first cell), the right/down one when in the second half (and not in the last cell).
        near_low = (gxy % 1 < _OFFSET_BIAS) & (gxy > 1)
        near_high = (gxy_inverse % 1 < _OFFSET_BIAS) & (gxy_inverse > 1)
        use = torch.stack(
            (torch.ones_like(near_low[:, 0]), near_low[:, 0], near_low[:, 1], near_high[:, 0], near_high[:, 1])
        )  # (5, M)

        centre = gxy.expand(*rows, 2)  # (5, na, M, 2)
        cell = (centre - offsets[:, None, None]).long()  # truncation == floor where valid: values are >= 0
        cell[..., 0].clamp_(0, width - 1)
        cell[..., 1].clamp_(0, height - 1)
        box = torch.cat((centre - cell, gxywh[:, 2:4].expand(*rows, 2)), dim=-1)  # (5, na, M, 4)
        anchor = torch.arange(num_anchors, device=targets.device)[:, None].expand(rows)
        levels.append(
            LevelCandidates(
                image=targets[:, 0].long().expand(rows).reshape(-1),
                anchor=anchor.reshape(-1),
                gj=cell[..., 1].reshape(-1),
                gi=cell[..., 0].reshape(-1),
                box=box.reshape(-1, 4),
                anchor_wh=level_anchors[:, None].expand(*rows, 2).reshape(-1, 2),
                cls=targets[:, 1].long().expand(rows).reshape(-1),
                valid=(use[:, None] & matched).reshape(-1),
            )
        )
    return levels


def build_targets(
    targets: Tensor, anchors: Tensor, grid_shapes: list[tuple[int, int]], anchor_t: float
) -> list[LevelTargets]:
    """Assign targets to anchors and cells per level, as Ultralytics' ``ComputeLoss.build_targets``: the
    valid rows of ``build_candidates``, in its order (one read of the device per level; YOLOv7 starts from
    these, YOLOv5's loss uses the candidates)."""
    return [level.kept() for level in build_candidates(targets, anchors, grid_shapes, anchor_t)]


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
        # Every candidate row, valid or not, so that no size depends on the data (no read of the device):
        # the box and class terms are masked sums over the rows divided by the valid count, which adds 0
        # to a level without valid rows where Ultralytics adds nothing.
        candidates = build_candidates(targets.to(device=device, dtype=torch.float32), self._head.anchors,
                                      grid_shapes, self.anchor_t)
        zero = torch.zeros((), device=device)
        box, obj, cls = zero, zero, zero
        for level, (pred, tgt) in enumerate(zip(head_maps, candidates, strict=True)):
            valid = tgt.valid  # (n,)
            count = valid.sum().clamp(min=1)
            picked = pred[tgt.image, tgt.anchor, tgt.gj, tgt.gi]  # (n, 5 + nc)
            pxy = picked[:, :2].sigmoid() * 2 - 0.5
            pwh = (picked[:, 2:4].sigmoid() * 2) ** 2 * tgt.anchor_wh
            # An invalid row's target may be a box no anchor matches, of size 0 say, whose CIoU is NaN and
            # would reach the gradient through the mask: such rows get a unit box instead.
            target_box = torch.where(valid[:, None], tgt.box, 1.0)
            iou = bbox_iou(torch.cat((pxy, pwh), dim=1), target_box, ciou=True).squeeze(-1)  # (n,)
            box = box + torch.where(valid, 1.0 - iou, 0.0).sum() / count
            # Objectness learns the quality of its box: target = detached IoU, floored at 0 (gr = 1).
            target_obj = self._objectness_target(pred, tgt, iou.detach().clamp(0))
            if self.num_classes > 1:  # one class needs no class loss (objectness says it all)
                logits = picked[:, 5:]
                target_cls = torch.full_like(logits, self.cls_negative)
                target_cls.scatter_(1, tgt.cls[:, None], self.cls_positive)
                bce = F.binary_cross_entropy_with_logits(logits, target_cls, reduction="none")
                cls = cls + torch.where(valid[:, None], bce, 0.0).sum() / (count * self.num_classes)
            obj = obj + F.binary_cross_entropy_with_logits(pred[..., 4], target_obj) * LEVEL_BALANCE[level]

        box, obj, cls = box * self.box_gain, obj * self.obj_gain, cls * self.cls_gain
        batch_size = head_maps[0].shape[0]
        total = (box + obj + cls) * batch_size
        return total, {"box": box.detach(), "obj": obj.detach(), "cls": cls.detach()}

    @staticmethod
    def _objectness_target(pred: Tensor, tgt: LevelCandidates, iou: Tensor) -> Tensor:
        """``(B, na, H, W)`` zeros with each valid row's IoU at its (image, anchor, cell).

        Ultralytics writes ``tobj[b, a, gj, gi] = iou``: where rows share a position, the last one wins (on
        the CPU; the order of a GPU's writes is undefined). Here the last valid row wins on every device: a
        ``scatter_reduce`` takes the largest row number per position, invalid rows going to one extra slot.
        """
        batch, num_anchors, height, width = pred.shape[:4]
        size = batch * num_anchors * height * width
        position = ((tgt.image * num_anchors + tgt.anchor) * height + tgt.gj) * width + tgt.gi
        position = torch.where(tgt.valid, position, size)
        row = torch.arange(position.shape[0], device=pred.device)
        last = torch.full((size + 1,), -1, dtype=torch.long, device=pred.device)
        last = last.scatter_reduce(0, position, row, reduce="amax")[:size]  # (B * na * H * W,)
        return F.pad(iou.to(pred.dtype), (0, 1))[last].view(batch, num_anchors, height, width)  # -1: the pad, 0
