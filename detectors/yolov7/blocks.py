"""Building blocks of WongKinYiu/yolov7's ``models/common.py`` that YOLOv3, YOLOv4-CSP and YOLOv7 use.

Attribute names (``conv``, ``bn``, ``cv1``, ``m``, ``rbr_dense`` ...) are upstream's, because their
checkpoints must load with every key in place; the blocks are written here from the architecture.
Every BatchNorm has upstream's ``initialize_weights`` settings (eps 1e-3, momentum 0.03), also the ones
inside ``RepConv``. ``fuse()`` on a block folds its BatchNorms into convs (deployment); outputs stay equal.
"""

from __future__ import annotations

import torch
from torch import nn

# utils/torch_utils.initialize_weights sets these on every nn.BatchNorm2d after the build; official
# weights' outputs depend on eps.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def activation(name: str) -> nn.Module:
    """``silu`` (upstream's Conv default) or ``leaky`` (LeakyReLU 0.1, YOLOv7-tiny's layer tables)."""
    if name == "silu":
        return nn.SiLU()
    if name == "leaky":
        return nn.LeakyReLU(0.1)
    raise ValueError(f"activation: expected 'silu' or 'leaky', got {name!r}")


@torch.no_grad()
def fold_batch_norm(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel * gamma / std, beta - mean * gamma / std): a conv without bias followed by ``bn`` in eval mode."""
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    return kernel * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class Conv(nn.Module):
    """conv (no bias) -> BatchNorm -> activation, 'same' padding; after ``fuse``: conv (with bias) -> act."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, act: str = "silu") -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn: nn.Module = batch_norm(c_out)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        if isinstance(self.bn, nn.Identity):
            return
        weight, bias = fold_batch_norm(self.conv.weight, self.bn)
        conv = self.conv
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          groups=conv.groups, bias=True).to(weight.device)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        self.conv, self.bn = fused, nn.Identity()


class Bottleneck(nn.Module):
    """Darknet residual: 1x1 Conv (c_out * e) -> 3x3 Conv, plus the input when ``shortcut`` and shapes match."""

    def __init__(self, c_in: int, c_out: int, shortcut: bool = True, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c_out * e)
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = Conv(hidden, c_out, 3)
        self.add = shortcut and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class BottleneckCSPB(nn.Module):
    """CSP "B" (YOLOv4-CSP's neck): cv1 to c_out, n plain Bottlenecks beside a 1x1 branch, cv3 merges."""

    def __init__(self, c_in: int, c_out: int, n: int = 1) -> None:
        super().__init__()
        self.cv1 = Conv(c_in, c_out, 1)
        self.cv2 = Conv(c_out, c_out, 1)
        self.cv3 = Conv(2 * c_out, c_out, 1)
        self.m = nn.Sequential(*(Bottleneck(c_out, c_out, shortcut=False, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv1(x)
        return self.cv3(torch.cat((self.m(x1), self.cv2(x1)), 1))


class BottleneckCSPC(nn.Module):
    """CSP "C" (YOLOv4-CSP's backbone): residual Bottlenecks on half the channels, a 1x1 bypass, cv4 merges."""

    def __init__(self, c_in: int, c_out: int, n: int = 1) -> None:
        super().__init__()
        hidden = c_out // 2
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = Conv(c_in, hidden, 1)
        self.cv3 = Conv(hidden, hidden, 1)
        self.cv4 = Conv(2 * hidden, c_out, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut=True, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv4(torch.cat((self.cv3(self.m(self.cv1(x))), self.cv2(x)), 1))


def _max_pools(kernels: tuple[int, ...]) -> nn.ModuleList:
    return nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)


class SPPCSPC(nn.Module):
    """Spatial pyramid pooling (max-pools 5/9/13) inside a CSP block: YOLOv4-CSP's and YOLOv7's neck entry."""

    def __init__(self, c_in: int, c_out: int, kernels: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = c_out  # upstream: int(2 * c2 * e) with e = 0.5
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = Conv(c_in, hidden, 1)
        self.cv3 = Conv(hidden, hidden, 3)
        self.cv4 = Conv(hidden, hidden, 1)
        self.m = _max_pools(kernels)
        self.cv5 = Conv((len(kernels) + 1) * hidden, hidden, 1)
        self.cv6 = Conv(hidden, hidden, 3)
        self.cv7 = Conv(2 * hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1, *(pool(x1) for pool in self.m)], 1)))
        return self.cv7(torch.cat((y1, self.cv2(x)), 1))


class SPP(nn.Module):
    """YOLOv3-SPP's pooling: 1x1 Conv to half the channels, max-pools 5/9/13 concatenated, 1x1 Conv."""

    def __init__(self, c_in: int, c_out: int, kernels: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = c_in // 2
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = Conv(hidden * (len(kernels) + 1), c_out, 1)
        self.m = _max_pools(kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x, *(pool(x) for pool in self.m)], 1))


class MP(nn.Module):
    """Max-pool k x k, stride k (YOLOv7's down-sampling branch)."""

    def __init__(self, k: int = 2) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


class SP(nn.Module):
    """Max-pool k x k, stride 1, same size (YOLOv7-tiny's SPP written out as layers)."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


class Concat(nn.Module):
    """Channel concatenation of the listed layers' outputs."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.d = dim

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, self.d)


class RepConv(nn.Module):
    """RepVGG block (YOLOv7's head convs): 3x3 conv+BN + 1x1 conv+BN (+ BN identity when shapes allow), act.

    ``fuse`` re-parameterises the branches into one biased 3x3 conv, ``rbr_reparam`` (upstream's deploy
    form): same output in eval mode, fewer parameters.
    """

    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1, act: str = "silu") -> None:
        super().__init__()
        if k != 3:
            raise ValueError(f"RepConv: expected a 3x3 kernel, got {k}")
        self.in_channels, self.out_channels = c_in, c_out
        self.act = activation(act)
        self.rbr_identity = batch_norm(c_in) if c_in == c_out and s == 1 else None
        self.rbr_dense = nn.Sequential(nn.Conv2d(c_in, c_out, 3, s, 1, bias=False), batch_norm(c_out))
        self.rbr_1x1 = nn.Sequential(nn.Conv2d(c_in, c_out, 1, s, 0, bias=False), batch_norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "rbr_reparam"):
            return self.act(self.rbr_reparam(x))
        identity = 0 if self.rbr_identity is None else self.rbr_identity(x)
        return self.act(self.rbr_dense(x) + self.rbr_1x1(x) + identity)

    @torch.no_grad()
    def fuse(self) -> None:
        if hasattr(self, "rbr_reparam"):
            return
        kernel, bias = fold_batch_norm(self.rbr_dense[0].weight, self.rbr_dense[1])
        k1, b1 = fold_batch_norm(self.rbr_1x1[0].weight, self.rbr_1x1[1])
        kernel = kernel + nn.functional.pad(k1, [1, 1, 1, 1])
        bias = bias + b1
        if self.rbr_identity is not None:
            eye = torch.zeros_like(kernel)
            eye[torch.arange(self.in_channels), torch.arange(self.in_channels), 1, 1] = 1.0
            ki, bi = fold_batch_norm(eye, self.rbr_identity)
            kernel, bias = kernel + ki, bias + bi
        dense = self.rbr_dense[0]
        self.rbr_reparam = nn.Conv2d(self.in_channels, self.out_channels, 3, dense.stride, 1, bias=True).to(
            kernel.device)
        self.rbr_reparam.weight.copy_(kernel)
        self.rbr_reparam.bias.copy_(bias)
        del self.rbr_dense, self.rbr_1x1, self.rbr_identity
