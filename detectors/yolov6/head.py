"""YOLOv6 0.2.1's Efficient Decoupled Head (``yolov6/models/effidehead.py``) and the decoding of its output.

Per level: a 1 x 1 SiLU ``stems.i``, then a classification branch (3 x 3 ``cls_convs.i`` -> 1 x 1
``cls_preds.i``, nc logits) and a regression branch (3 x 3 ``reg_convs.i`` -> 1 x 1 ``reg_preds.i``,
``4 * (reg_max + 1)`` values). Anchor-free, one point per cell at the cell centre (offset 0.5).

Regression: the distances (left, top, right, bottom) from the cell centre to the box sides, in units of
the level's stride. Without DFL (YOLOv6-N/T/S, ``reg_max`` 0) the 4 raw outputs are the distances; with DFL
(M/L, ``reg_max`` 16) each side is a softmax over 17 bins and its expectation (``proj_conv``, weights 0..16).

Keys and their order are theirs: ``proj`` and ``proj_conv`` (fixed, not trained) come first, then
``stems``, ``cls_convs``, ``reg_convs``, ``cls_preds``, ``reg_preds``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from detectors.yolov6.blocks import ConvBNAct

PRIOR_PROB = 1e-2  # class bias prior (their initialize_biases), as in Focal Loss sec 3.3
CELL_OFFSET = 0.5  # anchor point at the cell centre (grid_cell_offset)
PROJ_BINS = 17  # their Detect's default reg_max 16, + 1


@dataclass
class YOLOv6HeadOutput:
    """The head's raw output, as their training-mode ``Detect`` returns it.

    ``maps``: per level the stem outputs (B, C, H, W) (only their shapes are used, to place anchors);
    ``cls_scores``: (B, N, nc) sigmoid class scores; ``reg_distri``: (B, N, 4 * (reg_max + 1)) raw
    regression. N = sum of H * W over levels, stride 8 first, row-major inside a level. Not a list, so
    code that reads dense YOLO heads (objectness per level) refuses it rather than misreading it.
    """

    maps: list[torch.Tensor]
    cls_scores: torch.Tensor
    reg_distri: torch.Tensor


class EffiDeHead(nn.Module):
    def __init__(self, num_classes: int, in_channels: Sequence[int], strides: Sequence[int], reg_max: int) -> None:
        super().__init__()
        self.nc = num_classes
        self.reg_max = reg_max
        self.use_dfl = reg_max > 0
        self.strides = tuple(strides)
        # Fixed DFL projection (bins 0..16), parameters that never train. Their Detect is built without the
        # config's reg_max, so it always has 17 bins here, also in the sizes without DFL (which never use it).
        self.proj = nn.Parameter(torch.linspace(0, PROJ_BINS - 1, PROJ_BINS), requires_grad=False)
        self.proj_conv = nn.Conv2d(PROJ_BINS, 1, 1, bias=False)
        self.proj_conv.weight = nn.Parameter(self.proj.detach().clone().view(1, PROJ_BINS, 1, 1), requires_grad=False)
        self.stems = nn.ModuleList(ConvBNAct(c, c, 1, act="silu") for c in in_channels)
        self.cls_convs = nn.ModuleList(ConvBNAct(c, c, 3, act="silu") for c in in_channels)
        self.reg_convs = nn.ModuleList(ConvBNAct(c, c, 3, act="silu") for c in in_channels)
        self.cls_preds = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in in_channels)
        self.reg_preds = nn.ModuleList(nn.Conv2d(c, 4 * (reg_max + 1), 1) for c in in_channels)
        with torch.no_grad():  # their initialize_biases: zero weights, class prior, regression bias 1
            for conv in self.cls_preds:
                conv.weight.zero_()
                conv.bias.fill_(-math.log((1 - PRIOR_PROB) / PRIOR_PROB))
            for conv in self.reg_preds:
                conv.weight.zero_()
                conv.bias.fill_(1.0)

    def forward(self, features: Sequence[torch.Tensor]) -> YOLOv6HeadOutput:
        maps, cls_list, reg_list = [], [], []
        for i, x in enumerate(features):
            x = self.stems[i](x)
            maps.append(x)
            cls_list.append(torch.sigmoid(self.cls_preds[i](self.cls_convs[i](x))).flatten(2).permute(0, 2, 1))
            reg_list.append(self.reg_preds[i](self.reg_convs[i](x)).flatten(2).permute(0, 2, 1))
        return YOLOv6HeadOutput(maps, torch.cat(cls_list, 1), torch.cat(reg_list, 1))

    def distances(self, reg_distri: torch.Tensor) -> torch.Tensor:
        """(B, N, 4 * (reg_max + 1)) raw regression -> (B, N, 4) ltrb distances in strides (DFL expectation)."""
        if not self.use_dfl:
            return reg_distri
        b, n, _ = reg_distri.shape
        bins = torch.linspace(0, self.reg_max, self.reg_max + 1, device=reg_distri.device, dtype=reg_distri.dtype)
        return F.softmax(reg_distri.view(b, n, 4, self.reg_max + 1), dim=-1).matmul(bins)


def anchor_points(maps: Sequence[torch.Tensor], strides: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres (N, 2) as (x, y) in cells of their level, and each cell's stride (N, 1)."""
    points, cell_strides = [], []
    for m, s in zip(maps, strides, strict=True):
        h, w = m.shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(h, device=m.device) + CELL_OFFSET,
                                torch.arange(w, device=m.device) + CELL_OFFSET, indexing="ij")
        points.append(torch.stack((xs, ys), -1).reshape(-1, 2).float())
        cell_strides.append(torch.full((h * w, 1), float(s), device=m.device))
    return torch.cat(points), torch.cat(cell_strides)


def dist_to_xyxy(distances: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """ltrb distances (..., 4) around ``points`` (..., 2) -> boxes (x1, y1, x2, y2)."""
    lt, rb = distances.split(2, -1)
    return torch.cat((points - lt, points + rb), -1)


def decode(head: EffiDeHead, output: YOLOv6HeadOutput) -> torch.Tensor:
    """(B, N, 5 + nc): cx, cy, w, h in input pixels, objectness 1 (YOLOv6 has none), class scores.

    Their eval-mode ``Detect`` output: boxes from the cell-centre distances times the stride.
    """
    points, cell_strides = anchor_points(output.maps, head.strides)
    x1y1, x2y2 = dist_to_xyxy(head.distances(output.reg_distri), points).split(2, -1)
    boxes = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), -1) * cell_strides
    ones = torch.ones_like(boxes[..., :1])
    return torch.cat((boxes, ones, output.cls_scores), -1)
