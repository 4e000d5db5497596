"""YOLOv5's loss reads nothing from the device, and computes what it computed before.

The oracle below is the assignment and loss as they were (commit d3795f6): ``build_targets`` selected the
matched anchors and the neighbour cells with two ``nonzero`` per level (each a wait for a GPU), and the loss
summed over the selected rows. Random batches with two targets on one (image, anchor, cell), targets in the
first and last cells, boxes no anchor matches, and images without objects: the loss terms must equal the old
ones to float rounding (a masked sum over every candidate adds in another order), the gradients likewise,
and ``build_targets``, still the filtered rule YOLOv7 starts from, bit for bit.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detectors.config import GtLossConfig
from detectors.ops.boxes import bbox_iou
from detectors.yolov5.loss import LEVEL_BALANCE, YOLOv5Loss, build_candidates, build_targets

STRIDES = (8, 16, 32)
ANCHORS_PX = torch.tensor(
    [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]],
    dtype=torch.float32,
)
ANCHORS = ANCHORS_PX / torch.tensor(STRIDES, dtype=torch.float32).view(-1, 1, 1)  # grid cells
OLD_OFFSETS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))


def old_build_targets(targets, anchors, grid_shapes, anchor_t):
    """The rule as it was: per level (image, anchor, gj, gi, box, anchor_wh, cls) of the kept rows."""
    offsets = torch.tensor(OLD_OFFSETS) * 0.5
    levels = []
    for level, (height, width) in enumerate(grid_shapes):
        level_anchors = anchors[level].to(dtype=targets.dtype)
        gain = torch.tensor([width, height, width, height], dtype=targets.dtype)
        gxywh = targets[:, 2:6] * gain
        ratio = gxywh[None, :, 2:4] / level_anchors[:, None]
        matched = torch.max(ratio, 1.0 / ratio).amax(dim=2) < anchor_t
        anchor_idx, target_idx = matched.nonzero(as_tuple=True)
        gxy = gxywh[target_idx, :2]
        gxy_inverse = gain[:2] - gxy
        near_low = (gxy % 1 < 0.5) & (gxy > 1)
        near_high = (gxy_inverse % 1 < 0.5) & (gxy_inverse > 1)
        use = torch.stack(
            (torch.ones_like(near_low[:, 0]), near_low[:, 0], near_low[:, 1], near_high[:, 0], near_high[:, 1]))
        offset_idx, row = use.nonzero(as_tuple=True)
        centre = gxy[row]
        cell = (centre - offsets[offset_idx]).long()
        cell[:, 0].clamp_(0, width - 1)
        cell[:, 1].clamp_(0, height - 1)
        rows = target_idx[row]
        anchor = anchor_idx[row]
        levels.append((targets[rows, 0].long(), anchor, cell[:, 1], cell[:, 0],
                       torch.cat((centre - cell, gxywh[rows, 2:4]), dim=1), level_anchors[anchor],
                       targets[rows, 1].long()))
    return levels


def old_loss(loss_fn, head_maps, targets):
    """YOLOv5Loss.__call__ as it was, on the old rule."""
    grid_shapes = [(int(p.shape[2]), int(p.shape[3])) for p in head_maps]
    assigned = old_build_targets(targets.float(), loss_fn._head.anchors, grid_shapes, loss_fn.anchor_t)
    zero = torch.zeros(())
    box, obj, cls = zero, zero, zero
    for level, (pred, (image, anchor, gj, gi, tbox, anchor_wh, tcls)) in enumerate(
            zip(head_maps, assigned, strict=True)):
        target_obj = torch.zeros(pred.shape[:4], dtype=pred.dtype)
        if len(image):
            picked = pred[image, anchor, gj, gi]
            pxy = picked[:, :2].sigmoid() * 2 - 0.5
            pwh = (picked[:, 2:4].sigmoid() * 2) ** 2 * anchor_wh
            iou = bbox_iou(torch.cat((pxy, pwh), dim=1), tbox, ciou=True).squeeze(-1)
            box = box + (1.0 - iou).mean()
            target_obj[image, anchor, gj, gi] = iou.detach().clamp(0).to(target_obj.dtype)
            if loss_fn.num_classes > 1:
                logits = picked[:, 5:]
                target_cls = torch.full_like(logits, loss_fn.cls_negative)
                target_cls[torch.arange(len(image)), tcls] = loss_fn.cls_positive
                cls = cls + F.binary_cross_entropy_with_logits(logits, target_cls)
        obj = obj + F.binary_cross_entropy_with_logits(pred[..., 4], target_obj) * LEVEL_BALANCE[level]
    box, obj, cls = box * loss_fn.box_gain, obj * loss_fn.obj_gain, cls * loss_fn.cls_gain
    total = (box + obj + cls) * head_maps[0].shape[0]
    return total, {"box": box.detach(), "obj": obj.detach(), "cls": cls.detach()}


class StubDetect(nn.Module):
    """What the loss reads from YOLOv5's Detect head: anchors in grid cells, nl, na, nc."""

    def __init__(self, nc: int) -> None:
        super().__init__()
        self.nl, self.na, self.nc = 3, 3, nc
        self.register_buffer("anchors", ANCHORS.clone())


