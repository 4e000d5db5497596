"""FCOS's detection loss as torchvision computes it (``FCOS.compute_loss`` + ``FCOSHead.compute_loss``).

Assignment (``match_points``), per image, for every point (anchor of size s = the level's stride, centre
c) and ground-truth box g:

- centre sampling: ``max(|c - centre(g)|) < 1.5 s`` (``center_sampling_radius``);
- the point lies inside g (all four distances l, t, r, b > 0);
- scale range: ``4 s < max(l, t, r, b) < 8 s`` (no lower bound on the first level, no upper on the last);
- several boxes left: the one of smallest area (torchvision's ``1e8 - area`` maximum, same ties).

With F the number of foreground points of the batch (at least 1), the terms are::

    cls     = sum_all sigmoid_focal(cls logits, one-hot class; alpha 0.25, gamma 2) / F
    box     = sum_fg GIoU loss(decoded box, g) / F
    ctrness = sum_fg BCEWithLogits(centerness, sqrt(min(l, r)/max(l, r) * min(t, b)/max(t, b))) / F

torchvision's ``classification``, ``bbox_regression`` and ``bbox_ctrness``; ``L_gt = cls + box + ctrness``,
a mean over the batch's foreground points, not multiplied by the batch size (``Recipe.loss_scaled_by_batch``
false). Ground truth comes as the loader's rows; boxes with no width or height take no point (torchvision
refuses them); ignore regions (KITTI ``DontCare``) are not used, as torchvision has none.

Nothing is read back from the device (a GPU step never waits for it): the loss matches the loader's rows
directly, each row against every point, and picks per image and point with scatter reductions (no padding
to the largest count per image, which would be read back); the box and centerness sums are masked sums over
every point (no data-dependent shape) and F stays a tensor. ``targets_per_image`` / ``match_points`` /
``fcos_losses`` take the padded form, (B, G), and give the same answers. Against selected-point sums the
terms differ by float rounding (summation order); ``cls`` is the same sum as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detectors.api import DetectorOutput
from detectors.fcos.model import level_anchors
from detectors.fcos.postprocess import BOX_CODER, split_head
from detectors.ops.detection_losses import giou_loss, sigmoid_focal_loss

TERMS = ("cls", "box", "ctrness")


def target_rows(targets: Tensor, img_h: int, img_w: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Loader rows (M, 6) ``[image, class, cx, cy, w, h]`` normalised -> boxes (M, 4) xyxy px, classes (M,)
    int64, images (M,) int64 and valid (M,) bool (False: no width or height, a box torchvision refuses)."""
    scale = targets.new_tensor([img_w, img_h])
    centre, size = targets[:, 2:4] * scale, targets[:, 4:6] * scale
    valid = (targets[:, 4] > 0) & (targets[:, 5] > 0)
    return torch.cat((centre - size / 2, centre + size / 2), 1), targets[:, 1].long(), targets[:, 0].long(), valid


def targets_per_image(targets: Tensor, batch_size: int, img_h: int, img_w: int) -> tuple[Tensor, Tensor, Tensor]:
    """Loader rows (M, 6) ``[image, class, cx, cy, w, h]`` normalised -> padded per image, in pixels.

    Returns boxes (B, G, 4) xyxy px, classes (B, G) int64, valid (B, G) bool; an image's boxes keep their
    order in ``targets`` (ties in the smallest-area rule go to the first, as in torchvision); boxes with no
    width or height are dropped. G is read from the device: the loss itself matches the rows.
    """
    targets = targets[(targets[:, 4] > 0) & (targets[:, 5] > 0)]
    boxes_px, classes_of_row, image, _ = target_rows(targets, img_h, img_w)
    counts = torch.bincount(image, minlength=batch_size)
    g = int(counts.max()) if targets.shape[0] else 0
    order = torch.sort(image, stable=True).indices
    image = image[order]
    slot = torch.arange(image.shape[0], device=targets.device) - (torch.cumsum(counts, 0) - counts)[image]
    boxes = targets.new_zeros(batch_size, g, 4)
    classes = torch.zeros(batch_size, g, dtype=torch.long, device=targets.device)
    valid = torch.zeros(batch_size, g, dtype=torch.bool, device=targets.device)
    boxes[image, slot] = boxes_px[order]
    classes[image, slot] = classes_of_row[order]
    valid[image, slot] = True
    return boxes, classes, valid


