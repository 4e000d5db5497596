"""The YOLOv6 module tree equals meituan/YOLOv6 0.2.1's ``Model(config, channels=3, num_classes=K)``.

The expected listings come from their own code: ``benchmarks/verify_yolov6_parity.py`` builds their model
from ``configs/yolov6{n,t,s,m,l}.py`` and prints the sha256 of the ``key (shape)`` lines in state-dict order
(benchmarks/README.md, "YOLOv6"). Models are built on the meta device here, so even yolov6l costs no memory
or init time; the counts are theirs, in training form.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from detectors.yolov6.blocks import BN_EPS, BN_MOMENTUM, RepVGGBlock
from detectors.yolov6.model import SIZES, build_yolov6

# (size, classes) -> (tensors in the state dict, parameters, sha256 of their key listing)
THEIRS = {
    ("yolov6n", 80): (668, 4_737_566, "19940c7b42168d07ec42b347a450adf3cce1fdabf4c099cf7de0696aef19ec86"),
    ("yolov6n", 3): (668, 4_720_087, "26cfda4c0a6673eaac4c463a2689cdeb375691430db5fae8fd9e193245b13a07"),
    ("yolov6t", 80): (668, 10_629_022, "53730180ffa591ee8b51d2a537ab637990dd8566ea4b305bb4bf2b474adde5f3"),
    ("yolov6t", 3): (668, 10_602_919, "adb7744bd3424bebc5a59b72eba9ca3c8760ada79efbb2cf5495bb34a0b73ecb"),
    ("yolov6s", 80): (668, 18_869_022, "d9c7dca837ecd7b742bb23efb82945a4975ea6f89d1e779e912c4ff0b0e4fff6"),
    ("yolov6s", 3): (668, 18_834_295, "c0708667268a7da51442d9118857ad1d019e0d1f27eb2dc8d532da10deb25028"),
    ("yolov6m", 80): (1152, 37_170_358, "04c978c0e32eaa192c079fb62c4522d2fff7d64f6453a0a9dc7178baf4fbec78"),
    ("yolov6m", 3): (1152, 37_118_383, "f8800e91547d554334c2b6be21c45c2c2d41591f60057ba342560db540de214d"),
    ("yolov6l", 80): (962, 58_589_195, "23999d11c5dc0607ac9f88d2266282d39556f780d69f131e555e532dadc4ded5"),
    ("yolov6l", 3): (962, 58_519_972, "07f030b087106d503f1c5deb9b479ed6b5c25e706e20b8eafa9afb4b2f76fdbd"),
}


def _meta_model(size: str, nc: int):
    with torch.device("meta"):
        return build_yolov6(size, nc)


def _listing(model: torch.nn.Module) -> str:
    return "\n".join(f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items())


@pytest.mark.parametrize(("size", "nc"), sorted(THEIRS))
def test_state_dict_keys_order_and_shapes_equal_theirs(size, nc):
    model = _meta_model(size, nc)
    tensors, params, sha = THEIRS[size, nc]
    assert len(model.state_dict()) == tensors
    assert sum(p.numel() for p in model.parameters()) == params
    assert hashlib.sha256(_listing(model).encode()).hexdigest() == sha


def test_every_size_of_the_release_is_built():
    assert set(SIZES) == {size for size, _ in THEIRS}


def test_yolov6s_at_three_classes_re_parameterised_is_the_papers_17_19_m():
    """Table 1's YOLOv6s: 18.834 M in training form, 17.188 M after their switch_to_deploy (RepVGG only)."""
    model = build_yolov6("yolov6s", 3)
    for block in model.modules():
        if isinstance(block, RepVGGBlock):
            block.fuse()
    assert sum(p.numel() for p in model.parameters()) == 17_188_215


def test_batch_norms_have_their_initialize_weights_settings():
    model = _meta_model("yolov6m", 3)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.eps == BN_EPS == 1e-3 and m.momentum == BN_MOMENTUM == 0.03 for m in norms)


def test_yolov6l_trains_plain_silu_convs_and_m_repvgg_blocks():
    assert not any(isinstance(m, RepVGGBlock) for m in _meta_model("yolov6l", 3).modules())
    assert any(isinstance(m, RepVGGBlock) for m in _meta_model("yolov6m", 3).modules())


def test_the_csp_residual_weights_are_parameters_their_optimiser_never_updates():
    model = _meta_model("yolov6m", 3)
    alphas = [p for name, p in model.named_parameters() if name.endswith(".alpha")]
    assert alphas and not any(p.requires_grad for p in alphas)
