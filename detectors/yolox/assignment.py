"""SimOTA label assignment (YOLOX, Ge et al. 2021, sec 2.2), batched over images without a Python loop.

For every image, ground truth g and cell (anchor point) a:

1. Geometry prior: which cells may take g at all (``GeometryPrior``). Cells that no ground truth of the
   image admits are not candidates; a candidate outside g's own region pays ``penalty`` in the cost.
2. Cost ``c[g, a] = BCE(sqrt(sigmoid(cls_a) * sigmoid(obj_a)), onehot(class_g)).sum() - 3 log(IoU + 1e-8)
   + penalty * (a outside g's region)``, with IoU between g and the cell's decoded box.
3. Dynamic k: ``k_g = max(1, int(sum of the 10 largest IoUs of g over the candidates))``; g takes its
   ``k_g`` cheapest candidates.
4. A cell taken by several ground truths keeps the one of lowest cost (over all ground truths).

Two geometry priors exist in Megvii's code; this module pins their **main branch** (commit 6ddff48,
``get_geometry_constraint``: candidates are the cells whose centre lies within 1.5 strides of a ground
truth's centre, penalty 1e6) and offers their **0.3.0 release** as ``"0.3.0"`` (``get_in_boxes_info``:
candidates are cells whose centre is inside a ground-truth box or within 2.5 strides of its centre; a cell
not both inside g's box and near g's centre pays 1e5), selected by ``losses.yolox.simota_prior``.

Images are padded to the largest ground-truth count of the batch; padded ground truths cost +inf and are
never chosen. Tensors are (B, G, A): at 640 px (A = 8400) and 16 images of 50 objects, ~27 M floats each.
The class cost uses ``sum_c BCE(p_c, y_c) = sum_c -log(1 - p_c) + log(1 - p_k) - log(p_k)`` for the one-hot
class k, so it needs (B, A, nc) and (B, G, A) tensors rather than Megvii's (G, A, nc); the two agree to
float rounding (~1e-7 relative).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from detectors.ops.boxes import bbox_iou


@dataclass(frozen=True)
class GeometryPrior:
    """Which cells may be assigned to a ground truth (step 1 above)."""

    center_radius: float  # in strides: a cell centre within this distance (per axis) of the box centre
    use_box: bool  # 0.3.0: also cells whose centre lies inside the box (candidate: box OR centre region)
    penalty: float  # cost added for a candidate outside this ground truth's own region


GEOMETRY_PRIORS: dict[str, GeometryPrior] = {
    "main": GeometryPrior(center_radius=1.5, use_box=False, penalty=1e6),
    "0.3.0": GeometryPrior(center_radius=2.5, use_box=True, penalty=1e5),
}
DEFAULT_PRIOR = "main"
# Candidates per ground truth whose IoUs are summed into its dynamic k.
TOP_IOU_CANDIDATES = 10


@dataclass
class Assignment:
    """Per image and cell: ``foreground`` (B, A) bool; where it is set, ``gt_index`` (B, A) int64 is the
    matched ground truth (index into the padded (B, G) ground truths) and ``iou`` (B, A) its IoU with the
    cell's predicted box. ``num_foreground`` counts the foreground cells of the batch."""

    foreground: torch.Tensor
    gt_index: torch.Tensor
    iou: torch.Tensor
    num_foreground: int


