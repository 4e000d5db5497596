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

On a GPU every value read back to the host, and every boolean mask (its shape depends on the data), waits
for the device. So the dynamic k stays a tensor (``_select``), the first stride is a number the loss reads
once, and the images are slices of one stable sort: two reads of counts per call (candidates and ground
truths per image, positives per level) where slicing image by image with masks waited about 40 times per
image. The slices keep upstream's shapes, so every ``topk`` and every elementwise kernel sees the same row.

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


def _one_hot(index: Tensor, num_classes: int) -> Tensor:
    """``F.one_hot`` without its range check, which reads the index's min and max (on the CPU only; on a GPU
    the scatter's own check stands in for it): int64 (*index.shape, num_classes)."""
    out = torch.zeros((*index.shape, num_classes), dtype=torch.long, device=index.device)
    return out.scatter_(-1, index.unsqueeze(-1), 1)


def _select(cost: Tensor, iou: Tensor) -> tuple[Tensor, Tensor]:
    """(G, N) costs and IoUs -> (chosen candidate mask (N,), the ground truth of every candidate (N,), which
    counts where chosen).

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
    matching = torch.where(shared, _one_hot(cheapest, cost.shape[0]).T.to(cost.dtype), matching)
    return matching.sum(0) > 0.0, matching.argmax(0)


def _cost(gts: Tensor, rows: Tensor, level_of: Tensor, gj: Tensor, gi: Tensor, anchor_wh: Tensor, strides: Tensor,
          input_size: int, num_classes: int) -> tuple[Tensor, Tensor]:
    """One image's (G, N) cost and IoU between its ground truths ``gts`` (G, 6) and its candidates: raw
    prediction ``rows`` (N, 5 + nc) at their level, cell and anchor. The arithmetic of upstream's image loop,
    on tensors of the same shapes (elementwise kernels can round a vector's tail unlike its body)."""
    gt_xyxy = _xywh_to_xyxy(gts[:, 2:6] * input_size)
    stride = strides[level_of].to(rows.dtype)[:, None]
    grid = torch.stack((gi, gj), dim=1)
    pxy = (rows[:, :2].sigmoid() * 2.0 - 0.5 + grid) * stride
    pwh = (rows[:, 2:4].sigmoid() * 2) ** 2 * anchor_wh * stride
    iou = box_iou(gt_xyxy, _xywh_to_xyxy(torch.cat((pxy, pwh), dim=1)))  # (G, N)
    iou_cost = -torch.log(iou + 1e-8)
    # Class cost: BCE of the geometric mean of class and objectness probabilities, through its logit.
    score = (rows[:, 5:].float().sigmoid() * rows[:, 4:5].sigmoid()).sqrt()  # (N, nc)
    logit = torch.log(score / (1 - score))[None].expand(gts.shape[0], -1, -1)
    onehot = _one_hot(gts[:, 1].long(), num_classes).float()[:, None].expand_as(logit)
    cls_cost = F.binary_cross_entropy_with_logits(logit, onehot, reduction="none").sum(-1)
    return cls_cost + IOU_COST_WEIGHT * iou_cost, iou


@torch.no_grad()
def ota_assign(head_maps: list[Tensor], targets: Tensor, anchors: Tensor, strides: Tensor,
               anchor_t: float, first_stride: int) -> list[LevelTargets]:
    """Per level, the (image, anchor, cell) positions and their targets after OTA selection.

    ``head_maps[i]``: ``(B, na, H_i, W_i, 5 + nc)`` raw maps; ``targets``: ``(M, 6)`` normalised
    ``[image, class, cx, cy, w, h]``; ``anchors``: ``(nl, na, 2)`` grid units; ``strides``: ``(nl,)``.
    ``first_stride``: ``strides[0]`` as a number (read once when the loss is built, not in every step).
    ``LevelTargets.box`` is the matched target in grid units of its level, centre relative to the cell.

    Two reads of the device per call, both of counts: per image its candidates and ground truths (its slice
    of each, so that every image's ``topk`` runs on exactly upstream's row), and per level its positives.
    Slicing image by image with boolean masks instead waits for the device at every mask (about 40 per
    image).
    """
    device = head_maps[0].device
    batch, nl, num_classes = head_maps[0].shape[0], len(head_maps), head_maps[0].shape[-1] - 5
    grid_shapes = [(int(p.shape[2]), int(p.shape[3])) for p in head_maps]
    candidates = build_targets(targets, anchors, grid_shapes, anchor_t)
    input_size = grid_shapes[0][0] * first_stride  # upstream: imgs[i].shape[1], the input height

    # Every level's candidates, grouped by image by a stable sort: inside an image they stay in level then
    # find_3_positive order, upstream's per-image concatenation. Ground truths likewise, in loader order.
    level_of = torch.cat([torch.full((len(c.image),), level, device=device) for level, c in enumerate(candidates)])
    columns = [torch.cat(column) for column in zip(*[(c.image, c.anchor, c.gj, c.gi, c.anchor_wh, p[c.image, c.anchor,
               c.gj, c.gi]) for p, c in zip(head_maps, candidates, strict=True)], strict=True)]
    order = torch.argsort(columns[0], stable=True)
    level_of, b, a, gj, gi, anchor_wh, rows = (t[order] for t in (level_of, *columns))
    gt_image = targets[:, 0].long()
    gts_by_image = targets[torch.argsort(gt_image, stable=True)]
    counts = torch.zeros(2, batch, dtype=torch.long, device=device)
    counts[0].index_add_(0, b, torch.ones_like(b))
    counts[1].index_add_(0, gt_image, torch.ones_like(gt_image))
    n_candidates, n_gts = counts.tolist()  # the first read

    chosen, matched = [], []
    per_image = zip(*(t.split(n_candidates) for t in (level_of, gj, gi, anchor_wh, rows)), gts_by_image.split(n_gts),
                    strict=True)
    for level_i, gj_i, gi_i, anchor_wh_i, rows_i, gts in per_image:
        if len(gts) == 0 or len(rows_i) == 0:  # no candidate comes without a ground truth of its image
            continue
        cost, iou = _cost(gts, rows_i, level_i, gj_i, gi_i, anchor_wh_i, strides, input_size, num_classes)
        chosen_i, gt_index = _select(cost, iou)
        chosen.append(chosen_i)
        matched.append(gts[gt_index])
    chosen = torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.bool, device=device)
    matched = torch.cat(matched) if matched else targets.new_zeros(0, 6)

    # Positives level by level, each in image then candidate order (upstream's per-level concatenation).
    n = len(chosen)
    key = torch.where(chosen, level_of * n + torch.arange(n, device=device), nl * n)
    per_level = torch.zeros(nl, dtype=torch.long, device=device).index_add_(0, level_of, chosen.long()).tolist()
    picks = torch.argsort(key)[: sum(per_level)].split(per_level)  # the second read, above

    out = []
    for pick, (height, width) in zip(picks, grid_shapes, strict=True):
        level_matched = matched[pick]
        gain = level_matched.new_full((4,), width)  # filled on the device: a host tensor's copy would wait for it
        gain[1::2] = height
        box = level_matched[:, 2:6] * gain
        box[:, :2] -= torch.stack((gi[pick], gj[pick]), dim=1)
        out.append(LevelTargets(image=b[pick], anchor=a[pick], gj=gj[pick], gi=gi[pick], box=box,
                                anchor_wh=anchor_wh[pick], cls=level_matched[:, 1].long()))
    return out
