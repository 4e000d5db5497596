"""YOLOX (nano, tiny, s, m, l, x): CSPDarknet backbone, PAFPN neck, decoupled anchor-free head.

``state_dict()`` keys and shapes equal those of Megvii's ``YOLOX(YOLOPAFPN(...), YOLOXHead(...))`` for
the same size and class count (``backbone.backbone.stem.conv.conv.weight`` ...
``head.obj_preds.2.bias``), so their ``yolox_*.pth`` "model" entries load with ``strict=True``. Sizes
differ by the depth and width multiples of Megvii's ``exps/default/yolox_*.py``; Nano also swaps every
3 x 3 conv after the stem for a depthwise-separable one.

Input convention: our images are RGB in [0, 1]; YOLOX (since 0.2.0, ``legacy=False``) was trained on
OpenCV BGR images in 0-255, unnormalised, so ``forward`` converts first.

Neck map (channels for width 1.0, stride in brackets; names are the attributes of ``PAFPN``)::

    dark3 256 [8]   dark4 512 [16]   dark5 1024 [32]            backbone outputs
    lateral_conv0 512 [32]                                      <- teacher, stride 32
    lateral_conv0.up 512 [16] ; cat dark4 -> C3_p4 512 [16]     <- teacher, stride 16 (C3_p4)
    reduce_conv1 256 [16]
    reduce_conv1.up 256 [8] ; cat dark3                          <- teacher, stride 8 (reduce_conv1.up)
    C3_p3 256 [8]                                               <- student / head input, stride 8
    bu_conv2 256 [16] ; cat reduce_conv1 -> C3_n3 512 [16]      <- student / head input, stride 16
    bu_conv1 512 [32] ; cat lateral_conv0 -> C3_n4 1024 [32]    <- student / head input, stride 32
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from detectors.api import Detections, DetectorOutput, TapSet
from detectors.ops.nms import non_max_suppression
from detectors.yolox.blocks import ConvBNAct, CSPLayer, Focus, SPPBottleneck, conv_block
from detectors.yolox.head import YOLOXHead, decode
from detectors.yolox.taps import DEFAULT_TAPS, HEAD_INPUTS, TAP_SETS


@dataclass(frozen=True)
class YOLOXSize:
    depth: float  # multiplies the number of bottlenecks in each CSP layer
    width: float  # multiplies every channel count (truncated to an integer)
    depthwise: bool = False  # Nano: depthwise-separable 3 x 3 convs


SIZES: dict[str, YOLOXSize] = {
    "yolox_nano": YOLOXSize(0.33, 0.25, depthwise=True),
    "yolox_tiny": YOLOXSize(0.33, 0.375),
    "yolox_s": YOLOXSize(0.33, 0.50),
    "yolox_m": YOLOXSize(0.67, 0.75),
    "yolox_l": YOLOXSize(1.00, 1.00),
    "yolox_x": YOLOXSize(1.33, 1.25),
}

STRIDES = (8, 16, 32)
# Neck features a tap set (taps.py) may name, with their stride and their channels at width 1.0.
TAP_POINTS: dict[str, tuple[int, int]] = {
    "dark3": (8, 256),
    "dark4": (16, 512),
    "dark5": (32, 1024),
    "lateral_conv0": (32, 512),
    "lateral_conv0.up": (16, 512),
    "C3_p4": (16, 512),
    "reduce_conv1": (16, 256),
    "reduce_conv1.up": (8, 256),
    "C3_p3": (8, 256),
    "bu_conv2": (16, 256),
    "C3_n3": (16, 512),
    "bu_conv1": (32, 512),
    "C3_n4": (32, 1024),
}


class CSPDarknet(nn.Module):
    """Focus stem and four stages (``dark2`` .. ``dark5``); returns the stride 8, 16, 32 outputs."""

    def __init__(self, depth: float, width: float, depthwise: bool) -> None:
        super().__init__()
        conv = conv_block(depthwise)
        c = int(width * 64)
        n = max(round(depth * 3), 1)
        self.stem = Focus(3, c)  # /2
        self.dark2 = nn.Sequential(conv(c, c * 2, 3, 2), CSPLayer(c * 2, c * 2, n, depthwise=depthwise))  # /4
        self.dark3 = nn.Sequential(conv(c * 2, c * 4, 3, 2), CSPLayer(c * 4, c * 4, n * 3, depthwise=depthwise))
        self.dark4 = nn.Sequential(conv(c * 4, c * 8, 3, 2), CSPLayer(c * 8, c * 8, n * 3, depthwise=depthwise))
        self.dark5 = nn.Sequential(
            conv(c * 8, c * 16, 3, 2),
            SPPBottleneck(c * 16, c * 16),
            CSPLayer(c * 16, c * 16, n, shortcut=False, depthwise=depthwise),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.dark2(self.stem(x))
        dark3 = self.dark3(x)  # /8
        dark4 = self.dark4(dark3)  # /16
        return dark3, dark4, self.dark5(dark4)  # /32


class PAFPN(nn.Module):
    """Megvii's ``YOLOPAFPN``: the backbone plus a top-down and a bottom-up path; named neck features."""

    def __init__(self, depth: float, width: float, depthwise: bool) -> None:
        super().__init__()
        c3, c4, c5 = int(256 * width), int(512 * width), int(1024 * width)
        n = round(3 * depth)
        conv = conv_block(depthwise)
        self.backbone = CSPDarknet(depth, width, depthwise)
        self.lateral_conv0 = ConvBNAct(c5, c4, 1)
        self.C3_p4 = CSPLayer(2 * c4, c4, n, shortcut=False, depthwise=depthwise)
        self.reduce_conv1 = ConvBNAct(c4, c3, 1)
        self.C3_p3 = CSPLayer(2 * c3, c3, n, shortcut=False, depthwise=depthwise)
        self.bu_conv2 = conv(c3, c3, 3, 2)
        self.C3_n3 = CSPLayer(2 * c3, c4, n, shortcut=False, depthwise=depthwise)
        self.bu_conv1 = conv(c4, c4, 3, 2)
        self.C3_n4 = CSPLayer(2 * c4, c5, n, shortcut=False, depthwise=depthwise)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every feature of ``TAP_POINTS`` by name; the head takes C3_p3, C3_n3, C3_n4."""
        f: dict[str, torch.Tensor] = {}
        f["dark3"], f["dark4"], f["dark5"] = self.backbone(x)
        # Top-down (FPN).
        f["lateral_conv0"] = self.lateral_conv0(f["dark5"])  # /32
        f["lateral_conv0.up"] = _upsample(f["lateral_conv0"])  # /16
        f["C3_p4"] = self.C3_p4(torch.cat((f["lateral_conv0.up"], f["dark4"]), 1))  # /16
        f["reduce_conv1"] = self.reduce_conv1(f["C3_p4"])  # /16
        f["reduce_conv1.up"] = _upsample(f["reduce_conv1"])  # /8
        f["C3_p3"] = self.C3_p3(torch.cat((f["reduce_conv1.up"], f["dark3"]), 1))  # /8
        # Bottom-up (PAN).
        f["bu_conv2"] = self.bu_conv2(f["C3_p3"])  # /16
        f["C3_n3"] = self.C3_n3(torch.cat((f["bu_conv2"], f["reduce_conv1"]), 1))  # /16
        f["bu_conv1"] = self.bu_conv1(f["C3_n3"])  # /32
        f["C3_n4"] = self.C3_n4(torch.cat((f["bu_conv1"], f["lateral_conv0"]), 1))  # /32
        return f


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class YOLOX(nn.Module):
    """YOLOX detection model. ``forward`` -> ``DetectorOutput``; ``inference_raw`` / ``predict`` decode it."""

    def __init__(self, size: str = "yolox_s", num_classes: int = 80, *, taps: TapSet | None = None) -> None:
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"unknown YOLOX size {size!r}: expected one of {', '.join(SIZES)}")
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        spec = SIZES[size]
        self.size = size
        self.num_classes = num_classes
        self.strides: tuple[int, ...] = STRIDES
        self.backbone = PAFPN(spec.depth, spec.width, spec.depthwise)
        self.head = YOLOXHead(
            num_classes, spec.width, [int(c * spec.width) for c in (256, 512, 1024)], STRIDES, spec.depthwise
        )
        self.taps = TAP_SETS[DEFAULT_TAPS] if taps is None else taps
        _check_taps(self.taps)
        self.tap_names = {p.stride: (p.teacher, p.student) for p in self.taps.pairs}

        def channels(name: str) -> int:
            return int(TAP_POINTS[name][1] * spec.width)

        self.tap_channels: dict[int, tuple[int, int]] = {
            s: (channels(t), channels(st)) for s, (t, st) in self.tap_names.items()
        }
        self.head_input_channels = {s: channels(name) for s, name in HEAD_INPUTS.items()}

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        """images (B, 3, H, W) RGB in [0, 1], H and W multiples of 32 -> raw head maps and neck taps.

        Head maps: per level (B, 5 + nc, H/s, W/s) raw logits ``[x, y, w, h, obj, classes]`` (``head.py``).
        """
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] % 32 or images.shape[3] % 32:
            raise ValueError(f"images: expected (B, 3, H, W) with H, W multiples of 32, got {tuple(images.shape)}")
        # RGB [0, 1] -> BGR [0, 255], what YOLOX's weights expect (no mean/std normalisation).
        feats = self.backbone(images.flip(1) * 255.0)
        head_inputs = {s: feats[HEAD_INPUTS[s]] for s in STRIDES}
        head_maps = self.head([head_inputs[s] for s in STRIDES])
        teachers = {s: feats[t] for s, (t, _student) in self.tap_names.items()}
        students = {s: feats[st] for s, (_teacher, st) in self.tap_names.items()}
        return DetectorOutput(head_maps, teachers, students, head_inputs)

    def inference_raw(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N, 5 + nc): cx, cy, w, h in input pixels, sigmoid objectness, sigmoid class scores.

        Uses the module's current mode; call ``model.eval()`` first, as for any BatchNorm network.
        """
        return decode(self.forward(images).head, self.strides)

    @torch.no_grad()
    def predict(
        self, images: torch.Tensor, *, conf: float = 0.01, iou: float = 0.65, max_det: int = 300
    ) -> list[Detections]:
        """Per image: boxes (K, 4) xyxy input px, scores (K,) = obj x best class score, classes (K,) int64.

        YOLOX's ``postprocess``: best class per cell, score = objectness x class score, class-aware NMS.
        Defaults are YOLOX's evaluation thresholds (``test_conf`` 0.01, ``nmsthre`` 0.65). Two differences:
        a box is kept when its score is > ``conf`` (YOLOX: >=), and at most ``max_det`` boxes per image.
        """
        return non_max_suppression(self.inference_raw(images), conf=conf, iou=iou, max_det=max_det)


def _check_taps(taps: TapSet) -> None:
    for pair in taps.pairs:
        for role, name in (("teacher", pair.teacher), ("student", pair.student)):
            if TAP_POINTS.get(name, (None,))[0] != pair.stride:
                choices = [n for n, (s, _) in TAP_POINTS.items() if s == pair.stride]
                raise ValueError(f"taps {taps.name}: {role} {name!r} is not a stride-{pair.stride} YOLOX feature; "
                                 f"expected one of {choices}")
    if taps.strides != STRIDES or len(taps.pairs) != len(STRIDES):
        raise ValueError(f"taps {taps.name}: expected one pair at each of strides {STRIDES}")


def build_yolox(size: str, num_classes: int, **kwargs) -> YOLOX:
    """A freshly initialised YOLOX of ``size`` (``yolox_nano`` ... ``yolox_x``) for ``num_classes`` classes."""
    return YOLOX(size, num_classes, **kwargs)
