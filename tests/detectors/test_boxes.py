"""Box conversions, pairwise IoU and YOLOv5's CIoU."""

from __future__ import annotations

import math

import torch

from detectors.ops.boxes import bbox_iou, box_iou, xywh_to_xyxy, xyxy_to_xywh


def test_xywh_and_xyxy_convert_both_ways():
    xywh = torch.tensor([[50.0, 40.0, 20.0, 10.0]])
    xyxy = torch.tensor([[40.0, 35.0, 60.0, 45.0]])
    torch.testing.assert_close(xywh_to_xyxy(xywh), xyxy)
    torch.testing.assert_close(xyxy_to_xywh(xyxy), xywh)
    r = torch.rand(5, 3, 4) * 100
    torch.testing.assert_close(xyxy_to_xywh(xywh_to_xyxy(r)), r)


def test_box_iou_of_half_overlapping_squares_is_one_third():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 3, 0.0, 1.0]]))


def test_box_iou_of_empty_boxes_is_zero_not_nan():
    z = torch.zeros(2, 4)
    assert torch.equal(box_iou(z, z), torch.zeros(2, 2))


def test_bbox_iou_plain_matches_box_iou_in_both_formats():
    g = torch.Generator().manual_seed(0)
    xyxy_a = torch.sort(torch.rand(20, 2, 2, generator=g) * 50, dim=1).values.transpose(1, 2).reshape(20, 4)
    xyxy_b = torch.sort(torch.rand(20, 2, 2, generator=g) * 50, dim=1).values.transpose(1, 2).reshape(20, 4)
    want = box_iou(xyxy_a, xyxy_b).diagonal()[:, None]
    torch.testing.assert_close(bbox_iou(xyxy_a, xyxy_b, xywh=False), want, atol=1e-5, rtol=1e-4)
    got = bbox_iou(xyxy_to_xywh(xyxy_a), xyxy_to_xywh(xyxy_b), xywh=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_ciou_follows_its_formula_on_a_hand_example():
    # Box 1: centre (0, 0), 4 x 2. Box 2: centre (1, 0), 2 x 2.
    b1, b2 = torch.tensor([[0.0, 0.0, 4.0, 2.0]]), torch.tensor([[1.0, 0.0, 2.0, 2.0]])
    iou = 4 / 8  # intersection 2 x 2, union 8 + 4 - 4
    rho2, c2 = 1.0, 4.0**2 + 2.0**2  # centre distance^2, enclosing box [-2, 2] x [-1, 1] diagonal^2
    v = 4 / math.pi**2 * (math.atan(1.0) - math.atan(2.0)) ** 2
    alpha = v / (v - iou + 1)
    want = iou - (rho2 / c2 + v * alpha)
    torch.testing.assert_close(bbox_iou(b1, b2, ciou=True), torch.tensor([[want]]), atol=1e-6, rtol=0)


def test_ciou_of_identical_boxes_is_one_and_alpha_gets_no_gradient():
    b = torch.tensor([[5.0, 5.0, 3.0, 6.0]], requires_grad=True)
    out = bbox_iou(b, b.detach(), ciou=True)
    torch.testing.assert_close(out, torch.ones(1, 1), atol=1e-6, rtol=0)
    out.sum().backward()
    assert torch.isfinite(b.grad).all()


def test_giou_subtracts_the_empty_share_of_the_enclosing_box():
    # Two unit squares side by side with a unit gap: IoU 0, enclosing box 3 x 1, union 2.
    a, b = torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[2.0, 0.0, 3.0, 1.0]])
    torch.testing.assert_close(bbox_iou(a, b, xywh=False, giou=True), torch.tensor([[-1 / 3]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(bbox_iou(a, a, xywh=False, giou=True), torch.tensor([[1.0]]), atol=1e-6, rtol=0)
