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

Nothing is read back to the host, so that a training step on a GPU never waits for the device (no
``.item()``, no data-dependent shape): ground truths are rows (R of them, each with its image's index), every
tensor is (R, A) (at 640 px, A = 8400, and 16 images of 50 objects, ~7 M floats each), and the per-image
choices of steps 1 and 4 are scatter reductions over the rows of an image. Step 3 takes a fixed-width
top-10 (k never exceeds 10: it is a sum of 10 IoUs) and a mask. Ties in step 3 go to the lower cell index,
in step 4 to the ground truth listed first (``torch.min``'s rule, as before). ``simota_assign`` takes the
ground truths padded per image, (B, G), and answers with indices into that padding; the loss uses
``simota_assign_rows`` on the loader's rows directly (padding to the largest count would read it back).

The class cost uses ``sum_c BCE(p_c, y_c) = sum_c -log(1 - p_c) + log(1 - p_k) - log(p_k)`` for the one-hot
class k, so it needs (B, A, nc) and (R, A) tensors rather than Megvii's (G, A, nc); the two agree to
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
    matched ground truth (its index among its image's ground truths, in their input order) and ``iou``
    (B, A) its IoU with the cell's predicted box (both unspecified where background)."""

    foreground: torch.Tensor
    gt_index: torch.Tensor
    iou: torch.Tensor

    @property
    def num_foreground(self) -> int:
        """The foreground cells of the batch. Reads the device: for tests and reports, never in a step."""
        return int(self.foreground.sum())


def _regions(
    gt_boxes: torch.Tensor, centers: torch.Tensor, strides: torch.Tensor, prior: GeometryPrior
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(..., A) bool masks for (..., 4) ground truths: cell centre within ``center_radius`` strides of the
    box centre, and (0.3.0 only, else None) cell centre inside the box.

    Deltas are formed as Megvii forms them (``centre - (gt_x - r)`` etc., strictly positive), so border
    cases fall on the same side.
    """
    cx, cy = centers[:, 0], centers[:, 1]  # (A,)
    gx, gy = gt_boxes[..., 0:1], gt_boxes[..., 1:2]  # (..., 1)
    dist = strides * prior.center_radius  # (A,)
    # "all four deltas > 0" as four comparisons (Megvii: the min of the stacked deltas > 0; the same cells)
    near = (cx - (gx - dist) > 0.0) & (cy - (gy - dist) > 0.0) & ((gx + dist) - cx > 0.0) & ((gy + dist) - cy > 0.0)
    if not prior.use_box:
        return near, None
    half_w, half_h = 0.5 * gt_boxes[..., 2:3], 0.5 * gt_boxes[..., 3:4]
    inside = (cx - (gx - half_w) > 0.0) & (cy - (gy - half_h) > 0.0) & ((gx + half_w) - cx > 0.0) & (
        (gy + half_h) - cy > 0.0)
    return near, inside


def class_cost(
    cls_logits: torch.Tensor, obj_logits: torch.Tensor, gt_classes: torch.Tensor, gt_image: torch.Tensor
) -> torch.Tensor:
    """(R, A): sum over classes of BCE(sqrt(sigmoid(cls) * sigmoid(obj)), onehot(class of row r)) at the
    cells of row r's image.

    cls_logits (B, A, nc), obj_logits (B, A, 1), gt_classes and gt_image (R,) int64. Logs are clamped at
    -100 as ``F.binary_cross_entropy`` clamps them.
    """
    p = (cls_logits.float().sigmoid() * obj_logits.float().sigmoid()).sqrt()  # (B, A, nc)
    log_p = torch.log(p).clamp(min=-100.0)
    log_not_p = torch.log(1 - p).clamp(min=-100.0)
    all_negative = -log_not_p.sum(-1)  # (B, A): every class a negative
    # Swap the ground-truth class's negative term for its positive one (indices apart: the result is (R, A)).
    swap = log_not_p[gt_image, :, gt_classes] - log_p[gt_image, :, gt_classes]
    return all_negative[gt_image] + swap


def _first_row(mask: torch.Tensor, gt_image: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(B, A) int64: per image and cell, the lowest row r of that image with ``mask[r, a]``; R where none."""
    rows, cells = mask.shape
    index = torch.arange(rows, device=mask.device)[:, None].expand(rows, cells)
    first = torch.full((batch_size, cells), rows, dtype=torch.long, device=mask.device)
    return first.scatter_reduce_(0, gt_image[:, None].expand(rows, cells), index.masked_fill(~mask, rows), "amin")


def _count_per_image(mask: torch.Tensor, gt_image: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(B, A) int32: per image and cell, how many of the image's rows have ``mask[r, a]``."""
    counts = torch.zeros(batch_size, mask.shape[1], dtype=torch.int32, device=mask.device)
    return counts.index_add_(0, gt_image, mask.to(torch.int32))


def _cheapest(cost: torch.Tensor, k: torch.Tensor, width: int) -> torch.Tensor:
    """(R, A) bool: each row's ``k`` (R,) cheapest finite cells, lower cell index first on equal costs.

    ``k <= width``: the ``width`` smallest costs give each row's k-th smallest value; every cell below it is
    taken, and of the cells equal to it, the first ones (cell order) until k are taken.
    """
    smallest = cost.topk(width, dim=1, largest=False).values  # (R, width), ascending
    kth = smallest.gather(1, (k.clamp(min=1) - 1)[:, None])  # (R, 1)
    below = cost < kth
    tied = cost == kth
    room = k[:, None] - below.sum(1, keepdim=True, dtype=torch.int32)
    take = below | (tied & (tied.cumsum(1, dtype=torch.int32) <= room))
    return take & cost.isfinite()  # never a non-candidate (a row with fewer finite cells than k)


@torch.no_grad()
def simota_assign_rows(
    pred_boxes: torch.Tensor,
    cls_logits: torch.Tensor,
    obj_logits: torch.Tensor,
    centers: torch.Tensor,
    strides: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    gt_image: torch.Tensor,
    gt_valid: torch.Tensor,
    prior: GeometryPrior = GEOMETRY_PRIORS[DEFAULT_PRIOR],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimOTA for a batch whose ground truths are rows, without a read from the device.

    pred_boxes (B, A, 4) decoded (cx, cy, w, h) px; cls_logits (B, A, nc); obj_logits (B, A, 1);
    centers (A, 2) cell centres px; strides (A,); gt_boxes (R, 4) (cx, cy, w, h) px; gt_classes and
    gt_image (R,) int64 (the row's class and image); gt_valid (R,) bool (False: a row that takes nothing).
    Returns foreground (B, A) bool, the matched row (B, A) int64 (R where background) and the IoU (R, A)
    of every row with every cell of its image (0 for non-candidates).
    """
    b, a = pred_boxes.shape[:2]
    rows = gt_boxes.shape[0]
    pred_boxes = pred_boxes.float()
    gt_boxes = gt_boxes.float()
    valid = gt_valid[:, None]  # (R, 1)

    near, inside = _regions(gt_boxes, centers.float(), strides.float(), prior)  # (R, A)
    near = near & valid
    if inside is None:  # main: candidates and own region are the centre regions
        own_region = near
        wanted = near
    else:  # 0.3.0: candidates inside any box or centre region; own region inside both of this object's
        inside = inside & valid
        own_region = near & inside
        wanted = near | inside
    # A candidate of any ground truth of the image is a candidate of all of them.
    in_play = (_count_per_image(wanted, gt_image, b) > 0)[gt_image] & valid  # (R, A)

    iou = bbox_iou(gt_boxes[:, None, :], pred_boxes[gt_image], eps=0.0)[..., 0]  # (R, A)
    iou = torch.where(in_play, iou, torch.zeros_like(iou))
    cost = class_cost(cls_logits, obj_logits, gt_classes, gt_image) + 3.0 * -torch.log(iou + 1e-8)
    cost = cost + prior.penalty * (~own_region)
    cost = torch.where(in_play, cost, torch.full_like(cost, float("inf")))

    # Dynamic k per ground truth from its best IoUs over the candidates (non-candidates have IoU 0); a sum
    # of at most 10 IoUs, so k <= 10 and a top-10 holds every row's k cheapest.
    width = min(TOP_IOU_CANDIDATES, a)
    dynamic_k = iou.topk(width, dim=1).values.sum(1).int().clamp(min=1, max=width)  # (R,)
    dynamic_k = torch.where(gt_valid, dynamic_k, torch.zeros_like(dynamic_k))
    matching = _cheapest(cost, dynamic_k, width)  # (R, A)

    # A cell taken by several ground truths goes to the cheapest of all the image's ground truths (the
    # first listed on equal costs, as ``torch.min`` answers).
    contested = (_count_per_image(matching, gt_image, b) > 1)[gt_image]  # (R, A)
    row_index = torch.arange(rows, device=cost.device)[:, None]
    lowest = torch.full((b, a), float("inf"), device=cost.device)
    lowest = lowest.scatter_reduce_(0, gt_image[:, None].expand(rows, a), cost, "amin")
    cheapest_row = _first_row(cost == lowest[gt_image], gt_image, b)  # (B, A)
    matching = torch.where(contested, cheapest_row[gt_image] == row_index, matching)

    matched_row = _first_row(matching, gt_image, b)  # the one matched row, R where background
    return matched_row < rows, matched_row, iou


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
    """SimOTA for a batch whose ground truths are padded per image.

    pred_boxes (B, A, 4) decoded (cx, cy, w, h) px; cls_logits (B, A, nc); obj_logits (B, A, 1);
    centers (A, 2) cell centres px; strides (A,); gt_boxes (B, G, 4) (cx, cy, w, h) px; gt_classes (B, G)
    int64; gt_valid (B, G) bool (False for padding). ``gt_index`` indexes G (0 where background).
    """
    b, a = pred_boxes.shape[:2]
    g = gt_boxes.shape[1]
    if g == 0:
        return Assignment(torch.zeros(b, a, dtype=torch.bool, device=pred_boxes.device),
                          torch.zeros(b, a, dtype=torch.long, device=pred_boxes.device),
                          torch.zeros(b, a, device=pred_boxes.device))
    gt_image = torch.arange(b, device=gt_boxes.device)[:, None].expand(b, g).reshape(-1)  # row b * G + j: (b, j)
    foreground, row, iou = simota_assign_rows(
        pred_boxes, cls_logits, obj_logits, centers, strides, gt_boxes.reshape(-1, 4), gt_classes.reshape(-1),
        gt_image, gt_valid.reshape(-1), prior,
    )
    first_of_image = torch.arange(b, device=row.device)[:, None] * g  # background: ground truth 0 of its image
    row = torch.where(foreground, row, first_of_image)
    return Assignment(foreground, row - first_of_image, iou.gather(0, row))
