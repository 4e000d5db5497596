"""OTA's assignment with few reads of the device (detectors/yolov7/loss_ota.py): the dynamic k stays a tensor
and one batched ``topk`` per possible k replaces upstream's one ``topk`` per ground truth (``_select``);
images are sliced from one stable sort by two reads of counts instead of boolean masks. The code as it was
(image by image, k read to the host) is kept below as the oracle: the new selection, assignment, loss and
gradients must equal it exactly, on random costs and on tied ones (duplicated candidates, as when two
targets share a cell; duplicated ground truths)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from detectors.yolov7 import loss as loss_module
from detectors.yolov7 import loss_ota
from detectors.yolov7.gt_config import YOLOv7GtConfig
from detectors.yolov7.loss import YOLOv7RepoLoss

STRIDES = torch.tensor([8.0, 16.0, 32.0])
ANCHORS_PX = [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]]


def select_one_topk_per_ground_truth(cost, iou):
    """The selection as it was (and as upstream writes it): k read to the host, one topk per ground truth."""
    top, _ = torch.topk(iou, min(10, iou.shape[1]), dim=1)
    dynamic_k = torch.clamp(top.sum(1).int(), min=1).tolist()
    matching = torch.zeros_like(cost)
    for g, k in enumerate(dynamic_k):
        _, chosen = torch.topk(cost[g], k=k, largest=False)
        matching[g][chosen] = 1.0
    shared = matching.sum(0) > 1
    if shared.any():
        _, cheapest = torch.min(cost[:, shared], dim=0)
        matching[:, shared] *= 0.0
        matching[cheapest, shared] = 1.0
    chosen = matching.sum(0) > 0.0
    return chosen, matching[:, chosen].argmax(0)


def ota_assign_image_by_image(head_maps, targets, anchors, strides, anchor_t, first_stride):
    """The assignment as it was: boolean masks image by image (each a wait for a GPU), k read to the host."""
    device = head_maps[0].device
    nl, num_classes = len(head_maps), head_maps[0].shape[-1] - 5
    grid_shapes = [(int(p.shape[2]), int(p.shape[3])) for p in head_maps]
    candidates = loss_ota.build_targets(targets, anchors, grid_shapes, anchor_t)
    input_size = grid_shapes[0][0] * int(strides[0])
    per_level = [[] for _ in range(nl)]
    for image in range(head_maps[0].shape[0]):
        gts = targets[targets[:, 0] == image]
        if gts.shape[0] == 0:
            continue
        gt_xyxy = loss_ota._xywh_to_xyxy(gts[:, 2:6] * input_size)
        parts = []
        for level, (pred, cand) in enumerate(zip(head_maps, candidates, strict=True)):
            mine = cand.image == image
            b, a, gj, gi = cand.image[mine], cand.anchor[mine], cand.gj[mine], cand.gi[mine]
            parts.append((torch.full((len(b),), level, device=device), b, a, gj, gi, cand.anchor_wh[mine],
                          pred[b, a, gj, gi]))
        level_of, b, a, gj, gi, anchor_wh, rows = (torch.cat(column, dim=0) for column in zip(*parts, strict=True))
        if rows.shape[0] == 0:
            continue
        stride = strides[level_of].to(rows.dtype)[:, None]
        grid = torch.stack((gi, gj), dim=1)
        pxy = (rows[:, :2].sigmoid() * 2.0 - 0.5 + grid) * stride
        pwh = (rows[:, 2:4].sigmoid() * 2) ** 2 * anchor_wh * stride
        iou = loss_ota.box_iou(gt_xyxy, loss_ota._xywh_to_xyxy(torch.cat((pxy, pwh), dim=1)))
        iou_cost = -torch.log(iou + 1e-8)
        score = (rows[:, 5:].float().sigmoid() * rows[:, 4:5].sigmoid()).sqrt()
        logit = torch.log(score / (1 - score))[None].expand(gts.shape[0], -1, -1)
        onehot = torch.nn.functional.one_hot(gts[:, 1].long(), num_classes).float()[:, None].expand_as(logit)
        cls_cost = torch.nn.functional.binary_cross_entropy_with_logits(logit, onehot, reduction="none").sum(-1)
        chosen, gt_index = select_one_topk_per_ground_truth(cls_cost + 3.0 * iou_cost, iou)
        matched = gts[gt_index]
        level_of, b, a, gj, gi, anchor_wh = (t[chosen] for t in (level_of, b, a, gj, gi, anchor_wh))
        for level in range(nl):
            here = level_of == level
            per_level[level].append((b[here], a[here], gj[here], gi[here], anchor_wh[here], matched[here]))
    out = []
    for level, (height, width) in enumerate(grid_shapes):
        if per_level[level]:
            b, a, gj, gi, anchor_wh, matched = (torch.cat(c, dim=0) for c in zip(*per_level[level], strict=True))
        else:
            b = a = gj = gi = torch.zeros(0, dtype=torch.long, device=device)
            anchor_wh, matched = targets.new_zeros(0, 2), targets.new_zeros(0, 6)
        box = matched[:, 2:6] * torch.tensor([width, height, width, height], dtype=matched.dtype)
        box[:, :2] -= torch.stack((gi, gj), dim=1)
        out.append(loss_ota.LevelTargets(image=b, anchor=a, gj=gj, gi=gi, box=box, anchor_wh=anchor_wh,
                                         cls=matched[:, 1].long()))
    return out


def assert_same_selection(cost, iou):
    chosen, owner = loss_ota._select(cost, iou)
    chosen_ref, owner_ref = select_one_topk_per_ground_truth(cost, iou)
    assert torch.equal(chosen, chosen_ref) and torch.equal(owner[chosen], owner_ref)


@pytest.mark.parametrize("candidates", [1, 3, 9, 10, 11, 40, 130, 700])  # 700: topk's partial-sort path (k * 64 <= n)
def test_selection_equals_one_topk_per_ground_truth_on_random_costs(candidates):
    g = torch.Generator().manual_seed(candidates)
    for trial in range(20):
        gts = 1 + trial % 6
        iou = torch.rand(gts, candidates, generator=g) ** (1 + trial % 3)  # sparse to dense: k from 1 to 10
        cost = torch.rand(gts, candidates, generator=g) - torch.log(iou + 1e-8)
        assert_same_selection(cost, iou)


@pytest.mark.parametrize("candidates", [6, 12, 48, 90, 700])
def test_selection_equals_one_topk_per_ground_truth_when_costs_tie(candidates):
    g = torch.Generator().manual_seed(candidates + 1)
    for trial in range(30):
        gts = 2 + trial % 5
        # Few distinct values, so ties straddle every k; whole columns repeated (one cell offered twice) and a
        # ground truth repeated (the same box labelled twice).
        cost = torch.randint(0, 4, (gts, candidates), generator=g).float()
        iou = torch.randint(0, 5, (gts, candidates), generator=g).float() / 4
        columns = torch.randint(0, candidates, (candidates,), generator=g)
        cost, iou = cost[:, columns], iou[:, columns]
        cost[-1], iou[-1] = cost[0], iou[0]
        assert_same_selection(cost, iou)


def test_a_column_claimed_by_several_ground_truths_goes_to_the_first_cheapest():
    cost = torch.tensor([[1.0, 5.0, 2.0], [1.0, 4.0, 3.0], [1.0, 9.0, 9.0]])  # column 0 ties at 1
    iou = torch.tensor([[0.9, 0.9, 0.0], [0.6, 0.6, 0.0], [0.5, 0.0, 0.0]])  # k = 1, 1, 1 -> all want column 0
    chosen, owner = loss_ota._select(cost, iou)
    assert chosen.tolist() == [True, False, False] and owner[chosen].tolist() == [0]
    assert_same_selection(cost, iou)


def crowded_batch(seed: int, batch: int = 4, nc: int = 3):
    """Seeded head maps at 64 px and targets with repeated boxes, shared cells and an image without any."""
    g = torch.Generator().manual_seed(seed)
    maps = [torch.randn(batch, 3, s, s, 5 + nc, generator=g).requires_grad_(True) for s in (8, 4, 2)]
    rows = []
    for image in range(batch - 1):  # the last image has no target
        n = 4 + 3 * image
        wh = torch.rand(n, 2, generator=g) * 0.8 + 0.05  # 3 to 54 px: positives on two levels
        xy = 0.3 + torch.rand(n, 2, generator=g) * 0.4
        rows.append(torch.cat((torch.full((n, 1), float(image)), torch.randint(0, nc, (n, 1), generator=g).float(),
                               xy, wh), 1))
        rows.append(rows[-1][:2])  # two boxes labelled twice
    return maps, torch.cat(rows)


def ota_loss(nc: int = 3) -> YOLOv7RepoLoss:
    anchors = torch.tensor(ANCHORS_PX, dtype=torch.float32).view(3, 3, 2) / STRIDES.view(3, 1, 1)
    model = SimpleNamespace(detect=SimpleNamespace(nl=3, na=3, nc=nc, anchors=anchors, stride=STRIDES))
    return YOLOv7RepoLoss(model, img_size=64, gains=YOLOv7GtConfig())


def fields(levels):
    return [(t.image, t.anchor, t.gj, t.gi, t.box, t.anchor_wh, t.cls) for t in levels]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ota_assignment_loss_and_gradient_are_bit_identical_to_the_image_by_image_loop(seed, monkeypatch):
    maps, targets = crowded_batch(seed)
    loss = ota_loss()
    levels = loss.assign(maps, targets)
    total, items = loss(maps, targets)
    grads = torch.autograd.grad(total, maps)
    monkeypatch.setattr(loss_module, "ota_assign", ota_assign_image_by_image)
    levels_ref = loss.assign(maps, targets)
    total_ref, items_ref = loss(maps, targets)
    grads_ref = torch.autograd.grad(total_ref, maps)
    assert all(len(set(level.image.tolist())) > 1 for level in levels_ref[:2])  # images interleave per level
    for ours, ref in zip(fields(levels), fields(levels_ref), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(ours, ref, strict=True))
    assert torch.equal(total, total_ref) and all(torch.equal(items[k], items_ref[k]) for k in items)
    assert all(torch.equal(x, y) for x, y in zip(grads, grads_ref, strict=True))


def test_a_batch_without_targets_gives_empty_levels_as_the_image_by_image_loop():
    maps, _ = crowded_batch(0)
    empty = torch.zeros(0, 6)
    for ours, ref in zip(fields(ota_loss().assign(maps, empty)), fields(ota_assign_image_by_image(
            maps, empty, ota_loss()._head.anchors, STRIDES, 4.0, 8)), strict=True):
        assert all(x.shape == y.shape and x.dtype == y.dtype for x, y in zip(ours, ref, strict=True))


def test_the_ota_loss_reads_two_lists_of_counts_and_nothing_else(host_reads):
    """Per image its candidates and ground truths, per level its positives: where the image-by-image loop
    read every dynamic k and each contested check (and waited on a GPU at each of its boolean masks)."""
    maps, targets = crowded_batch(5)
    loss = ota_loss()
    with host_reads() as reads:
        total, _ = loss(maps, targets)
        total.backward()
    assert reads == ["tolist", "tolist"]


def test_the_ota_assignment_adds_no_device_wait_to_the_candidates_rule(device_reads):
    """The strict check (tests/detectors/conftest.py: value reads and data-dependent shapes) finds in the loss
    only what the anchor-ratio rule it starts from (``build_targets``) does; the two count reads are ``tolist``
    (above), which a CPU tensor answers without an op."""
    maps, targets = crowded_batch(6)
    loss = ota_loss()
    with device_reads() as rule:
        loss_ota.build_targets(targets, loss._head.anchors, [(8, 8), (4, 4), (2, 2)], loss.anchor_t)
    with device_reads() as reads:
        total, _ = loss(maps, targets)
        total.backward()
    assert reads.ops == rule.ops
