"""RetinaNet's loss on a case worked by hand: IoU matching (foreground, ignored, background), focal / F, L1 / F."""

from __future__ import annotations

import math

import pytest
import torch

from detectors.api import DetectorOutput
from detectors.retinanet.loss import RetinaNetLoss, targets_to_images
from detectors.retinanet.model import HeadOutput

LN2 = math.log(2.0)


def one_level_output(deltas_anchor0: list[float]) -> DetectorOutput:
    """Two images, one level of 1 x 3 cells with one anchor each and K = 2 classes, all logits 0 (p = 0.5).

    Anchors (8 px per cell, so the input is 8 x 24): [0, 0, 8, 8], [8, 0, 16, 8] and [0, 0, 8, 18]."""
    cls = torch.zeros(2, 2, 1, 3, requires_grad=True)  # (B, A * K, H, W)
    reg = torch.zeros(2, 4, 1, 3)
    reg[0, :, 0, 0] = torch.tensor(deltas_anchor0)
    reg.requires_grad_(True)
    anchors = torch.tensor([[0.0, 0.0, 8.0, 8.0], [8.0, 0.0, 16.0, 8.0], [0.0, 0.0, 8.0, 18.0]])
    return DetectorOutput(HeadOutput([cls], [reg], [anchors]), {}, {}, {})


def test_the_hand_worked_case():
    # Image 0: one box of class 1 equal to anchor 0 (IoU 1: foreground); anchor 1 has IoU 0 (background);
    # anchor 2 has IoU 64 / 144 = 0.44, between 0.4 and 0.5: ignored. Image 1 has no box.
    targets = torch.tensor([[0.0, 1.0, 4 / 24, 4 / 8, 8 / 24, 8 / 8]])
    output = one_level_output([0.1, -0.2, 0.3, 0.0])
    loss = RetinaNetLoss()
    assert loss.match(targets_to_images(targets, 2, 8, 24)[0][0], output.head.anchors[0]).tolist() == [0, -1, -2]
    total, items = loss(output, targets)
    # focal at p = 0.5: positives 0.25 * 0.5^2 * ln 2, negatives 0.75 * 0.5^2 * ln 2.
    pos, neg = 0.0625 * LN2, 0.1875 * LN2
    image0 = (pos + neg + 2 * neg) / 1  # anchor 0: class 1 positive, class 0 negative; anchor 1: two negatives
    image1 = 6 * neg / 1  # no box: every anchor background, divided by max(1, 0)
    assert float(items["cls"]) == pytest.approx((image0 + image1) / 2, rel=1e-6)
    # L1 of the deltas against encode(box, anchor 0) = 0, over 1 foreground anchor; image 1 adds 0.
    assert float(items["box"]) == pytest.approx((0.1 + 0.2 + 0.3) / 2, rel=1e-6)
    assert float(total.detach()) == pytest.approx(float(items["cls"]) + float(items["box"]), rel=1e-6)
    assert set(items) == {"cls", "box"} and all(not v.requires_grad for v in items.values())
    total.backward()
    assert float(output.head.cls_logits[0].grad[0, :, 0, 2].abs().sum()) == 0.0  # the ignored anchor gets nothing


def test_the_box_target_is_the_encoded_offset_and_zero_size_rows_are_dropped():
    # A box shifted 2 px right of anchor 0 (IoU 48 / 80 = 0.6): target dx = 2 / 8, the rest 0.
    targets = torch.tensor([[0.0, 0.0, 6 / 24, 4 / 8, 8 / 24, 8 / 8], [1.0, 0.0, 0.5, 0.5, 0.0, 0.2]])
    _, items = RetinaNetLoss()(one_level_output([0.0, 0.0, 0.0, 0.0]), targets)
    assert float(items["box"]) == pytest.approx(0.25 / 2, rel=1e-6)
    assert [len(b) for b, _ in targets_to_images(targets, 2, 8, 24)] == [1, 0]


def test_low_quality_matches_keep_each_boxs_best_anchor():
    # A box of IoU 0.25 with anchor 0 only (below 0.4): still matched, as its best anchor (torchvision's rule).
    targets = torch.tensor([[0.0, 1.0, 2 / 24, 2 / 8, 4 / 24, 4 / 8]])  # [0, 0, 4, 4]: IoU 16/64 with anchor 0
    loss = RetinaNetLoss()
    matched = loss.match(targets_to_images(targets, 2, 8, 24)[0][0], one_level_output([0.0] * 4).head.anchors[0])
    assert matched.tolist() == [0, -1, -1]
