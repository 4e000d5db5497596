"""OTA's selection without reading the device (detectors/yolov7/loss_ota.py ``_select``): the dynamic k stays a
tensor and one batched ``topk`` per possible k replaces upstream's one ``topk`` per ground truth. The old
per-ground-truth loop is kept below as the oracle: the new selection must equal it exactly, on random costs
and on tied ones (duplicated candidates, as when two targets share a cell; duplicated ground truths)."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch

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


def assert_same_selection(cost, iou):
    chosen, owner = loss_ota._select(cost, iou)
    chosen_ref, owner_ref = select_one_topk_per_ground_truth(cost, iou)
    assert torch.equal(chosen, chosen_ref) and torch.equal(owner, owner_ref)


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
    assert chosen.tolist() == [True, False, False] and owner.tolist() == [0]
    assert_same_selection(cost, iou)


def crowded_batch(seed: int, batch: int = 3, nc: int = 3):
    """Seeded head maps at 64 px and targets with repeated boxes, shared cells and an image without any."""
    g = torch.Generator().manual_seed(seed)
    maps = [torch.randn(batch, 3, s, s, 5 + nc, generator=g).requires_grad_(True) for s in (8, 4, 2)]
    rows = []
    for image in range(batch - 1):  # the last image has no target
        n = 4 + 3 * image
        wh = torch.rand(n, 2, generator=g) * 0.4 + 0.05
        xy = 0.3 + torch.rand(n, 2, generator=g) * 0.4
        rows.append(torch.cat((torch.full((n, 1), float(image)), torch.randint(0, nc, (n, 1), generator=g).float(),
                               xy, wh), 1))
        rows.append(rows[-1][:2])  # two boxes labelled twice
    return maps, torch.cat(rows)


def ota_loss(nc: int = 3) -> YOLOv7RepoLoss:
    anchors = torch.tensor(ANCHORS_PX, dtype=torch.float32).view(3, 3, 2) / STRIDES.view(3, 1, 1)
    model = SimpleNamespace(detect=SimpleNamespace(nl=3, na=3, nc=nc, anchors=anchors, stride=STRIDES))
    return YOLOv7RepoLoss(model, img_size=64, gains=YOLOv7GtConfig())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ota_loss_and_its_gradient_are_bit_identical_to_the_per_ground_truth_loop(seed, monkeypatch):
    maps, targets = crowded_batch(seed)
    total, items = ota_loss()(maps, targets)
    grads = torch.autograd.grad(total, maps)
    monkeypatch.setattr(loss_ota, "_select", select_one_topk_per_ground_truth)
    total_ref, items_ref = ota_loss()(maps, targets)
    grads_ref = torch.autograd.grad(total_ref, maps)
    assert torch.equal(total, total_ref) and all(torch.equal(items[k], items_ref[k]) for k in items)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_ref, strict=True))


@contextlib.contextmanager
def counting_host_reads():
    """Counts reads of a tensor's value into Python (``item``, ``float``, ``int``, ``bool``, ``tolist``,
    ``numpy``): on a GPU each waits for the device."""
    names = ("item", "__float__", "__int__", "__bool__", "tolist", "numpy")
    originals = {name: getattr(torch.Tensor, name) for name in names}
    reads = []

    def counted(name):
        def read(tensor, *args, **kwargs):
            reads.append(name)
            return originals[name](tensor, *args, **kwargs)
        return read

    for name in names:
        setattr(torch.Tensor, name, counted(name))
    try:
        yield reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def test_the_ota_loss_reads_no_tensor_value_into_python():
    maps, targets = crowded_batch(5)
    loss = ota_loss()
    with counting_host_reads() as reads:
        total, _ = loss(maps, targets)
        total.backward()
    assert reads == []
