"""YOLOv5's anchor-based ``Detect`` head (v6/v7.0): one 1x1 conv per level, 3 anchors per cell.

State-dict compatible with Ultralytics: ``m.{0,1,2}.weight/bias`` and the ``anchors`` buffer of shape
(levels, anchors, 2) **in grid units** (pixels divided by the level's stride), as their
``DetectionModel`` stores it after build. ``stride`` is a non-persistent buffer: it follows ``.to()``
but is not in the state dict (theirs is a plain attribute, also absent from it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

# Default COCO anchors in input pixels, (w, h) pairs per level P3/8, P4/16, P5/32.
DEFAULT_ANCHORS: tuple[tuple[float, ...], ...] = (
    (10, 13, 16, 30, 33, 23),
    (30, 61, 62, 45, 59, 119),
    (116, 90, 156, 198, 373, 326),
)
DEFAULT_STRIDES: tuple[int, ...] = (8, 16, 32)


class Detect(nn.Module):
    """Per-level raw maps (B, na, H, W, 5 + nc) and their decoding into input-pixel xywh boxes."""

    stride: torch.Tensor
    anchors: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        in_channels: Sequence[int],
        anchors: Sequence[Sequence[float]] = DEFAULT_ANCHORS,
        strides: Sequence[int] = DEFAULT_STRIDES,
    ) -> None:
        super().__init__()
        if len(anchors) != len(in_channels) or len(strides) != len(in_channels):
            raise ValueError(
                f"Detect: expected one anchor set and stride per input level ({len(in_channels)}), "
                f"got {len(anchors)} anchor sets and {len(strides)} strides"
            )
        self.nc = num_classes
        self.no = num_classes + 5  # outputs per anchor: x, y, w, h, obj, classes
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        stride = torch.tensor([float(s) for s in strides])
        self.register_buffer("stride", stride, persistent=False)
        pixel_anchors = torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2)
        self.register_buffer("anchors", pixel_anchors / stride.view(-1, 1, 1))  # grid units
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in in_channels)
        self._initialize_biases()

    def _initialize_biases(self) -> None:
        """Ultralytics' prior (Focal Loss paper, sec 3.3): ~8 objects per 640 image, class prob ~0.6/nc."""
        for conv, s in zip(self.m, self.stride.tolist(), strict=True):
            with torch.no_grad():
                b = conv.bias.view(self.na, self.no)
                b[:, 4] += math.log(8 / (640 / s) ** 2)
                b[:, 5:] += math.log(0.6 / (self.nc - 0.99999))

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Raw maps per level, (B, C_i, H, W) -> (B, na, H, W, no): Ultralytics' training output."""
        maps = []
        for conv, x in zip(self.m, features, strict=True):
            y = conv(x)
            b, _, h, w = y.shape
            maps.append(y.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous())
        return maps

    def decode(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, N, no) with N = sum(na * H * W) in level, anchor, row, column order, as Ultralytics' eval output.

        xy = (2 * sigmoid - 0.5 + cell) * stride and wh = (2 * sigmoid)^2 * anchor (pixels); objectness and
        class scores are sigmoids. The grid is rebuilt every call (cheap), which keeps this traceable.
        """
        out = []
        for i, p in enumerate(maps):
            b, na, h, w, no = p.shape
            ys = torch.arange(h, device=p.device, dtype=p.dtype)
            xs = torch.arange(w, device=p.device, dtype=p.dtype)
            yv, xv = torch.meshgrid(ys, xs, indexing="ij")
            grid = torch.stack((xv, yv), 2).view(1, 1, h, w, 2) - 0.5  # (1, 1, H, W, 2)
            anchor_grid = (self.anchors[i] * self.stride[i]).view(1, na, 1, 1, 2).to(p.dtype)  # pixels
            xy, wh, conf = p.sigmoid().split((2, 2, no - 4), 4)
            xy = (xy * 2 + grid) * self.stride[i].to(p.dtype)
            wh = (wh * 2) ** 2 * anchor_grid
            out.append(torch.cat((xy, wh, conf), 4).view(b, na * h * w, no))
        return torch.cat(out, 1)
