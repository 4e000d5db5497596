"""The YOLOv5 module tree equals Ultralytics' ``DetectionModel``: keys, shapes, parameter counts, init.

The expected state dict is derived here independently, from the v6.0/v7.0 ``yolov5*.yaml`` layer table
and the block definitions (Conv, C3, SPPF, Detect), the way their ``parse_model`` expands it.
"""

from __future__ import annotations

import math

import pytest
import torch

from detectors import build_detector
from detectors.yolov5.model import SIZES

# models/yolov5{n,s,m,l,x}.yaml (v6.0+): [from, repeats, module, args] for layers 0-23.
YAML_LAYERS = [
    (-1, 1, "Conv", (64, 6, 2, 2)),
    (-1, 1, "Conv", (128, 3, 2)),
    (-1, 3, "C3", (128,)),
    (-1, 1, "Conv", (256, 3, 2)),
    (-1, 6, "C3", (256,)),
    (-1, 1, "Conv", (512, 3, 2)),
    (-1, 9, "C3", (512,)),
    (-1, 1, "Conv", (1024, 3, 2)),
    (-1, 3, "C3", (1024,)),
    (-1, 1, "SPPF", (1024, 5)),
    (-1, 1, "Conv", (512, 1, 1)),
    (-1, 1, "Upsample", ()),
    ((-1, 6), 1, "Concat", ()),
    (-1, 3, "C3", (512, False)),
    (-1, 1, "Conv", (256, 1, 1)),
    (-1, 1, "Upsample", ()),
    ((-1, 4), 1, "Concat", ()),
    (-1, 3, "C3", (256, False)),
    (-1, 1, "Conv", (256, 3, 2)),
    ((-1, 14), 1, "Concat", ()),
    (-1, 3, "C3", (512, False)),
    (-1, 1, "Conv", (512, 3, 2)),
    ((-1, 10), 1, "Concat", ()),
    (-1, 3, "C3", (1024, False)),
]


def _conv_keys(prefix: str, c1: int, c2: int, k: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.conv.weight": (c2, c1, k, k),
        f"{prefix}.bn.weight": (c2,),
        f"{prefix}.bn.bias": (c2,),
        f"{prefix}.bn.running_mean": (c2,),
        f"{prefix}.bn.running_var": (c2,),
        f"{prefix}.bn.num_batches_tracked": (),
    }