class StubModel(nn.Module):
    def __init__(self, nc: int) -> None:
        super().__init__()
        self.detect = StubDetect(nc)


def crowded_batch(seed: int, *, batch: int = 4, img: int = 128, nc: int = 3):
    """Head maps and targets: images of 0-8 objects (the last image none), each object followed at times by a
    twin of another size whose centre is in the same cell (two targets, one (image, anchor, cell)), centres
    in the first and last cells, and boxes too thin for every anchor (one of height 0, one of size 0:
    its CIoU is NaN)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for image in range(batch - 1):
        for _ in range(int(torch.randint(0, 9, (1,), generator=gen))):
            xy = torch.rand(2, generator=gen) * 0.98 + 0.01
            wh = torch.rand(2, generator=gen) ** 2 * 0.6 + 0.02
            cls = float(torch.randint(0, nc, (1,), generator=gen))
            rows.append([image, cls, *xy.tolist(), *wh.tolist()])
            if float(torch.rand(1, generator=gen)) < 0.5:
                twin_xy = (xy + (torch.rand(2, generator=gen) - 0.5) * 0.01).clamp(0.001, 0.999)
                twin_wh = wh * (0.7 + 0.6 * torch.rand(2, generator=gen))
                rows.append([image, (cls + 1) % nc, *twin_xy.tolist(), *twin_wh.tolist()])
    rows += [[0, 0, 0.01, 0.01, 0.05, 0.05], [1, nc - 1, 0.99, 0.99, 0.1, 0.08], [0, 0, 0.5, 0.5, 0.9, 0.001],
             [2, 0, 0.3, 0.6, 0.2, 0.0], [2, 0, 0.7, 0.2, 0.0, 0.0]]
    targets = torch.tensor(rows, dtype=torch.float32)
    targets = targets[torch.randperm(len(targets), generator=gen)]
    maps = [torch.randn(batch, 3, img // s, img // s, 5 + nc, generator=gen) for s in STRIDES]
    return maps, targets


def leaves(maps):
    return [m.clone().requires_grad_(True) for m in maps]


EMPTY = torch.zeros(0, 6)


@pytest.mark.parametrize("objects", [True, False], ids=["objects", "no objects"])
def test_the_loss_and_its_backward_read_nothing_from_the_device(device_reads, objects):
    maps, targets = crowded_batch(0)
    loss_fn = YOLOv5Loss(StubModel(3), img_size=128, gains=GtLossConfig())
    inputs = leaves(maps)
    with device_reads() as reads:
        total, _ = loss_fn(inputs, targets if objects else EMPTY)
        total.backward()
    assert reads.ops == []


def test_the_old_loss_reads_the_device_so_the_check_above_can_fail(device_reads):
    maps, targets = crowded_batch(0)
    loss_fn = YOLOv5Loss(StubModel(3), img_size=128, gains=GtLossConfig())
    with device_reads() as reads:
        old_loss(loss_fn, leaves(maps), targets)
    assert reads.ops.count("nonzero") == 6  # two per level


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("nc", "label_smoothing"), [(3, 0.0), (3, 0.1), (1, 0.0)])
def test_the_loss_and_its_gradients_equal_the_old_ones_to_rounding(seed, nc, label_smoothing):
    maps, targets = crowded_batch(seed, nc=nc)
    loss_fn = YOLOv5Loss(StubModel(nc), img_size=128, gains=GtLossConfig(label_smoothing=label_smoothing))
    new_inputs, old_inputs = leaves(maps), leaves(maps)
    total, items = loss_fn(new_inputs, targets)
    total.backward()
    old_total, old_items = old_loss(loss_fn, old_inputs, targets)
    old_total.backward()
    for name, value in items.items():
        torch.testing.assert_close(value, old_items[name], rtol=1e-6, atol=0.0, msg=name)
    torch.testing.assert_close(total.detach(), old_total.detach(), rtol=1e-6, atol=0.0)
    for new, old in zip(new_inputs, old_inputs, strict=True):
        torch.testing.assert_close(new.grad, old.grad, rtol=1e-5, atol=1e-9)


def test_the_batches_above_put_two_targets_on_one_prediction_and_leave_an_image_empty():
    shared = 0
    for seed in range(6):
        maps, targets = crowded_batch(seed)
        assert not (targets[:, 0] == 3).any()
        for image, anchor, gj, gi, *_ in old_build_targets(targets, ANCHORS, [(16, 16), (8, 8), (4, 4)], 4.0):
            key = ((image * 3 + anchor) * 64 + gj) * 64 + gi
            shared += len(key) - len(key.unique())
    assert shared >= 20


def test_an_image_without_objects_gets_only_the_objectness_loss_as_before():
    maps, _ = crowded_batch(1)
    loss_fn = YOLOv5Loss(StubModel(3), img_size=128, gains=GtLossConfig())
    total, items = loss_fn(maps, EMPTY)
    old_total, old_items = old_loss(loss_fn, maps, EMPTY)
    assert items["box"] == 0 and items["cls"] == 0
    assert torch.equal(items["obj"], old_items["obj"]) and torch.equal(total, old_total)


@pytest.mark.parametrize("seed", range(6))
def test_build_targets_keeps_the_old_rows_bit_for_bit(seed):
    _, targets = crowded_batch(seed)
    grids = [(16, 16), (8, 8), (4, 4)]
    for new, old in zip(build_targets(targets, ANCHORS, grids, 4.0), old_build_targets(targets, ANCHORS, grids, 4.0),
                        strict=True):
        fields = (new.image, new.anchor, new.gj, new.gi, new.box, new.anchor_wh, new.cls)
        for got, want in zip(fields, old, strict=True):
            assert got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.parametrize("seed", range(6))
def test_where_targets_share_a_prediction_the_last_valid_rows_iou_is_its_objectness_target_as_before(seed):
    maps, targets = crowded_batch(seed)
    grids = [(16, 16), (8, 8), (4, 4)]
    for pred, level in zip(maps, build_candidates(targets, ANCHORS, grids, 4.0), strict=True):
        iou = torch.rand(len(level.valid), generator=torch.Generator().manual_seed(seed))  # distinct per row
        kept = level.valid.nonzero(as_tuple=True)[0]
        old = torch.zeros(pred.shape[:4])
        old[level.image[kept], level.anchor[kept], level.gj[kept], level.gi[kept]] = iou[kept]
        assert torch.equal(YOLOv5Loss._objectness_target(pred, level, iou), old)
