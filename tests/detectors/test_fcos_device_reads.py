"""FCOS's matching and loss read nothing from the device, and give what the code they replaced gave.

The oracle is that code (commit b0b3a61): ground truths padded per image, every point against the (B, G)
boxes, ``max`` over G (the first box on equal scores, as torchvision's), then sums over the selected
foreground points with F read as an int.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from detectors.api import DetectorOutput
from detectors.fcos.loss import FCOSLoss, match_points, targets_per_image
from detectors.fcos.model import level_anchors
from detectors.fcos.postprocess import BOX_CODER, split_head
from detectors.ops.detection_losses import giou_loss, sigmoid_focal_loss

STRIDES = (8, 16, 32, 64, 128)
SHAPES = [(128 // s, 128 // s) for s in STRIDES]  # 128 x 128 px: 341 points


def old_match_points(anchors, num_per_level, gt_boxes, gt_valid, radius=1.5):
    b, g = gt_valid.shape
    if g == 0:
        return torch.full((b, anchors.shape[0]), -1, dtype=torch.long)
    anchor_centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    anchor_sizes = anchors[:, 2] - anchors[:, 0]
    gt_centers = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
    match = (anchor_centers[None, :, None, :] - gt_centers[:, None, :, :]).abs_().max(dim=3).values < (
        radius * anchor_sizes[None, :, None])
    x, y = anchor_centers[None, :, None, 0], anchor_centers[None, :, None, 1]
    x0, y0, x1, y1 = (gt_boxes[:, None, :, i] for i in range(4))
    dist = torch.stack((x - x0, y - y0, x1 - x, y1 - y), dim=3)
    match &= dist.min(dim=3).values > 0
    lower, upper = anchor_sizes * 4, anchor_sizes * 8
    lower[: num_per_level[0]] = 0
    upper[-num_per_level[-1]:] = float("inf")
    reach = dist.max(dim=3).values
    match &= (reach > lower[None, :, None]) & (reach < upper[None, :, None]) & gt_valid[:, None, :]
    areas = (gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1])
    best, matched = (match.to(torch.float32) * (1e8 - areas[:, None, :])).max(dim=2)
    matched[best < 1e-5] = -1
    return matched


def old_fcos_loss(head, targets):
    """``FCOSLoss()(output, targets)``'s terms as the code before computed them."""
    b = head[0].shape[0]
    anchors = level_anchors([tuple(m.shape[-2:]) for m in head], STRIDES)
    gt_boxes, gt_classes, gt_valid = targets_per_image(targets, b, 128, 128)
    levels = [split_head(level) for level in head]
    regression, ctrness, logits = (torch.cat([lv[i] for lv in levels], 1) for i in range(3))
    ctrness = ctrness[..., 0]
    all_anchors = torch.cat(anchors)
    matched = old_match_points(all_anchors, [a.shape[0] for a in anchors], gt_boxes, gt_valid)
    foreground = matched >= 0
    num_foreground = max(int(foreground.sum()), 1)
    index = matched.clamp(min=0)
    matched_boxes = torch.gather(gt_boxes, 1, index[..., None].expand(-1, -1, 4))
    matched_classes = torch.gather(gt_classes, 1, index)
    cls_targets = torch.zeros_like(logits)
    fg_image, fg_anchor = torch.nonzero(foreground, as_tuple=True)
    cls_targets[fg_image, fg_anchor, matched_classes[foreground]] = 1.0
    loss_cls = sigmoid_focal_loss(logits, cls_targets, reduction="sum")
    anchors_b = all_anchors[None].expand_as(matched_boxes)
    pred_boxes = BOX_CODER.decode(regression, anchors_b)
    loss_box = giou_loss(pred_boxes[foreground], matched_boxes[foreground], reduction="sum")
    encoded = BOX_CODER.encode(anchors_b[foreground], matched_boxes[foreground])
    lr, tb = encoded[:, [0, 2]], encoded[:, [1, 3]]
    ctr = torch.sqrt((lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values))
    loss_ctr = F.binary_cross_entropy_with_logits(ctrness[foreground], ctr, reduction="sum")
    return {"cls": loss_cls / num_foreground, "box": loss_box / num_foreground, "ctrness": loss_ctr / num_foreground}


