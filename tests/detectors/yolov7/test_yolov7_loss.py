"""The yolov7 repository's losses (detectors/yolov7/loss.py, loss_ota.py): a hand-worked box for ComputeLoss,
and ComputeLossOTA's assignment on a tiny crowded case pinned to what upstream's code gives
(benchmarks/verify_yolov7_loss_parity.py prints it and checks ours against theirs)."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from detectors.config import parse_config
from detectors.yolov7.gt_config import YOLOv7GtConfig, YOLOv7RepoGtConfig
from detectors.yolov7.loss import YOLOv7RepoLoss, build_loss

IMG = 64
STRIDES = torch.tensor([8.0, 16.0, 32.0])


def head(anchors_px, nc=3):
    anchors = torch.tensor(anchors_px, dtype=torch.float32).view(3, 3, 2) / STRIDES.view(3, 1, 1)
    return SimpleNamespace(detect=SimpleNamespace(nl=3, na=3, nc=nc, anchors=anchors, stride=STRIDES))


def zero_maps(batch=1, nc=3):
    return [torch.zeros(batch, 3, IMG // s, IMG // s, 5 + nc, requires_grad=True) for s in (8, 16, 32)]


# Level 0 (8 x 8 cells): one 16 px anchor; every other anchor is over 4x off a 16 px box, so only it matches.
ONE_ANCHOR = [[16, 16, 96, 96, 96, 96], [160, 160, 160, 160, 160, 160], [320, 320, 320, 320, 320, 320]]
# A 16 x 16 px box at (19.2, 19.2) px: cell (2, 2) of level 0 at (0.4, 0.4), so also its left and upper neighbours.
ONE_BOX = torch.tensor([[0.0, 1.0, 0.3, 0.3, 0.25, 0.25]])


def plain_ciou(pred, target):
    """CIoU of two (cx, cy, w, h) boxes of equal size (the aspect term is 0), written out by hand."""
    (px, py, w, h), (tx, ty, _, _) = pred, target
    ix, iy = max(0.0, w - abs(px - tx)), max(0.0, h - abs(py - ty))
    iou = ix * iy / (2 * w * h - ix * iy)
    cw, ch = w + abs(px - tx), h + abs(py - ty)
    return iou - ((px - tx) ** 2 + (py - ty) ** 2) / (cw**2 + ch**2)


def test_one_box_goes_to_its_cell_and_the_two_nearer_neighbours_of_the_one_matching_anchor():
    loss = YOLOv7RepoLoss(head(ONE_ANCHOR), img_size=IMG, gains=YOLOv7RepoGtConfig())
    levels = loss.assign(zero_maps(), ONE_BOX)
    assert [len(t) for t in levels] == [3, 0, 0]
    cells = sorted(zip(levels[0].gi.tolist(), levels[0].gj.tolist(), strict=True))
    assert cells == [(1, 2), (2, 1), (2, 2)] and levels[0].anchor.tolist() == [0, 0, 0]
    offsets = sorted(tuple(round(v, 5) for v in row) for row in levels[0].box.tolist())
    assert offsets == [(0.4, 0.4, 2.0, 2.0), (0.4, 1.4, 2.0, 2.0), (1.4, 0.4, 2.0, 2.0)]


def test_one_box_with_zero_logits_gives_the_hand_worked_terms():
    maps = zero_maps()
    total, items = YOLOv7RepoLoss(head(ONE_ANCHOR), img_size=IMG, gains=YOLOv7RepoGtConfig())(maps, ONE_BOX)
    # Zero logits: every prediction is (0.5, 0.5) in its cell with the 2 x 2-cell anchor's size.
    cious = [plain_ciou((0.5, 0.5, 2.0, 2.0), (x, y, 2.0, 2.0)) for x, y in ((0.4, 0.4), (1.4, 0.4), (0.4, 1.4))]
    box = sum(1 - c for c in cious) / 3 * 0.05  # box gain 0.05 * 3 / nl
    # BCE of a zero logit is log 2 whatever the target, so each level's mean is log 2, weighted 4 / 1 / 0.4.
    obj = math.log(2) * (4.0 + 1.0 + 0.4) * 0.7 * (IMG / 640) ** 2
    cls = math.log(2) * 0.3 * 3 / 80
    assert float(items["box"]) == pytest.approx(box, rel=1e-5)
    assert float(items["obj"]) == pytest.approx(obj, rel=1e-5)
    assert float(items["cls"]) == pytest.approx(cls, rel=1e-5)
    assert float(total.detach()) == pytest.approx(box + obj + cls, rel=1e-5)  # batch of one
    total.backward()
    assert all(torch.isfinite(m.grad).all() for m in maps)


def test_a_single_class_has_no_class_term_and_the_batch_scales_the_total():
    maps = zero_maps(batch=2, nc=1)
    targets = torch.tensor([[0.0, 0.0, 0.3, 0.3, 0.25, 0.25], [1.0, 0.0, 0.6, 0.6, 0.25, 0.25]])
    total, items = YOLOv7RepoLoss(head(ONE_ANCHOR, nc=1), img_size=IMG, gains=YOLOv7RepoGtConfig())(maps, targets)
    assert float(items["cls"]) == 0.0
    assert float(total.detach()) == pytest.approx(2 * float(items["box"] + items["obj"]), rel=1e-6)


def test_label_smoothing_and_focal_gamma_change_the_class_term():
    maps = zero_maps()
    plain = YOLOv7RepoLoss(head(ONE_ANCHOR), img_size=IMG, gains=YOLOv7RepoGtConfig())(maps, ONE_BOX)[1]
    focal = YOLOv7RepoLoss(head(ONE_ANCHOR), img_size=IMG,
                           gains=YOLOv7RepoGtConfig(fl_gamma=2.0))(maps, ONE_BOX)[1]
    # Focal on a zero logit: alpha factor (0.25 or 0.75) times 0.5^gamma, on log 2.
    assert float(focal["cls"]) == pytest.approx(float(plain["cls"]) * 0.25 * (0.25 * 1 + 0.75 * 2) / 3, rel=1e-5)


def test_an_empty_batch_trains_objectness_only_with_either_assignment():
    for ota in (False, True):
        maps = zero_maps(batch=2)
        total, items = YOLOv7RepoLoss(head(ONE_ANCHOR), img_size=IMG,
                                      gains=YOLOv7GtConfig(ota=ota))(maps, torch.zeros(0, 6))
        assert float(items["box"]) == 0.0 and float(items["cls"]) == 0.0
        assert float(items["obj"]) == pytest.approx(math.log(2) * 5.4 * 0.7 * (IMG / 640) ** 2, rel=1e-6)


# ------------------------------------------------------------------------------- OTA, pinned to upstream
def tiny_crowded_case():
    """As benchmarks/verify_yolov7_loss_parity.py builds it: 64 px, 2 images, K = 3, YOLOv7's anchors."""
    g = torch.Generator().manual_seed(7)
    maps = [torch.randn(2, 3, s, s, 8, generator=g) for s in (8, 4, 2)]
    targets = torch.tensor([
        [0, 0, 0.45, 0.55, 0.20, 0.30], [0, 1, 0.50, 0.50, 0.30, 0.20], [0, 2, 0.40, 0.60, 0.15, 0.15],
        [0, 0, 0.55, 0.45, 0.35, 0.35], [0, 1, 0.45, 0.55, 0.20, 0.30], [0, 2, 0.60, 0.60, 0.10, 0.25],
        [0, 0, 0.50, 0.55, 0.25, 0.20], [1, 2, 0.30, 0.30, 0.40, 0.50]])
    model = head([[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]])
    return maps, targets, model


