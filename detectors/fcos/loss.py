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
false). Ground truth comes as the loader's rows; boxes with no width or height are dropped (torchvision
refuses them); ignore regions (KITTI ``DontCare``) are not used, as torchvision has none.
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


def targets_per_image(targets: Tensor, batch_size: int, img_h: int, img_w: int) -> tuple[Tensor, Tensor, Tensor]:
    """Loader rows (M, 6) ``[image, class, cx, cy, w, h]`` normalised -> padded per image, in pixels.

    Returns boxes (B, G, 4) xyxy px, classes (B, G) int64, valid (B, G) bool; an image's boxes keep their
    order in ``targets`` (ties in the smallest-area rule go to the first, as in torchvision).
    """
    targets = targets[(targets[:, 4] > 0) & (targets[:, 5] > 0)]
    image = targets[:, 0].long()
    counts = torch.bincount(image, minlength=batch_size)
    g = int(counts.max()) if targets.shape[0] else 0
    order = torch.sort(image, stable=True).indices
    image = image[order]
    slot = torch.arange(image.shape[0], device=targets.device) - (torch.cumsum(counts, 0) - counts)[image]
    scale = targets.new_tensor([img_w, img_h])
    centre, size = targets[order, 2:4] * scale, targets[order, 4:6] * scale
    boxes = targets.new_zeros(batch_size, g, 4)
    classes = torch.zeros(batch_size, g, dtype=torch.long, device=targets.device)
    valid = torch.zeros(batch_size, g, dtype=torch.bool, device=targets.device)
    boxes[image, slot] = torch.cat((centre - size / 2, centre + size / 2), 1)
    classes[image, slot] = targets[order, 1].long()
    valid[image, slot] = True
    return boxes, classes, valid


def match_points(anchors: Tensor, num_per_level: list[int], gt_boxes: Tensor, gt_valid: Tensor,
                 center_sampling_radius: float = 1.5) -> Tensor:
    """torchvision's FCOS matching, batched: anchors (A, 4), gt_boxes (B, G, 4) xyxy, gt_valid (B, G)
    -> matched ground-truth index (B, A), -1 for background."""
    b, g = gt_valid.shape
    if g == 0:
        return torch.full((b, anchors.shape[0]), -1, dtype=torch.long, device=anchors.device)
    anchor_centers = (anchors[:, :2] + anchors[:, 2:]) / 2  # (A, 2)
    anchor_sizes = anchors[:, 2] - anchors[:, 0]  # (A,)
    gt_centers = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2  # (B, G, 2)
    # centre sampling: the point is within radius * size of the box centre (Chebyshev distance)
    match = (anchor_centers[None, :, None, :] - gt_centers[:, None, :, :]).abs_().max(dim=3).values < (
        center_sampling_radius * anchor_sizes[None, :, None])
    x, y = anchor_centers[None, :, None, 0], anchor_centers[None, :, None, 1]  # (1, A, 1)
    x0, y0, x1, y1 = (gt_boxes[:, None, :, i] for i in range(4))  # (B, 1, G)
    dist = torch.stack((x - x0, y - y0, x1 - x, y1 - y), dim=3)  # (B, A, G, 4)
    match &= dist.min(dim=3).values > 0  # inside the box
    lower = anchor_sizes * 4
    lower[: num_per_level[0]] = 0
    upper = anchor_sizes * 8
    upper[-num_per_level[-1]:] = float("inf")
    reach = dist.max(dim=3).values
    match &= (reach > lower[None, :, None]) & (reach < upper[None, :, None])
    match &= gt_valid[:, None, :]
    areas = (gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1])  # (B, G)
    # the smallest box wins: torchvision's float32 expression, so ties break the same way
    score = match.to(torch.float32) * (1e8 - areas[:, None, :])
    best, matched = score.max(dim=2)
    matched[best < 1e-5] = -1
    return matched


def fcos_losses(head: list[Tensor], anchors: list[Tensor], gt_boxes: Tensor, gt_classes: Tensor, gt_valid: Tensor,
                center_sampling_radius: float = 1.5) -> dict[str, Tensor]:
    """The three terms (see the module doc) of a batch: ``head`` per-level maps, ``anchors`` per level."""
    levels = [split_head(level) for level in head]
    regression = torch.cat([r for r, _, _ in levels], 1)  # (B, A, 4), float32
    ctrness = torch.cat([c for _, c, _ in levels], 1)[..., 0]  # (B, A)
    logits = torch.cat([k for _, _, k in levels], 1)  # (B, A, K)
    all_anchors = torch.cat(anchors)  # (A, 4)
    matched = match_points(all_anchors, [a.shape[0] for a in anchors], gt_boxes, gt_valid, center_sampling_radius)

    foreground = matched >= 0  # (B, A)
    num_foreground = max(int(foreground.sum()), 1)
    index = matched.clamp(min=0)
    if gt_boxes.shape[1]:
        matched_boxes = torch.gather(gt_boxes, 1, index[..., None].expand(-1, -1, 4))  # (B, A, 4)
        matched_classes = torch.gather(gt_classes, 1, index)
    else:
        matched_boxes = gt_boxes.new_zeros(*matched.shape, 4)
        matched_classes = matched.clone()

    cls_targets = torch.zeros_like(logits)
    fg_image, fg_anchor = torch.nonzero(foreground, as_tuple=True)
    cls_targets[fg_image, fg_anchor, matched_classes[foreground]] = 1.0
    loss_cls = sigmoid_focal_loss(logits, cls_targets, reduction="sum")

    anchors_b = all_anchors[None].expand_as(matched_boxes)
    pred_boxes = BOX_CODER.decode(regression, anchors_b)
    loss_box = giou_loss(pred_boxes[foreground], matched_boxes[foreground], reduction="sum")

    encoded = BOX_CODER.encode(anchors_b[foreground], matched_boxes[foreground])  # (F, 4)
    left_right, top_bottom = encoded[:, [0, 2]], encoded[:, [1, 3]]
    ctr_targets = torch.sqrt((left_right.min(dim=-1).values / left_right.max(dim=-1).values)
                             * (top_bottom.min(dim=-1).values / top_bottom.max(dim=-1).values))
    loss_ctr = F.binary_cross_entropy_with_logits(ctrness[foreground], ctr_targets, reduction="sum")
    return {"cls": loss_cls / num_foreground, "box": loss_box / num_foreground, "ctrness": loss_ctr / num_foreground}


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
        b = head[0].shape[0]
        img_h, img_w = head[0].shape[-2] * self.strides[0], head[0].shape[-1] * self.strides[0]
        anchors = level_anchors([tuple(m.shape[-2:]) for m in head], self.strides, self.point_offset,
                                device=head[0].device)
        gt_boxes, gt_classes, gt_valid = targets_per_image(targets.float(), b, img_h, img_w)
        terms = fcos_losses(head, anchors, gt_boxes, gt_classes, gt_valid, self.center_sampling_radius)
        total = terms["cls"] + terms["box"] + terms["ctrness"]
        return total, {k: v.detach() for k, v in terms.items()}
