"""The anchor-based heads of WongKinYiu/yolov7's ``models/yolo.py``: ``Detect`` (YOLOv3, YOLOv4-CSP) and
``IDetect`` (YOLOv7: ``Detect`` with YOLOR's implicit knowledge around each output conv).

Interface (agreed with the loss, ``detectors/yolov7/loss.py``; it reads only these):

- ``head.nl`` levels (3), ``head.na`` anchors per cell (3), ``head.nc`` classes, ``head.no = nc + 5``;
- ``head.stride``: float tensor (nl,), 8 / 16 / 32 (a non-persistent buffer: follows ``.to()``, not in the
  state dict, as upstream's class attribute is not);
- ``head.anchors``: float tensor (nl, na, 2), anchor (w, h) **in grid units** (pixels / stride): upstream's
  ``anchors`` buffer after ``Model.__init__`` divides it by the strides;
- ``head.anchor_grid``: (nl, 1, na, 1, 1, 2), the same anchors **in pixels** (upstream's second buffer, used
  by the decoder; kept for their state-dict keys);
- training output (``DetectorOutput.head``, in any mode): a list of nl raw maps (B, na, H, W, 5 + nc), level
  order stride 8, 16, 32, channel order x, y, w, h, obj, classes, before any sigmoid. For ``IDetect`` the
  maps are taken after its implicit add (``ia``, on the conv's input) and multiply (``im``, on its output),
  exactly upstream's training output;
- the model exposes the head as ``model.detect`` (``model.model[-1]``).

State-dict keys equal upstream's (``m.{i}.weight/bias``, ``anchors``, ``anchor_grid``, and for ``IDetect``
``ia.{i}.implicit`` (1, C_in, 1, 1) and ``im.{i}.implicit`` (1, na * no, 1, 1)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

# Anchors in input pixels, (w, h) pairs per level P3/8, P4/16, P5/32: YOLOv3's and YOLOv7-tiny's (COCO
# k-means of the Darknet era) and the set YOLOv4-CSP and YOLOv7 use (re-clustered for 640 px).
ANCHORS_V3: tuple[tuple[float, ...], ...] = (
    (10, 13, 16, 30, 33, 23),
    (30, 61, 62, 45, 59, 119),
    (116, 90, 156, 198, 373, 326),
)
ANCHORS_P5: tuple[tuple[float, ...], ...] = (
    (12, 16, 19, 36, 40, 28),
    (36, 75, 76, 55, 72, 146),
    (142, 110, 192, 243, 459, 401),
)
STRIDES: tuple[int, ...] = (8, 16, 32)


class ImplicitA(nn.Module):
    """YOLOR's implicit addition: a learnt per-channel offset, initialised N(0, 0.02)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.empty(1, channels, 1, 1))
        nn.init.normal_(self.implicit, mean=0.0, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit + x


class ImplicitM(nn.Module):
    """YOLOR's implicit multiplication: a learnt per-channel scale, initialised N(1, 0.02)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.empty(1, channels, 1, 1))
        nn.init.normal_(self.implicit, mean=1.0, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit * x


class Detect(nn.Module):
    """One 1x1 output conv per level; raw maps (B, na, H, W, no) and their decoding to input-pixel xywh."""

    stride: torch.Tensor
    anchors: torch.Tensor
    anchor_grid: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        in_channels: Sequence[int],
        anchors: Sequence[Sequence[float]] = ANCHORS_V3,
        strides: Sequence[int] = STRIDES,
    ) -> None:
        super().__init__()
        if len(anchors) != len(in_channels) or len(strides) != len(in_channels):
            raise ValueError(
                f"{type(self).__name__}: expected one anchor set and stride per input level "
                f"({len(in_channels)}), got {len(anchors)} anchor sets and {len(strides)} strides"
            )
        self.nc = num_classes
        self.no = num_classes + 5  # x, y, w, h, obj, classes
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        stride = torch.tensor([float(s) for s in strides])
        self.register_buffer("stride", stride, persistent=False)
        pixels = torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2)
        self.register_buffer("anchors", pixels / stride.view(-1, 1, 1))  # grid units
        self.register_buffer("anchor_grid", pixels.clone().view(self.nl, 1, -1, 1, 1, 2))  # pixels
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in in_channels)
        self._initialize_biases([float(s) for s in strides])

    def _initialize_biases(self, strides: list[float]) -> None:
        """Upstream's prior (Focal Loss paper, sec 3.3): ~8 objects per 640 image; class prob 0.6 / (nc - 0.99)."""
        for conv, s in zip(self.m, strides, strict=True):  # plain floats: also on the meta device
            with torch.no_grad():
                b = conv.bias.view(self.na, self.no)
                b[:, 4] += math.log(8 / (640 / s) ** 2)
                b[:, 5:] += math.log(0.6 / (self.nc - 0.99))

    def level(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Output conv of level i: (B, C_i, H, W) -> (B, na * no, H, W)."""
        return self.m[i](x)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Raw maps per level, (B, C_i, H, W) -> (B, na, H, W, no): upstream's training output."""
        maps = []
        for i, x in enumerate(features):
            y = self.level(i, x)
            b, _, h, w = y.shape
            maps.append(y.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous())
        return maps

    def decode(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, N, no), N = sum(na * H * W) in level, anchor, row, column order: upstream's eval output.

        xy = (2 * sigmoid - 0.5 + cell) * stride, wh = (2 * sigmoid)^2 * anchor_grid (pixels); objectness
        and class scores are sigmoids.
        """
        out = []
        for i, p in enumerate(maps):
            b, na, h, w, no = p.shape
            ys = torch.arange(h, device=p.device, dtype=p.dtype)
            xs = torch.arange(w, device=p.device, dtype=p.dtype)
            yv, xv = torch.meshgrid(ys, xs, indexing="ij")
            grid = torch.stack((xv, yv), 2).view(1, 1, h, w, 2)
            y = p.sigmoid()
            xy = (y[..., 0:2] * 2.0 - 0.5 + grid) * self.stride[i].to(p.dtype)
            wh = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[i].to(p.dtype)
            out.append(torch.cat((xy, wh, y[..., 4:]), 4).view(b, na * h * w, no))
        return torch.cat(out, 1)

    def fuse(self) -> None:
        """Nothing to fold in a plain Detect."""


class IDetect(Detect):
    """Detect with implicit knowledge: conv(x + ia) * im per level; ``fuse`` folds both into the conv."""

    def __init__(
        self,
        num_classes: int,
        in_channels: Sequence[int],
        anchors: Sequence[Sequence[float]] = ANCHORS_P5,
        strides: Sequence[int] = STRIDES,
    ) -> None:
        super().__init__(num_classes, in_channels, anchors, strides)
        self.ia = nn.ModuleList(ImplicitA(c) for c in in_channels)
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in in_channels)
        self.fused = False

    def level(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self.m[i](x)
        return self.im[i](self.m[i](self.ia[i](x)))

    @torch.no_grad()
    def fuse(self) -> None:
        """conv(x + a) * m = (W m) x + (W a + b) m: the implicit terms become the conv's weight and bias.

        The ``ia`` / ``im`` modules are then dropped (a deployed model has upstream's plain ``Detect``
        parameters, as their ``cfg/deploy/*.yaml`` builds it).
        """
        if self.fused:
            return
        for conv, ia, im in zip(self.m, self.ia, self.im, strict=True):
            w = conv.weight.view(conv.out_channels, -1)  # (na * no, C_in)
            conv.bias += (w @ ia.implicit.view(-1, 1)).view(-1)
            scale = im.implicit.view(-1)
            conv.bias *= scale
            conv.weight *= scale.view(-1, 1, 1, 1)
        del self.ia, self.im
        self.fused = True
