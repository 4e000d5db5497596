"""YOLOv6 0.2.1's detection loss (``yolov6/models/loss.py`` ``ComputeLoss``): VFL + IoU (+ DFL), two assigners.

Per batch, with the anchors assigned by ATSS during the first ``warmup_epoch`` epochs (their 0-based
``epoch_num < 4``, our epochs 1-4) and by TAL after (``assigners.py``; ``start_epoch`` switches):

- ``cls``: varifocal loss (Zhang et al. 2021) ``sum(BCE(p, q) * w)``, ``w = 0.75 p^2`` on negatives and
  ``q`` on the positive class, ``q`` the assigner's soft score; divided by ``S = sum(q)`` when S > 0.
- ``iou``: ``1 - IoU`` (GIoU for S/M/L, SIoU for N/T, as each size's config), between the predicted and
  matched boxes in stride units, weighted by each positive's ``sum(q)``, divided by S.
- ``dfl`` (M/L, ``reg_max`` 16): distribution focal loss of the 17-bin side distributions against the
  target distances, weighted and divided as ``iou``; 0 without DFL.

Items are theirs, weighted: ``iou = 2.5 * L_iou``, ``dfl = 0.5 * L_dfl``, ``cls = 1.0 * L_cls``; ``l_gt`` is
their sum, a per-batch normalised loss not scaled by the batch size (``Recipe.loss_scaled_by_batch``
false), as their trainer backpropagates it.

Their targets pass through numpy as float64, so assignment runs in float64 (the same ties and thresholds
fall the same way); it runs here the same. Boxes are scaled by the input's width and height (theirs: by the
square training size, the same number for square inputs).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from detectors.api import DetectorOutput
from detectors.yolov6.assigners import Assignment, atss_assign_rows, one_hot, tal_assign_rows
from detectors.yolov6.head import CELL_OFFSET, YOLOv6HeadOutput, dist_to_xyxy

ANCHOR_SIZE = 5.0  # ATSS anchor side in strides (grid_cell_size)
VFL_ALPHA, VFL_GAMMA = 0.75, 2.0
IOU_EPS = 1e-10  # their BboxLoss builds IOUloss with eps 1e-10


def iou_loss(pred: torch.Tensor, target: torch.Tensor, kind: str, eps: float = IOU_EPS) -> torch.Tensor:
    """(M, 4) xyxy pairs -> (M, 1) ``1 - IoU`` of ``kind`` "giou", "siou", "diou", "ciou" or "iou".

    Their ``IOUloss`` arithmetic, eps placements included (the heights carry eps, widths do not).
    SIoU: Gevorgyan 2022, angle, distance and shape costs.
    """
    px1, py1, px2, py2 = pred.split(1, -1)
    tx1, ty1, tx2, ty2 = target.split(1, -1)
    inter = (torch.min(px2, tx2) - torch.max(px1, tx1)).clamp(0) * (torch.min(py2, ty2) - torch.max(py1, ty1)).clamp(0)
    w1, h1 = px2 - px1, py2 - py1 + eps
    w2, h2 = tx2 - tx1, ty2 - ty1 + eps
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(px2, tx2) - torch.min(px1, tx1)  # enclosing box
    ch = torch.max(py2, ty2) - torch.min(py1, ty1)
    if kind == "giou":
        c_area = cw * ch + eps
        iou = iou - (c_area - union) / c_area
    elif kind in ("diou", "ciou"):
        c2 = cw ** 2 + ch ** 2 + eps
        rho2 = ((tx1 + tx2 - px1 - px2) ** 2 + (ty1 + ty2 - py1 - py2) ** 2) / 4
        if kind == "diou":
            iou = iou - rho2 / c2
        else:
            v = (4 / math.pi ** 2) * torch.pow(torch.atan(w2 / h2) - torch.atan(w1 / h1), 2)
            with torch.no_grad():
                a = v / (v - iou + (1 + eps))
            iou = iou - (rho2 / c2 + v * a)
    elif kind == "siou":
        s_cw = (tx1 + tx2 - px1 - px2) * 0.5 + eps  # centre offsets
        s_ch = (ty1 + ty2 - py1 - py2) * 0.5 + eps
        sigma = torch.pow(s_cw ** 2 + s_ch ** 2, 0.5)
        sin_1, sin_2 = torch.abs(s_cw) / sigma, torch.abs(s_ch) / sigma
        sin_alpha = torch.where(sin_1 > math.sqrt(2) / 2, sin_2, sin_1)
        angle_cost = torch.cos(torch.arcsin(sin_alpha) * 2 - math.pi / 2)
        gamma = angle_cost - 2
        distance_cost = 2 - torch.exp(gamma * (s_cw / cw) ** 2) - torch.exp(gamma * (s_ch / ch) ** 2)
        omega_w = torch.abs(w1 - w2) / torch.max(w1, w2)
        omega_h = torch.abs(h1 - h2) / torch.max(h1, h2)
        shape_cost = torch.pow(1 - torch.exp(-omega_w), 4) + torch.pow(1 - torch.exp(-omega_h), 4)
        iou = iou - 0.5 * (distance_cost + shape_cost)
    elif kind != "iou":
        raise ValueError(f"iou_type: expected giou, siou, diou, ciou or iou, got {kind!r}")
    return 1.0 - iou


def varifocal_loss(pred: torch.Tensor, target: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Summed VFL: ``pred`` (B, A, nc) sigmoid scores, ``target`` soft scores, ``label`` one-hot positives."""
    weight = VFL_ALPHA * pred.pow(VFL_GAMMA) * (1 - label) + target * label
    # Outside autocast, as theirs: binary_cross_entropy refuses to run in a CUDA autocast region (the trainer's AMP).
    with torch.autocast(pred.device.type, enabled=False):
        return (F.binary_cross_entropy(pred.float(), target.float(), reduction="none") * weight).sum()