def _regions(
    gt_boxes: torch.Tensor, centers: torch.Tensor, strides: torch.Tensor, prior: GeometryPrior
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, G, A) bool masks: cell centre within ``center_radius`` strides of the box centre, and (0.3.0
    only, else None) cell centre inside the box.

    Deltas are formed as Megvii forms them (``centre - (gt_x - r)`` etc., strictly positive), so border
    cases fall on the same side.
    """
    cx, cy = centers[:, 0], centers[:, 1]  # (A,)
    gx, gy = gt_boxes[..., 0:1], gt_boxes[..., 1:2]  # (B, G, 1)
    dist = strides * prior.center_radius  # (A,)
    near = torch.stack((cx - (gx - dist), cy - (gy - dist), (gx + dist) - cx, (gy + dist) - cy), -1).amin(-1) > 0.0
    if not prior.use_box:
        return near, None
    half_w, half_h = 0.5 * gt_boxes[..., 2:3], 0.5 * gt_boxes[..., 3:4]
    inside = torch.stack((cx - (gx - half_w), cy - (gy - half_h), (gx + half_w) - cx, (gy + half_h) - cy), -1)
    return near, inside.amin(-1) > 0.0


def class_cost(cls_logits: torch.Tensor, obj_logits: torch.Tensor, gt_classes: torch.Tensor) -> torch.Tensor:
    """(B, G, A): sum over classes of BCE(sqrt(sigmoid(cls) * sigmoid(obj)), onehot(gt class)).

    cls_logits (B, A, nc), obj_logits (B, A, 1), gt_classes (B, G) int64. Logs are clamped at -100 as
    ``F.binary_cross_entropy`` clamps them.
    """
    p = (cls_logits.float().sigmoid() * obj_logits.float().sigmoid()).sqrt()  # (B, A, nc)
    log_p = torch.log(p).clamp(min=-100.0)
    log_not_p = torch.log(1 - p).clamp(min=-100.0)
    all_negative = -log_not_p.sum(-1)  # (B, A): every class a negative
    index = gt_classes[:, None, :].expand(-1, p.shape[1], -1)  # (B, A, G)
    # Swap the ground-truth class's negative term for its positive one.
    swap = log_not_p.gather(2, index) - log_p.gather(2, index)  # (B, A, G)
    return (all_negative[:, :, None] + swap).transpose(1, 2)


@torch.no_grad()
def simota_assign(
    pred_boxes: torch.Tensor,
    cls_logits: torch.Tensor,
    obj_logits: torch.Tensor,
    centers: torch.Tensor,
    strides: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    gt_valid: torch.Tensor,
    prior: GeometryPrior = GEOMETRY_PRIORS[DEFAULT_PRIOR],
) -> Assignment:
    """SimOTA for a batch.

    pred_boxes (B, A, 4) decoded (cx, cy, w, h) px; cls_logits (B, A, nc); obj_logits (B, A, 1);
    centers (A, 2) cell centres px; strides (A,); gt_boxes (B, G, 4) (cx, cy, w, h) px; gt_classes (B, G)
    int64; gt_valid (B, G) bool (False for padding).
    """
    b, a = pred_boxes.shape[:2]
    pred_boxes = pred_boxes.float()
    gt_boxes = gt_boxes.float()
    valid = gt_valid[:, :, None]  # (B, G, 1)

    near, inside = _regions(gt_boxes, centers.float(), strides.float(), prior)
    near = near & valid
    if inside is None:  # main: candidates and own region are the centre regions
        own_region = near
        candidate = near.any(1)  # (B, A)
    else:  # 0.3.0: candidates inside any box or centre region; own region inside both of this object's
        inside = inside & valid
        own_region = near & inside
        candidate = (near | inside).any(1)

    iou = bbox_iou(gt_boxes[:, :, None, :], pred_boxes[:, None, :, :], eps=0.0)[..., 0]  # (B, G, A)
    iou = torch.where(candidate[:, None, :] & valid, iou, torch.zeros_like(iou))
    cost = class_cost(cls_logits, obj_logits, gt_classes) + 3.0 * -torch.log(iou + 1e-8)
    cost = cost + prior.penalty * (~own_region)
    cost = torch.where(candidate[:, None, :] & valid, cost, torch.full_like(cost, float("inf")))

    # Dynamic k per ground truth from its best IoUs over the candidates (non-candidates have IoU 0).
    top_ious = iou.topk(min(TOP_IOU_CANDIDATES, a), dim=2).values
    dynamic_k = top_ious.sum(2).int().clamp(min=1)  # (B, G)
    dynamic_k = torch.where(gt_valid, dynamic_k, torch.zeros_like(dynamic_k))
    k_max = int(dynamic_k.max()) if dynamic_k.numel() else 0
    if k_max == 0:
        return _empty(b, a, pred_boxes.device)
    _, cheapest = cost.topk(min(k_max, a), dim=2, largest=False)  # (B, G, k_max)
    rank = torch.arange(cheapest.shape[2], device=cost.device)
    take = rank[None, None, :] < dynamic_k[:, :, None]
    take &= cost.gather(2, cheapest).isfinite()  # never a non-candidate (an image with no candidates)
    matching = torch.zeros_like(cost, dtype=torch.bool).scatter_(2, cheapest, take)  # (B, G, A)

    # A cell taken by several ground truths goes to the cheapest of all of them.
    contested = matching.sum(1) > 1  # (B, A)
    if bool(contested.any()):
        cheapest_gt = cost.min(1).indices  # (B, A)
        one_hot = torch.arange(cost.shape[1], device=cost.device)[None, :, None] == cheapest_gt[:, None, :]
        matching = torch.where(contested[:, None, :], one_hot, matching)

    foreground = matching.any(1)
    gt_index = matching.to(torch.uint8).argmax(1)  # the one matched ground truth (0 where background)
    matched_iou = iou.gather(1, gt_index[:, None, :])[:, 0]
    return Assignment(foreground, gt_index, matched_iou, int(foreground.sum()))


def _empty(b: int, a: int, device: torch.device) -> Assignment:
    return Assignment(
        torch.zeros(b, a, dtype=torch.bool, device=device),
        torch.zeros(b, a, dtype=torch.long, device=device),
        torch.zeros(b, a, device=device),
        0,
    )
