"""Shared ResNet-FPN ops (anchors, box coders, matcher, losses, box clipping) on hand-worked cases.

torchvision itself is the oracle in benchmarks/verify_resnet_fpn_parity.py (random cases, real sizes).
"""

from __future__ import annotations

import math

import pytest
import torch

from detectors.ops.anchors import AnchorGenerator, cell_anchors
from detectors.ops.box_coder import BoxCoder, BoxLinearCoder
from detectors.ops.boxes import clip_boxes_to_image, remove_small_boxes
from detectors.ops.detection_losses import giou_loss, sigmoid_focal_loss, smooth_l1_loss
from detectors.ops.matcher import Matcher

LN2 = math.log(2.0)


# ---- anchors ---------------------------------------------------------------------------------------

def test_cell_anchors_are_rounded_and_ordered_ratio_major():
    # ratio 0.5 (h/w), size 32: w = 32 * sqrt(2) = 45.25, h = 22.63 -> halves 22.63, 11.31 -> 23, 11
    assert cell_anchors((32, 64), (0.5, 1.0)).tolist() == [
        [-23.0, -11.0, 23.0, 11.0], [-45.0, -23.0, 45.0, 23.0],  # ratio 0.5: sizes 32, 64
        [-16.0, -16.0, 16.0, 16.0], [-32.0, -32.0, 32.0, 32.0],  # ratio 1
    ]


def test_grid_anchors_are_row_major_with_cell_anchors_innermost():
    gen = AnchorGenerator(((8, 16),), ((1.0,),))
    (anchors,) = gen((16, 24), [(2, 3)], [8])
    assert anchors.shape == (2 * 3 * 2, 4) and anchors.dtype == torch.float32
    y, x, a = 1, 2, 1  # cell (1, 2), second cell anchor (size 16): shift (16, 8) = top-left corner
    assert anchors[(y * 3 + x) * 2 + a].tolist() == [16 - 8.0, 8 - 8.0, 16 + 8.0, 8 + 8.0]
    assert anchors[0].tolist() == [-4.0, -4.0, 4.0, 4.0]


def test_strides_default_to_image_size_over_feature_size_per_dimension():
    gen = AnchorGenerator((32, 64), (1.0,))  # flat sizes: one per level; flat ratios: every level
    assert gen.num_anchors_per_location() == [1, 1]
    p3, p4 = gen((64, 128), [(8, 16), (4, 8)], dtype=torch.float64)
    assert p3.dtype == torch.float64 and p3.shape == (128, 4) and p4.shape == (32, 4)
    assert p4[1].tolist() == [16 - 32.0, -32.0, 16 + 32.0, 32.0]  # stride 16 along x
    (rect,) = AnchorGenerator((8,), (1.0,))((40, 64), [(5, 4)])  # strides (8, 16)
    assert rect[4 + 1].tolist() == [16 - 4.0, 8 - 4.0, 16 + 4.0, 8 + 4.0]  # cell (y=1, x=1)


def test_anchor_generator_refuses_a_level_count_mismatch():
    with pytest.raises(ValueError, match="levels"):
        AnchorGenerator((32, 64), (1.0,))((64, 64), [(8, 8)])


# ---- box coders ------------------------------------------------------------------------------------

def test_box_coder_encodes_centre_offsets_and_log_sizes_with_weights():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    gt = torch.tensor([[5.0, 5.0, 25.0, 15.0]])  # centre (15, 10), size 20 x 10
    torch.testing.assert_close(BoxCoder().encode(gt, anchor), torch.tensor([[1.0, 0.5, LN2, 0.0]]))
    torch.testing.assert_close(BoxCoder((10, 10, 5, 5)).encode(gt, anchor), torch.tensor([[10.0, 5.0, 5 * LN2, 0.0]]))


def test_box_coder_decode_inverts_encode_and_clamps_large_size_deltas():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [4.0, 2.0, 8.0, 20.0]])
    gts = torch.tensor([[5.0, 5.0, 25.0, 15.0], [3.0, 3.0, 9.0, 7.0]])
    torch.testing.assert_close(coder.decode_single(coder.encode(gts, anchors), anchors), gts)
    huge = BoxCoder().decode_single(torch.tensor([[0.0, 0.0, 50.0, 0.0]]), anchors[:1])
    assert huge[0].tolist() == pytest.approx([5 - 312.5, 0.0, 5 + 312.5, 10.0])  # w = 10 * 1000 / 16


