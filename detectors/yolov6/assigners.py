"""YOLOv6 0.2.1's two label assigners, batched over images, the ground truth as one row per object.

Their ``ComputeLoss`` assigns with ATSS (Zhang et al. 2020, "Bridging the gap between anchor-based and
anchor-free detection") in the first ``warmup_epoch`` epochs, and with TAL (TOOD's task-aligned assigner,
Feng et al. 2021) after (``yolov6/assigners/{atss,tal}_assigner.py``). Same arithmetic as theirs, so the
same cells win ties (``torch.topk`` on identical tensors).

Both run on the batch's objects as rows, without padding (``*_rows``): M objects with their image index,
A anchor points over all levels (stride 8 first), boxes xyxy in input pixels. Their padded form (B images, G
= the most objects in one image) needs G on the host, which a training step would read back from the device;
as rows nothing is read (on a GPU each read waits for the device), the values are the same bits
(tests/detectors/yolov6/test_yolov6_sync_free.py keeps the padded code as its oracle), and a row per object
takes less memory than G per image. ``atss_assign`` / ``tal_assign`` keep the padded signature: a padding
row is an object with ``mask_gt`` 0, label -1 and box 0, which changes nothing.

Where objects of one image compete for an anchor (their reductions over G), the rows are reduced per image
and anchor with ``scatter_reduce``: a max (exact in any order) or the first row reaching it (their argmax).
An anchor no object claims keeps the image's first object (their argmax over an all-zero column), or the
padding row (label -1, box 0) in an image without objects.

Both return ``Assignment(labels (B, A), boxes (B, A, 4), scores (B, A, nc), fg (B, A) bool)``: the matched
object's class and box per anchor, and the soft class target (one-hot times the IoU (ATSS) or the normalised
alignment metric (TAL)); background anchors have score 0.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

EPS = 1e-9


class Assignment(NamedTuple):
    labels: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    fg: torch.Tensor


def one_hot(index: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``F.one_hot`` without its range check, which reads the index's min and max (on the CPU only; on a GPU
    the scatter's own check stands in for it): int64 (*index.shape, num_classes)."""
    out = torch.zeros((*index.shape, num_classes), dtype=torch.long, device=index.device)
    return out.scatter_(-1, index.unsqueeze(-1), 1)


