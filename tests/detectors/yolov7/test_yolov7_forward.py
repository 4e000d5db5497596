"""Forward, decoding, fuse and taps of the yolov7 repository's detectors, on tiny inputs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from detectors import build_detector
from detectors.api import TapPair, TapSet
from detectors.yolov7.blocks import RepConv
from detectors.yolov7.head import IDetect
from detectors.yolov7.model import YOLOv7Family


def _randomise_norms(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_detector("yolov7_tiny", num_classes=3)
    _randomise_norms(model)
    return model.eval()


def test_training_output_is_one_raw_map_per_level(tiny):
    out = tiny(torch.rand(2, 3, 64, 96))
    assert [tuple(m.shape) for m in out.head] == [(2, 3, 8, 12, 8), (2, 3, 4, 6, 8), (2, 3, 2, 3, 8)]
    assert {s: tuple(x.shape[1:]) for s, x in out.head_inputs.items()} == {8: (128, 8, 12), 16: (256, 4, 6),
                                                                           32: (512, 2, 3)}


def test_default_taps_pair_the_fpn_map_with_the_detect_input_at_each_stride(tiny):
    out = tiny(torch.rand(1, 3, 64, 64))
    assert tiny.tap_channels == {8: (64, 128), 16: (128, 256), 32: (256, 512)}
    for s, (t_ch, _student_ch) in tiny.tap_channels.items():
        assert out.teachers[s].shape == (1, t_ch, 64 // s, 64 // s)
        assert out.students[s] is out.head_inputs[s]


def test_yolov3_default_taps_stay_inside_its_fpn_only_neck():
    model = build_detector("yolov3", num_classes=3)
    assert model.taps_name == "merged_to_output"
    assert model.tap_layers == {8: (26, 27), 16: (21, 22), 32: (14, 15)}


def test_a_tap_at_the_wrong_stride_is_refused_naming_the_maps_it_could_use():
    taps = TapSet("bad", (TapPair(8, "F4", "P3"), TapPair(16, "F4", "P4"), TapPair(32, "F5", "P5")), "")
    with pytest.raises(ValueError, match="'F4' is not a stride-8 map of yolov7_tiny"):
        YOLOv7Family("yolov7_tiny", 3, taps=taps)


def test_inference_raw_decodes_every_anchor_of_every_cell_in_input_pixels(tiny):
    with torch.no_grad():
        raw = tiny.inference_raw(torch.rand(1, 3, 64, 64))
    assert raw.shape == (1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 8)
    assert raw[..., :2].min() >= -0.5 * 32 and raw[..., :2].max() <= 64 + 0.5 * 32
    assert ((raw[..., 4:] >= 0) & (raw[..., 4:] <= 1)).all()


def test_fused_model_gives_the_unfused_output(tiny):
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = tiny.inference_raw(images)
        fused = copy.deepcopy(tiny).fuse()
        after = fused.inference_raw(images)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-4)


def test_repconv_folds_its_three_branches_into_one_conv():
    torch.manual_seed(1)
    block = RepConv(8, 8, 3, 1)
    _randomise_norms(block)
    block.eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        before = block(x)
        block.fuse()
        after = block(x)
    assert [name for name, _ in block.named_children()] == ["act", "rbr_reparam"]
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-5)


def test_idetect_folds_its_implicit_terms_into_the_output_convs():
    torch.manual_seed(2)
    head = IDetect(3, (4, 8, 16))
    with torch.no_grad():
        for p in (*head.ia.parameters(), *head.im.parameters()):
            p.add_(torch.randn_like(p) * 0.3)
    features = [torch.randn(1, c, s, s) for c, s in ((4, 8), (8, 4), (16, 2))]
    with torch.no_grad():
        before = head(features)
        head.fuse()
        after = head(features)
    assert not hasattr(head, "ia") and not hasattr(head, "im")
    for a, b in zip(after, before, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_single_class_predictions_are_scored_by_objectness_alone():
    torch.manual_seed(3)
    model = build_detector("yolov7_tiny", num_classes=1).eval()
    images = torch.rand(1, 3, 64, 64)
    raw = model.inference_raw(images)
    detections = model.predict(images, conf=0.0, iou=1.0, max_det=5)[0]
    assert torch.allclose(detections.scores, raw[0, :, 4].sort(descending=True).values[:5])


def test_images_not_a_multiple_of_32_are_refused(tiny):
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny(torch.rand(1, 3, 48, 64))