def test_box_coder_decodes_several_boxes_per_row():
    codes = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])  # two class-specific boxes
    out = BoxCoder().decode_single(codes, torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert out.tolist() == [[0.0, 0.0, 10.0, 10.0, 10.0, 0.0, 20.0, 10.0]]
    assert BoxCoder().decode(codes, [torch.tensor([[0.0, 0.0, 10.0, 10.0]])]).shape == (1, 2, 4)


def test_box_linear_coder_gives_edge_distances_from_the_anchor_centre():
    anchor = torch.tensor([[0.0, 0.0, 8.0, 8.0]])  # centre (4, 4)
    gt = torch.tensor([[1.0, 2.0, 10.0, 12.0]])
    assert BoxLinearCoder(normalize_by_size=False).encode(anchor, gt).tolist() == [[3.0, 2.0, 6.0, 8.0]]
    coder = BoxLinearCoder()
    codes = coder.encode(anchor, gt)
    assert codes.tolist() == [[3 / 8, 2 / 8, 6 / 8, 8 / 8]]
    assert coder.decode(codes, anchor).tolist() == gt.tolist()


# ---- matcher ---------------------------------------------------------------------------------------

def test_matcher_labels_below_and_between_thresholds():
    quality = torch.tensor([[0.9, 0.4, 0.2, 0.1], [0.3, 0.6, 0.35, 0.1]])
    assert Matcher(0.5, 0.4)(quality.clone()).tolist() == [0, 1, -1, -1]
    assert Matcher(0.5, 0.3)(quality.clone()).tolist() == [0, 1, -2, -1]


def test_low_quality_matches_give_each_gts_best_predictions_their_own_best_gt():
    # gt 1's best predictions (tie at 0.35) are 1 and 2: both get matched back although < 0.5.
    quality = torch.tensor([[0.9, 0.2, 0.1], [0.3, 0.35, 0.35]])
    assert Matcher(0.5, 0.5, allow_low_quality_matches=True)(quality).tolist() == [0, 1, 1]
    # Prediction 0 is gt 0's best, but its own best gt is 1: it is matched to gt 1 (torchvision's rule);
    # prediction 1 is no gt's best and stays unmatched.
    quality = torch.tensor([[0.4, 0.1], [0.45, 0.2]])
    assert Matcher(0.5, 0.5, allow_low_quality_matches=True)(quality).tolist() == [1, -1]
    assert Matcher(0.5, 0.5)(quality).tolist() == [-1, -1]


def test_matcher_refuses_an_empty_matrix_and_inverted_thresholds():
    with pytest.raises(ValueError, match="ground-truth"):
        Matcher(0.5, 0.4)(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.4, 0.5)


# ---- losses ----------------------------------------------------------------------------------------

def test_focal_loss_at_zero_logit():
    logits, targets = torch.zeros(2), torch.tensor([1.0, 0.0])
    # p = 0.5: CE = ln 2, (1 - p_t)^2 = 1/4; alpha_t 0.25 for the positive, 0.75 for the negative
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets), torch.tensor([0.0625, 0.1875]) * LN2)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, alpha=-1, reduction="sum"), torch.tensor(0.5 * LN2))
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, gamma=0, reduction="mean"),
                               torch.tensor(0.5 * LN2))
    with pytest.raises(ValueError, match="alpha"):
        sigmoid_focal_loss(logits, targets, alpha=2.0)


def test_focal_loss_down_weights_confident_correct_predictions():
    p = 0.9
    logit = torch.tensor([math.log(p / (1 - p))])
    expected = 0.25 * (1 - p) ** 2 * -math.log(p)
    assert float(sigmoid_focal_loss(logit, torch.ones(1))) == pytest.approx(expected, rel=1e-5)


def test_giou_loss_on_identical_disjoint_and_overlapping_boxes():
    b1 = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    b2 = torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 3.0, 1.0], [1.0, 1.0, 3.0, 3.0]])
    # disjoint: IoU 0, enclosing 3, union 2 -> GIoU -1/3; overlap: IoU 1/7, enclosing 9, union 7
    expected = torch.tensor([0.0, 4 / 3, 1 - 1 / 7 + 2 / 9])
    torch.testing.assert_close(giou_loss(b1, b2), expected)
    torch.testing.assert_close(giou_loss(b2, b1, reduction="sum"), expected.sum())


def test_giou_loss_mean_of_nothing_is_zero_with_a_graph():
    empty = torch.zeros(0, 4, requires_grad=True)
    loss = giou_loss(empty, empty, reduction="mean")
    assert loss.item() == 0.0 and loss.requires_grad


def test_smooth_l1_is_quadratic_below_beta_and_linear_above():
    out = smooth_l1_loss(torch.tensor([0.05, 1.0]), torch.zeros(2), beta=0.1, reduction="none")
    torch.testing.assert_close(out, torch.tensor([0.5 * 0.05**2 / 0.1, 1.0 - 0.05]))
    assert float(smooth_l1_loss(torch.tensor([0.05, 1.0]), torch.zeros(2), beta=0.0)) == pytest.approx(1.05)
    with pytest.raises(ValueError, match="reduction"):
        smooth_l1_loss(torch.zeros(1), torch.zeros(1), reduction="avg")


# ---- box clipping ------------------------------------------------------------------------------------

def test_clip_boxes_to_image_clamps_x_to_width_and_y_to_height():
    boxes = torch.tensor([[[-5.0, -1.0, 70.0, 60.0], [10.0, 20.0, 30.0, 40.0]]])
    assert clip_boxes_to_image(boxes, (50, 64)).tolist() == [[[0.0, 0.0, 64.0, 50.0], [10.0, 20.0, 30.0, 40.0]]]


def test_remove_small_boxes_keeps_boxes_with_both_sides_at_least_min_size():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 5.0], [0.0, 0.0, 0.5, 5.0], [0.0, 0.0, 5.0, 0.9], [2.0, 2.0, 4.0, 4.0]])
    assert remove_small_boxes(boxes, 1.0).tolist() == [0, 3]
