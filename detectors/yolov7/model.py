"""YOLOv3(-SPP), YOLOv4-CSP and YOLOv7(-tiny, x) from WongKinYiu/yolov7, built from the tables of ``layers.py``.

``self.model[i]`` is upstream's layer i, so ``state_dict()`` keys and shapes equal those of their
``models.yolo.Model`` for the same config and class count (``model.0.conv.weight`` ...
``model.105.im.2.implicit``, buffers ``anchors`` and ``anchor_grid`` included). The forward walks the rows,
keeping the outputs later rows read; the taps (``taps.py``) and the Detect inputs are read from the same
outputs by layer index, inside this file only.
"""

from __future__ import annotations

import torch
from torch import nn

from detectors.api import Detections, DetectorOutput, TapSet
from detectors.ops.nms import non_max_suppression
from detectors.yolov7.blocks import (
    MP,
    SP,
    SPP,
    SPPCSPC,
    Bottleneck,
    BottleneckCSPB,
    BottleneckCSPC,
    Concat,
    Conv,
    RepConv,
)
from detectors.yolov7.head import STRIDES, Detect, IDetect
from detectors.yolov7.layers import TABLES, Row, Table
from detectors.yolov7.taps import default_tap_set


def _build_row(row: Row, c_in: int | list[int], act: str, num_classes: int,
               anchors: tuple[tuple[float, ...], ...]) -> tuple[nn.Module, int]:
    """The module of one row and its output channels."""
    block, args = row.block, row.args
    if block in ("conv", "repconv"):
        c_out, k, s = args
        cls = Conv if block == "conv" else RepConv
        return cls(c_in, c_out, k, s, act=act), c_out
    if block == "bottleneck":
        c_out, shortcut = args
        layers = [Bottleneck(c_in, c_out, shortcut) for _ in range(row.n)]  # upstream repeats the same args
        return (layers[0] if row.n == 1 else nn.Sequential(*layers)), c_out
    if block in ("csp_b", "csp_c"):
        cls = BottleneckCSPB if block == "csp_b" else BottleneckCSPC
        return cls(c_in, args[0], row.n), args[0]
    if block in ("sppcspc", "spp"):
        cls = SPPCSPC if block == "sppcspc" else SPP
        return cls(c_in, args[0]), args[0]
    if block == "mp":
        return MP(), c_in
    if block == "sp":
        return SP(args[0]), c_in
    if block == "upsample":
        return nn.Upsample(None, 2, "nearest"), c_in
    if block == "concat":
        return Concat(1), sum(c_in)
    if block in ("detect", "idetect"):
        cls = Detect if block == "detect" else IDetect
        return cls(num_classes, c_in, anchors, STRIDES), 0
    raise ValueError(f"layer table: unknown block {block!r}")