def random_rows(seed: int, batch: int = 3, *, tied: bool = False) -> torch.Tensor:
    """Loader rows, unsorted, one image empty, a zero-width box; ``tied``: equal-area boxes on a lattice,
    some duplicated, so that points see several smallest boxes of the same area."""
    gen = torch.Generator().manual_seed(seed)
    m = 14
    image = torch.randint(0, batch - 1, (m, 1), generator=gen).float()  # the last image has no object
    centre = torch.rand(m, 2, generator=gen) * 0.8 + 0.1
    size = torch.rand(m, 2, generator=gen) * 0.6 + 0.05
    if tied:
        centre, size = (centre * 8).round() / 8, torch.full_like(size, 0.25)
        centre[1::3], image[1::3] = centre[::3][: len(centre[1::3])], image[::3][: len(image[1::3])]
    rows = torch.cat((image, torch.randint(0, 3, (m, 1), generator=gen).float(), centre, size), 1)
    rows[5, 4] = 0.0  # no width: takes no point
    return rows


@pytest.mark.parametrize("tied", [False, True], ids=["random", "tied"])
def test_matching_equals_the_old_matching(tied):
    anchors = level_anchors(SHAPES, STRIDES)
    counts = [a.shape[0] for a in anchors]
    matched_points = 0
    for seed in range(8):
        gt_boxes, _, gt_valid = targets_per_image(random_rows(seed, tied=tied), 3, 128, 128)
        old = old_match_points(torch.cat(anchors), counts, gt_boxes, gt_valid)
        assert torch.equal(match_points(torch.cat(anchors), counts, gt_boxes, gt_valid), old), seed
        matched_points += int((old >= 0).sum())
    assert matched_points > 100


def head_maps(batch: int = 3, num_classes: int = 3) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(batch, 4 + 1 + num_classes, h, w, generator=gen) * 0.5 for h, w in SHAPES]


@pytest.mark.parametrize("rows", [random_rows(0), torch.zeros(0, 6)], ids=["objects", "no objects"])
def test_the_loss_and_its_backward_read_nothing_from_the_device(rows, device_reads):
    head = [m.requires_grad_(True) for m in head_maps()]
    with device_reads() as reads:
        total, _ = FCOSLoss(STRIDES)(DetectorOutput(head, {}, {}, {}), rows)
        total.backward()
    assert reads.ops == []


def test_the_old_loss_reads_the_device_so_the_check_above_can_fail(device_reads):
    with device_reads() as reads:
        old_fcos_loss(head_maps(), random_rows(0))
    assert {"_local_scalar_dense", "nonzero", "index"} <= set(reads.ops)


@pytest.mark.parametrize("tied", [False, True], ids=["random", "tied"])
def test_the_loss_equals_the_old_loss_with_the_same_gradients(tied):
    rows = random_rows(1, tied=tied)
    head = [m.requires_grad_(True) for m in head_maps()]
    total, items = FCOSLoss(STRIDES)(DetectorOutput(head, {}, {}, {}), rows)
    total.backward()
    old_head = [m.requires_grad_(True) for m in head_maps()]
    old = old_fcos_loss(old_head, rows)
    sum(old.values()).backward()
    assert torch.equal(items["cls"], old["cls"].detach())  # the same sum over every (point, class)
    for name in ("box", "ctrness"):  # masked sums over every point: the same terms, another summation order
        torch.testing.assert_close(items[name], old[name].detach(), rtol=1e-6, atol=0.0)
    for new, before in zip(head, old_head, strict=True):
        torch.testing.assert_close(new.grad, before.grad, rtol=1e-5, atol=1e-9)
