"""YOLOX forward: head maps, taps, input convention, decoding and post-processing."""

from __future__ import annotations

import math

import pytest
import torch

from detectors.api import Detections, DetectorOutput
from detectors.yolox.head import decode
from detectors.yolox.model import build_yolox
from detectors.yolox.taps import TAP_SETS


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    return build_yolox("yolox_nano", 3)


def test_training_forward_returns_raw_maps_and_taps_of_the_declared_shapes(nano):
    nano.train()
    out = nano(torch.rand(2, 3, 64, 96))
    assert isinstance(out, DetectorOutput)
    assert [tuple(m.shape) for m in out.head] == [(2, 8, 8, 12), (2, 8, 4, 6), (2, 8, 2, 3)]
    for stride in (8, 16, 32):
        teacher_c, student_c = nano.tap_channels[stride]
        assert out.teachers[stride].shape == (2, teacher_c, 64 // stride, 96 // stride)
        assert out.students[stride].shape == (2, student_c, 64 // stride, 96 // stride)
        assert out.head_inputs[stride].shape[1] == nano.head_input_channels[stride]
    # Default tap set: the PAN outputs are the students and the head inputs.
    assert all(out.students[s] is out.head_inputs[s] for s in (8, 16, 32))
    assert nano.tap_channels == {8: (64, 64), 16: (128, 128), 32: (128, 256)}


def test_every_tap_set_builds_and_pairs_maps_of_one_stride():
    for taps in TAP_SETS.values():
        model = build_yolox("yolox_nano", 2, taps=taps).eval()
        with torch.no_grad():
            out = model(torch.rand(1, 3, 64, 64))
        for stride in (8, 16, 32):
            assert out.teachers[stride].shape[-1] == out.students[stride].shape[-1] == 64 // stride


def test_images_enter_as_rgb_0_1_and_reach_the_network_as_bgr_0_255(nano):
    seen = {}
    handle = nano.backbone.backbone.stem.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    images = torch.rand(1, 3, 32, 32)
    try:
        with torch.no_grad():
            nano.eval()(images)
    finally:
        handle.remove()
    torch.testing.assert_close(seen["x"][:, 0], images[:, 2] * 255)  # B from the last RGB channel
    torch.testing.assert_close(seen["x"][:, 2], images[:, 0] * 255)


def test_input_size_not_a_multiple_of_32_is_a_clear_error(nano):
    with pytest.raises(ValueError, match=r"multiples of 32, got \(1, 3, 48, 64\)"):
        nano(torch.rand(1, 3, 48, 64))


def test_decode_of_hand_made_maps():
    nc = 2
    # Level 8: 2 x 2 cells, level 16: 1 x 1. Raw x, y, w, h, obj, cls0, cls1 per cell.
    level8 = torch.zeros(1, 5 + nc, 2, 2)
    level8[0, :, 1, 0] = torch.tensor([0.5, 0.25, 0.0, math.log(2.0), 0.0, 2.0, -2.0])  # row 1, column 0
    level16 = torch.zeros(1, 5 + nc, 1, 1)
    level16[0, :, 0, 0] = torch.tensor([-0.5, 1.0, math.log(3.0), 0.0, 10.0, 0.0, 0.0])
    out = decode([level8, level16], (8, 16))
    assert out.shape == (1, 5, 7)  # 4 stride-8 cells first (row-major), then the stride-16 cell
    cell = out[0, 2]  # row 1, column 0 of the stride-8 level
    torch.testing.assert_close(cell[:4], torch.tensor([(0 + 0.5) * 8, (1 + 0.25) * 8, 8.0, 16.0]))
    torch.testing.assert_close(cell[4:], torch.tensor([0.5, torch.sigmoid(torch.tensor(2.0)), torch.sigmoid(torch.tensor(-2.0))]))
    torch.testing.assert_close(out[0, 0, :4], torch.tensor([0.0, 0.0, 8.0, 8.0]))  # all-zero raw cell (0, 0)
    torch.testing.assert_close(out[0, 4, :4], torch.tensor([-0.5 * 16, 1.0 * 16, 48.0, 16.0]))
    torch.testing.assert_close(out[0, 4, 4], torch.sigmoid(torch.tensor(10.0)))


def test_predict_scores_are_objectness_times_best_class_after_class_aware_nms():
    model = build_yolox("yolox_nano", 2).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for conv in (*model.head.obj_preds, *model.head.cls_preds):
            conv.bias.fill_(2.0)  # every cell scores ~0.8
        for conv in model.head.reg_preds:
            conv.bias.copy_(torch.tensor([0.0, 0.0, math.log(8.0), math.log(8.0)]))  # 8-stride boxes overlap
        raw = model.inference_raw(images)
        dets = model.predict(images, conf=0.3, iou=0.65, max_det=1000)
    assert len(dets) == 2 and all(isinstance(d, Detections) for d in dets)
    boxes, scores, classes = dets[0]
    assert 0 < len(boxes) < raw.shape[1]  # something kept, something suppressed
    assert bool((scores[:-1] >= scores[1:]).all())  # by descending score
    best = (raw[0, :, 5:].max(-1).values * raw[0, :, 4])
    # Every kept score is one of the cells' obj x best-class scores.
    assert bool((scores[:, None] == best[None, :]).any(1).all())
    assert set(classes.tolist()) <= {0, 1}
