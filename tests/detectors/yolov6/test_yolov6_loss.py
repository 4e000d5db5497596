"""YOLOv6's L_gt on hand-worked cases: the box and distribution losses, VFL without objects, the assigners'
positives, and the switch from ATSS to TAL by epoch. Parity with their ComputeLoss on random cases (items
within 1e-5, gradients) is benchmarks/verify_yolov6_parity.py's."""

from __future__ import annotations

import math

import pytest
import torch

from detectors.yolov6.assigners import atss_assign, tal_assign
from detectors.yolov6.family import FAMILY, YOLOv6GtConfig
from detectors.yolov6.loss import YOLOv6Loss, anchor_layout, distribution_focal_loss, iou_loss, padded_targets
from detectors.yolov6.model import build_yolov6


def test_giou_loss_of_identical_boxes_is_zero_and_of_disjoint_neighbours_four_thirds():
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert iou_loss(box, box, "giou").item() == pytest.approx(0.0, abs=1e-6)
    # IoU 0, union 2, enclosing box 3: GIoU = 0 - (3 - 2) / 3.
    assert iou_loss(box, torch.tensor([[2.0, 0.0, 3.0, 1.0]]), "giou").item() == pytest.approx(4 / 3, rel=1e-6)


def test_siou_loss_of_identical_boxes_is_zero_and_grows_with_the_offset():
    box = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    assert iou_loss(box, box, "siou").item() == pytest.approx(0.0, abs=1e-6)
    near, far = (iou_loss(box + d, box, "siou").item() for d in (0.2, 0.6))
    assert 0 < near < far


def test_distribution_focal_loss_splits_a_target_between_its_two_bins():
    uniform = torch.zeros(1, 4, 17)  # every bin equally likely: each cross entropy is ln 17
    assert distribution_focal_loss(uniform, torch.full((1, 4), 2.5), 16).item() == pytest.approx(math.log(17), rel=1e-6)
    sure = torch.full((1, 4, 17), -20.0)
    sure[..., 3] = 20.0  # all mass on bin 3: loss = the weight left on bin 2 (0.25) times ~40 nats
    assert distribution_focal_loss(sure, torch.full((1, 4), 3.0), 16).item() == pytest.approx(0.0, abs=1e-6)
    assert distribution_focal_loss(sure, torch.full((1, 4), 2.75), 16).item() == pytest.approx(0.25 * 40, rel=1e-3)


def test_padded_targets_are_xyxy_pixels_per_image_with_label_minus_one_padding():
    targets = torch.tensor([[1, 2, 0.5, 0.5, 0.5, 0.25], [0, 0, 0.25, 0.25, 0.5, 0.5], [1, 1, 0.5, 0.5, 1.0, 1.0]])
    labels, boxes = padded_targets(targets, 3, height=64, width=128)
    assert labels.squeeze(-1).tolist() == [[0, -1], [2, 1], [-1, -1]]
    assert boxes[1, 0].tolist() == [32.0, 24.0, 96.0, 40.0] and boxes[0, 0].tolist() == [0.0, 0.0, 64.0, 32.0]
    assert boxes[2].abs().sum() == 0 and boxes.dtype == torch.float64  # float64 as theirs (numpy round trip)


def _loss(size: str = "yolov6n", **settings):
    torch.manual_seed(0)
    model = build_yolov6(size, 2).train()
    config = YOLOv6GtConfig(**settings)
    return model, YOLOv6Loss(2, model.strides, reg_max=model.spec.reg_max, iou_type=model.spec.iou_type, settings=config)


def test_without_objects_only_the_background_vfl_term_remains():
    model, loss = _loss()
    with torch.no_grad():  # every class score 0.01 (the prior), so the VFL sum has a closed form
        for conv in model.detect.cls_preds:
            conv.weight.zero_()
    images = torch.rand(2, 3, 128, 128)
    l_gt, items = loss(model(images), torch.zeros(0, 6))
    anchors = 2 * (16 * 16 + 8 * 8 + 4 * 4)
    p = 0.01
    expected = anchors * 2 * 0.75 * p ** 2 * -math.log(1 - p)  # not divided: the score sum is 0
    assert items["cls"].item() == pytest.approx(expected, rel=1e-4)
    assert items["iou"].item() == 0.0 and items["dfl"].item() == 0.0
    assert l_gt.item() == pytest.approx(expected, rel=1e-4)