def row_iou(gt: torch.Tensor, boxes: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(M, 4) objects x (M, A, 4) boxes of each object's image -> (M, A) IoU, areas clipped at 0 (their
    ``iou_calculator``)."""
    a = gt.unsqueeze(1)
    lt = torch.maximum(a[..., :2], boxes[..., :2])
    rb = torch.minimum(a[..., 2:], boxes[..., 2:])
    overlap = (rb - lt).clip(0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clip(0).prod(-1)
    area_b = (boxes[..., 2:] - boxes[..., :2]).clip(0).prod(-1)
    return overlap / (area_a + area_b - overlap + eps)


def anchor_iou(gt: torch.Tensor, anchors: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(M, 4) x (A, 4) -> (M, A) IoU with the union floored at ``eps`` (MMDetection's ``bbox_overlaps``)."""
    area_g = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    lt = torch.max(gt[:, None, :2], anchors[None, :, :2])
    rb = torch.min(gt[:, None, 2:], anchors[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = (area_g[:, None] + area_a[None, :] - overlap).clamp(min=eps)
    return overlap / union


def centres_inside(points: torch.Tensor, gt: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(A, 2) points x (M, 4) boxes -> (M, A) 1.0 where the point is strictly inside the box."""
    lt = points[None] - gt[:, None, :2]
    rb = gt[:, None, 2:] - points[None]
    return (torch.cat((lt, rb), -1).min(-1)[0] > eps).to(gt.dtype)


def _per_image(values: torch.Tensor, image: torch.Tensor, batch_size: int, reduce: str, fill: float) -> torch.Tensor:
    """(M, A) rows -> (B, A): ``reduce`` ("amax" / "amin") over each image's rows, ``fill`` where it has none."""
    out = values.new_full((batch_size, values.shape[1]), fill)
    return out.scatter_reduce_(0, image[:, None].expand_as(values), values, reduce)


def one_per_anchor(mask_pos: torch.Tensor, overlaps: torch.Tensor, image: torch.Tensor,
                   batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An anchor claimed by several objects of its image keeps the one it overlaps most, the first on a tie
    (their ``select_highest_overlaps``: an argmax over all the image's objects, claimants or not).

    ``mask_pos``, ``overlaps``: (M, A). Returns (matched row per anchor (B, A), in [0, M], M for the padding
    row; the foreground count (B, A); the resolved mask (M, A)).
    """
    m = mask_pos.shape[0]
    rows = torch.arange(m, device=mask_pos.device)[:, None].expand_as(mask_pos)
    fg = mask_pos.new_zeros((batch_size, mask_pos.shape[1])).index_add_(0, image, mask_pos)
    contested = fg > 1
    # Their argmax: the first row at the image's largest overlap (a NaN counts as largest, as in torch.argmax).
    top = _per_image(overlaps, image, batch_size, "amax", -math.inf)
    at_top = (overlaps == top[image]) | overlaps.isnan()
    best = _per_image(torch.where(at_top, rows, m), image, batch_size, "amin", m)
    mask_pos = torch.where(contested[image], (rows == best[image]).to(mask_pos.dtype), mask_pos)
    fg = torch.where(contested, torch.ones_like(fg), fg)
    owner = _per_image(torch.where(mask_pos > 0, rows, m), image, batch_size, "amin", m)
    first = torch.full((batch_size,), m, device=image.device).scatter_reduce_(0, image, rows[:, 0], "amin")
    return torch.where(owner == m, first[:, None], owner), fg, mask_pos


def _gather(labels: torch.Tensor, boxes: torch.Tensor, owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per anchor the matched row's label (B, A) and box (B, A, 4); row M is the padding row (-1, box 0)."""
    labels = torch.cat((labels, labels.new_full((1,), -1)))
    boxes = torch.cat((boxes, boxes.new_zeros(1, 4)))
    return labels[owner], boxes[owner]


def _topk_mask(values: torch.Tensor, k: int, largest: bool) -> torch.Tensor:
    """(M, A) 1.0 at each row's ``k`` best anchors, and the indices (M, k)."""
    _, idx = values.topk(k, dim=-1, largest=largest)
    return torch.zeros_like(values).scatter_(-1, idx, 1.0), idx


@torch.no_grad()
def atss_assign_rows(anchors: torch.Tensor, level_sizes: list[int], image: torch.Tensor, gt_labels: torch.Tensor,
                     gt_boxes: torch.Tensor, mask_gt: torch.Tensor, pred_boxes: torch.Tensor, num_classes: int,
                     topk: int = 9) -> Assignment:
    """ATSS: per object the ``topk`` anchors nearest its centre on each level are candidates; those with an
    IoU above the candidates' mean + std and a centre inside the object are positive.

    ``anchors`` (A, 4): square anchor boxes of side 5 strides at every cell centre; per object ``image`` (M,)
    its image, ``gt_labels`` (M,), ``gt_boxes`` (M, 4), ``mask_gt`` (M,) 0 for a box that does not count;
    ``pred_boxes`` (B, A, 4), whose IoU with the matched object scales the score.
    """
    b, n = pred_boxes.shape[:2]
    if gt_boxes.shape[0] == 0:
        return _background(b, n, num_classes, gt_boxes.device)
    overlaps = anchor_iou(gt_boxes, anchors)  # (M, A)
    gt_centres = torch.stack(((gt_boxes[:, 0] + gt_boxes[:, 2]) / 2.0, (gt_boxes[:, 1] + gt_boxes[:, 3]) / 2.0), -1)
    points = torch.stack(((anchors[:, 0] + anchors[:, 2]) / 2.0, (anchors[:, 1] + anchors[:, 3]) / 2.0), -1)
    distances = (gt_centres[:, None] - points[None]).pow(2).sum(-1).sqrt()  # (M, A)

    candidate, candidate_idx, start = [], [], 0
    for level, size in zip(distances.split(level_sizes, dim=-1), level_sizes, strict=True):
        mask, idx = _topk_mask(level, min(topk, size), largest=False)
        candidate.append(mask)
        candidate_idx.append(idx + start)
        start += size
    is_candidate = torch.cat(candidate, -1)
    candidate_idx = torch.cat(candidate_idx, -1)

    # IoU threshold per object: mean + (unbiased) std of its candidates' IoUs.
    candidate_iou = torch.where(is_candidate > 0, overlaps, torch.zeros_like(overlaps))
    picked = candidate_iou.gather(1, candidate_idx)
    threshold = picked.mean(-1, keepdim=True) + picked.std(-1, keepdim=True)
    is_pos = torch.where(candidate_iou > threshold, is_candidate, torch.zeros_like(is_candidate))
    mask_pos = is_pos * centres_inside(points, gt_boxes) * mask_gt[:, None]

    owner, fg, mask_pos = one_per_anchor(mask_pos, overlaps, image, b)
    labels, boxes = _gather(gt_labels, gt_boxes, owner)
    labels = torch.where(fg > 0, labels, torch.full_like(labels, num_classes))
    scores = one_hot(labels.long(), num_classes + 1).float()[..., :num_classes]
    ious = _per_image(row_iou(gt_boxes, pred_boxes[image]) * mask_pos, image, b, "amax", 0.0).unsqueeze(-1)
    return Assignment(labels.long(), boxes, scores * ious, fg.bool())


@torch.no_grad()
def tal_assign_rows(pred_scores: torch.Tensor, pred_boxes: torch.Tensor, points: torch.Tensor, image: torch.Tensor,
                    gt_labels: torch.Tensor, gt_boxes: torch.Tensor, mask_gt: torch.Tensor, num_classes: int,
                    topk: int = 13, alpha: float = 1.0, beta: float = 6.0) -> Assignment:
    """TAL: per object the ``topk`` anchors inside it by ``score ** alpha * IoU ** beta`` (the predicted score
    of the object's class, the predicted box's IoU) are positive; the class target is the one-hot scaled by
    the alignment normalised so that each object's best anchor gets its best IoU.

    ``pred_scores`` (B, A, nc) sigmoid; ``pred_boxes`` (B, A, 4) input px; ``points`` (A, 2) cell centres px;
    objects as rows as ``atss_assign_rows``.
    """
    b, n = pred_scores.shape[:2]
    if gt_boxes.shape[0] == 0:
        return _background(b, n, num_classes, gt_boxes.device, pred_scores.dtype)
    # A padding row carries label -1: its metric is 0 whatever class is read (its IoU is 0).
    box_scores = pred_scores.permute(0, 2, 1)[image, gt_labels.long().clamp(min=0)]  # (M, A)
    overlaps = row_iou(gt_boxes, pred_boxes[image])
    metric = box_scores.pow(alpha) * overlaps.pow(beta)
    inside = centres_inside(points, gt_boxes)
    in_topk, _ = _topk_mask(metric * inside, topk, largest=True)
    mask_pos = in_topk * inside * mask_gt[:, None]

    owner, fg, mask_pos = one_per_anchor(mask_pos, overlaps, image, b)
    labels, boxes = _gather(gt_labels.long(), gt_boxes, owner)
    labels = labels.clamp(min=0)
    scores = torch.where(fg[..., None].repeat(1, 1, num_classes) > 0, one_hot(labels, num_classes), 0)

    metric = metric * mask_pos
    best_metric = metric.max(-1, keepdim=True)[0]
    best_iou = (overlaps * mask_pos).max(-1, keepdim=True)[0]
    norm = _per_image(metric * best_iou / (best_metric + EPS), image, b, "amax", 0.0).unsqueeze(-1)
    return Assignment(labels, boxes, scores * norm, fg.bool())


def _padding_as_rows(gt_labels: torch.Tensor, gt_boxes: torch.Tensor, mask_gt: torch.Tensor):
    """Their padded (B, G, 1) labels, (B, G, 4) boxes, (B, G, 1) mask -> rows (image, labels, boxes, mask)."""
    b, g = gt_boxes.shape[:2]
    image = torch.arange(b, device=gt_boxes.device).repeat_interleave(g)
    return image, gt_labels.reshape(-1), gt_boxes.reshape(-1, 4), mask_gt.reshape(-1)


def atss_assign(anchors: torch.Tensor, level_sizes: list[int], gt_labels: torch.Tensor, gt_boxes: torch.Tensor,
                mask_gt: torch.Tensor, pred_boxes: torch.Tensor, num_classes: int, topk: int = 9) -> Assignment:
    """``atss_assign_rows`` on their padded ground truth: ``gt_labels`` (B, G, 1), ``gt_boxes`` (B, G, 4),
    ``mask_gt`` (B, G, 1)."""
    image, labels, boxes, mask = _padding_as_rows(gt_labels, gt_boxes, mask_gt)
    return atss_assign_rows(anchors, level_sizes, image, labels, boxes, mask, pred_boxes, num_classes, topk=topk)


def tal_assign(pred_scores: torch.Tensor, pred_boxes: torch.Tensor, points: torch.Tensor, gt_labels: torch.Tensor,
               gt_boxes: torch.Tensor, mask_gt: torch.Tensor, num_classes: int, topk: int = 13, alpha: float = 1.0,
               beta: float = 6.0) -> Assignment:
    """``tal_assign_rows`` on their padded ground truth (shapes as ``atss_assign``)."""
    image, labels, boxes, mask = _padding_as_rows(gt_labels, gt_boxes, mask_gt)
    return tal_assign_rows(pred_scores, pred_boxes, points, image, labels, boxes, mask, num_classes, topk=topk,
                           alpha=alpha, beta=beta)


def _background(b: int, n: int, num_classes: int, device: torch.device, dtype=torch.float32) -> Assignment:
    """No object in the batch: every anchor background."""
    return Assignment(torch.full((b, n), num_classes, device=device, dtype=torch.long),
                      torch.zeros(b, n, 4, device=device, dtype=dtype), torch.zeros(b, n, num_classes, device=device,
                                                                                    dtype=dtype),
                      torch.zeros(b, n, dtype=torch.bool, device=device))
