"""YOLOv5's L_gt: label assignment on hand-built targets, CIoU, gains, and the loss against a loop reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detectors.config import GtLossConfig
from detectors.ops.boxes import bbox_iou
from detectors.yolov5.loss import LEVEL_BALANCE, YOLOv5Loss, build_targets, scaled_gains

STRIDES = (8, 16, 32)


def ciou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Paired (n, 4) xywh -> (n,) CIoU, as the loss calls the project's one implementation."""
    return bbox_iou(pred, target, ciou=True).squeeze(-1)
# YOLOv5's default anchors in pixels (P3, P4, P5); the model keeps them divided by the stride.
ANCHORS_PX = torch.tensor(
    [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]],
    dtype=torch.float32,
)
ANCHORS = ANCHORS_PX / torch.tensor(STRIDES, dtype=torch.float32).view(-1, 1, 1)


class StubDetect(nn.Module):
    """Just what the loss reads from YOLOv5's Detect head: anchors in grid cells, nl, na, nc."""

    def __init__(self, nc: int) -> None:
        super().__init__()
        self.nl, self.na, self.nc = 3, 3, nc
        self.register_buffer("anchors", ANCHORS.clone())


class StubModel(nn.Module):
    def __init__(self, nc: int = 3) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 3, 1), StubDetect(nc))


