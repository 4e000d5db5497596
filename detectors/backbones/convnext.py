"""ConvNeXt (Liu et al. 2022, "A ConvNet for the 2020s") as a detection backbone: features at strides 8/16/32.

Module names follow the official facebookresearch/ConvNeXt layout, so that its ImageNet checkpoints
(``{"model": state_dict}``) load key for key (``convnext_weights.py`` also maps timm's names)::

    downsample_layers.0.{0: Conv2d 4x4/4, 1: LayerNorm2d}          stem, stride 4
    downsample_layers.{1,2,3}.{0: LayerNorm2d, 1: Conv2d 2x2/2}    strides 8, 16, 32
    stages.{s}.{i}.dwconv      depthwise 7x7 conv
    stages.{s}.{i}.norm        LayerNorm over channels (channels-last)
    stages.{s}.{i}.pwconv1/2   Linear C -> 4C -> C (the 1x1 convs), GELU between
    stages.{s}.{i}.gamma       layer scale (C,)
    norm{s}                    LayerNorm2d on each returned stage (the official detection backbone's
                               out-norms, not in the ImageNet checkpoint: initialised here)

The classification checkpoint's ``norm.*`` (final pooled norm) and ``head.*`` have no place here; the
weight loader drops and reports them.

The detector contract feeds RGB in [0, 1]; the ImageNet mean/std normalisation the checkpoints were
trained with happens in ``forward`` (non-persistent buffers, not in the state dict).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ConvNeXtVariant:
    depths: tuple[int, int, int, int]  # blocks per stage
    dims: tuple[int, int, int, int]  # channels per stage


# The official model sizes (models/convnext.py's convnext_tiny ... convnext_base).
VARIANTS: dict[str, ConvNeXtVariant] = {
    "convnext_tiny": ConvNeXtVariant((3, 3, 9, 3), (96, 192, 384, 768)),
    "convnext_small": ConvNeXtVariant((3, 3, 27, 3), (96, 192, 384, 768)),
    "convnext_base": ConvNeXtVariant((3, 3, 27, 3), (128, 256, 512, 1024)),
}

# Stage s outputs stride 4 * 2**s; a YOLO neck reads stages 1, 2, 3.
STAGE_STRIDES = (4, 8, 16, 32)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map (the official ``data_format="channels_first"``).

    A subclass of ``nn.LayerNorm`` (keys ``weight``, ``bias``) so that the optimiser's parameter groups
    treat it as a normalisation layer (no weight decay on its weight).
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(
            0, 3, 1, 2
        )


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch for a random subset of samples (probability
    ``p``) and scale the kept ones by 1 / (1 - p); identity in eval mode or with ``p == 0``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability: expected 0 <= p < 1, got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    """x + DropPath(gamma * Linear(GELU(Linear(LN(dwconv7x7(x)))))), the 1x1 convs as Linear on channels-last."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        # layer_scale_init <= 0 disables layer scale (the official switch); the checkpoints all have gamma.
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init))) if layer_scale_init > 0 else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = self.gamma * y
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class ConvNeXt(nn.Module):
    """ConvNeXt trunk returning the normalised outputs of stages ``out_stages`` (default 1, 2, 3: strides 8/16/32).

    ``out_channels``: ``{stride: channels}`` of what ``forward`` returns, in ascending stride order.
    """

    def __init__(
        self,
        depths: tuple[int, ...] = VARIANTS["convnext_tiny"].depths,
        dims: tuple[int, ...] = VARIANTS["convnext_tiny"].dims,
        *,
        drop_path_rate: float = 0.0,
        layer_scale_init: float = 1e-6,
        out_stages: tuple[int, ...] = (1, 2, 3),
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"ConvNeXt: expected 4 depths and 4 dims, got {tuple(depths)}, {tuple(dims)}")
        if not out_stages or any(s not in range(4) for s in out_stages) or list(out_stages) != sorted(set(out_stages)):
            raise ValueError(f"ConvNeXt: out_stages must be ascending stage indices in 0..3, got {tuple(out_stages)}")
        self.depths, self.dims, self.out_stages = tuple(depths), tuple(dims), tuple(out_stages)

        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(in_channels, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6))]
            + [nn.Sequential(LayerNorm2d(dims[i], eps=1e-6), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
               for i in range(3)]
        )
        # Stochastic depth grows linearly over all blocks, 0 for the first (the official schedule).
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        first = [sum(depths[:i]) for i in range(4)]
        self.stages = nn.ModuleList(
            nn.Sequential(*(Block(dims[i], rates[first[i] + j], layer_scale_init) for j in range(depths[i])))
            for i in range(4)
        )
        for s in self.out_stages:
            self.add_module(f"norm{s}", LayerNorm2d(dims[s], eps=1e-6))
        self.out_channels = {STAGE_STRIDES[s]: dims[s] for s in self.out_stages}
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.apply(_init_weights)

    def forward(self, images: Tensor) -> list[Tensor]:
        """RGB [0, 1] images (B, 3, H, W), H and W multiples of 32 -> one (B, C_s, H / stride, W / stride) map
        per out stage, ascending stride."""
        x = (images - self.pixel_mean) / self.pixel_std
        outs = []
        for s in range(self.out_stages[-1] + 1):
            x = self.stages[s](self.downsample_layers[s](x))
            if s in self.out_stages:
                outs.append(getattr(self, f"norm{s}")(x))
        return outs


def _init_weights(module: nn.Module) -> None:
    # The official initialisation: truncated normal (std 0.02) weights and zero biases for convs and linears.
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


def build_convnext(variant: str = "convnext_tiny", **options) -> ConvNeXt:
    """A freshly initialised ConvNeXt trunk of an official size; options go to ``ConvNeXt``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ConvNeXt variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    v = VARIANTS[variant]
    return ConvNeXt(v.depths, v.dims, **options)
