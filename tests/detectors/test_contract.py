"""Every family in the zoo keeps the detector contract of detectors/api.py (its smallest size, at the
smallest input its recipe allows: 64 px or the family's ``stride_multiple``, e.g. 128 for FCOS's P7)."""

from __future__ import annotations

import pytest
import torch

from detectors.api import DetectionLoss, Detections, Detector, DetectorOutput
from detectors.config import parse_config
from detectors.zoo import FAMILIES, build_detector

SMALLEST = {name: family.sizes[0] for name, family in FAMILIES.items()}


def _side(family: str) -> int:
    """The smallest square side the family accepts, at least 64."""
    return max(64, FAMILIES[family].recipe.stride_multiple)


def _targets() -> torch.Tensor:
    # [image_index, class, cx, cy, w, h] normalised: one object per image.
    return torch.tensor([[0, 0, 0.5, 0.5, 0.4, 0.3], [1, 1, 0.3, 0.6, 0.2, 0.4]])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_training_forward_returns_the_declared_taps_and_head_inputs(family):
    torch.manual_seed(0)
    model = build_detector(SMALLEST[family], num_classes=2).train()
    assert isinstance(model, Detector) and model.num_classes == 2
    h = _side(family)
    w = h + FAMILIES[family].recipe.stride_multiple  # a rectangle (YOLO: 64 x 96, as before)
    out = model(torch.rand(2, 3, h, w))
    assert isinstance(out, DetectorOutput)
    # taps at the tap set's strides (a subset of the head's: FCOS's P6/P7 have no teacher); F at every stride
    assert sorted(out.teachers) == sorted(out.students) == sorted(model.tap_channels)
    assert set(model.tap_channels) <= set(model.strides)
    assert sorted(out.head_inputs) == sorted(model.head_input_channels)
    for s, (c_t, c_s) in model.tap_channels.items():
        assert tuple(out.teachers[s].shape) == (2, c_t, h // s, w // s)
        assert tuple(out.students[s].shape) == (2, c_s, h // s, w // s)
    for s, c in model.head_input_channels.items():
        assert tuple(out.head_inputs[s].shape) == (2, c, h // s, w // s)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_tap_set_builds_and_pairs_maps_of_its_stride(family):
    side = _side(family)
    for taps in FAMILIES[family].tap_sets:
        model = build_detector(SMALLEST[family], num_classes=2, taps=taps).eval()
        with torch.no_grad():
            out = model(torch.rand(1, 3, side, side))
        for s in model.tap_channels:
            assert out.teachers[s].shape[-2:] == out.students[s].shape[-2:] == (side // s, side // s), (taps, s)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_loss_reports_its_declared_terms_per_image_and_predict_gives_detections(family):
    torch.manual_seed(0)
    name, side = SMALLEST[family], _side(family)
    cfg = parse_config({"detector": {"name": name}, "data": {"img_size": side, "classes": ["a", "b"]}})
    model = build_detector(name, num_classes=2).train()
    loss_fn = FAMILIES[family].build_loss(model, cfg)
    assert isinstance(loss_fn, DetectionLoss) and loss_fn.term_names
    l_gt, items = loss_fn(model(torch.rand(2, 3, side, side)), _targets())
    assert set(items) == set(loss_fn.term_names)
    assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in items.values())
    assert l_gt.dim() == 0 and l_gt.requires_grad and torch.isfinite(l_gt)
    model.eval()
    if hasattr(model, "inference_raw"):  # optional: families with objectness (detectors/api.py)
        raw = model.inference_raw(torch.rand(2, 3, side, side))
        assert raw.shape[0] == 2 and raw.shape[-1] == 5 + 2
    dets = model.predict(torch.rand(2, 3, side, side), conf=0.0, iou=0.6, max_det=7)
    assert len(dets) == 2 and all(isinstance(d, Detections) and len(d) <= 7 for d in dets)
    boxes, scores, classes = dets[0].numpy()
    assert boxes.shape[1] == 4 and classes.dtype.kind == "i" and ((classes >= 0) & (classes < 2)).all()
