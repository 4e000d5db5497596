"""SimOTA on hand-worked cases: one 4 x 4 level of stride 8 (cell centres at 4, 12, 20, 28 px)."""

from __future__ import annotations

import torch

from detectors.yolox.assignment import GEOMETRY_PRIORS, simota_assign

STRIDE = 8.0
ROWS, COLS = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
CENTERS = (torch.stack((COLS, ROWS), -1).view(-1, 2) + 0.5) * STRIDE  # (16, 2), cell i = row * 4 + col
STRIDES = torch.full((16,), STRIDE)
FAR = torch.tensor([200.0, 200.0, 1.0, 1.0])  # a predicted box overlapping nothing


def assign(pred_boxes, gt_boxes, gt_classes, cls_logits=None, nc=2, prior="main"):
    """One image: preds (16, 4), gts (G, 4) cx cy w h px."""
    cls_logits = torch.zeros(16, nc) if cls_logits is None else cls_logits
    return simota_assign(
        pred_boxes[None], cls_logits[None], torch.zeros(1, 16, 1), CENTERS, STRIDES,
        gt_boxes[None], torch.tensor([gt_classes]), torch.ones(1, len(gt_classes), dtype=torch.bool),
        GEOMETRY_PRIORS[prior],
    )


def test_dynamic_k_takes_the_cheapest_candidates():
    # Ground truth centred at (16, 16), 16 x 16: main's prior (1.5 strides = 12 px, strictly inside)
    # admits the cells centred at 12 and 20 in x and y: cells 5, 6, 9, 10.
    gt = torch.tensor([[16.0, 16.0, 16.0, 16.0]])
    preds = FAR.repeat(16, 1)
    preds[5] = torch.tensor([16.0, 16.0, 16.0, 16.0])  # IoU 1
    preds[6] = torch.tensor([16.0, 16.0, 16.0, 8.0])  # IoU 0.5
    preds[9] = torch.tensor([16.0, 16.0, 8.0, 16.0])  # IoU 0.5
    preds[10] = torch.tensor([16.0, 16.0, 4.0, 4.0])  # IoU 1/16
    preds[0] = torch.tensor([16.0, 16.0, 16.0, 16.0])  # IoU 1 but outside the prior: never a candidate
    cls = torch.zeros(16, 2)
    cls[9, 0] = 3.0  # cell 9 is surer of the class than cell 6: lower class cost at the same IoU
    # k = int(1 + 0.5 + 0.5 + 1/16) = 2: the two cheapest are cell 5 (IoU 1) and cell 9.
    a = assign(preds, gt, [0], cls)
    assert a.num_foreground == 2
    assert a.foreground[0].nonzero().flatten().tolist() == [5, 9]
    assert a.gt_index[0, [5, 9]].tolist() == [0, 0]
    torch.testing.assert_close(a.iou[0, [5, 9]], torch.tensor([1.0, 0.5]))


def test_a_cell_wanted_by_two_ground_truths_goes_to_the_cheaper():
    # A at (16, 16) and B at (20, 20), both 16 x 16, same class; only cell 10 (centre 20, 20) predicts
    # anything: (19, 19, 16, 16) has IoU 169/343 with A and 225/287 with B. Each takes k = 1 cell,
    # both take cell 10, and B (higher IoU, lower cost) keeps it; A is left without a cell, as in Megvii's.
    gts = torch.tensor([[16.0, 16.0, 16.0, 16.0], [20.0, 20.0, 16.0, 16.0]])
    preds = FAR.repeat(16, 1)
    preds[10] = torch.tensor([19.0, 19.0, 16.0, 16.0])
    a = assign(preds, gts, [0, 0])
    assert a.foreground[0].nonzero().flatten().tolist() == [10]
    assert int(a.gt_index[0, 10]) == 1
    torch.testing.assert_close(a.iou[0, 10], torch.tensor(225 / 287))


def test_release_0_3_0_prior_also_admits_cells_inside_the_box():
    # A 32 x 32 box over the whole 32 x 32 image; only corner cell 0 (centre 4, 4) predicts it well.
    gt = torch.tensor([[16.0, 16.0, 32.0, 32.0]])
    preds = FAR.repeat(16, 1)
    preds[0] = gt[0]
    main = assign(preds, gt, [1])
    release = assign(preds, gt, [1], prior="0.3.0")
    # main: candidates are the 4 central cells only, all with IoU 0; k = 1 picks one of them.
    assert not bool(main.foreground[0, 0]) and main.num_foreground == 1
    assert main.foreground[0].nonzero().flatten().item() in (5, 6, 9, 10)
    # 0.3.0: cell 0 is inside the box and within 2.5 strides of its centre: a candidate, and the cheapest.
    assert release.foreground[0].nonzero().flatten().tolist() == [0]


def test_batched_assignment_equals_one_image_at_a_time():
    torch.manual_seed(0)
    b, g = 3, 4
    preds = torch.cat((torch.rand(b, 16, 2) * 32, torch.rand(b, 16, 2) * 20 + 4), -1)
    cls = torch.randn(b, 16, 2)
    obj = torch.randn(b, 16, 1)
    gts = torch.cat((torch.rand(b, g, 2) * 24 + 4, torch.rand(b, g, 2) * 16 + 6), -1)
    classes = torch.randint(0, 2, (b, g))
    valid = torch.tensor([[True, True, True, True], [True, False, False, False], [False, False, False, False]])
    batched = simota_assign(preds, cls, obj, CENTERS, STRIDES, gts, classes, valid)
    assert not bool(batched.foreground[2].any())  # an image without objects has no foreground
    for i in range(2):
        n = int(valid[i].sum())
        single = simota_assign(preds[i : i + 1], cls[i : i + 1], obj[i : i + 1], CENTERS, STRIDES,
                               gts[i : i + 1, :n], classes[i : i + 1, :n], valid[i : i + 1, :n])
        assert torch.equal(single.foreground[0], batched.foreground[i])
        fg = single.foreground[0]
        assert torch.equal(single.gt_index[0][fg], batched.gt_index[i][fg])
        torch.testing.assert_close(single.iou[0][fg], batched.iou[i][fg])
    assert batched.num_foreground == int(batched.foreground.sum()) > 0
