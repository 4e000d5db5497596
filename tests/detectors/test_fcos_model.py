"""FCOS's architecture: torchvision's key layout, the neck taps, the head maps and ``predict``."""

from __future__ import annotations

import hashlib
import re

import pytest
import torch

from detectors.api import Detections, DetectorOutput
from detectors.fcos.model import FCOS, level_anchors
from detectors.fcos.taps import TAP_SETS

# sha256 of torchvision 0.29.1's "<key> <shape>" listing of fcos_resnet50_fpn (FrozenBatchNorm2d build),
# printed by benchmarks/verify_fcos_parity.py.
TORCHVISION_LISTING_SHA256 = {
    91: "52b2afa5918b7fb877c102a582ef1c3fbfd7855151e138131ca7fa9588f5013c",
    3: "d6bf3896e53bf5cba2a8213da691999c47c84f9b78ccf24a7685671528a2addd",
}


def listing_sha(model: torch.nn.Module) -> str:
    listing = "\n".join(f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256(listing.encode()).hexdigest()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return FCOS("fcos_tiny", 3).eval()


def test_full_size_keys_and_shapes_are_torchvisions():
    for k in (91, 3):
        assert listing_sha(FCOS("fcos_resnet50_fpn", k)) == TORCHVISION_LISTING_SHA256[k]


def test_the_tiny_size_has_the_same_layout_at_a_quarter_of_the_width(tiny):
    full_keys = list(FCOS("fcos_resnet50_fpn", 3).state_dict())
    sd = tiny.state_dict()
    assert list(sd) == full_keys and len(sd) == 319
    assert sd["backbone.body.conv1.weight"].shape == (16, 3, 7, 7)
    assert sd["backbone.fpn.inner_blocks.2.0.weight"].shape == (64, 512, 1, 1)
    assert sd["head.classification_head.cls_logits.weight"].shape == (3, 64, 3, 3)
    head_keys = {k for k in sd if k.startswith("head.")}
    tower = {f"conv.{i}.{p}" for i in (0, 1, 3, 4, 6, 7, 9, 10) for p in ("weight", "bias")}
    assert head_keys == (
        {f"head.classification_head.{k}" for k in tower | {"cls_logits.weight", "cls_logits.bias"}}
        | {f"head.regression_head.{k}" for k in tower | {"bbox_reg.weight", "bbox_reg.bias", "bbox_ctrness.weight",
                                                         "bbox_ctrness.bias"}})
    # torchvision's fine-tuning freeze: conv1 and layer1 fixed, FrozenBatchNorm2d statistics are buffers
    frozen = {n for n, p in tiny.named_parameters() if not p.requires_grad}
    assert frozen and all(re.match(r"backbone\.body\.(conv1|layer1)\.", n) for n in frozen)
    assert not any("bn" in n for n, _ in tiny.named_parameters())


def test_forward_gives_head_maps_taps_and_head_inputs(tiny):
    x = torch.rand(1, 3, 128, 256)
    with torch.no_grad():
        out = tiny(x)
    assert isinstance(out, DetectorOutput)
    assert [tuple(m.shape) for m in out.head] == [(1, 4 + 1 + 3, 128 // s, 256 // s) for s in tiny.strides]
    assert sorted(out.head_inputs) == [8, 16, 32, 64, 128] and tiny.head_input_channels[128] == 64
    for s, (t_ch, s_ch) in tiny.tap_channels.items():
        assert out.teachers[s].shape == (1, t_ch, 128 // s, 256 // s)
        assert out.students[s].shape == (1, s_ch, 128 // s, 256 // s)
        assert out.students[s] is out.head_inputs[s]


def test_every_tap_set_names_maps_of_its_stride_with_their_channels():
    x = torch.rand(1, 3, 128, 128)
    expected = {"merged_to_output": {8: (64, 64), 16: (64, 64), 32: (64, 64)},
                "output_to_merged": {8: (64, 64), 16: (64, 64), 32: (64, 64)},
                "backbone_to_output": {8: (128, 64), 16: (256, 64), 32: (512, 64)}}
    for name, taps in TAP_SETS.items():
        model = FCOS("fcos_tiny", 3, taps=taps)
        assert model.tap_channels == expected[name]
        if name == "backbone_to_output":
            with torch.no_grad():
                out = model(x)
            assert {s: (t.shape[1], st.shape[1]) for (s, t), st in zip(out.teachers.items(), out.students.values(), strict=True)
                    } == expected[name]


def test_teacher_is_the_merged_map_before_the_3x3_conv(tiny):
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        out, maps = tiny(x), tiny.features(x)
        fpn = tiny.backbone.fpn
        assert torch.equal(out.teachers[32], fpn.inner_blocks[2](maps["C5"]))
        assert torch.equal(out.students[16], fpn.layer_blocks[1](out.teachers[16]))


def test_inputs_that_do_not_tile_p7_are_refused(tiny):
    with pytest.raises(ValueError, match="multiples of 128"):
        tiny(torch.rand(1, 3, 96, 128))


def test_anchors_are_torchvisions_points_at_the_cells_top_left_corners():
    (a8, a16) = level_anchors([(2, 3), (1, 1)], (8, 16))
    assert a8.tolist() == [[-4, -4, 4, 4], [4, -4, 12, 4], [12, -4, 20, 4],
                           [-4, 4, 4, 12], [4, 4, 12, 12], [12, 4, 20, 12]]
    assert a16.tolist() == [[-8, -8, 8, 8]]
    assert level_anchors([(1, 1)], (8,), 0.5)[0].tolist() == [[0, 0, 8, 8]]  # MMDetection's cell centres


def test_predict_returns_clipped_sorted_detections_above_the_threshold(tiny):
    torch.manual_seed(1)
    with torch.no_grad():
        tiny.head.classification_head.cls_logits.bias.fill_(0.0)  # scores around sqrt(0.5 * 0.5)
        tiny.head.regression_head.bbox_reg.bias.fill_(2.0)  # boxes 4 strides wide: some cross the border
        dets = tiny.predict(torch.rand(2, 3, 128, 128), conf=0.3, iou=0.6, max_det=25)
    assert len(dets) == 2
    for d in dets:
        assert isinstance(d, Detections) and 0 < len(d) <= 25
        assert (d.scores > 0.3).all() and torch.equal(d.scores, d.scores.sort(descending=True).values)
        assert d.boxes.min() >= 0 and d.boxes.max() <= 128
        assert d.classes.dtype == torch.int64 and set(d.classes.tolist()) <= {0, 1, 2}
    assert tiny.predict(torch.rand(1, 3, 128, 128), conf=0.99, iou=0.6, max_det=25)[0].boxes.shape == (0, 4)


def test_mmdet2_style_moves_the_stride_and_changes_the_head_layout():
    model = FCOS("fcos_tiny", 3, style="mmdet2")
    block = model.backbone.body.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    keys = set(model.state_dict())
    assert "head.classification_head.conv.0.bias" not in keys
    assert {f"head.regression_head.scales.{i}.scale" for i in range(5)} <= keys
    out = model(torch.rand(1, 3, 128, 128))
    assert [tuple(m.shape) for m in out.head][0] == (1, 8, 16, 16)
    assert (out.head[0][:, :4] > 0).all()  # exp(scale * x) distances
