"""The YOLOX module tree equals Megvii's ``YOLOX(YOLOPAFPN, YOLOXHead)``: keys, order, shapes, counts.

The expected listings come from Megvii's own code: ``benchmarks/verify_yolox_parity.py`` builds their
model for each size as their exps do and prints the sha256 of ``key:shape`` lines in state-dict order
(run of 2026-11-25, their commit 6ddff48; the 0.3.0 release gives the same listings). Models are built on
the meta device here, so even yolox_x costs no memory or init time.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from detectors.yolox.blocks import BN_EPS, BN_MOMENTUM, DepthwiseConv
from detectors.yolox.model import SIZES, build_yolox

# (size, classes) -> (tensors in the state dict, parameters, sha256[:16] of Megvii's key:shape listing)
MEGVII = {
    ("yolox_nano", 80): (642, 912_159, "f2b92b098aed13aa"),
    ("yolox_nano", 3): (642, 897_144, "b10dbe820c0e3555"),
    ("yolox_tiny", 80): (462, 5_055_855, "eb40006c4d9c85a3"),
    ("yolox_tiny", 3): (462, 5_033_448, "ec407d587fcc43df"),
    ("yolox_s", 80): (462, 8_968_255, "7aaefe7ed6f7e75a"),
    ("yolox_s", 3): (462, 8_938_456, "15c6ed441e5fb2b7"),
    ("yolox_m", 80): (606, 25_326_495, "b0b83920626ab739"),
    ("yolox_m", 3): (606, 25_281_912, "ace180f4e7a0062e"),
    ("yolox_l", 80): (750, 54_208_895, "0e003d99713cd41c"),
    ("yolox_l", 3): (750, 54_149_528, "3110232a88542ca4"),
    ("yolox_x", 80): (894, 99_071_455, "053c5b889d040518"),
    ("yolox_x", 3): (894, 98_997_304, "0ce3cff24f0f16d1"),
}


def _meta_model(size: str, nc: int):
    with torch.device("meta"):
        return build_yolox(size, nc)


@pytest.mark.parametrize(("size", "nc"), sorted(MEGVII))
def test_state_dict_listing_equals_megvii(size, nc):
    tensors, params, digest = MEGVII[(size, nc)]
    model = _meta_model(size, nc)
    state = model.state_dict()
    listing = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in state.items())
    assert len(state) == tensors
    assert sum(p.numel() for p in model.parameters()) == params
    assert hashlib.sha256(listing.encode()).hexdigest()[:16] == digest


def test_every_megvii_size_is_built():
    assert set(SIZES) == {size for size, _ in MEGVII}


def test_key_names_follow_megvii_modules():
    keys = _meta_model("yolox_s", 3).state_dict()
    assert keys["backbone.backbone.stem.conv.conv.weight"].shape == (32, 12, 3, 3)  # Focus: 4 x 3 channels
    assert keys["backbone.lateral_conv0.conv.weight"].shape == (256, 512, 1, 1)
    assert keys["backbone.C3_n4.conv3.conv.weight"].shape == (512, 512, 1, 1)
    assert keys["head.cls_preds.2.weight"].shape == (3, 128, 1, 1)
    assert keys["head.reg_preds.0.bias"].shape == (4,)
    assert keys["head.obj_preds.1.weight"].shape == (1, 128, 1, 1)


def test_nano_uses_depthwise_convs_after_the_stem_and_tiny_does_not():
    nano, tiny = _meta_model("yolox_nano", 3), _meta_model("yolox_tiny", 3)
    assert "backbone.backbone.dark2.0.dconv.conv.weight" in nano.state_dict()
    assert nano.state_dict()["backbone.backbone.dark2.0.dconv.conv.weight"].shape == (16, 1, 3, 3)
    assert "backbone.backbone.stem.conv.conv.weight" in nano.state_dict()  # the stem stays a plain conv
    assert "head.stems.0.conv.weight" in nano.state_dict()
    assert not any(isinstance(m, DepthwiseConv) for m in tiny.modules())


def test_batchnorm_settings_and_prior_biases_are_megvii_s():
    model = build_yolox("yolox_nano", 3)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == BN_EPS == 1e-3 and m.momentum == BN_MOMENTUM == 0.03 for m in bns)
    prior = -torch.log(torch.tensor((1 - 0.01) / 0.01))
    for conv in (*model.head.cls_preds, *model.head.obj_preds):
        torch.testing.assert_close(conv.bias, prior.expand_as(conv.bias))
