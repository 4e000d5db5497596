"""YOLOv6 0.2.1's two label assigners, batched over images with padded ground truth.

Their ``ComputeLoss`` assigns with ATSS (Zhang et al. 2020, "Bridging the gap between anchor-based and
anchor-free detection") in the first ``warmup_epoch`` epochs, and with TAL (TOOD's task-aligned assigner,
Feng et al. 2021) after (``yolov6/assigners/{atss,tal}_assigner.py``). Same arithmetic as theirs, so the
same cells win ties (``torch.topk`` on identical tensors).

Shapes: B images, G = the most objects in one image (rows past an image's count are padding, ``mask_gt``
0), A anchor points over all levels (stride 8 first). Boxes are xyxy in input pixels. Both return
``Assignment(labels (B, A), boxes (B, A, 4), scores (B, A, nc), fg (B, A) bool)``: the matched object's
class and box per anchor, and the soft class target (one-hot times the IoU (ATSS) or the normalised
alignment metric (TAL)); background anchors have score 0.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

EPS = 1e-9


class Assignment(NamedTuple):
    labels: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    fg: torch.Tensor


def pairwise_iou(gt: torch.Tensor, boxes: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(B, G, 4) x (B, A, 4) -> (B, G, A) IoU, areas clipped at 0 (their ``iou_calculator``)."""
    a, b = gt.unsqueeze(2), boxes.unsqueeze(1)
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    overlap = (rb - lt).clip(0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clip(0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clip(0).prod(-1)
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
    """(A, 2) points x (B, G, 4) boxes -> (B, G, A) 1.0 where the point is strictly inside the box."""
    lt = points[None, None] - gt[..., None, :2]
    rb = gt[..., None, 2:] - points[None, None]
    return (torch.cat((lt, rb), -1).min(-1)[0] > eps).to(gt.dtype)


def one_per_anchor(mask_pos: torch.Tensor, overlaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An anchor claimed by several objects keeps the one it overlaps most (their ``select_highest_overlaps``).

    Returns (matched object index (B, A), foreground count (B, A), the resolved mask (B, G, A)).
    """
    fg = mask_pos.sum(-2)
    if fg.max() > 1:
        contested = (fg.unsqueeze(1) > 1).expand_as(mask_pos)
        best = F.one_hot(overlaps.argmax(1), mask_pos.shape[1]).permute(0, 2, 1).to(overlaps.dtype)
        mask_pos = torch.where(contested, best, mask_pos)
        fg = mask_pos.sum(-2)
    return mask_pos.argmax(-2), fg, mask_pos


def _gather(gt_labels: torch.Tensor, gt_boxes: torch.Tensor, matched: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per anchor the matched object's label (B, A) and box (B, A, 4)."""
    b, g = gt_boxes.shape[:2]
    flat = (matched + torch.arange(b, device=matched.device)[:, None] * g).long()
    return gt_labels.flatten()[flat], gt_boxes.reshape(-1, 4)[flat]


def _topk_mask(values: torch.Tensor, k: int, valid: torch.Tensor, largest: bool) -> torch.Tensor:
    """(B, G, A) 1.0 at each object's ``k`` best anchors; rows of padding objects are all 0."""
    _, idx = values.topk(k, dim=-1, largest=largest)
    # Padding rows point every pick at anchor 0, counted k > 1 times, which the last line clears.
    idx = torch.where(valid, idx, torch.zeros_like(idx))
    count = F.one_hot(idx, values.shape[-1]).sum(-2)
    return torch.where(count > 1, torch.zeros_like(count), count).to(values.dtype)


@torch.no_grad()
def atss_assign(anchors: torch.Tensor, level_sizes: list[int], gt_labels: torch.Tensor, gt_boxes: torch.Tensor,
                mask_gt: torch.Tensor, pred_boxes: torch.Tensor, num_classes: int, topk: int = 9) -> Assignment:
    """ATSS: per object the ``topk`` anchors nearest its centre on each level are candidates; those with an
    IoU above the candidates' mean + std and a centre inside the object are positive.

    ``anchors`` (A, 4): square anchor boxes of side 5 strides at every cell centre; ``gt_labels`` (B, G, 1);
    ``mask_gt`` (B, G, 1); ``pred_boxes`` (B, A, 4), whose IoU with the matched object scales the score.
    """
    b, g = gt_boxes.shape[:2]
    n = anchors.shape[0]
    if g == 0:
        return _background(b, n, num_classes, gt_boxes.device)
    overlaps = anchor_iou(gt_boxes.reshape(-1, 4), anchors).reshape(b, g, n)
    gt_centres = torch.stack(((gt_boxes[..., 0] + gt_boxes[..., 2]) / 2.0, (gt_boxes[..., 1] + gt_boxes[..., 3]) / 2.0), -1)
    points = torch.stack(((anchors[:, 0] + anchors[:, 2]) / 2.0, (anchors[:, 1] + anchors[:, 3]) / 2.0), -1)
    distances = (gt_centres.reshape(-1, 1, 2) - points[None]).pow(2).sum(-1).sqrt().reshape(b, g, n)

    valid = mask_gt.repeat(1, 1, topk).bool()
    candidate, candidate_idx, start = [], [], 0
    for level, size in zip(distances.split(level_sizes, dim=-1), level_sizes, strict=True):
        k = min(topk, size)
        _, idx = level.topk(k, dim=-1, largest=False)
        candidate_idx.append(idx + start)
        idx = torch.where(valid[..., :k], idx, torch.zeros_like(idx))
        count = F.one_hot(idx, size).sum(-2)
        candidate.append(torch.where(count > 1, torch.zeros_like(count), count).to(distances.dtype))
        start += size
    is_candidate = torch.cat(candidate, -1)
    candidate_idx = torch.cat(candidate_idx, -1)

    # IoU threshold per object: mean + (unbiased) std of its candidates' IoUs.
    candidate_iou = torch.where(is_candidate > 0, overlaps, torch.zeros_like(overlaps))
    picked = candidate_iou.reshape(b * g, n).gather(1, candidate_idx.reshape(b * g, -1)).reshape(b, g, -1)
    threshold = picked.mean(-1, keepdim=True) + picked.std(-1, keepdim=True)
    is_pos = torch.where(candidate_iou > threshold.repeat(1, 1, n), is_candidate, torch.zeros_like(is_candidate))
    mask_pos = is_pos * centres_inside(points, gt_boxes) * mask_gt

    matched, fg, mask_pos = one_per_anchor(mask_pos, overlaps)
    labels, boxes = _gather(gt_labels, gt_boxes, matched)
    labels = torch.where(fg > 0, labels.reshape(b, n), torch.full_like(labels.reshape(b, n), num_classes))
    scores = F.one_hot(labels.long(), num_classes + 1).float()[..., :num_classes]
    ious = (pairwise_iou(gt_boxes, pred_boxes) * mask_pos).max(-2)[0].unsqueeze(-1)
    return Assignment(labels.long(), boxes.reshape(b, n, 4), scores * ious, fg.bool())


@torch.no_grad()
def tal_assign(pred_scores: torch.Tensor, pred_boxes: torch.Tensor, points: torch.Tensor, gt_labels: torch.Tensor,
               gt_boxes: torch.Tensor, mask_gt: torch.Tensor, num_classes: int, topk: int = 13, alpha: float = 1.0,
               beta: float = 6.0) -> Assignment:
    """TAL: per object the ``topk`` anchors inside it by ``score ** alpha * IoU ** beta`` (the predicted score
    of the object's class, the predicted box's IoU) are positive; the class target is the one-hot scaled by
    the alignment normalised so that each object's best anchor gets its best IoU.

    ``pred_scores`` (B, A, nc) sigmoid; ``pred_boxes`` (B, A, 4) input px; ``points`` (A, 2) cell centres px.
    """
    b, g = gt_boxes.shape[:2]
    if g == 0:
        return _background(b, pred_scores.shape[1], num_classes, gt_boxes.device, pred_scores.dtype)
    # Padding rows carry label -1: their metric is 0 whatever class is read (their IoU is 0).
    cls_idx = gt_labels.long().squeeze(-1).clamp(min=0)
    box_scores = pred_scores.permute(0, 2, 1)[torch.arange(b)[:, None], cls_idx]  # (B, G, A)
    overlaps = pairwise_iou(gt_boxes, pred_boxes)
    metric = box_scores.pow(alpha) * overlaps.pow(beta)
    inside = centres_inside(points, gt_boxes)
    in_topk = _topk_mask(metric * inside, topk, mask_gt.repeat(1, 1, topk).bool(), largest=True)
    mask_pos = in_topk * inside * mask_gt

    matched, fg, mask_pos = one_per_anchor(mask_pos, overlaps)
    labels, boxes = _gather(gt_labels.long(), gt_boxes, matched)
    labels = labels.clamp(min=0)
    scores = torch.where(fg[..., None].repeat(1, 1, num_classes) > 0, F.one_hot(labels, num_classes), 0)

    metric = metric * mask_pos
    best_metric = metric.max(-1, keepdim=True)[0]
    best_iou = (overlaps * mask_pos).max(-1, keepdim=True)[0]
    norm = (metric * best_iou / (best_metric + EPS)).max(-2)[0].unsqueeze(-1)
    return Assignment(labels, boxes, scores * norm, fg.bool())


def _background(b: int, n: int, num_classes: int, device: torch.device, dtype=torch.float32) -> Assignment:
    """No object in the batch: every anchor background."""
    return Assignment(torch.full((b, n), num_classes, device=device, dtype=torch.long),
                      torch.zeros(b, n, 4, device=device, dtype=dtype), torch.zeros(b, n, num_classes, device=device,
                                                                                    dtype=dtype),
                      torch.zeros(b, n, dtype=torch.bool, device=device))