def expected_state_dict_shapes(depth: float, width: float, nc: int) -> dict[str, tuple[int, ...]]:
    keys: dict[str, tuple[int, ...]] = {}
    channels: list[int] = []
    c_prev = 3
    for i, (src, n, kind, args) in enumerate(YAML_LAYERS):
        n = max(round(n * depth), 1) if n > 1 else n
        c_in = channels[src] if isinstance(src, int) and src != -1 else c_prev
        p = f"model.{i}"
        if kind in ("Conv", "C3", "SPPF"):
            c_out = math.ceil(args[0] * width / 8) * 8
        if kind == "Conv":
            keys.update(_conv_keys(p, c_in, c_out, args[1]))
        elif kind == "C3":
            h = c_out // 2
            keys.update(_conv_keys(f"{p}.cv1", c_in, h, 1))
            keys.update(_conv_keys(f"{p}.cv2", c_in, h, 1))
            keys.update(_conv_keys(f"{p}.cv3", 2 * h, c_out, 1))
            for j in range(n):
                keys.update(_conv_keys(f"{p}.m.{j}.cv1", h, h, 1))
                keys.update(_conv_keys(f"{p}.m.{j}.cv2", h, h, 3))
        elif kind == "SPPF":
            keys.update(_conv_keys(f"{p}.cv1", c_in, c_in // 2, 1))
            keys.update(_conv_keys(f"{p}.cv2", c_in // 2 * 4, c_out, 1))
        elif kind == "Upsample":
            c_out = c_in
        elif kind == "Concat":
            c_out = c_prev + channels[src[1]]
        channels.append(c_out)
        c_prev = c_out
    keys["model.24.anchors"] = (3, 3, 2)
    for j, src in enumerate((17, 20, 23)):
        keys[f"model.24.m.{j}.weight"] = (3 * (nc + 5), channels[src], 1, 1)
        keys[f"model.24.m.{j}.bias"] = (3 * (nc + 5),)
    return keys


@pytest.mark.parametrize("size", ["yolov5n", "yolov5s"])
@pytest.mark.parametrize("nc", [80, 3])
def test_state_dict_keys_and_shapes_equal_ultralytics(size, nc):
    model = build_detector(size, num_classes=nc)
    expected = expected_state_dict_shapes(SIZES[size].depth, SIZES[size].width, nc)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(got) == list(expected)  # same keys, same order (their module registration order)
    assert got == expected


def test_yolov5s_state_dict_landmarks():
    sd = build_detector("yolov5s", num_classes=80).state_dict()
    assert len(sd) == 349
    assert sd["model.0.conv.weight"].shape == (32, 3, 6, 6)
    assert sd["model.9.cv2.conv.weight"].shape == (512, 1024, 1, 1)  # SPPF: 4 x 256 -> 512
    assert sd["model.23.cv3.conv.weight"].shape == (512, 512, 1, 1)
    assert sd["model.24.m.2.weight"].shape == (255, 512, 1, 1)
    assert "model.24.stride" not in sd and "stride" not in sd  # theirs is not in the state dict either
    assert list(sd)[-1] == "model.24.m.2.bias"


# Ultralytics' model summaries (COCO, 80 classes). "unfused" is printed when the model is built
# (e.g. "YOLOv5s summary: 214 layers, 7235389 parameters"); "fused" after Conv+BN fusion in val/detect
# ("Fusing layers... YOLOv5s summary: 213 layers, 7225885 parameters"), which is what the README table
# rounds. Fusion drops each BN's weight and bias and gives the conv a bias: minus one per BN channel.
PARAMS = {
    "yolov5n": (1_872_157, 1_867_405),
    "yolov5s": (7_235_389, 7_225_885),
    "yolov5m": (21_190_557, 21_172_173),
    "yolov5l": (46_563_709, 46_533_693),
    "yolov5x": (86_749_405, 86_705_005),
}


@pytest.mark.parametrize("size", list(PARAMS))
def test_parameter_counts_equal_ultralytics_summaries(size):
    model = build_detector(size, num_classes=80)
    unfused = sum(p.numel() for p in model.parameters())
    bn_channels = sum(m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert (unfused, unfused - bn_channels) == PARAMS[size]


def test_batchnorm_uses_ultralytics_eps_and_momentum():
    model = build_detector("yolov5n", num_classes=3)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)


def test_detect_biases_get_the_objectness_and_class_priors():
    torch.manual_seed(0)
    model = build_detector("yolov5n", num_classes=3)
    detect = model.model[24]
    for conv, s in zip(detect.m, (8, 16, 32), strict=True):
        c_in = conv.weight.shape[1]
        bound = 1 / math.sqrt(c_in)  # torch's default Conv2d bias init is U(-bound, bound)
        b = conv.bias.detach().view(3, 8)
        obj_prior = math.log(8 / (640 / s) ** 2)
        cls_prior = math.log(0.6 / (3 - 0.99999))
        assert ((b[:, 4] - obj_prior).abs() <= bound).all()
        assert ((b[:, 5:] - cls_prior).abs() <= bound).all()
        assert (b[:, :4].abs() <= bound).all()


def test_anchors_are_stored_in_grid_units():
    anchors = build_detector("yolov5n", num_classes=3).state_dict()["model.24.anchors"]
    pixels = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]])
    expected = pixels.float().view(3, 3, 2) / torch.tensor([8.0, 16.0, 32.0]).view(3, 1, 1)
    torch.testing.assert_close(anchors, expected, rtol=0, atol=0)


def test_tap_channels_follow_the_design_pairing():
    model = build_detector("yolov5s", num_classes=3)
    assert model.strides == (8, 16, 32)
    # teacher layers 15 / 13 / 10 and student layers 17 / 20 / 23 of yolov5s (width 0.5)
    assert model.tap_channels == {8: (128, 128), 16: (256, 256), 32: (256, 512)}


def test_unknown_detector_name_is_one_clear_error():
    from detectors.errors import MSSDError

    with pytest.raises(MSSDError, match="unknown detector 'yolov9'.*yolov5n, yolov5s"):
        build_detector("yolov9", num_classes=3)


def test_a_tap_layer_at_the_wrong_stride_is_refused():
    from detectors.api import TapPair, TapSet
    from detectors.yolov5.model import YOLOv5

    wrong = TapSet("wrong", (TapPair(8, "13", "17"), TapPair(16, "13", "20"), TapPair(32, "10", "23")), "test")
    with pytest.raises(ValueError, match="teacher layer 13 is not a stride-8 feature"):
        YOLOv5("yolov5n", 3, taps=wrong)


def test_an_unknown_tap_set_is_one_clear_error_naming_the_known_ones():
    from detectors.errors import ConfigError

    with pytest.raises(ConfigError, match="detector.taps: yolov5n has no tap set 'sideways'.*fpn_to_pan, pan_to_fpn"):
        build_detector("yolov5n", num_classes=3, taps="sideways")
