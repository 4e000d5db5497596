"""YOLOv7's label assignment: WongKinYiu/yolov7 ``utils/loss.py`` ``ComputeLossOTA.build_targets``.

Two stages, per image:

1. candidates (their ``find_3_positive``): every (anchor, cell) that YOLOv5's rule assigns a target to,
   at every level: the anchor's width/height ratios to the target within ``anchor_t``, in the cell
   holding the target's centre and the two neighbours nearer than half a cell. This is exactly
   ``detectors.yolov5.loss.build_targets`` (same arithmetic and row order), reused here;
2. SimOTA-style selection among the image's candidates (all levels together): the cost of candidate c
   for ground truth g is ``BCE(sqrt(sigmoid(cls_c) * sigmoid(obj_c)), onehot_g) + 3 * -log(IoU(g, c) +
   1e-8)``, IoU between g's box and c's decoded box in input pixels; g keeps its ``k_g`` cheapest
   candidates, ``k_g = max(1, int(sum of g's 10 largest IoUs))``; a candidate claimed by several
   ground truths goes to the cheapest. Candidates of other ground truths take part: a cell can be
   assigned to a ground truth whose own rule did not pick it.

Upstream's order is kept everywhere it can change a result: images in batch order, candidates in level
then ``find_3_positive`` order, one ``topk`` per ground truth (ties among equal costs, as when two
targets share a cell, go as upstream's do), and the matched rows concatenated per level in image order
(when two matches land on the same (image, anchor, cell), the later one's IoU is the objectness target,
as upstream's indexed assignment does).

Nothing in a step is read back to the host (on a GPU each read waits for the device): the dynamic k stays
a tensor (``_select``) and the first stride is a number the loss reads once. What remains data-dependent are
the shapes (candidates per image, positives), as in ``build_targets``.

Upstream reads the input height from the images (``imgs[i].shape[1]``) and scales both coordinates by
it; the loss gets no images, so the height is the first level's rows times its stride (equal for the
stride-aligned inputs the loader gives). Upstream fails on a batch without any target on the CPU (its
empty result is created on ``cuda:0``); here it is empty tensors on the maps' device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detectors.ops.boxes import box_iou
from detectors.yolov5.loss import LevelTargets, build_targets

IOU_COST_WEIGHT = 3.0  # upstream's cost = cls + 3 * iou
TOPK_IOUS = 10  # dynamic k sums the 10 largest IoUs of a ground truth


def _xywh_to_xyxy(boxes: Tensor) -> Tensor:
    half = boxes[:, 2:4] / 2
    return torch.cat((boxes[:, :2] - half, boxes[:, :2] + half), dim=1)


def _select(cost: Tensor, iou: Tensor) -> tuple[Tensor, Tensor]:
    """(G, N) costs and IoUs -> (chosen candidate mask (N,), the ground truth of each chosen one).

    Nothing is read back to the host: ``k_g <= min(10, N)`` (the sum of at most 10 IoUs, each <= 1), so one
    ``topk`` per possible k over all ground truths at once, each row kept where its ``k_g`` is that k. A row
    of a batched ``topk`` is the same call as upstream's ``topk(cost[g], k)`` (same values, k and length),
    so ties among equal costs fall as theirs do (tests/detectors/yolov7/test_yolov7_ota_sync_free.py).
    """
    width = min(TOPK_IOUS, iou.shape[1])
    top, _ = torch.topk(iou, width, dim=1)
    dynamic_k = torch.clamp(top.sum(1).int(), min=1)[:, None]  # (G, 1), in 1..width
    matching = torch.zeros_like(cost)
    for k in range(1, width + 1):
        _, chosen = torch.topk(cost, k=k, dim=1, largest=False)
        matching = torch.where(dynamic_k == k, torch.zeros_like(cost).scatter_(1, chosen, 1.0), matching)
    # A candidate claimed twice goes to its cheapest ground truth (torch.min's first index, per column as
    # upstream's min over the shared columns only).
    shared = (matching.sum(0) > 1)[None]
    cheapest = torch.min(cost, dim=0).indices
    matching = torch.where(shared, F.one_hot(cheapest, cost.shape[0]).T.to(cost.dtype), matching)
    chosen = matching.sum(0) > 0.0
    return chosen, matching[:, chosen].argmax(0)


@torch.no_grad()
def ota_assign(head_maps: list[Tensor], targets: Tensor, anchors: Tensor, strides: Tensor,
               anchor_t: float, first_stride: int) -> list[LevelTargets]:
    """Per level, the (image, anchor, cell) positions and their targets after OTA selection.

    ``head_maps[i]``: ``(B, na, H_i, W_i, 5 + nc)`` raw maps; ``targets``: ``(M, 6)`` normalised
    ``[image, class, cx, cy, w, h]``; ``anchors``: ``(nl, na, 2)`` grid units; ``strides``: ``(nl,)``.
    ``first_stride``: ``strides[0]`` as a number (read once when the loss is built, not in every step).
    ``LevelTargets.box`` is the matched target in grid units of its level, centre relative to the cell.
    """
    device = head_maps[0].device
    nl, num_classes = len(head_maps), head_maps[0].shape[-1] - 5
    grid_shapes = [(int(p.shape[2]), int(p.shape[3])) for p in head_maps]
    candidates = build_targets(targets, anchors, grid_shapes, anchor_t)
    input_size = grid_shapes[0][0] * first_stride  # upstream: imgs[i].shape[1], the input height
    per_level: list[list[tuple[Tensor, ...]]] = [[] for _ in range(nl)]

    for image in range(head_maps[0].shape[0]):
        gts = targets[targets[:, 0] == image]
        if gts.shape[0] == 0:
            continue
        gt_xyxy = _xywh_to_xyxy(gts[:, 2:6] * input_size)
        parts = []  # per level: (level, image, anchor, gj, gi, anchor_wh, raw prediction rows)
        for level, (pred, cand) in enumerate(zip(head_maps, candidates, strict=True)):
            mine = cand.image == image
            b, a, gj, gi = cand.image[mine], cand.anchor[mine], cand.gj[mine], cand.gi[mine]
            parts.append((torch.full((len(b),), level, device=device), b, a, gj, gi, cand.anchor_wh[mine],
                          pred[b, a, gj, gi]))
        level_of, b, a, gj, gi, anchor_wh, rows = (torch.cat(column, dim=0) for column in zip(*parts, strict=True))
        if rows.shape[0] == 0:
            continue
        stride = strides[level_of].to(rows.dtype)[:, None]
        grid = torch.stack((gi, gj), dim=1)
        pxy = (rows[:, :2].sigmoid() * 2.0 - 0.5 + grid) * stride
        pwh = (rows[:, 2:4].sigmoid() * 2) ** 2 * anchor_wh * stride
        iou = box_iou(gt_xyxy, _xywh_to_xyxy(torch.cat((pxy, pwh), dim=1)))  # (G, N)
        iou_cost = -torch.log(iou + 1e-8)
        # Class cost: BCE of the geometric mean of class and objectness probabilities, through its logit.
        score = (rows[:, 5:].float().sigmoid() * rows[:, 4:5].sigmoid()).sqrt()  # (N, nc)
        logit = torch.log(score / (1 - score))[None].expand(gts.shape[0], -1, -1)
        onehot = F.one_hot(gts[:, 1].long(), num_classes).float()[:, None].expand_as(logit)
        cls_cost = F.binary_cross_entropy_with_logits(logit, onehot, reduction="none").sum(-1)
        chosen, gt_index = _select(cls_cost + IOU_COST_WEIGHT * iou_cost, iou)
        matched = gts[gt_index]
        level_of, b, a, gj, gi, anchor_wh = (t[chosen] for t in (level_of, b, a, gj, gi, anchor_wh))
        for level in range(nl):
            here = level_of == level
            per_level[level].append((b[here], a[here], gj[here], gi[here], anchor_wh[here], matched[here]))

    out = []
    for level, (height, width) in enumerate(grid_shapes):
        if per_level[level]:
            b, a, gj, gi, anchor_wh, matched = (torch.cat(c, dim=0) for c in zip(*per_level[level], strict=True))
        else:  # no target in the batch
            b = a = gj = gi = torch.zeros(0, dtype=torch.long, device=device)
            anchor_wh, matched = targets.new_zeros(0, 2), targets.new_zeros(0, 6)
        gain = matched.new_full((4,), width)  # filled on the device: a host tensor's copy would wait for it
        gain[1::2] = height
        box = matched[:, 2:6] * gain
        box[:, :2] -= torch.stack((gi, gj), dim=1)
        out.append(LevelTargets(image=b, anchor=a, gj=gj, gi=gi, box=box, anchor_wh=anchor_wh,
                                cls=matched[:, 1].long()))
    return out