class YOLOv7Family(nn.Module):
    """One of the yolov7 repository's anchor-based detectors. ``forward`` -> ``DetectorOutput``."""

    def __init__(self, size: str = "yolov7", num_classes: int = 80, *, taps: TapSet | None = None) -> None:
        super().__init__()
        if size not in TABLES:
            raise ValueError(f"unknown size {size!r}: expected one of {', '.join(TABLES)}")
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        table: Table = TABLES[size]
        self.size = size
        self.num_classes = num_classes
        self.strides: tuple[int, ...] = STRIDES

        layers: list[nn.Module] = []
        channels: list[int] = []
        for i, row in enumerate(table.rows):
            src = row.src
            if isinstance(src, tuple):
                c_in: int | list[int] = [channels[j] for j in src]
            else:
                c_in = 3 if i == 0 else channels[src]
            module, c_out = _build_row(row, c_in, table.act, num_classes, table.anchors)
            layers.append(module)
            channels.append(c_out)
        self.model = nn.ModuleList(layers)  # same keys as upstream's nn.Sequential
        self._sources: list[int | tuple[int, ...]] = [row.src for row in table.rows]
        self._head_layers = table.head_layers

        taps = default_tap_set(size) if taps is None else taps
        self.taps_name = taps.name  # plain values only on the module: its pickle stays upstream-like
        if taps.strides != self.strides or len(taps.pairs) != len(self.strides):
            raise ValueError(f"taps {taps.name}: expected one pair at each of strides {self.strides}")
        layer_of = {}
        for pair in taps.pairs:
            for role, name in (("teacher", pair.teacher), ("student", pair.student)):
                level = table.maps.get(name)
                if level is None or not name.endswith(str(pair.stride.bit_length() - 1)):
                    raise ValueError(
                        f"taps {taps.name}: {role} {name!r} is not a stride-{pair.stride} map of {size}; expected "
                        f"one of {[m for m in table.maps if m.endswith(str(pair.stride.bit_length() - 1))]}")
                layer_of[name] = level
        self.tap_layers = {p.stride: (layer_of[p.teacher], layer_of[p.student]) for p in taps.pairs}
        self.tap_channels: dict[int, tuple[int, int]] = {
            s: (channels[t], channels[st]) for s, (t, st) in self.tap_layers.items()}
        self.head_input_channels = {s: channels[i] for s, i in zip(self.strides, self._head_layers, strict=True)}
        # Outputs the forward keeps: every layer read by a later row, a tap or the head.
        wanted = {j for src in self._sources[1:] for j in ((src,) if isinstance(src, int) else src)}
        wanted |= {j for pair in self.tap_layers.values() for j in pair}
        self._keep = frozenset(wanted)
        self.register_buffer("stride", torch.tensor([float(s) for s in self.strides]), persistent=False)

    @property
    def detect(self) -> Detect:
        return self.model[-1]

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        """images (B, 3, H, W), H and W multiples of 32 -> raw head maps plus the neck taps, in any mode."""
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] % 32 or images.shape[3] % 32:
            raise ValueError(f"images: expected (B, 3, H, W) with H, W multiples of 32, got {tuple(images.shape)}")
        kept: dict[int, torch.Tensor] = {}
        x = images
        last = len(self.model) - 1
        for i, (layer, src) in enumerate(zip(self.model, self._sources, strict=True)):
            if i == last:
                break
            if i > 0:
                x = [kept[j] for j in src] if isinstance(src, tuple) else (x if src == i - 1 else kept[src])
            x = layer(x)
            if i in self._keep:
                kept[i] = x
        head_inputs = {s: kept[i] for s, i in zip(self.strides, self._head_layers, strict=True)}
        head_maps = self.detect([head_inputs[s] for s in self.strides])
        teachers = {s: kept[t] for s, (t, _student) in self.tap_layers.items()}
        students = {s: kept[st] for s, (_teacher, st) in self.tap_layers.items()}
        return DetectorOutput(head_maps, teachers, students, head_inputs)

    def forward_head(self, head_inputs: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        """The head alone on maps shaped like ``head_inputs``: the raw per-level maps, as ``forward(images).head``."""
        return self.detect([head_inputs[s] for s in self.strides])

    def inference_raw(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N, 5 + nc): xywh in input pixels, sigmoid objectness and class scores (upstream's eval output).

        Uses the module's current mode; call ``model.eval()`` first, as for any BatchNorm network.
        """
        return self.detect.decode(self.forward(images).head)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, *, conf: float = 0.25, iou: float = 0.45,
                max_det: int = 300) -> list[Detections]:
        """Per image: boxes (K, 4) xyxy input px, scores (K,), classes (K,) int64, after class-aware NMS.

        As their ``non_max_suppression``: score = objectness * class probability, except with one class,
        where the score is the objectness alone (their comment: the class output is not trained then).
        """
        raw = self.inference_raw(images)
        if self.num_classes == 1:
            raw = torch.cat((raw[..., :5], torch.ones_like(raw[..., 5:])), -1)
        return non_max_suppression(raw, conf=conf, iou=iou, max_det=max_det)

    @torch.no_grad()
    def fuse(self) -> YOLOv7Family:
        """Deployment form (upstream's ``Model.fuse``): Conv+BN folded, RepConv re-parameterised, IDetect's
        implicit terms folded into its convs. Eval-mode outputs are unchanged; the model can no longer train
        the same way (no BatchNorm), so fuse a copy."""
        for module in list(self.modules()):
            if isinstance(module, (Conv, RepConv, Detect)):
                module.fuse()
        return self


def build_yolov7_family(size: str, num_classes: int, **kwargs) -> YOLOv7Family:
    """A freshly initialised detector of ``size`` (``yolov3`` ... ``yolov7x``) for ``num_classes`` classes."""
    return YOLOv7Family(size, num_classes, **kwargs)