def distribution_focal_loss(pred: torch.Tensor, target: torch.Tensor, reg_max: int) -> torch.Tensor:
    """(M, 4, reg_max + 1) logits, (M, 4) target distances in [0, reg_max) -> (M, 1): the two bins around
    each target, weighted by closeness (Li et al. 2020, Generalized Focal Loss), averaged over the sides."""
    left = target.long()
    right = left + 1
    w_left = right.to(torch.float) - target
    w_right = 1 - w_left
    logits = pred.reshape(-1, reg_max + 1)
    loss = F.cross_entropy(logits, left.view(-1), reduction="none").view(left.shape) * w_left \
        + F.cross_entropy(logits, right.view(-1), reduction="none").view(left.shape) * w_right
    return loss.mean(-1, keepdim=True)


def padded_targets(targets: torch.Tensor, batch_size: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Loader rows ``[image, class, cx, cy, w, h]`` (normalised) -> labels (B, G, 1) and boxes (B, G, 4) xyxy
    input px, float64, padded with label -1 and box 0 to the most objects in one image (their ``preprocess``).
    Not used by the loss (it reads G back from the device; the loss takes ``target_rows``)."""
    rows = targets.detach().to("cpu", torch.float64)
    image = rows[:, 0].long()
    counts = torch.bincount(image, minlength=batch_size) if len(rows) else torch.zeros(batch_size, dtype=torch.long)
    g = int(counts.max()) if batch_size else 0
    labels = torch.full((batch_size, g, 1), -1.0, dtype=torch.float64)
    boxes = torch.zeros(batch_size, g, 4, dtype=torch.float64)
    # Slot of each row inside its image, in loader order.
    order = torch.argsort(image, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(image)
    slot[order] = torch.arange(len(rows)) - starts[image[order]]
    scale = torch.tensor([width, height, width, height], dtype=torch.float64)
    xywh = rows[:, 2:6] * scale
    labels[image, slot, 0] = rows[:, 1]
    boxes[image, slot] = torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1)
    return labels.to(targets.device), boxes.to(targets.device)


def target_rows(targets: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loader rows ``[image, class, cx, cy, w, h]`` (normalised) -> per object its image (M,), label (M,) and
    box (M, 4) xyxy input px, float64 (their numpy round trip), on the targets' device: nothing is read back,
    where padding (``padded_targets``) would read the most objects in one image."""
    rows = targets.detach().to(torch.float64)
    xywh = torch.stack((rows[:, 2] * width, rows[:, 3] * height, rows[:, 4] * width, rows[:, 5] * height), 1)
    boxes = torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1)
    return rows[:, 0].long(), rows[:, 1], boxes


def anchor_layout(maps: list[torch.Tensor], strides: tuple[int, ...]):
    """ATSS anchor boxes (A, 4) px, anchor points (A, 2) px, cells per level, strides (A, 1)."""
    boxes, points, sizes, cell_strides = [], [], [], []
    for m, s in zip(maps, strides, strict=True):
        h, w = m.shape[-2:]
        half = ANCHOR_SIZE * s * 0.5
        ys, xs = torch.meshgrid((torch.arange(h, device=m.device) + CELL_OFFSET) * s,
                                (torch.arange(w, device=m.device) + CELL_OFFSET) * s, indexing="ij")
        boxes.append(torch.stack((xs - half, ys - half, xs + half, ys + half), -1).reshape(-1, 4).to(m.dtype))
        points.append(torch.stack((xs, ys), -1).reshape(-1, 2).to(m.dtype))
        sizes.append(h * w)
        cell_strides.append(torch.full((h * w, 1), s, dtype=m.dtype, device=m.device))
    return torch.cat(boxes), torch.cat(points), sizes, torch.cat(cell_strides)


