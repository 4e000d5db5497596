"""YOLOv5 v6/v7.0 building blocks: Conv, Bottleneck, C3, SPPF, Concat.

Attribute names (``conv``, ``bn``, ``cv1``, ``m`` ...) are Ultralytics' own, because their checkpoints
must load with ``strict=True``; the blocks are written here from the architecture, not copied.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Ultralytics' BatchNorm settings (utils.torch_utils.initialize_weights): a larger eps and a slower
# running-statistics momentum than torch's defaults (1e-5, 0.1). Outputs of official weights depend on eps.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` >= x: how YOLOv5 turns ``width_multiple * channels`` into channels."""
    return int(math.ceil(x / divisor) * divisor)


class Conv(nn.Module):
    """conv (no bias) -> BatchNorm -> SiLU, with 'same' padding (k // 2) unless ``p`` is given."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, p: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2 if p is None else p, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """1x1 Conv -> 3x3 Conv, plus the input when ``shortcut`` (and the channels match)."""

    def __init__(self, c_in: int, c_out: int, shortcut: bool = True, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c_out * e)
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = Conv(hidden, c_out, 3)
        self.add = shortcut and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP bottleneck with 3 convs: cv3(cat(m(cv1(x)), cv2(x))), n Bottlenecks of expansion 1.0 in m."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        hidden = c_out // 2  # int(c_out * 0.5)
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = Conv(c_in, hidden, 1)
        self.cv3 = Conv(2 * hidden, c_out, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained k x k max-pools equal SPP's parallel 5/9/13 pools."""

    def __init__(self, c_in: int, c_out: int, k: int = 5) -> None:
        super().__init__()
        hidden = c_in // 2
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = Conv(hidden * 4, c_out, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along ``dimension``; a module only to keep Ultralytics' layer indices."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, self.d)
