"""YOLOX's decoupled, anchor-free head and the decoding of its maps.

Per level: a 1 x 1 stem to ``256 * width`` channels, then two branches of two 3 x 3 convs: the
classification branch ends in ``cls_preds`` (nc logits), the regression branch in ``reg_preds`` (4 raw
box offsets) and ``obj_preds`` (1 objectness logit). Keys and shapes are those of Megvii's ``YOLOXHead``
(``stems.i``, ``cls_convs.i.j``, ``reg_convs.i.j``, ``cls_preds.i``, ``reg_preds.i``, ``obj_preds.i``).

Raw map channel order is Megvii's training order: ``[x, y, w, h, obj, cls_0 .. cls_{nc-1}]``. A cell
(i, j) of the level with stride s decodes to centre ``((raw_xy + (j, i)) * s)`` and size ``exp(raw_wh) * s``
in input pixels. Cells are flattened level by level (stride 8 first), row-major inside a level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from detectors.yolox.blocks import ConvBNAct, conv_block

# Prior probability of the class and objectness biases (Megvii: ``head.initialize_biases(1e-2)``),
# so that the first steps' BCE on ~8000 background cells does not swamp the loss (Focal Loss, sec 3.3).
PRIOR_PROB = 1e-2


class YOLOXHead(nn.Module):
    """Raw per-level maps (B, 5 + nc, H, W) from the three neck outputs."""

    def __init__(
        self, num_classes: int, width: float, in_channels: Sequence[int], strides: Sequence[int], depthwise: bool
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(strides)
        hidden = int(256 * width)
        conv = conv_block(depthwise)
        levels = range(len(in_channels))
        # Registration order is Megvii's, so state_dict() lists the keys in their order.
        self.cls_convs = nn.ModuleList(nn.Sequential(conv(hidden, hidden, 3), conv(hidden, hidden, 3)) for _ in levels)
        self.reg_convs = nn.ModuleList(nn.Sequential(conv(hidden, hidden, 3), conv(hidden, hidden, 3)) for _ in levels)
        self.cls_preds = nn.ModuleList(nn.Conv2d(hidden, num_classes, 1) for _ in levels)
        self.reg_preds = nn.ModuleList(nn.Conv2d(hidden, 4, 1) for _ in levels)
        self.obj_preds = nn.ModuleList(nn.Conv2d(hidden, 1, 1) for _ in levels)
        self.stems = nn.ModuleList(ConvBNAct(c, hidden, 1) for c in in_channels)
        with torch.no_grad():
            for conv_pred in (*self.cls_preds, *self.obj_preds):
                conv_pred.bias.fill_(-math.log((1 - PRIOR_PROB) / PRIOR_PROB))

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        maps = []
        for i, x in enumerate(features):
            x = self.stems[i](x)
            cls_feat = self.cls_convs[i](x)
            reg_feat = self.reg_convs[i](x)
            maps.append(torch.cat((self.reg_preds[i](reg_feat), self.obj_preds[i](reg_feat), self.cls_preds[i](cls_feat)), 1))
        return maps


def flatten_maps(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-level (B, C, H_l, W_l) -> (B, N, C), N = sum(H_l * W_l), stride 8 cells first, row-major."""
    return torch.cat([m.flatten(2) for m in maps], 2).permute(0, 2, 1)


def cell_grid(maps: Sequence[torch.Tensor], strides: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell offsets (N, 2) as (column, row) and cell strides (N,), in ``flatten_maps`` order."""
    offsets, cell_strides = [], []
    for m, s in zip(maps, strides, strict=True):
        h, w = m.shape[-2:]
        rows, cols = torch.meshgrid(
            torch.arange(h, device=m.device), torch.arange(w, device=m.device), indexing="ij"
        )
        offsets.append(torch.stack((cols, rows), -1).view(-1, 2))
        cell_strides.append(torch.full((h * w,), s, device=m.device))
    return torch.cat(offsets).to(maps[0].dtype), torch.cat(cell_strides).to(maps[0].dtype)


def decode_boxes(raw: torch.Tensor, offsets: torch.Tensor, cell_strides: torch.Tensor) -> torch.Tensor:
    """Raw offsets (..., N, 4) -> (cx, cy, w, h) input pixels: ``(xy + cell) * s``, ``exp(wh) * s``."""
    s = cell_strides[:, None]
    return torch.cat(((raw[..., :2] + offsets) * s, torch.exp(raw[..., 2:4]) * s), -1)


def decode(maps: Sequence[torch.Tensor], strides: Sequence[int]) -> torch.Tensor:
    """(B, N, 5 + nc): boxes (cx, cy, w, h) in input pixels, sigmoid objectness, sigmoid class scores.

    Equals Megvii's eval-mode ``YOLOXHead`` output with ``decode_in_inference`` bit for bit: same ops in
    the same order, and the sigmoids taken per level on contiguous (B, 1, H, W) and (B, nc, H, W)
    tensors as theirs are (torch's vectorised CPU sigmoid can differ in the last bit from its scalar
    tail loop, so a different memory layout changes the result by ~1e-9).
    """
    scored = [torch.cat((m[:, :4], m[:, 4:5].contiguous().sigmoid(), m[:, 5:].contiguous().sigmoid()), 1) for m in maps]
    out = flatten_maps(scored)
    offsets, cell_strides = cell_grid(maps, strides)
    return torch.cat((decode_boxes(out[..., :4], offsets, cell_strides), out[..., 4:]), -1)