class YOLOv6Loss(nn.Module):
    """L_gt of YOLOv6 0.2.1: ``loss(output, targets) -> (l_gt, {"iou", "dfl", "cls"})`` (module docstring)."""

    term_names = ("iou", "dfl", "cls")

    def __init__(self, num_classes: int, strides: tuple[int, ...], *, reg_max: int, iou_type: str, settings: Any) -> None:
        super().__init__()
        self.num_classes, self.strides, self.reg_max = num_classes, tuple(strides), reg_max
        self.iou_type = iou_type
        self.settings = settings
        self.epoch_num = 0  # their 0-based epoch: ATSS until start_epoch says otherwise

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """The trainer's 1-based epoch -> their 0-based one; ATSS while it is < warmup_epoch."""
        self.epoch_num = epoch - 1

    @property
    def assigner(self) -> str:
        return "atss" if self.epoch_num < self.settings.warmup_epoch else "tal"

    def assign(self, head: YOLOv6HeadOutput, targets: torch.Tensor) -> Assignment:
        """The active assigner's targets for ``head`` (boxes in input px), as the loss uses them."""
        return self._assign(head, targets)[0]

    def _assign(self, head: YOLOv6HeadOutput, targets: torch.Tensor):
        """(assignment, predicted boxes xyxy in stride units, cell centres in stride units, cell strides)."""
        anchors, points, level_sizes, cell_strides = anchor_layout(head.maps, self.strides)
        height, width = (head.maps[0].shape[-2] * self.strides[0], head.maps[0].shape[-1] * self.strides[0])
        image, gt_labels, gt_boxes = target_rows(targets, height, width)
        mask_gt = (gt_boxes.sum(-1) > 0).float()
        points_s = points / cell_strides
        pred_boxes = dist_to_xyxy(self._distances(head.reg_distri), points_s)
        pred_px = pred_boxes.detach() * cell_strides
        s = self.settings
        if self.assigner == "atss":
            assigned = atss_assign_rows(anchors, level_sizes, image, gt_labels, gt_boxes, mask_gt, pred_px,
                                        self.num_classes, topk=s.atss_topk)
        else:
            assigned = tal_assign_rows(head.cls_scores.detach(), pred_px, points, image, gt_labels, gt_boxes, mask_gt,
                                       self.num_classes, topk=s.tal_topk, alpha=s.tal_alpha, beta=s.tal_beta)
        return assigned, pred_boxes, points_s, cell_strides

    def forward(self, output: DetectorOutput, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        head = output.head
        scores, distri = head.cls_scores, head.reg_distri
        assigned, pred_boxes, points_s, cell_strides = self._assign(head, targets)
        s = self.settings
        target_boxes = assigned.boxes / cell_strides
        fg, target_scores = assigned.fg, assigned.scores

        labels = torch.where(fg, assigned.labels, torch.full_like(assigned.labels, self.num_classes))
        positive_class = one_hot(labels.long(), self.num_classes + 1)[..., :-1]
        loss_cls = varifocal_loss(scores, target_scores, positive_class)
        # Their normalisers (divide by S when S > 0), as tensors: a Python ``if`` would read S back each step.
        score_sum = target_scores.sum()
        loss_cls = loss_cls / torch.where(score_sum > 0, score_sum, torch.ones_like(score_sum))
        loss_iou, loss_dfl = self._box_losses(distri, pred_boxes, points_s, target_boxes, target_scores, score_sum, fg)

        iou, dfl, cls = s.iou_weight * loss_iou, s.dfl_weight * loss_dfl, s.class_weight * loss_cls
        # float32 whatever the head's dtype under AMP (the terms are float64 where the targets are).
        l_gt = (cls + iou + dfl).float()
        items = {name: value.detach().float().reshape(()) for name, value in (("iou", iou), ("dfl", dfl), ("cls", cls))}
        return l_gt, items

    def _distances(self, distri: torch.Tensor) -> torch.Tensor:
        if self.reg_max == 0:
            return distri
        b, n, _ = distri.shape
        bins = torch.linspace(0, self.reg_max, self.reg_max + 1, device=distri.device, dtype=distri.dtype)
        return F.softmax(distri.view(b, n, 4, self.reg_max + 1), dim=-1).matmul(bins)

    def _box_losses(self, distri, pred_boxes, points_s, target_boxes, target_scores, score_sum, fg):
        # One nonzero for every selection below (each boolean index would find the positives again, on a GPU
        # each a wait for the device). Its length is then a shape: no positive returns 0 without a graph, as
        # theirs does (the box branch's parameters get no gradient, not a zero one), and reads nothing more.
        positive = fg.nonzero(as_tuple=True)
        zero = pred_boxes.new_zeros(())
        if len(positive[0]) == 0:
            return zero, zero
        divisor = torch.where(score_sum == 0, torch.ones_like(score_sum), score_sum)
        weight = target_scores.sum(-1)[positive].unsqueeze(-1)
        loss_iou = (iou_loss(pred_boxes[positive], target_boxes[positive], self.iou_type) * weight).sum() / divisor
        if self.reg_max == 0:
            return loss_iou, zero
        lt, rb = target_boxes.split(2, -1)
        target_ltrb = torch.cat((points_s - lt, rb - points_s), -1).clip(0, self.reg_max - 0.01)
        pred_pos = distri[positive].reshape(-1, 4, self.reg_max + 1)
        loss_dfl = (distribution_focal_loss(pred_pos, target_ltrb[positive], self.reg_max) * weight).sum()
        return loss_iou, loss_dfl / divisor
