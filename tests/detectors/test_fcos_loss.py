"""FCOS's loss on hand-worked cases: torchvision's point matching, focal / GIoU / centerness terms.

benchmarks/verify_fcos_parity.py checks the same code against torchvision's own on random weights.
"""

from __future__ import annotations

import math

import pytest
import torch

from detectors.api import DetectorOutput
from detectors.fcos.loss import FCOSLoss, fcos_losses, match_points, targets_per_image
from detectors.fcos.model import level_anchors

STRIDES = (8, 16, 32, 64, 128)
SHAPES = [(128 // s, 128 // s) for s in STRIDES]  # a 128 x 128 image: 256 + 64 + 16 + 4 + 1 = 341 points


def constant_head(batch: int, num_classes: int, regression: float, ctrness: float, logit: float) -> list[torch.Tensor]:
    maps = []
    for h, w in SHAPES:
        m = torch.full((batch, 4 + 1 + num_classes, h, w), logit)
        m[:, :4], m[:, 4] = regression, ctrness
        maps.append(m)
    return maps


def stride8_index(x: int, y: int) -> int:
    return (y // 8) * 16 + x // 8


# The box [8, 8, 56, 56]: centre (32, 32), 48 px. Centre sampling (|point - centre| < 1.5 x 8 = 12) keeps
# the stride-8 points at x, y in {24, 32, 40}; all inside, farthest edge 32 < 64 (level 1's range).
# At stride 16 the candidates (16, 32, 48) reach at most 40 px, below the level's lower bound 64.
FOREGROUND = sorted(stride8_index(x, y) for x in (24, 32, 40) for y in (24, 32, 40))


def test_points_match_torchvisions_rules_and_the_smallest_box_wins():
    anchors = torch.cat(level_anchors(SHAPES, STRIDES))
    counts = [h * w for h, w in SHAPES]
    gt = torch.tensor([[[0.0, 0.0, 64.0, 64.0], [8.0, 8.0, 56.0, 56.0]]])
    matched = match_points(anchors, counts, gt[:, 1:], torch.ones(1, 1, dtype=torch.bool))
    assert torch.nonzero(matched[0] == 0)[:, 0].tolist() == FOREGROUND and (matched[0] < 1).all()
    both = match_points(anchors, counts, gt, torch.ones(1, 2, dtype=torch.bool))
    assert torch.nonzero(both[0] >= 0)[:, 0].tolist() == FOREGROUND  # the big box reaches no other point
    assert (both[0][FOREGROUND] == 1).all()  # shared points go to the smaller box, listed second
    padded = match_points(anchors, counts, gt, torch.tensor([[False, True]]))
    assert (padded[0][FOREGROUND] == 1).all() and (padded[0] >= 0).sum() == 9  # an invalid (padding) box never matches


def test_the_three_terms_on_a_hand_worked_case():
    head = constant_head(1, 2, regression=1.0, ctrness=1.0, logit=0.0)
    gt_boxes, gt_classes = torch.tensor([[[8.0, 8.0, 56.0, 56.0]]]), torch.tensor([[1]])
    terms = fcos_losses(head, level_anchors(SHAPES, STRIDES), gt_boxes, gt_classes, torch.ones(1, 1, dtype=torch.bool))
    # cls: logits 0 -> p = 0.5, BCE = ln 2, (1 - p_t)^2 = 1/4; alpha 0.25 on the 9 positives, 0.75 on the
    # other 341 x 2 - 9 (point, class) pairs; / 9 foreground points.
    assert terms["cls"].item() == pytest.approx((9 * 0.25 + 673 * 0.75) * 0.25 * math.log(2) / 9, rel=1e-6)
    # box: distances 1 x stride -> a 16 px square inside the 48 px box: IoU 1/9, hull = the box, GIoU 1/9.
    assert terms["box"].item() == pytest.approx(8 / 9, rel=1e-6)
    # ctrness: BCE(logit 1, t) = ln(1 + e) - t; t = 0.5 at the 4 corners, sqrt(1/2) at the 4 edges, 1 at the centre.
    mean_target = (4 * 0.5 + 4 * math.sqrt(0.5) + 1) / 9
    assert terms["ctrness"].item() == pytest.approx(math.log(1 + math.e) - mean_target, rel=1e-6)


def test_the_loss_reads_the_loaders_rows_and_its_items_sum_to_l_gt():
    head = constant_head(2, 2, regression=1.0, ctrness=1.0, logit=0.0)
    for m in head:
        m.requires_grad_(True)
    # image 0: the hand-worked box (cx, cy, w, h normalised); image 1: nothing; a zero-width row is dropped
    rows = torch.tensor([[0, 1, 32 / 128, 32 / 128, 48 / 128, 48 / 128], [1, 0, 0.5, 0.5, 0.0, 0.2]])
    total, items = FCOSLoss(STRIDES)(DetectorOutput(head, {}, {}, {}), rows)
    expected = fcos_losses([m.detach()[:1] for m in head], level_anchors(SHAPES, STRIDES),
                           torch.tensor([[[8.0, 8.0, 56.0, 56.0]]]), torch.tensor([[1]]),
                           torch.ones(1, 1, dtype=torch.bool))
    # the empty image adds background points to cls only; F = 9 for the batch
    assert items["box"].item() == pytest.approx(expected["box"].item(), rel=1e-6)
    assert items["ctrness"].item() == pytest.approx(expected["ctrness"].item(), rel=1e-6)
    assert items["cls"].item() == pytest.approx(expected["cls"].item() + 341 * 2 * 0.75 * 0.25 * math.log(2) / 9,
                                                rel=1e-6)
    assert total.item() == pytest.approx(sum(v.item() for v in items.values()), rel=1e-6)
    assert all(not v.requires_grad and v.dim() == 0 for v in items.values())
    total.backward()
    assert head[0].grad is not None and head[0].grad.abs().sum() > 0


def test_a_batch_without_objects_has_only_the_classification_term():
    head = constant_head(2, 3, regression=1.0, ctrness=0.0, logit=-2.0)
    total, items = FCOSLoss(STRIDES)(DetectorOutput(head, {}, {}, {}), torch.zeros(0, 6))
    assert items["box"].item() == 0 and items["ctrness"].item() == 0
    p = torch.sigmoid(torch.tensor(-2.0))
    focal_negative = 0.75 * p**2 * -torch.log(1 - p)  # divided by max(F, 1) = 1
    assert items["cls"].item() == pytest.approx(2 * 341 * 3 * focal_negative.item(), rel=1e-5)
    assert torch.isfinite(total)


def test_rows_become_padded_pixel_boxes_per_image_in_order():
    rows = torch.tensor([[1, 2, 0.5, 0.5, 0.5, 0.25], [0, 0, 0.25, 0.25, 0.5, 0.5], [1, 1, 0.75, 0.5, 0.25, 0.5]])
    boxes, classes, valid = targets_per_image(rows, 3, img_h=64, img_w=128)
    assert boxes.shape == (3, 2, 4) and valid.tolist() == [[True, False], [True, True], [False, False]]
    assert boxes[1].tolist() == [[32.0, 24.0, 96.0, 40.0], [80.0, 16.0, 112.0, 48.0]]
    assert classes[1].tolist() == [2, 1] and boxes[0, 0].tolist() == [0.0, 0.0, 64.0, 32.0]