def head_maps(batch: int, img: int, nc: int, *, fill: float | None = None, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    maps = []
    for s in STRIDES:
        shape = (batch, 3, img // s, img // s, 5 + nc)
        maps.append(torch.full(shape, fill) if fill is not None else torch.randn(shape, generator=gen))
    return maps


def cells(level_targets) -> list[tuple[int, int, int, int]]:
    """(image, anchor, row, column) per assigned prediction, in the returned order."""
    t = level_targets
    return list(zip(t.image.tolist(), t.anchor.tolist(), t.gj.tolist(), t.gi.tolist(), strict=True))


GRIDS_64 = [(8, 8), (4, 4), (2, 2)]  # 64 px input


# ------------------------------------------------------------------------------------------------
# build_targets


def test_target_goes_to_its_cell_and_the_two_nearest_neighbours():
    # Centre at grid (2.4, 4.8) on the 8x8 level: left half in x (-> also cell x=1), lower half in y
    # (-> also row 5). Size 1.25 x 1.625 cells equals anchor 0 exactly, so only anchors within
    # ratio 4 of it match: anchor 0 (10x13 px) and anchor 1 (16x30 px) and 2 (33x23 px) all do.
    target = torch.tensor([[0, 1, 2.4 / 8, 4.8 / 8, 10 / 64, 13 / 64]])
    level0 = build_targets(target, ANCHORS, GRIDS_64, anchor_t=4.0)[0]
    expected = []
    for row, col in ((4, 2), (4, 1), (5, 2)):  # own cell, left neighbour, lower neighbour
        expected += [(0, a, row, col) for a in range(3)]
    assert cells(level0) == expected
    own_left_down = [(0.4, 0.8), (1.4, 0.8), (0.4, -0.2)]
    for k, (dx, dy) in enumerate(own_left_down):
        for a in range(3):
            box = level0.box[3 * k + a]
            assert box[:2].tolist() == pytest.approx([dx, dy], abs=1e-5)
            assert box[2:].tolist() == pytest.approx([1.25, 1.625], abs=1e-6)
    assert level0.cls.tolist() == [1] * 9
    assert torch.equal(level0.anchor_wh, ANCHORS[0][level0.anchor])


def test_upper_right_quadrant_picks_the_right_and_upper_neighbours():
    target = torch.tensor([[0, 0, 5.7 / 8, 3.2 / 8, 10 / 64, 13 / 64]])
    level0 = build_targets(target, ANCHORS, GRIDS_64, anchor_t=4.0)[0]
    assigned = {(r, c) for _, _, r, c in cells(level0)}
    assert assigned == {(3, 5), (2, 5), (3, 6)}  # own, upper (y < .5 in cell), right (x > .5 in cell)


def test_a_centre_exactly_mid_cell_gets_no_neighbour():
    target = torch.tensor([[0, 0, 2.5 / 8, 2.5 / 8, 10 / 64, 13 / 64]])
    level0 = build_targets(target, ANCHORS, GRIDS_64, anchor_t=4.0)[0]
    assert {(r, c) for _, _, r, c in cells(level0)} == {(2, 2)}


def test_border_cells_get_no_neighbour_outside_the_grid():
    # First cell (x < 1) has no left neighbour; last cell has no right neighbour.
    target = torch.tensor([[0, 0, 0.3 / 8, 7.7 / 8, 10 / 64, 13 / 64]])
    level0 = build_targets(target, ANCHORS, GRIDS_64, anchor_t=4.0)[0]
    assert {(r, c) for _, _, r, c in cells(level0)} == {(7, 0)}


def test_anchor_match_is_by_width_and_height_ratio_below_anchor_t():
    # A 40x40 px target on the stride-8 level is 5x5 cells. Anchor 0 is 1.25 x 1.625 cells:
    # ratios 4.0 and 3.08 -> max 4.0, not below 4 -> no match. Anchor 1 (2 x 3.75) and 2 (4.125 x 2.875) match.
    target = torch.tensor([[0, 0, 0.5 + 0.5 / 8, 0.5 + 0.5 / 8, 40 / 64, 40 / 64]])
    level0 = build_targets(target, ANCHORS, GRIDS_64, anchor_t=4.0)[0]
    assert sorted(set(level0.anchor.tolist())) == [1, 2]
    looser = build_targets(target, ANCHORS, GRIDS_64, anchor_t=4.01)[0]
    assert sorted(set(looser.anchor.tolist())) == [0, 1, 2]


def test_large_targets_only_match_the_coarse_level():
    target = torch.tensor([[1, 2, 0.5 + 1 / 64, 0.5 + 1 / 64, 300 / 640, 300 / 640]])
    grids = [(80, 80), (40, 40), (20, 20)]
    levels = build_targets(target, ANCHORS, grids, anchor_t=4.0)
    assert len(levels[0]) == 0
    assert len(levels[2]) > 0 and set(levels[2].image.tolist()) == {1} and set(levels[2].cls.tolist()) == {2}


def test_order_is_offset_major_then_anchor_then_target():
    targets = torch.tensor([[0, 0, 2.4 / 8, 2.5 / 8, 10 / 64, 13 / 64], [1, 0, 5.5 / 8, 5.5 / 8, 10 / 64, 13 / 64]])
    level0 = build_targets(targets, ANCHORS, GRIDS_64, anchor_t=4.0)[0]
    # Own cells: anchor-major over both targets; then target 0's left neighbour for each anchor.
    assert cells(level0) == [
        (0, 0, 2, 2), (1, 0, 5, 5), (0, 1, 2, 2), (1, 1, 5, 5), (0, 2, 2, 2), (1, 2, 5, 5),
        (0, 0, 2, 1), (0, 1, 2, 1), (0, 2, 2, 1),
    ]


def test_no_targets_assign_nothing():
    levels = build_targets(torch.zeros((0, 6)), ANCHORS, GRIDS_64, anchor_t=4.0)
    assert [len(t) for t in levels] == [0, 0, 0]


# ------------------------------------------------------------------------------------------------
# CIoU and gains


def test_ciou_is_one_for_identical_boxes_and_penalises_distance_and_aspect():
    box = torch.tensor([[2.0, 3.0, 4.0, 2.0]])
    assert ciou(box, box).item() == pytest.approx(1.0, abs=1e-6)
    # Disjoint boxes side by side: IoU 0, centre distance 4, enclosing diagonal^2 = 8^2 + 2^2.
    shifted = torch.tensor([[6.0, 3.0, 4.0, 2.0]])
    assert ciou(box, shifted).item() == pytest.approx(-16 / 68, abs=1e-5)
    # Same centre, same area, aspects 2:1 and 1:2: IoU 4/12 less alpha * v of the CIoU paper.
    tall = torch.tensor([[2.0, 3.0, 2.0, 4.0]])
    iou = 4 / 12
    v = 4 / math.pi**2 * (math.atan(0.5) - math.atan(2.0)) ** 2
    assert ciou(box, tall).item() == pytest.approx(iou - v * v / (v - iou + 1), abs=1e-6)


def test_gains_scale_like_yolov5_train_py():
    box, obj, cls = scaled_gains(GtLossConfig(), num_levels=3, num_classes=3, img_size=320)
    assert (box, obj, cls) == pytest.approx((0.05, 0.25, 0.5 * 3 / 80))


# ------------------------------------------------------------------------------------------------
# The loss


def test_perfect_boxes_with_zero_logits_give_the_hand_computed_items():
    # Zero logits decode to a box at the cell centre with the anchor's size; BCE(0, y) = ln 2 for any y.
    nc, img = 3, 64
    loss_fn = YOLOv5Loss(StubModel(nc), img_size=img, gains=GtLossConfig())
    target = torch.tensor([[0, 1, 2.5 / 8, 2.5 / 8, 10 / 64, 13 / 64]])  # anchor 0 exactly, mid cell
    total, items = loss_fn(head_maps(2, img, nc, fill=0.0), target)
    box_gain, obj_gain, cls_gain = scaled_gains(GtLossConfig(), num_levels=3, num_classes=nc, img_size=img)
    # Three anchors match on level 0 (box loss averages their 1 - CIoU); only level 0 assigns.
    ious = ciou(torch.tensor([[0.5, 0.5, *a] for a in ANCHORS[0].tolist()]), torch.tensor([[0.5, 0.5, 1.25, 1.625]]))
    assert items["box"].item() == pytest.approx((1 - ious).mean().item() * box_gain, rel=1e-5)
    assert items["obj"].item() == pytest.approx(math.log(2) * sum(LEVEL_BALANCE) * obj_gain, rel=1e-5)
    assert items["cls"].item() == pytest.approx(math.log(2) * cls_gain, rel=1e-5)
    assert total.item() == pytest.approx(2 * sum(v.item() for v in items.values()), rel=1e-6)


def test_one_class_has_no_class_loss():
    loss_fn = YOLOv5Loss(StubModel(1), img_size=64, gains=GtLossConfig())
    target = torch.tensor([[0, 0, 0.4, 0.4, 0.2, 0.2]])
    _, items = loss_fn(head_maps(1, 64, 1), target)
    assert items["cls"].item() == 0.0 and items["box"].item() > 0


def test_images_without_targets_still_learn_objectness():
    loss_fn = YOLOv5Loss(StubModel(3), img_size=64, gains=GtLossConfig())
    maps = [m.requires_grad_() for m in head_maps(2, 64, 3)]
    total, items = loss_fn(maps, torch.zeros((0, 6)))
    assert items["box"].item() == 0.0 and items["cls"].item() == 0.0 and items["obj"].item() > 0
    total.backward()
    assert all(m.grad[..., 4].abs().sum() > 0 and m.grad[..., :4].abs().sum() == 0 for m in maps)


def reference_loss(maps, targets, anchors, nc, img, gains=GtLossConfig()):
    """A plain per-target loop written from the rules in the module docstring (no vectorisation)."""
    box_gain, obj_gain, cls_gain = scaled_gains(gains, num_levels=3, num_classes=nc, img_size=img)
    cp, cn = 1 - 0.5 * gains.label_smoothing, 0.5 * gains.label_smoothing
    lbox = lobj = lcls = 0.0
    for level, pred in enumerate(maps):
        _, _, h, w, _ = pred.shape
        rows = []
        for offset in ((0, 0), (1, 0), (0, 1), (-1, 0), (0, -1)):
            for a in range(3):
                for t in targets.tolist():
                    gx, gy, gw, gh = t[2] * w, t[3] * h, t[4] * w, t[5] * h
                    aw, ah = anchors[level][a].tolist()
                    if max(gw / aw, aw / gw, gh / ah, ah / gh) >= gains.anchor_t:
                        continue
                    wanted = {
                        (0, 0): True,
                        (1, 0): gx % 1 < 0.5 and gx > 1,
                        (0, 1): gy % 1 < 0.5 and gy > 1,
                        (-1, 0): (w - gx) % 1 < 0.5 and (w - gx) > 1,
                        (0, -1): (h - gy) % 1 < 0.5 and (h - gy) > 1,
                    }[offset]
                    if not wanted:
                        continue
                    gi = min(max(int(gx - 0.5 * offset[0]), 0), w - 1)
                    gj = min(max(int(gy - 0.5 * offset[1]), 0), h - 1)
                    rows.append((int(t[0]), a, gj, gi, [gx - gi, gy - gj, gw, gh], (aw, ah), int(t[1])))
        tobj = torch.zeros(pred.shape[:4])
        if rows:
            ious, cls_terms = [], []
            for b, a, gj, gi, tbox, (aw, ah), c in rows:
                p = pred[b, a, gj, gi]
                xy = p[:2].sigmoid() * 2 - 0.5
                wh = (p[2:4].sigmoid() * 2) ** 2 * torch.tensor([aw, ah])
                iou = ciou(torch.cat((xy, wh))[None], torch.tensor([tbox]))[0]
                ious.append(iou)
                tobj[b, a, gj, gi] = iou.detach().clamp(min=0)
                onehot = torch.full((nc,), cn)
                onehot[c] = cp
                cls_terms.append(nn.functional.binary_cross_entropy_with_logits(p[5:], onehot, reduction="sum"))
            lbox += (1 - torch.stack(ious)).mean()
            if nc > 1:
                lcls += torch.stack(cls_terms).sum() / (len(rows) * nc)
        lobj += nn.functional.binary_cross_entropy_with_logits(pred[..., 4], tobj) * LEVEL_BALANCE[level]
    return lbox * box_gain, lobj * obj_gain, lcls * cls_gain


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_vectorised_loss_equals_a_per_target_loop(label_smoothing):
    gen = torch.Generator().manual_seed(3)
    nc, img, batch, m = 4, 128, 3, 12
    targets = torch.cat(
        (
            torch.randint(0, batch, (m, 1), generator=gen).float(),
            torch.randint(0, nc, (m, 1), generator=gen).float(),
            torch.rand(m, 2, generator=gen) * 0.9 + 0.05,
            torch.rand(m, 2, generator=gen) * 0.5 + 0.02,
        ),
        dim=1,
    )
    gains = GtLossConfig(label_smoothing=label_smoothing)
    maps = head_maps(batch, img, nc, seed=4)
    total, items = YOLOv5Loss(StubModel(nc), img_size=img, gains=gains)(maps, targets)
    # Random centres could put two targets on one (image, anchor, cell): the loop writes in the same
    # order, so the last-written IoU wins in both.
    box, obj, cls = reference_loss(maps, targets, ANCHORS, nc, img, gains)
    assert items["box"].item() == pytest.approx(float(box), rel=1e-5)
    assert items["obj"].item() == pytest.approx(float(obj), rel=1e-5)
    assert items["cls"].item() == pytest.approx(float(cls), rel=1e-5)
    assert total.item() == pytest.approx(batch * float(box + obj + cls), rel=1e-5)


def test_gradient_reaches_the_assigned_predictions_only_through_box_and_class_logits():
    nc, img = 3, 64
    maps = [m.requires_grad_() for m in head_maps(1, img, nc, seed=1)]
    target = torch.tensor([[0, 2, 2.5 / 8, 2.5 / 8, 10 / 64, 13 / 64]])
    total, _ = YOLOv5Loss(StubModel(nc), img_size=img, gains=GtLossConfig())(maps, target)
    total.backward()
    grad = maps[0].grad
    assert grad[0, 0, 2, 2, :4].abs().sum() > 0 and grad[0, 0, 2, 2, 5:].abs().sum() > 0
    assert grad[0, 0, 3, 3, :4].abs().sum() == 0 and grad[0, 0, 3, 3, 5:].abs().sum() == 0
    assert maps[2].grad[..., :4].abs().sum() == 0  # no assignment on the coarse level