# Upstream ComputeLossOTA.build_targets on that case (printed by the parity script, 2026-12-06): (image,
# anchor, row, column) per level, in their order; and their loss items on it.
# Image 0's six boxes (one twice) share cells: several positions repeat, each for another target.
UPSTREAM_POSITIONS = [
    [(0, 0, 4, 3), (0, 0, 3, 4), (0, 0, 4, 3), (0, 0, 4, 4), (0, 0, 4, 4), (0, 0, 4, 3), (0, 0, 4, 3), (0, 1, 3, 3),
     (0, 0, 3, 4), (0, 0, 3, 4), (0, 1, 3, 3), (0, 0, 4, 4), (0, 0, 4, 4), (0, 1, 4, 4), (0, 0, 5, 4), (1, 1, 2, 2),
     (1, 1, 1, 2)],
    [],
    [],
]
UPSTREAM_ITEMS = [0.031079317, 0.030815523, 0.0078139966]  # box, obj, cls


def test_ota_assignment_of_a_crowded_image_equals_upstream():
    maps, targets, model = tiny_crowded_case()
    levels = YOLOv7RepoLoss(model, img_size=IMG, gains=YOLOv7GtConfig()).assign(maps, targets)
    positions = [list(zip(t.image.tolist(), t.anchor.tolist(), t.gj.tolist(), t.gi.tolist(), strict=True))
                 for t in levels]
    assert positions == UPSTREAM_POSITIONS


def test_ota_loss_items_of_a_crowded_image_equal_upstream():
    maps, targets, model = tiny_crowded_case()
    _, items = YOLOv7RepoLoss(model, img_size=IMG, gains=YOLOv7GtConfig())(maps, targets)
    assert [float(items[k]) for k in ("box", "obj", "cls")] == pytest.approx(UPSTREAM_ITEMS, rel=1e-5)


def positions(levels):
    return {(level, int(b), int(a), int(j), int(i)) for level, t in enumerate(levels)
            for b, a, j, i in zip(t.image, t.anchor, t.gj, t.gi, strict=True)}


def test_ota_picks_cells_that_the_anchor_rule_alone_does_not_give_every_target():
    maps, targets, model = tiny_crowded_case()
    rule = YOLOv7RepoLoss(model, img_size=IMG, gains=YOLOv7GtConfig(ota=False)).assign(maps, targets)
    ota = YOLOv7RepoLoss(model, img_size=IMG, gains=YOLOv7GtConfig()).assign(maps, targets)
    assert sum(map(len, ota)) < sum(map(len, rule))  # dynamic k keeps a few of each target's candidates
    picked, offered = positions(ota), positions(rule)
    assert picked <= offered  # OTA chooses among find_3_positive's candidates


def test_the_family_builds_its_loss_from_its_own_gt_block():
    cfg = parse_config({"detector": {"name": "yolov7_tiny"}, "data": {"img_size": 64},
                        "losses": {"gt": {"cls": 0.5, "obj": 1.0}}})
    assert dataclasses.asdict(cfg.losses.gt)["ota"] is True
    loss = build_loss(head(ONE_ANCHOR), cfg)
    assert loss.ota and loss.cls_gain == pytest.approx(0.5 * 3 / 80) and loss.obj_gain == pytest.approx(0.01)
    assert parse_config({"detector": {"name": "yolov3"}}).losses.gt.ota is False
