"""YOLOv6 0.2.1's layers (``yolov6/layers/common.py``): conv units, the RepVGG block and the stages built on it.

Attribute names are meituan/YOLOv6's, so ``state_dict()`` keys equal theirs (``rbr_dense.conv.weight``,
``cv1.bn.running_var``, ``upsample_transpose.bias`` ...). BatchNorm eps 1e-3 and momentum 0.03 everywhere:
their ``initialize_weights`` sets both on every ``BatchNorm2d`` after building, RepVGG identity branches
included.

Re-parameterisation (``fuse``): a ``RepVGGBlock`` folds its 3 x 3, 1 x 1 and identity branches (each with
its BatchNorm) into one 3 x 3 conv ``rbr_reparam`` (their ``switch_to_deploy``); a ``ConvBNAct`` folds its
BatchNorm into the conv (their ``fuse_model``). Both change the state-dict keys as theirs do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # their initialize_weights
BN_MOMENTUM = 0.03


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def fold_bn(weight: torch.Tensor, bn: nn.BatchNorm2d, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel, bias) of ``conv(weight, bias)`` followed by ``bn`` in eval mode, as one conv."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    shift = bn.bias - bn.running_mean * scale
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale.reshape(-1, 1, 1, 1), shift


class ConvBNAct(nn.Module):
    """Conv (no bias unless asked) + BatchNorm + activation: their ``Conv`` (SiLU), ``SimConv`` and
    ``Conv_C3`` (ReLU). ``fuse`` folds the BatchNorm into the conv, as their ``fuse_model``."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, stride: int = 1, *, act: str = "relu",
                 bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, bias=bias)
        self.bn = batch_norm(c_out)
        self.act = nn.SiLU() if act == "silu" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "bn"):  # fused
            return self.act(self.conv(x))
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        if not hasattr(self, "bn"):
            return
        kernel, bias = fold_bn(self.conv.weight, self.bn, self.conv.bias)
        conv = self.conv
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          groups=conv.groups, bias=True).to(kernel.device).requires_grad_(False)
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)
        self.conv = fused
        del self.bn


class ConvWrapper(nn.Module):
    """Their ``ConvWrapper``: the ``conv_silu`` training mode's basic block (YOLOv6-L), a biased SiLU conv."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.block = ConvBNAct(c_in, c_out, kernel_size, stride, act="silu", bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def conv_bn(c_in: int, c_out: int, kernel_size: int, stride: int) -> nn.Sequential:
    """A RepVGG branch: conv (no bias) + BatchNorm, as ``Sequential(conv, bn)``."""
    branch = nn.Sequential()
    branch.add_module("conv", nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, bias=False))
    branch.add_module("bn", batch_norm(c_out))
    return branch


class RepVGGBlock(nn.Module):
    """ReLU(3 x 3 conv-BN + 1 x 1 conv-BN + identity BN), the identity only when shapes allow (RepVGG,
    Ding et al. 2021). After ``fuse``: ReLU(one 3 x 3 conv with bias), ``rbr_reparam``."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        if kernel_size != 3:
            raise ValueError(f"RepVGGBlock: kernel_size must be 3, got {kernel_size}")
        self.in_channels, self.out_channels, self.stride = c_in, c_out, stride
        self.nonlinearity = nn.ReLU()
        self.se = nn.Identity()  # their use_se=False
        self.rbr_identity = batch_norm(c_in) if c_in == c_out and stride == 1 else None
        self.rbr_dense = conv_bn(c_in, c_out, 3, stride)
        self.rbr_1x1 = conv_bn(c_in, c_out, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "rbr_reparam"):
            return self.nonlinearity(self.se(self.rbr_reparam(x)))
        identity = 0 if self.rbr_identity is None else self.rbr_identity(x)
        return self.nonlinearity(self.se(self.rbr_dense(x) + self._pointwise(x) + identity))

    def _pointwise(self, x: torch.Tensor) -> torch.Tensor:
        """The 1 x 1 branch. On channels_last inputs (the trainer's) a strided branch runs at stride 1 on every
        stride-th pixel, the same sums: torch 2.13's CPU backward of a strided 1 x 1 conv with fewer than 16
        input channels in channels_last (the stem's 3, YOLOv6-T's 24 is fine) crashes the process. NCHW
        inputs take their strided conv, so eval outputs stay bit-identical to theirs."""
        if self.stride == 1 or x.is_contiguous():
            return self.rbr_1x1(x)
        conv = self.rbr_1x1.conv
        return self.rbr_1x1.bn(F.conv2d(x[..., :: self.stride, :: self.stride], conv.weight))

    @torch.no_grad()
    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        k3, b3 = fold_bn(self.rbr_dense.conv.weight, self.rbr_dense.bn)
        k1, b1 = fold_bn(self.rbr_1x1.conv.weight, self.rbr_1x1.bn)
        kernel, bias = k3 + F.pad(k1, [1, 1, 1, 1]), b3 + b1
        if self.rbr_identity is not None:
            # The identity as a 3 x 3 kernel with a 1 at the centre of channel i -> i.
            eye = torch.zeros(self.in_channels, self.in_channels, 3, 3, device=kernel.device, dtype=kernel.dtype)
            eye[torch.arange(self.in_channels), torch.arange(self.in_channels), 1, 1] = 1.0
            ki, bi = fold_bn(eye, self.rbr_identity)
            kernel, bias = kernel + ki, bias + bi
        return kernel, bias

    @torch.no_grad()
    def fuse(self) -> None:
        """Their ``switch_to_deploy``: one 3 x 3 conv with bias replaces the three branches."""
        if hasattr(self, "rbr_reparam"):
            return
        kernel, bias = self.equivalent_kernel_bias()
        dense = self.rbr_dense.conv
        self.rbr_reparam = nn.Conv2d(dense.in_channels, dense.out_channels, 3, dense.stride, 1, bias=True).to(kernel.device)
        self.rbr_reparam.weight.copy_(kernel)
        self.rbr_reparam.bias.copy_(bias)
        self.rbr_reparam.requires_grad_(False)
        del self.rbr_dense, self.rbr_1x1
        if self.rbr_identity is not None:
            del self.rbr_identity
        self.rbr_identity = None


