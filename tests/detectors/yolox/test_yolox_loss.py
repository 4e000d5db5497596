"""YOLOX's loss: terms, the L1 switch, padding of targets, and that it trains."""

from __future__ import annotations

import pytest
import torch

from detectors.yolox.loss import YOLOXLoss, pad_targets
from detectors.yolox.model import build_yolox

# [image, class, cx, cy, w, h] normalised, as the loader makes them.
TARGETS = torch.tensor([
    [0, 0, 0.30, 0.40, 0.25, 0.30],
    [0, 2, 0.70, 0.60, 0.20, 0.40],
    [1, 1, 0.50, 0.50, 0.50, 0.50],
])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_yolox("yolox_nano", 3)


def test_pad_targets_groups_by_image_in_pixels():
    targets = TARGETS[[2, 0, 1]]  # rows need not be sorted by image
    boxes, classes, valid = pad_targets(targets, 3, img_h=64, img_w=128)
    assert boxes.shape == (3, 2, 4) and valid.tolist() == [[True, True], [True, False], [False, False]]
    torch.testing.assert_close(boxes[0, 0], torch.tensor([0.30 * 128, 0.40 * 64, 0.25 * 128, 0.30 * 64]))
    assert classes[0].tolist() == [0, 2] and int(classes[1, 0]) == 1


def test_items_are_the_four_terms_and_sum_to_the_loss(model):
    loss_fn = YOLOXLoss(3, use_l1=True)
    total, items = loss_fn(model.train()(torch.rand(2, 3, 64, 64)), TARGETS)
    assert loss_fn.term_names == tuple(items) == ("iou", "obj", "cls", "l1")
    assert all(torch.isfinite(v) and v > 0 for v in items.values())
    torch.testing.assert_close(total.detach(), sum(items.values()))
    assert total.requires_grad and not any(v.requires_grad for v in items.values())


def test_l1_is_on_only_in_the_last_no_aug_epochs(model):
    loss_fn = YOLOXLoss(3, no_aug_epochs=15)
    output = model.train()(torch.rand(2, 3, 64, 64))
    switched = []
    for epoch in (1, 5, 6, 20):
        loss_fn.start_epoch(epoch, 20)
        switched.append(loss_fn.use_l1)
        _, items = loss_fn(output, TARGETS)
        assert (float(items["l1"]) > 0) == loss_fn.use_l1
    assert switched == [False, False, True, True]


def test_a_batch_without_objects_has_only_the_objectness_term(model):
    total, items = YOLOXLoss(3)(model.train()(torch.rand(2, 3, 64, 64)), torch.zeros(0, 6))
    assert float(items["iou"]) == float(items["cls"]) == 0.0 and float(items["obj"]) > 0
    total.backward()  # still a graph: background objectness learns


def test_a_few_steps_on_one_batch_lower_the_loss():
    torch.manual_seed(0)
    model = build_yolox("yolox_nano", 3).train()
    loss_fn = YOLOXLoss(3, use_l1=True)
    images = torch.rand(2, 3, 64, 64)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    history = []
    for _ in range(15):
        total, items = loss_fn(model(images), TARGETS)
        assert torch.isfinite(total)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(float(total.detach()))
    assert history[-1] < 0.8 * history[0], history  # seed 0: 12.5 -> 8.4


def test_an_unknown_simota_prior_is_refused():
    with pytest.raises(ValueError, match=r"simota_prior: expected one of main, 0\.3\.0, got 'v2'"):
        YOLOXLoss(3, simota_prior="v2")