def test_items_are_the_weighted_terms_and_l_gt_their_sum_with_a_gradient():
    model, loss = _loss("yolov6m")  # DFL on
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.3], [1, 0, 0.3, 0.6, 0.2, 0.5]])
    l_gt, items = loss(model(torch.rand(2, 3, 128, 128)), targets)
    assert set(items) == set(loss.term_names) == {"iou", "dfl", "cls"}
    assert all(v.dim() == 0 and not v.requires_grad for v in items.values())
    assert items["dfl"] > 0 and l_gt.item() == pytest.approx(sum(v.item() for v in items.values()), rel=1e-6)
    l_gt.backward()
    assert model.detect.reg_preds[0].weight.grad.abs().sum() > 0


def test_the_assigner_is_atss_for_the_first_four_epochs_then_tal():
    _, loss = _loss()
    assert loss.assigner == "atss"  # before any epoch hook: their epoch 0
    seen = []
    for epoch in range(1, 8):
        loss.start_epoch(epoch, 7)
        seen.append(loss.assigner)
    assert seen == ["atss"] * 4 + ["tal"] * 3
    _, short = _loss(warmup_epoch=1)
    short.start_epoch(2, 7)
    assert short.assigner == "tal"


def test_the_two_assigners_give_different_items_on_the_same_batch():
    model, loss = _loss()
    output = model(torch.rand(1, 3, 128, 128))
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.3]])
    loss.start_epoch(1, 10)
    _, atss = loss(output, targets)
    loss.start_epoch(10, 10)
    _, tal = loss(output, targets)
    assert atss["cls"].item() != pytest.approx(tal["cls"].item(), rel=1e-3)


def _one_object():
    maps = [torch.zeros(1, 1, s, s) for s in (16, 8, 4)]
    anchors, points, sizes, strides = anchor_layout(maps, (8, 16, 32))
    gt_boxes = torch.tensor([[[20.0, 30.0, 80.0, 70.0]]], dtype=torch.float64)
    return anchors, points, sizes, strides, torch.tensor([[[1.0]]], dtype=torch.float64), gt_boxes


def test_atss_positives_have_their_centres_inside_the_object_and_get_its_class():
    anchors, points, sizes, _, labels, gt = _one_object()
    pred = gt.float().expand(1, len(points), 4).clone()  # every prediction is the object: IoU 1
    out = atss_assign(anchors, sizes, labels, gt, torch.ones(1, 1, 1), pred, num_classes=3)
    fg = out.fg[0]
    centres = points[fg]
    assert fg.sum() > 0
    assert ((centres[:, 0] > 20) & (centres[:, 0] < 80) & (centres[:, 1] > 30) & (centres[:, 1] < 70)).all()
    assert (out.labels[0, fg] == 1).all() and (out.labels[0, ~fg] == 3).all()
    assert torch.allclose(out.scores[0, fg, 1], torch.ones(int(fg.sum()), dtype=out.scores.dtype), atol=1e-6)


def test_tal_keeps_at_most_topk_positives_inside_the_object_best_aligned_first():
    _, points, _, _, labels, gt = _one_object()
    pred = gt.float().expand(1, len(points), 4).clone()
    scores = torch.full((1, len(points), 3), 0.1)
    inside = (points[:, 0] > 20) & (points[:, 0] < 80) & (points[:, 1] > 30) & (points[:, 1] < 70)
    best = torch.nonzero(inside)[:2, 0]
    scores[0, best, 1] = 0.9  # two anchors predict the class confidently
    out = tal_assign(scores, pred, points, labels, gt, torch.ones(1, 1, 1), num_classes=3, topk=5)
    fg = out.fg[0]
    assert fg.sum() == 5 and inside[fg].all() and fg[best].all()
    # Normalised alignment: the best anchor's target is the best IoU (1), the others 0.1 / 0.9 of it.
    assert out.scores[0, best, 1].tolist() == pytest.approx([1.0, 1.0])
    assert out.scores[0, fg, 1].min().item() == pytest.approx(0.1 / 0.9, rel=1e-5)


def test_family_default_gt_block_is_their_compute_loss_constants():
    config = FAMILY.gt_config()
    assert (config.warmup_epoch, config.class_weight, config.iou_weight, config.dfl_weight) == (4, 1.0, 2.5, 0.5)
    assert (config.atss_topk, config.tal_topk, config.tal_alpha, config.tal_beta) == (9, 13, 1.0, 6.0)


def test_under_autocast_the_loss_is_float32_and_matches_its_full_precision_terms_roughly():
    model, loss = _loss()
    images, targets = torch.rand(2, 3, 96, 96), torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.3]])
    with torch.no_grad():
        _, full = loss(model(images), targets)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the trainer's AMP is CUDA's; CPU's runs the same code
            l_gt, items = loss(model(images), targets)
    assert l_gt.dtype == torch.float32 and all(v.dtype == torch.float32 for v in items.values())
    assert items["cls"].item() == pytest.approx(full["cls"].item(), rel=0.05)
