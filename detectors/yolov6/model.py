"""YOLOv6 release 0.2.1 (n, t, s, m, l): EfficientRep backbone, Rep-PAN neck, Efficient Decoupled Head.

``state_dict()`` keys and shapes equal those of meituan/YOLOv6 0.2.1's ``Model(config, channels=3,
num_classes=K)`` built from ``configs/yolov6{n,t,s,m,l}.py`` (``backbone.stem.rbr_dense.conv.weight`` ...
``detect.reg_preds.2.bias``), so their checkpoints load with strict keys. Sizes differ by depth and width
multiples (channels rounded up to multiples of 8); M and L use the CSP variants (``CSPBepBackbone``,
``CSPRepPANNeck``, BepC3 stages) and DFL; L trains plain SiLU convs instead of RepVGG blocks (its config's
``training_mode = "conv_silu"``). Their images are RGB in [0, 1], as ours.

Neck map (channels of YOLOv6s, stride in brackets; names are ``RepPAN``'s attributes)::

    ERBlock_3 128 [8]   ERBlock_4 256 [16]   ERBlock_5 512 [32]       backbone outputs (ERBlock_5 after SimSPPF)
    reduce_layer0 128 [32]                                          <- teacher, stride 32
    upsample0 128 [16] ; cat ERBlock_4 -> Rep_p4 128 [16]           <- teacher, stride 16
    reduce_layer1 64 [16] ; upsample1 64 [8]                        <- teacher, stride 8 (upsample1)
    cat ERBlock_3 -> Rep_p3 64 [8]                                  <- student / head input, stride 8
    downsample2 64 [16] ; cat reduce_layer1 -> Rep_n3 128 [16]      <- student / head input, stride 16
    downsample1 128 [32] ; cat reduce_layer0 -> Rep_n4 256 [32]     <- student / head input, stride 32
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from detectors.api import Detections, DetectorOutput, TapSet
from detectors.ops.nms import non_max_suppression
from detectors.yolov6.blocks import (
    BepC3,
    ConvBNAct,
    ConvWrapper,
    RepBlock,
    RepVGGBlock,
    SimSPPF,
    Transpose,
    fuse_blocks,
)
from detectors.yolov6.head import EffiDeHead, YOLOv6HeadOutput, decode
from detectors.yolov6.taps import DEFAULT_TAPS, HEAD_INPUTS, TAP_SETS


@dataclass(frozen=True)
class YOLOv6Size:
    depth: float  # multiplies the block counts (repeats > 1 only)
    width: float  # multiplies the channels, rounded up to a multiple of 8
    iou_type: str  # the box loss of the size's config: "giou" or "siou"
    reg_max: int = 0  # DFL bins - 1; 0: no DFL
    csp_e: float | None = None  # BepC3 expansion (M, L); None: the plain EfficientRep / RepPAN
    conv_silu: bool = False  # training_mode "conv_silu" (L): ConvWrapper basic blocks instead of RepVGG


SIZES: dict[str, YOLOv6Size] = {
    "yolov6n": YOLOv6Size(0.33, 0.25, "siou"),
    "yolov6t": YOLOv6Size(0.33, 0.375, "siou"),
    "yolov6s": YOLOv6Size(0.33, 0.50, "giou"),
    "yolov6m": YOLOv6Size(0.60, 0.75, "giou", reg_max=16, csp_e=2 / 3),
    "yolov6l": YOLOv6Size(1.0, 1.0, "giou", reg_max=16, csp_e=1 / 2, conv_silu=True),
}
BACKBONE_REPEATS = (1, 6, 12, 18, 6)
NECK_REPEATS = (12, 12, 12, 12)
BACKBONE_CHANNELS = (64, 128, 256, 512, 1024)
NECK_CHANNELS = (256, 128, 128, 256, 256, 512)
STRIDES = (8, 16, 32)
# Neck features a tap set may name: stride and index into the channel list (channels_list of theirs).
TAP_POINTS: dict[str, tuple[int, int]] = {
    "ERBlock_3": (8, 2), "ERBlock_4": (16, 3), "ERBlock_5": (32, 4),
    "reduce_layer0": (32, 5), "upsample0": (16, 5), "Rep_p4": (16, 5),
    "reduce_layer1": (16, 6), "upsample1": (8, 6), "Rep_p3": (8, 6),
    "downsample2": (16, 7), "Rep_n3": (16, 8), "downsample1": (32, 9), "Rep_n4": (32, 10),
}


def scaled(spec: YOLOv6Size) -> tuple[list[int], list[int]]:
    """(repeats, channels) of their build_network: repeats > 1 scaled by depth, channels by width up to x8."""
    repeats = [max(round(n * spec.depth), 1) if n > 1 else n for n in BACKBONE_REPEATS + NECK_REPEATS]
    channels = [math.ceil(c * spec.width / 8) * 8 for c in BACKBONE_CHANNELS + NECK_CHANNELS]
    return repeats, channels


class Backbone(nn.Module):
    """EfficientRep (``stem``, ``ERBlock_2`` .. ``ERBlock_5``), or CSPBepBackbone with ``csp_e``."""

    def __init__(self, ch: list[int], n: list[int], block: type[nn.Module], csp_e: float | None) -> None:
        super().__init__()

        def stage(c_in: int, c_out: int, repeats: int) -> nn.Module:
            if csp_e is None:
                return RepBlock(c_in, c_out, repeats, block)
            return BepC3(c_in, c_out, repeats, csp_e, block)

        self.stem = block(3, ch[0], 3, 2)
        self.ERBlock_2 = nn.Sequential(block(ch[0], ch[1], 3, 2), stage(ch[1], ch[1], n[1]))
        self.ERBlock_3 = nn.Sequential(block(ch[1], ch[2], 3, 2), stage(ch[2], ch[2], n[2]))
        self.ERBlock_4 = nn.Sequential(block(ch[2], ch[3], 3, 2), stage(ch[3], ch[3], n[3]))
        sppf_act = "silu" if block is ConvWrapper else "relu"  # their CSP backbone: SPPF with ConvWrapper
        self.ERBlock_5 = nn.Sequential(block(ch[3], ch[4], 3, 2), stage(ch[4], ch[4], n[4]),
                                       SimSPPF(ch[4], ch[4], 5, act=sppf_act))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.ERBlock_2(self.stem(x))
        c3 = self.ERBlock_3(x)  # /8
        c4 = self.ERBlock_4(c3)  # /16
        return c3, c4, self.ERBlock_5(c4)  # /32


class RepPAN(nn.Module):
    """RepPANNeck (RepBlocks), or CSPRepPANNeck (BepC3) with ``csp_e``; returns every named map."""

    def __init__(self, ch: list[int], n: list[int], block: type[nn.Module], csp_e: float | None) -> None:
        super().__init__()

        def stage(c_in: int, c_out: int, repeats: int) -> nn.Module:
            if csp_e is None:
                return RepBlock(c_in, c_out, repeats, block)
            return BepC3(c_in, c_out, repeats, csp_e, block)

        # Registration order is theirs, so state_dict() lists the keys in their order.
        self.Rep_p4 = stage(ch[3] + ch[5], ch[5], n[5])
        self.Rep_p3 = stage(ch[2] + ch[6], ch[6], n[6])
        self.Rep_n3 = stage(ch[6] + ch[7], ch[8], n[7])
        self.Rep_n4 = stage(ch[5] + ch[9], ch[10], n[8])
        self.reduce_layer0 = ConvBNAct(ch[4], ch[5], 1)
        self.upsample0 = Transpose(ch[5], ch[5])
        self.reduce_layer1 = ConvBNAct(ch[5], ch[6], 1)
        self.upsample1 = Transpose(ch[6], ch[6])
        self.downsample2 = ConvBNAct(ch[6], ch[7], 3, 2)
        self.downsample1 = ConvBNAct(ch[8], ch[9], 3, 2)

    def forward(self, backbone_maps: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        f: dict[str, torch.Tensor] = {}
        f["ERBlock_3"], f["ERBlock_4"], f["ERBlock_5"] = backbone_maps
        # Top-down (FPN).
        f["reduce_layer0"] = self.reduce_layer0(f["ERBlock_5"])  # /32
        f["upsample0"] = self.upsample0(f["reduce_layer0"])  # /16
        f["Rep_p4"] = self.Rep_p4(torch.cat((f["upsample0"], f["ERBlock_4"]), 1))  # /16
        f["reduce_layer1"] = self.reduce_layer1(f["Rep_p4"])  # /16
        f["upsample1"] = self.upsample1(f["reduce_layer1"])  # /8
        f["Rep_p3"] = self.Rep_p3(torch.cat((f["upsample1"], f["ERBlock_3"]), 1))  # /8
        # Bottom-up (PAN).
        f["downsample2"] = self.downsample2(f["Rep_p3"])  # /16
        f["Rep_n3"] = self.Rep_n3(torch.cat((f["downsample2"], f["reduce_layer1"]), 1))  # /16
        f["downsample1"] = self.downsample1(f["Rep_n3"])  # /32
        f["Rep_n4"] = self.Rep_n4(torch.cat((f["downsample1"], f["reduce_layer0"]), 1))  # /32
        return f


class YOLOv6(nn.Module):
    """YOLOv6 detection model. ``forward`` -> ``DetectorOutput``; ``inference_raw`` / ``predict`` decode it."""

    def __init__(self, size: str = "yolov6s", num_classes: int = 80, *, taps: TapSet | None = None) -> None:
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"unknown YOLOv6 size {size!r}: expected one of {', '.join(SIZES)}")
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        spec = SIZES[size]
        self.size, self.spec, self.num_classes = size, spec, num_classes
        self.strides: tuple[int, ...] = STRIDES
        repeats, ch = scaled(spec)
        block = ConvWrapper if spec.conv_silu else RepVGGBlock
        self.backbone = Backbone(ch, repeats, block, spec.csp_e)
        self.neck = RepPAN(ch, repeats, block, spec.csp_e)
        self.detect = EffiDeHead(num_classes, (ch[6], ch[8], ch[10]), STRIDES, spec.reg_max)
        self.taps = TAP_SETS[DEFAULT_TAPS] if taps is None else taps
        _check_taps(self.taps)
        self.tap_names = {p.stride: (p.teacher, p.student) for p in self.taps.pairs}
        self.tap_channels: dict[int, tuple[int, int]] = {
            s: (ch[TAP_POINTS[t][1]], ch[TAP_POINTS[st][1]]) for s, (t, st) in self.tap_names.items()
        }
        self.head_input_channels = {s: ch[TAP_POINTS[name][1]] for s, name in HEAD_INPUTS.items()}

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        """images (B, 3, H, W) RGB in [0, 1], H and W multiples of 32 -> raw head output and neck taps."""
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] % 32 or images.shape[3] % 32:
            raise ValueError(f"images: expected (B, 3, H, W) with H, W multiples of 32, got {tuple(images.shape)}")
        feats = self.neck(self.backbone(images))
        head_inputs = {s: feats[HEAD_INPUTS[s]] for s in STRIDES}
        head = self.detect([head_inputs[s] for s in STRIDES])
        teachers = {s: feats[t] for s, (t, _student) in self.tap_names.items()}
        students = {s: feats[st] for s, (_teacher, st) in self.tap_names.items()}
        return DetectorOutput(head, teachers, students, head_inputs)

    def forward_head(self, head_inputs: dict[int, torch.Tensor]) -> YOLOv6HeadOutput:
        """The head alone on other ``{stride: (B, C, H, W)}`` maps, as ``forward(images).head`` (LGD's hook)."""
        return self.detect([head_inputs[s] for s in STRIDES])

    def inference_raw(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N, 5 + nc): cx, cy, w, h in input pixels, objectness 1, class scores (their eval output).

        Uses the module's current mode; call ``model.eval()`` first, as for any BatchNorm network.
        """
        return decode(self.detect, self.forward(images).head)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, *, conf: float = 0.03, iou: float = 0.65,
                max_det: int = 300) -> list[Detections]:
        """Per image: boxes (K, 4) xyxy input px, scores (K,), classes (K,) int64.

        Their ``utils/nms.py`` ``non_max_suppression`` (YOLOv5's, best class per box, class offsets of
        4096 px, at most 30000 candidates); defaults are their trainer's evaluation (conf 0.03, iou 0.65).
        """
        return non_max_suppression(self.inference_raw(images), conf=conf, iou=iou, max_det=max_det)

    def fuse(self) -> YOLOv6:
        """Deploy form, in place: RepVGG blocks re-parameterised (their ``switch_to_deploy``) and every
        conv unit's BatchNorm folded (their ``fuse_model``). Outputs equal the eval-mode model's."""
        fuse_blocks(self)
        return self


def _check_taps(taps: TapSet) -> None:
    for pair in taps.pairs:
        for role, name in (("teacher", pair.teacher), ("student", pair.student)):
            if TAP_POINTS.get(name, (None,))[0] != pair.stride:
                choices = [n for n, (s, _) in TAP_POINTS.items() if s == pair.stride]
                raise ValueError(f"taps {taps.name}: {role} {name!r} is not a stride-{pair.stride} YOLOv6 feature; "
                                 f"expected one of {choices}")
    if taps.strides != STRIDES or len(taps.pairs) != len(STRIDES):
        raise ValueError(f"taps {taps.name}: expected one pair at each of strides {STRIDES}")


def build_yolov6(size: str, num_classes: int, **kwargs) -> YOLOv6:
    """A freshly initialised YOLOv6 of ``size`` (``yolov6n`` ... ``yolov6l``) for ``num_classes`` classes."""
    return YOLOv6(size, num_classes, **kwargs)
