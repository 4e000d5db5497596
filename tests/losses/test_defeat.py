"""DeFeat (losses/defeat.py): box masks, decoupled feature imitation and decoupled classification KD by hand."""

import math

import pytest
import torch

from losses.defeat import (
    binary_kl_with_logits,
    box_mask,
    decoupled_feature_loss,
    decoupled_head_kd,
    defeat_loss,
)


def test_box_mask_truncates_like_the_reference_and_marks_one_cell_for_a_thin_box():
    boxes = torch.tensor([[8.0, 8.0, 24.0, 17.0], [9.0, 25.0, 12.0, 30.0]])
    mask = box_mask(boxes, torch.tensor([0, 1]), 2, 8, (4, 4))
    expected0 = torch.zeros(4, 4)
    expected0[1, 1:3] = 1  # columns int(8/8)=1 .. int(24/8)=3 (exclusive), rows 1 .. int(17/8)=2
    expected1 = torch.zeros(4, 4)
    expected1[3, 1] = 1  # int(9/8) == int(12/8): the one cell (int(25/8), int(9/8))
    assert torch.equal(mask, torch.stack([expected0, expected1]))
    assert box_mask(torch.zeros(0, 4), torch.zeros(0), 2, 8, (4, 4)).sum() == 0


def test_decoupled_feature_loss_normalises_each_region_by_its_own_size():
    adapted = torch.tensor([[[[2.0, 1.0, 1.0]]]])  # (1, C=1, 1, 3)
    mask = torch.tensor([[[1.0, 0.0, 0.0]]])
    obj, bg = decoupled_feature_loss(adapted, torch.zeros_like(adapted), mask)
    assert obj.item() == pytest.approx(4 / 2)  # 2^2 / (2 * C * 1)
    assert bg.item() == pytest.approx((1 + 1) / (2 * 2))  # (1 + 1) / (2 * C * 2)
    two_channels = torch.cat([adapted, adapted], dim=1)
    obj2, bg2 = decoupled_feature_loss(two_channels, torch.zeros_like(two_channels), mask)
    assert (obj2.item(), bg2.item()) == pytest.approx((obj.item(), bg.item()))  # C in the normaliser
    empty, _ = decoupled_feature_loss(adapted, adapted * 0, torch.zeros_like(mask))
    assert empty.item() == 0.0


def bernoulli_kl(q, p):
    return q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))


def test_binary_kl_by_hand():
    student, teacher = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([math.log(3), 0.0, 1.0])
    kl = binary_kl_with_logits(student, teacher)
    assert kl.tolist() == pytest.approx([bernoulli_kl(0.75, 0.5), 0.0, 0.0], abs=1e-6)
    q = 1 / (1 + math.exp(-math.log(3) / 2))  # temperature 2
    assert binary_kl_with_logits(student, teacher, 2.0)[0].item() == pytest.approx(bernoulli_kl(q, 0.5), abs=1e-6)


def test_decoupled_head_kd_splits_positions_by_the_mask():
    # (B=1, A=2, H=1, W=2, K=1): object cell 0 (both anchors), background cell 1
    student = torch.zeros(1, 2, 1, 2, 1)
    teacher = torch.zeros(1, 2, 1, 2, 1)
    teacher[0, 0, 0, 0, 0] = math.log(3)  # one object anchor disagrees
    teacher[0, :, 0, 1, 0] = math.log(3)  # both background anchors disagree
    mask = torch.tensor([[[1.0, 0.0]]])
    obj, bg = decoupled_head_kd(student, teacher, mask, temperature=1.0)
    kl = bernoulli_kl(0.75, 0.5)
    assert obj.item() == pytest.approx(kl / 2, abs=1e-6)  # one of the 2 object positions
    assert bg.item() == pytest.approx(kl, abs=1e-6)  # both of the 2 background positions
    obj_t, _ = decoupled_head_kd(student, teacher, mask, temperature=2.0)
    q = 1 / (1 + math.exp(-math.log(3) / 2))
    assert obj_t.item() == pytest.approx(4 * bernoulli_kl(q, 0.5) / 2, abs=1e-6)  # times T^2


def test_defeat_loss_weights_each_term_and_averages_levels():
    adapted = {8: torch.tensor([[[[2.0, 1.0, 1.0]]]]), 16: torch.zeros(1, 1, 1, 3)}
    teachers = {s: torch.zeros_like(a) for s, a in adapted.items()}
    masks = {s: torch.tensor([[[1.0, 0.0, 0.0]]]) for s in adapted}
    parts = defeat_loss(adapted, teachers, masks, None, None, None, feature_object_weight=3.0,
                        feature_background_weight=12.0)
    assert parts["feature_object"].item() == pytest.approx(3.0 * (2.0 + 0.0) / 2)
    assert parts["feature_background"].item() == pytest.approx(12.0 * (0.5 + 0.0) / 2)
    assert parts["cls_object"].item() == 0.0 and parts["cls_background"].item() == 0.0
