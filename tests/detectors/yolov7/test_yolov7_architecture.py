"""The module trees equal WongKinYiu/yolov7's ``models.yolo.Model`` per config: keys, order, shapes, counts.

The expected listings come from their own code: ``benchmarks/verify_yolov7_parity.py`` builds their model
from ``cfg/baseline/yolov3.yaml``, ``yolov3-spp.yaml``, ``yolov4-csp.yaml`` and ``cfg/training/yolov7-tiny.yaml``,
``yolov7.yaml``, ``yolov7x.yaml`` and prints the sha256 of the ``key (shape)`` lines in state-dict order at
3 classes (run of 2026-12-06, all checks passing). Models are built on the meta device here (no memory, no
init time), except where a fold needs values.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from detectors.yolov7.layers import TABLES
from detectors.yolov7.model import YOLOv7Family

# size -> (tensors in the state dict, parameters at 3 classes, sha256[:16] of their "key (shape)" listing)
UPSTREAM = {
    "yolov3": (440, 61_534_504, "693cba877008d4dc"),
    "yolov3_spp": (446, 62_584_104, "3a6d53529d860744"),
    "yolov4_csp": (680, 52_506_792, "e8ec806248c57b8d"),
    "yolov7_tiny": (344, 6_020_400, "8ba2816bc7c24c9e"),
    "yolov7": (566, 37_207_344, "c5e0cf654345aac3"),
    "yolov7x": (644, 70_828_568, "2d35969f1c760bbb"),
}


def _meta_model(size: str, nc: int = 3) -> YOLOv7Family:
    with torch.device("meta"):
        return YOLOv7Family(size, nc)


@pytest.mark.parametrize("size", sorted(UPSTREAM))
def test_state_dict_listing_equals_upstream(size):
    tensors, params, digest = UPSTREAM[size]
    model = _meta_model(size)
    state = model.state_dict()
    listing = "\n".join(f"{k} {tuple(v.shape)}" for k, v in state.items())
    assert len(state) == tensors
    assert sum(p.numel() for p in model.parameters()) == params
    assert hashlib.sha256(listing.encode()).hexdigest()[:16] == digest


def test_every_table_is_checked_against_upstream():
    assert set(TABLES) == set(UPSTREAM)


def test_yolov7_keeps_its_anchor_and_implicit_buffers_under_upstreams_names():
    state = _meta_model("yolov7").state_dict()
    assert state["model.105.anchors"].shape == (3, 3, 2)
    assert state["model.105.anchor_grid"].shape == (3, 1, 3, 1, 1, 2)
    assert state["model.105.ia.0.implicit"].shape == (1, 256, 1, 1)
    assert state["model.105.im.2.implicit"].shape == (1, 3 * 8, 1, 1)
    assert state["model.102.rbr_dense.0.weight"].shape == (256, 128, 3, 3)


def test_anchors_are_stored_in_grid_units_and_the_anchor_grid_in_pixels():
    head = YOLOv7Family("yolov7_tiny", 3).detect
    assert torch.allclose(head.anchors * head.stride.view(-1, 1, 1), head.anchor_grid.view(3, 3, 2))
    assert head.anchor_grid[0, 0, 0, 0, 0].tolist() == [10.0, 13.0]  # YOLOv3's smallest anchor, pixels


def test_every_batch_norm_has_upstreams_eps_and_momentum():
    model = _meta_model("yolov7")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and {(m.eps, m.momentum) for m in norms} == {(1e-3, 0.03)}


@pytest.mark.parametrize(("size", "activation"), [("yolov3", nn.SiLU), ("yolov4_csp", nn.SiLU), ("yolov7", nn.SiLU),
                                                  ("yolov7_tiny", nn.LeakyReLU)])
def test_activations_follow_the_config(size, activation):
    kinds = {type(m) for m in _meta_model(size).modules() if isinstance(m, (nn.SiLU, nn.LeakyReLU, nn.Mish))}
    assert kinds == {activation}


def test_yolov7_deployed_count_is_the_papers_36_49_m():
    # Table 1's 36.49 M: the re-parameterised model (RepConv as one 3x3 conv, Conv+BN folded, IDetect's
    # implicit terms folded into its output convs).
    model = YOLOv7Family("yolov7", 3)
    model.fuse()
    assert sum(p.numel() for p in model.parameters()) == 36_490_696