def _padded_as_rows(gt_boxes: Tensor, gt_valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, G, 4) and (B, G) -> rows (B G, 4), their images (B G,) and valid (B G,): row b G + j is (b, j)."""
    b, g = gt_valid.shape
    image = torch.arange(b, device=gt_boxes.device)[:, None].expand(b, g).reshape(-1)
    return gt_boxes.reshape(-1, 4), image, gt_valid.reshape(-1)


def match_rows(anchors: Tensor, num_per_level: list[int], gt_boxes: Tensor, gt_image: Tensor, gt_valid: Tensor,
               batch_size: int, center_sampling_radius: float = 1.5) -> Tensor:
    """torchvision's FCOS matching for ground truths given as rows: anchors (A, 4), gt_boxes (R, 4) xyxy,
    gt_image (R,) int64, gt_valid (R,) bool -> matched row (B, A) int64, -1 for background."""
    rows, a = gt_boxes.shape[0], anchors.shape[0]
    if rows == 0:
        return torch.full((batch_size, a), -1, dtype=torch.long, device=anchors.device)
    anchor_centers = (anchors[:, :2] + anchors[:, 2:]) / 2  # (A, 2)
    anchor_sizes = anchors[:, 2] - anchors[:, 0]  # (A,)
    gt_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # (R, 2)
    # centre sampling: the point is within radius * size of the box centre (Chebyshev distance)
    match = (anchor_centers[None, :, :] - gt_centers[:, None, :]).abs_().max(dim=2).values < (
        center_sampling_radius * anchor_sizes[None, :])  # (R, A)
    x, y = anchor_centers[None, :, 0], anchor_centers[None, :, 1]  # (1, A)
    x0, y0, x1, y1 = (gt_boxes[:, i, None] for i in range(4))  # (R, 1)
    dist = torch.stack((x - x0, y - y0, x1 - x, y1 - y), dim=2)  # (R, A, 4)
    match &= dist.min(dim=2).values > 0  # inside the box
    lower = anchor_sizes * 4
    lower[: num_per_level[0]] = 0
    upper = anchor_sizes * 8
    upper[-num_per_level[-1]:] = float("inf")
    reach = dist.max(dim=2).values
    match &= (reach > lower[None, :]) & (reach < upper[None, :])
    match &= gt_valid[:, None]
    areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])  # (R,)
    # the smallest box wins: torchvision's float32 expression, so ties break the same way (the first listed)
    score = match.to(torch.float32) * (1e8 - areas[:, None])  # (R, A)
    image = gt_image[:, None].expand(rows, a)
    best = torch.zeros(batch_size, a, device=score.device).scatter_reduce_(0, image, score, "amax")
    row_index = torch.arange(rows, device=score.device)[:, None].expand(rows, a)
    first = torch.full((batch_size, a), rows, dtype=torch.long, device=score.device)
    first = first.scatter_reduce_(0, image, row_index.masked_fill(score != best[gt_image], rows), "amin")
    return torch.where(best < 1e-5, -1, first)


def match_points(anchors: Tensor, num_per_level: list[int], gt_boxes: Tensor, gt_valid: Tensor,
                 center_sampling_radius: float = 1.5) -> Tensor:
    """torchvision's FCOS matching, batched: anchors (A, 4), gt_boxes (B, G, 4) xyxy, gt_valid (B, G)
    -> matched ground-truth index (B, A), -1 for background."""
    b, g = gt_valid.shape
    boxes, image, valid = _padded_as_rows(gt_boxes, gt_valid)
    matched = match_rows(anchors, num_per_level, boxes, image, valid, b, center_sampling_radius)
    first_of_image = torch.arange(b, device=matched.device)[:, None] * g
    return torch.where(matched >= 0, matched - first_of_image, -1)


def row_losses(head: list[Tensor], anchors: list[Tensor], gt_boxes: Tensor, gt_classes: Tensor, gt_image: Tensor,
               gt_valid: Tensor, center_sampling_radius: float = 1.5) -> dict[str, Tensor]:
    """The three terms (see the module doc) of a batch whose ground truths are rows: ``head`` per-level maps,
    ``anchors`` per level, gt_boxes (R, 4) xyxy px, gt_classes and gt_image (R,) int64, gt_valid (R,)."""
    levels = [split_head(level) for level in head]
    regression = torch.cat([r for r, _, _ in levels], 1)  # (B, A, 4), float32
    ctrness = torch.cat([c for _, c, _ in levels], 1)[..., 0]  # (B, A)
    logits = torch.cat([k for _, _, k in levels], 1)  # (B, A, K)
    all_anchors = torch.cat(anchors)  # (A, 4)
    matched = match_rows(all_anchors, [a.shape[0] for a in anchors], gt_boxes, gt_image, gt_valid,
                         logits.shape[0], center_sampling_radius)

    foreground = matched >= 0  # (B, A)
    num_foreground = foreground.sum().clamp(min=1)  # a tensor: dividing by it reads nothing
    anchors_b = all_anchors[None].expand_as(regression)
    if gt_boxes.shape[0]:
        index = matched.clamp(min=0)
        # background points get their own anchor as target: finite terms, masked out of the sums below
        matched_boxes = torch.where(foreground[..., None], gt_boxes[index], anchors_b)  # (B, A, 4)
        cls_targets = torch.zeros_like(logits).scatter_(2, gt_classes[index][..., None], foreground[..., None].to(
            logits.dtype))
    else:
        matched_boxes, cls_targets = anchors_b, torch.zeros_like(logits)
    loss_cls = sigmoid_focal_loss(logits, cls_targets, reduction="sum")

    pred_boxes = BOX_CODER.decode(regression, anchors_b)
    loss_box = torch.where(foreground, giou_loss(pred_boxes, matched_boxes), 0.0).sum()

    encoded = BOX_CODER.encode(anchors_b, matched_boxes)  # (B, A, 4)
    left_right, top_bottom = encoded[..., [0, 2]], encoded[..., [1, 3]]
    ctr_targets = torch.sqrt((left_right.min(dim=-1).values / left_right.max(dim=-1).values)
                             * (top_bottom.min(dim=-1).values / top_bottom.max(dim=-1).values))
    ctr_terms = F.binary_cross_entropy_with_logits(ctrness, ctr_targets, reduction="none")
    loss_ctr = torch.where(foreground, ctr_terms, 0.0).sum()
    return {"cls": loss_cls / num_foreground, "box": loss_box / num_foreground, "ctrness": loss_ctr / num_foreground}


def fcos_losses(head: list[Tensor], anchors: list[Tensor], gt_boxes: Tensor, gt_classes: Tensor, gt_valid: Tensor,
                center_sampling_radius: float = 1.5) -> dict[str, Tensor]:
    """The three terms (see the module doc) of a batch: ``head`` per-level maps, ``anchors`` per level,
    ground truths padded per image: gt_boxes (B, G, 4) xyxy px, gt_classes (B, G), gt_valid (B, G)."""
    boxes, image, valid = _padded_as_rows(gt_boxes, gt_valid)
    return row_losses(head, anchors, boxes, gt_classes.reshape(-1), image, valid, center_sampling_radius)


class FCOSLoss:
    """``loss(output, targets) -> (L_gt, {"cls", "box", "ctrness"})`` for an FCOS model's output."""

    term_names = TERMS

    def __init__(self, strides: tuple[int, ...] = (8, 16, 32, 64, 128), *, center_sampling_radius: float = 1.5,
                 point_offset: float = 0.0) -> None:
        self.strides = tuple(strides)
        self.center_sampling_radius = center_sampling_radius
        self.point_offset = point_offset

    def __call__(self, output: DetectorOutput, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        head = output.head
        img_h, img_w = head[0].shape[-2] * self.strides[0], head[0].shape[-1] * self.strides[0]
        anchors = level_anchors([tuple(m.shape[-2:]) for m in head], self.strides, self.point_offset,
                                device=head[0].device)
        gt_boxes, gt_classes, gt_image, gt_valid = target_rows(targets.float(), img_h, img_w)
        terms = row_losses(head, anchors, gt_boxes, gt_classes, gt_image, gt_valid, self.center_sampling_radius)
        total = terms["cls"] + terms["box"] + terms["ctrness"]
        return total, {k: v.detach() for k, v in terms.items()}