class BottleRep(nn.Module):
    """Two basic blocks with a weighted residual (``alpha``, a parameter in the CSP stages of YOLOv6-M/L).

    ``alpha`` stays 1: their ``build_optimizer`` collects only weights, BatchNorm weights and biases, so
    their training never updates it; here it is a parameter without gradient (same key), so our optimiser
    leaves it too.
    """

    def __init__(self, c_in: int, c_out: int, basic_block: type[nn.Module] = RepVGGBlock, weight: bool = False) -> None:
        super().__init__()
        self.conv1 = basic_block(c_in, c_out)
        self.conv2 = basic_block(c_out, c_out)
        self.shortcut = c_in == c_out
        self.alpha = nn.Parameter(torch.ones(1), requires_grad=False) if weight else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + self.alpha * x if self.shortcut else out


class RepBlock(nn.Module):
    """A stage of ``n`` basic blocks (``conv1`` then ``block``); with ``bottle_rep`` (the CSP stages) ``n // 2``
    BottleReps of ``basic_block`` instead, with an ``alpha`` parameter."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, basic_block: type[nn.Module] = RepVGGBlock,
                 bottle_rep: bool = False) -> None:
        super().__init__()
        if bottle_rep:
            self.conv1 = BottleRep(c_in, c_out, basic_block, weight=True)
            n = n // 2
            self.block = nn.Sequential(*(BottleRep(c_out, c_out, basic_block, weight=True) for _ in range(n - 1))) \
                if n > 1 else None
        else:
            self.conv1 = basic_block(c_in, c_out)
            self.block = nn.Sequential(*(basic_block(c_out, c_out) for _ in range(n - 1))) if n > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return x if self.block is None else self.block(x)


class BepC3(nn.Module):
    """CSP stage of YOLOv6-M/L: ``cv3(cat(m(cv1(x)), cv2(x)))``, ``m`` a RepBlock of BottleReps.

    The 1 x 1 convs are ReLU (``Conv_C3``), SiLU when the basic block is ``ConvWrapper`` (YOLOv6-L).
    """

    def __init__(self, c_in: int, c_out: int, n: int = 1, e: float = 0.5,
                 basic_block: type[nn.Module] = RepVGGBlock) -> None:
        super().__init__()
        hidden = int(c_out * e)
        act = "silu" if basic_block is ConvWrapper else "relu"
        self.cv1 = ConvBNAct(c_in, hidden, 1, act=act)
        self.cv2 = ConvBNAct(c_in, hidden, 1, act=act)
        self.cv3 = ConvBNAct(2 * hidden, c_out, 1, act=act)
        self.m = RepBlock(hidden, hidden, n, basic_block, bottle_rep=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SimSPPF(nn.Module):
    """SPPF (three chained 5 x 5 max-pools, concatenated): ReLU convs (``SimSPPF``), SiLU (``SPPF``, YOLOv6-L)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 5, act: str = "relu") -> None:
        super().__init__()
        hidden = c_in // 2
        self.cv1 = ConvBNAct(c_in, hidden, 1, act=act)
        self.cv2 = ConvBNAct(hidden * 4, c_out, 1, act=act)
        self.m = nn.MaxPool2d(kernel_size, 1, kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Transpose(nn.Module):
    """Learned 2x upsampling: a 2 x 2, stride 2 transposed conv with bias (their ``Transpose``)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.upsample_transpose = nn.ConvTranspose2d(c_in, c_out, 2, 2, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample_transpose(x)


def fuse_blocks(model: nn.Module) -> nn.Module:
    """Re-parameterise every RepVGG block and fold every conv unit's BatchNorm, in place; returns ``model``."""
    for module in list(model.modules()):
        if isinstance(module, (RepVGGBlock, ConvBNAct)):
            module.fuse()
    return model
