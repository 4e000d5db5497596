"""RetinaNet's architecture: torchvision's key layout, anchors, the neck taps, the head maps and ``predict``."""

from __future__ import annotations

import hashlib
import re

import pytest
import torch

from detectors.api import Detections, DetectorOutput
from detectors.retinanet.model import RetinaNet, mmdet_cell_anchors, torchvision_anchor_sizes
from detectors.retinanet.taps import TAP_SETS

# sha256 of torchvision 0.29.1's "<key> <shape>" listing of retinanet_resnet50_fpn (v1, FrozenBatchNorm2d
# build), printed by benchmarks/verify_retinanet_parity.py.
TORCHVISION_LISTING_SHA256 = {
    91: "3f9389702fbeff2cc3c481a92fd3aed0eff04620afd5191c930c191181d80ec7",
    3: "8e1751645a5e060770cceac59fbb0892267a04f0a90b395ecd79d4b0281338ef",
}


def listing_sha(model: torch.nn.Module) -> str:
    listing = "\n".join(f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256(listing.encode()).hexdigest()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return RetinaNet("retinanet_tiny", 3).eval()


def test_full_size_keys_and_shapes_are_torchvisions():
    for k in (91, 3):
        assert listing_sha(RetinaNet("retinanet_resnet50_fpn", k)) == TORCHVISION_LISTING_SHA256[k]


def test_the_tiny_size_has_the_same_layout_and_torchvisions_freezing(tiny):
    sd = tiny.state_dict()
    assert len(sd) == 301
    assert sd["backbone.body.conv1.weight"].shape == (16, 3, 7, 7)
    assert sd["backbone.fpn.extra_blocks.p6.weight"].shape == (64, 64, 3, 3)  # P6 from P5 (256 -> 256 at full size)
    assert sd["head.classification_head.cls_logits.weight"].shape == (9 * 3, 64, 3, 3)
    assert sd["head.regression_head.bbox_reg.weight"].shape == (9 * 4, 64, 3, 3)
    head_keys = {k for k in sd if k.startswith("head.")}
    tower = {f"conv.{i}.0.{p}" for i in range(4) for p in ("weight", "bias")}
    assert head_keys == ({f"head.classification_head.{k}" for k in tower | {"cls_logits.weight", "cls_logits.bias"}}
                         | {f"head.regression_head.{k}" for k in tower | {"bbox_reg.weight", "bbox_reg.bias"}})
    frozen = {n for n, p in tiny.named_parameters() if not p.requires_grad}
    assert frozen and all(re.match(r"backbone\.body\.(conv1|layer1)\.", n) for n in frozen)
    assert float(sd["head.classification_head.cls_logits.bias"][0]) == pytest.approx(-4.59512, abs=1e-5)  # prior 0.01
    mmdet = RetinaNet("retinanet_tiny", 3, style="mmdet2").state_dict()
    assert list(mmdet) == list(sd) and mmdet["backbone.fpn.extra_blocks.p6.weight"].shape == (64, 512, 3, 3)  # from C5


def test_anchors_are_torchvisions_sizes_and_layout(tiny):
    assert torchvision_anchor_sizes()[0] == (32, 40, 50) and torchvision_anchor_sizes()[-1] == (512, 645, 812)
    anchors = tiny.anchors([(2, 3)] + [(1, 1)] * 4, torch.device("cpu"))
    level = anchors[0]
    assert level.shape == (2 * 3 * 9, 4) and level.dtype == torch.float32
    # cell anchor 0: ratio 0.5 (h / w), size 32: w = 32 / sqrt(0.5) = 45.25 -> [-23, -11, 23, 11] after rounding
    assert level[0].tolist() == [-23.0, -11.0, 23.0, 11.0]
    assert level[3].tolist() == [-16.0, -16.0, 16.0, 16.0]  # ratio 1 (index 1 x 3 sizes), size 32
    assert level[4].tolist() == [-20.0, -20.0, 20.0, 20.0]  # ratio 1, size 40
    # cell (y=1, x=2) is rows (1 * 3 + 2) * 9 .. + 8, shifted by (16, 8) px
    assert torch.equal(level[45:54], level[:9] + torch.tensor([16.0, 8.0, 16.0, 8.0]))
    mm = mmdet_cell_anchors(8)  # MMDetection: 8 * 4 * 2^(k/3), unrounded
    assert mm[3].tolist() == pytest.approx([-16.0, -16.0, 16.0, 16.0])
    assert mm[4].tolist() == pytest.approx([-16 * 2 ** (1 / 3)] * 2 + [16 * 2 ** (1 / 3)] * 2)


def test_forward_gives_head_maps_anchors_taps_and_head_inputs(tiny):
    x = torch.rand(1, 3, 128, 256)
    with torch.no_grad():
        out = tiny(x)
    assert isinstance(out, DetectorOutput)
    shapes = [(16, 32), (8, 16), (4, 8), (2, 4), (1, 2)]
    assert [tuple(m.shape) for m in out.head.cls_logits] == [(1, 27, h, w) for h, w in shapes]
    assert [tuple(m.shape) for m in out.head.bbox_regression] == [(1, 36, h, w) for h, w in shapes]
    assert [a.shape[0] for a in out.head.anchors] == [h * w * 9 for h, w in shapes]
    assert sorted(out.teachers) == sorted(out.students) == [8, 16, 32]
    assert sorted(out.head_inputs) == [8, 16, 32, 64, 128] and tiny.tap_channels == {s: (64, 64) for s in (8, 16, 32)}
    with torch.no_grad():
        maps = tiny.features(x)
    assert torch.equal(out.teachers[16], maps["M4"]) and torch.equal(out.students[16], maps["P4"])
    assert torch.equal(out.head_inputs[128], maps["P7"])
    with torch.no_grad():  # the head alone on the head inputs (LGD's forward_head) gives the same output
        again = tiny.forward_head(out.head_inputs)
    assert all(torch.equal(a, b) for a, b in zip(again.cls_logits + again.bbox_regression,
                                                   out.head.cls_logits + out.head.bbox_regression, strict=True))
    other = RetinaNet("retinanet_tiny", 3, taps=TAP_SETS["backbone_to_output"])
    assert other.tap_channels == {8: (128, 64), 16: (256, 64), 32: (512, 64)}
    with pytest.raises(ValueError, match="multiples of 128"):
        tiny(torch.rand(1, 3, 96, 128))


def test_predict_returns_clipped_sorted_detections_per_image(tiny):
    torch.manual_seed(1)
    model = RetinaNet("retinanet_tiny", 3, topk_candidates=40).eval()  # few candidates: a quick NMS
    with torch.no_grad():  # a class bias near 0 so that candidates pass the score threshold
        model.head.classification_head.cls_logits.bias.fill_(0.0)
        model.head.regression_head.bbox_reg.weight.normal_(0, 0.5)
    dets = model.predict(torch.rand(2, 3, 128, 256), conf=0.3, iou=0.5, max_det=20)
    assert len(dets) == 2 and all(isinstance(d, Detections) for d in dets)
    for d in dets:
        assert 0 < len(d) <= 20 and d.boxes.shape == (len(d), 4)
        assert bool((d.scores > 0.3).all()) and bool((d.scores[:-1] >= d.scores[1:]).all())
        assert bool((d.boxes[:, 0::2] >= 0).all() and (d.boxes[:, 0::2] <= 256).all())
        assert bool((d.boxes[:, 1::2] >= 0).all() and (d.boxes[:, 1::2] <= 128).all())
        assert set(d.classes.tolist()) <= {0, 1, 2}
    assert [len(d) for d in tiny.predict(torch.rand(1, 3, 128, 128))] == [0]  # prior 0.01 < conf 0.05
