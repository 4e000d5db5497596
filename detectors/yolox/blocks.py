"""YOLOX building blocks: conv-BN-SiLU, depthwise conv, bottleneck, CSP layer, SPP, Focus.

Attribute names (``conv``, ``bn``, ``dconv``/``pconv``, ``conv1``..``conv3``, ``m``) are those of
Megvii-BaseDetection/YOLOX's ``network_blocks.py``, because their checkpoints must load with
``strict=True``; the blocks are written here from the architecture, not copied.
"""

from __future__ import annotations

import torch
from torch import nn

# YOLOX's BatchNorm settings (``init_yolo`` in every exp's ``get_model``): torch's defaults are 1e-5 and
# 0.1. Outputs of official weights depend on eps.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


class ConvBNAct(nn.Module):
    """conv (no bias) -> BatchNorm -> SiLU with 'same' padding: Megvii's ``BaseConv``."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DepthwiseConv(nn.Module):
    """k x k depthwise ConvBNAct then 1 x 1 pointwise ConvBNAct: Megvii's ``DWConv`` (YOLOX-Nano)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1) -> None:
        super().__init__()
        self.dconv = ConvBNAct(c_in, c_in, k, stride, groups=c_in)
        self.pconv = ConvBNAct(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pconv(self.dconv(x))


def conv_block(depthwise: bool) -> type[ConvBNAct] | type[DepthwiseConv]:
    """The 3 x 3 conv of a size: depthwise-separable for Nano, plain otherwise (Megvii's ``Conv`` switch)."""
    return DepthwiseConv if depthwise else ConvBNAct


class Bottleneck(nn.Module):
    """1 x 1 conv -> 3 x 3 conv, plus the input when ``shortcut`` and the channels match."""

    def __init__(self, c_in: int, c_out: int, shortcut: bool, depthwise: bool) -> None:
        super().__init__()
        # YOLOX's CSP bottlenecks use expansion 1.0: the hidden width is the output width.
        self.conv1 = ConvBNAct(c_in, c_out, 1)
        self.conv2 = conv_block(depthwise)(c_out, c_out, 3)
        self.use_add = shortcut and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CSPLayer(nn.Module):
    """CSP bottleneck with three convs (YOLOv5's C3): two 1 x 1 branches, ``n`` bottlenecks on one."""

    def __init__(self, c_in: int, c_out: int, n: int, shortcut: bool = True, depthwise: bool = False) -> None:
        super().__init__()
        hidden = int(c_out * 0.5)
        self.conv1 = ConvBNAct(c_in, hidden, 1)
        self.conv2 = ConvBNAct(c_in, hidden, 1)
        self.conv3 = ConvBNAct(2 * hidden, c_out, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, depthwise) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), 1))


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling (YOLOv3-SPP): 1 x 1 conv, max-pools 5/9/13 concatenated, 1 x 1 conv."""

    def __init__(self, c_in: int, c_out: int, kernel_sizes: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = c_in // 2
        self.conv1 = ConvBNAct(c_in, hidden, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.conv2 = ConvBNAct(hidden * (len(kernel_sizes) + 1), c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x, *(pool(x) for pool in self.m)], 1))


class Focus(nn.Module):
    """Space-to-depth (B, C, H, W) -> (B, 4C, H/2, W/2), then a 3 x 3 ConvBNAct: YOLOX's stem."""

    def __init__(self, c_in: int, c_out: int, k: int = 3) -> None:
        super().__init__()
        self.conv = ConvBNAct(c_in * 4, c_out, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Order matters for official weights: top-left, bottom-left, top-right, bottom-right pixels.
        x = torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1)
        return self.conv(x)
