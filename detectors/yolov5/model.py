"""YOLOv5 v6/v7.0 (n/s/m/l/x) with the neck taps MSSD needs.

The network is built explicitly, layer by layer, in Ultralytics' order, so that ``self.model[i]`` is
their layer i and ``state_dict()`` keys and shapes equal those of their ``DetectionModel`` for the same
size and class count (``model.0.conv.weight`` ... ``model.24.m.2.bias``, ``model.24.anchors``).
Sizes differ only by two numbers, the depth and width multiples of their ``yolov5{n,s,m,l,x}.yaml``.

Layer map (channels for width 1.0, stride in brackets; teacher/student as in the default tap set
``fpn_to_pan``, the others are in ``family.py``)::

    0  Conv 64 6x6/2 [2]          10 Conv 512 1x1 [32]         <- teacher, stride 32
    1  Conv 128 3x3/2 [4]         11 Upsample x2 [16]
    2  C3 128 x3 [4]              12 Concat(11, 6) [16]
    3  Conv 256 3x3/2 [8]         13 C3 512 x3, no shortcut    <- teacher, stride 16
    4  C3 256 x6 [8]   (P3)       14 Conv 256 1x1 [16]
    5  Conv 512 3x3/2 [16]        15 Upsample x2 [8]           <- teacher, stride 8
    6  C3 512 x9 [16]  (P4)       16 Concat(15, 4) [8]
    7  Conv 1024 3x3/2 [32]       17 C3 256 x3 [8]             <- student / Detect input, stride 8
    8  C3 1024 x3 [32]            18 Conv 256 3x3/2; 19 Concat(18, 14); 20 C3 512 x3 [16]  <- student 16
    9  SPPF 1024 k5 [32]          21 Conv 512 3x3/2; 22 Concat(21, 10); 23 C3 1024 x3 [32] <- student 32
                                  24 Detect(17, 20, 23)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from detectors.api import Detections, DetectorOutput, TapSet
from detectors.ops.nms import non_max_suppression
from detectors.yolov5.blocks import C3, SPPF, Concat, Conv, make_divisible
from detectors.yolov5.head import DEFAULT_ANCHORS, Detect
from detectors.yolov5.taps import DEFAULT_TAPS, TAP_SETS


@dataclass(frozen=True)
class YOLOv5Size:
    depth: float  # multiplies the number of Bottlenecks in each C3
    width: float  # multiplies every channel count (rounded up to a multiple of 8)


SIZES: dict[str, YOLOv5Size] = {
    "yolov5n": YOLOv5Size(0.33, 0.25),
    "yolov5s": YOLOv5Size(0.33, 0.50),
    "yolov5m": YOLOv5Size(0.67, 0.75),
    "yolov5l": YOLOv5Size(1.00, 1.00),
    "yolov5x": YOLOv5Size(1.33, 1.25),
}

# Layers a tap set may name (family.py), by the stride of their output. The Detect inputs 17/20/23 are
# the PAN outputs; tap sets pair any two of these at the same stride.
TAP_LAYERS: dict[int, int] = {4: 8, 6: 16, 9: 32, 10: 32, 13: 16, 14: 16, 15: 8, 17: 8, 20: 16, 23: 32}
HEAD_INPUT_LAYERS: dict[int, int] = {8: 17, 16: 20, 32: 23}


def _depth(n: int, multiple: float) -> int:
    """Bottlenecks in a C3: YOLOv5 scales repeats > 1 and keeps at least one."""
    return max(round(n * multiple), 1) if n > 1 else n


class YOLOv5(nn.Module):
    """YOLOv5 detection model. ``forward`` -> ``DetectorOutput``; ``inference_raw`` / ``predict`` decode it."""

    def __init__(
        self,
        size: str = "yolov5s",
        num_classes: int = 80,
        *,
        anchors: tuple[tuple[float, ...], ...] = DEFAULT_ANCHORS,
        taps: TapSet | None = None,
        backbone: nn.Module | None = None,
    ) -> None:
        """``backbone``: None for YOLOv5's CSPDarknet (layers 0-9); otherwise a module mapping the images to
        ``[C3, C4, C5]`` maps at strides 8/16/32, channels ``backbone.out_channels[stride]`` (e.g.
        ``detectors.backbones.convnext.ConvNeXt``). It then replaces layers 0-9, which stay as parameterless
        placeholders so that the neck and head keep Ultralytics' indices and keys (``model.10`` ... ``model.24``);
        1x1 Convs (``backbone_proj.{0,1,2}``) bring its channels to the neck's where they differ."""
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"unknown YOLOv5 size {size!r}: expected one of {', '.join(SIZES)}")
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        self.size = size
        self.num_classes = num_classes
        gd, gw = SIZES[size].depth, SIZES[size].width

        def ch(c: int) -> int:
            return make_divisible(c * gw, 8)

        def n(k: int) -> int:
            return _depth(k, gd)

        self.strides: tuple[int, ...] = (8, 16, 32)
        # Ultralytics' layer order; comments give output channels at width 1.0 and the stride.
        layers = [
            Conv(3, ch(64), 6, 2, 2),  # 0: 64, /2
            Conv(ch(64), ch(128), 3, 2),  # 1: 128, /4
            C3(ch(128), ch(128), n(3)),  # 2
            Conv(ch(128), ch(256), 3, 2),  # 3: 256, /8
            C3(ch(256), ch(256), n(6)),  # 4: P3
            Conv(ch(256), ch(512), 3, 2),  # 5: 512, /16
            C3(ch(512), ch(512), n(9)),  # 6: P4
            Conv(ch(512), ch(1024), 3, 2),  # 7: 1024, /32
            C3(ch(1024), ch(1024), n(3)),  # 8
            SPPF(ch(1024), ch(1024), 5),  # 9: P5
            Conv(ch(1024), ch(512), 1, 1),  # 10: 512, /32
            nn.Upsample(None, 2, "nearest"),  # 11: /16
            Concat(1),  # 12: cat(11, 6) -> 1024
            C3(ch(1024), ch(512), n(3), shortcut=False),  # 13: 512, /16
            Conv(ch(512), ch(256), 1, 1),  # 14: 256, /16
            nn.Upsample(None, 2, "nearest"),  # 15: /8
            Concat(1),  # 16: cat(15, 4) -> 512
            C3(ch(512), ch(256), n(3), shortcut=False),  # 17: 256, /8 (P3 out)
            Conv(ch(256), ch(256), 3, 2),  # 18: 256, /16
            Concat(1),  # 19: cat(18, 14) -> 512
            C3(ch(512), ch(512), n(3), shortcut=False),  # 20: 512, /16 (P4 out)
            Conv(ch(512), ch(512), 3, 2),  # 21: 512, /32
            Concat(1),  # 22: cat(21, 10) -> 1024
            C3(ch(1024), ch(1024), n(3), shortcut=False),  # 23: 1024, /32 (P5 out)
            Detect(num_classes, (ch(256), ch(512), ch(1024)), anchors, self.strides),  # 24
        ]
        self.backbone = backbone
        if backbone is not None:
            layers[:10] = [nn.Identity() for _ in range(10)]
            neck_in = (ch(256), ch(512), ch(1024))  # what layers 4 / 6 / 9 would give the neck
            self.backbone_proj = nn.ModuleList(
                Conv(backbone.out_channels[s], c, 1, 1) if backbone.out_channels[s] != c else nn.Identity()
                for s, c in zip(self.strides, neck_in, strict=True)
            )
        # A ModuleList, not a Sequential: the graph is not a chain (see forward); the keys are the same.
        self.model = nn.ModuleList(layers)

        # Output channels of the layers that can be tapped (Upsample keeps its input's channels).
        out_channels = {4: ch(256), 6: ch(512), 9: ch(1024), 10: ch(512), 13: ch(512), 14: ch(256),
                        15: ch(256), 17: ch(256), 20: ch(512), 23: ch(1024)}
        taps = TAP_SETS[DEFAULT_TAPS] if taps is None else taps
        self.taps_name = taps.name  # plain values only on the module: its pickle stays Ultralytics-like
        for pair in taps.pairs:
            for role, layer in (("teacher", pair.teacher), ("student", pair.student)):
                if TAP_LAYERS.get(int(layer)) != pair.stride:
                    raise ValueError(
                        f"taps {taps.name}: {role} layer {layer} is not a stride-{pair.stride} feature; "
                        f"expected one of layers {[i for i, s in TAP_LAYERS.items() if s == pair.stride]}"
                    )
        if taps.strides != self.strides or len(taps.pairs) != len(self.strides):
            raise ValueError(f"taps {taps.name}: expected one pair at each of strides {self.strides}")
        self.tap_layers = {p.stride: (int(p.teacher), int(p.student)) for p in taps.pairs}
        self.tap_channels: dict[int, tuple[int, int]] = {
            s: (out_channels[t], out_channels[st]) for s, (t, st) in self.tap_layers.items()
        }
        self.head_input_channels = {s: out_channels[layer] for s, layer in HEAD_INPUT_LAYERS.items()}
        # Ultralytics keeps the strides as a float tensor on the model and on Detect; not in the state dict.
        self.register_buffer("stride", torch.tensor([float(s) for s in self.strides]), persistent=False)

    @property
    def detect(self) -> Detect:
        return self.model[24]

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        """images (B, 3, H, W), H and W multiples of 32 -> raw head maps plus the neck taps, in any mode."""
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] % 32 or images.shape[3] % 32:
            # Otherwise the first Concat fails with a shape error far from the cause.
            raise ValueError(f"images: expected (B, 3, H, W) with H, W multiples of 32, got {tuple(images.shape)}")
        m = self.model
        if self.backbone is None:
            # Backbone (CSPDarknet); comments give the output stride.
            x = m[1](m[0](images))  # /4
            x = m[3](m[2](x))  # /8
            p3 = m[4](x)  # /8
            p4 = m[6](m[5](p3))  # /16
            p5 = m[9](m[8](m[7](p4)))  # /32, after SPPF
        else:
            p3, p4, p5 = (proj(f) for proj, f in zip(self.backbone_proj, self.backbone(images), strict=True))
        # Top-down path (FPN).
        f10 = m[10](p5)  # /32
        f11 = m[11](f10)  # /16
        f13 = m[13](m[12]([f11, p4]))  # /16
        f14 = m[14](f13)  # /16
        f15 = m[15](f14)  # /8
        # Bottom-up path (PAN): the three Detect inputs.
        out8 = m[17](m[16]([f15, p3]))  # /8
        out16 = m[20](m[19]([m[18](out8), f14]))  # /16
        out32 = m[23](m[22]([m[21](out16), f10]))  # /32
        head_maps = m[24]([out8, out16, out32])

        feats = {4: p3, 6: p4, 9: p5, 10: f10, 13: f13, 14: f14, 15: f15, 17: out8, 20: out16, 23: out32}
        teachers = {s: feats[t] for s, (t, _student) in self.tap_layers.items()}
        students = {s: feats[st] for s, (_teacher, st) in self.tap_layers.items()}
        return DetectorOutput(head_maps, teachers, students, {8: out8, 16: out16, 32: out32})

    def forward_head(self, head_inputs: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        """The Detect head on other maps shaped like ``head_inputs`` (``{stride: (B, C, H, W)}``): the raw
        per-level maps, as ``forward(images).head``. LGD (``detectors/comparators/lgd.py``) runs it on its
        label-guided teacher maps."""
        return self.detect([head_inputs[s] for s in self.strides])

    def inference_raw(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N, 5 + nc): xywh in input pixels, sigmoid objectness and class scores (Ultralytics' order).

        Uses the module's current mode; call ``model.eval()`` first, as for any BatchNorm network.
        """
        return self.detect.decode(self.forward(images).head)

    @torch.no_grad()
    def predict(
        self, images: torch.Tensor, *, conf: float = 0.25, iou: float = 0.45, max_det: int = 300
    ) -> list[Detections]:
        """Per image: boxes (K, 4) xyxy input px, scores (K,), classes (K,) int64, after class-aware NMS."""
        return non_max_suppression(self.inference_raw(images), conf=conf, iou=iou, max_det=max_det)


def build_yolov5(size: str, num_classes: int, **kwargs) -> YOLOv5:
    """A freshly initialised YOLOv5 of ``size`` (``yolov5n`` ... ``yolov5x``) for ``num_classes`` classes."""
    return YOLOv5(size, num_classes, **kwargs)
