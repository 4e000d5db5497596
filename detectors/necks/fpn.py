"""Feature Pyramid Network (Lin et al. 2017) with torchvision's module names and arithmetic.

``FeaturePyramidNetwork(in_channels_list, out_channels, extra_blocks)`` holds, per input level i
(ascending stride), ``inner_blocks.{i}.0`` (1x1 lateral conv) and ``layer_blocks.{i}.0`` (3x3 output
conv), both with bias, as torchvision's ``ops.FeaturePyramidNetwork`` (its ``Conv2dNormActivation``
without norm is a Sequential whose conv is ``.0``), so state-dict keys are identical.

Top-down pass, from the coarsest level: ``merged[last] = inner[last](C_last)``, then
``merged[i] = inner[i](C_i) + nearest_upsample(merged[i+1], size of C_i)``; ``outputs[i] =
layer[i](merged[i])``. ``forward`` returns both lists: the outputs are what the heads read, the merged
maps (before their 3x3 conv) are the MSSD teachers of the FPN-only neck (README, "ResNet-FPN").

Extra levels (``extra_blocks``) append coarser outputs and have no merged map:
- ``LastLevelMaxPool``: max-pool (kernel 1, stride 2) of the last output: Faster R-CNN's "pool" level;
- ``LastLevelP6P7(in_channels, out_channels)``: P6 = conv3x3/2(P5 if in == out else C5), P7 =
  conv3x3/2(relu(P6)) (RetinaNet and FCOS; torchvision passes (256, 256), i.e. P6 from P5;
  MMDetection's RetinaNet ``add_extra_convs='on_input'`` is (2048, 256), P6 from C5).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class ExtraLevels(nn.Module):
    """Base of the extra-level blocks: ``forward(outputs, inputs) -> extra maps`` (each stride x2)."""

    num_levels: int = 0

    def forward(self, outputs: list[Tensor], inputs: list[Tensor]) -> list[Tensor]:
        raise NotImplementedError


class LastLevelMaxPool(ExtraLevels):
    """One extra level: ``max_pool2d(P_last, kernel_size=1, stride=2)`` (torchvision's "pool")."""

    num_levels = 1

    def forward(self, outputs: list[Tensor], inputs: list[Tensor]) -> list[Tensor]:
        return [F.max_pool2d(outputs[-1], kernel_size=1, stride=2, padding=0)]


class LastLevelP6P7(ExtraLevels):
    """Two extra levels P6, P7 from P5 (``in_channels == out_channels``) or from C5 (otherwise)."""

    num_levels = 2

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for module in (self.p6, self.p7):
            nn.init.kaiming_uniform_(module.weight, a=1)
            nn.init.constant_(module.bias, 0)
        self.use_P5 = in_channels == out_channels  # torchvision's rule and attribute name

    def forward(self, outputs: list[Tensor], inputs: list[Tensor]) -> list[Tensor]:
        x = outputs[-1] if self.use_P5 else inputs[-1]
        p6 = self.p6(x)
        p7 = self.p7(F.relu(p6))
        return [p6, p7]


class FeaturePyramidNetwork(nn.Module):
    """Lateral 1x1 + top-down nearest upsampling + 3x3 output convs; see the module docstring."""

    def __init__(self, in_channels_list: Sequence[int], out_channels: int,
                 extra_blocks: ExtraLevels | None = None) -> None:
        super().__init__()
        if not in_channels_list or any(c <= 0 for c in in_channels_list):
            raise ValueError(f"in_channels_list: expected positive channel counts, got {list(in_channels_list)}")
        self.inner_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, out_channels, 1, padding=0)) for c in in_channels_list
        )
        self.layer_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1)) for _ in in_channels_list
        )
        # Initialised before extra_blocks is attached, as torchvision (extra blocks initialise themselves).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.constant_(m.bias, 0)
        self.extra_blocks = extra_blocks
        self.out_channels = out_channels

    @property
    def num_extra_levels(self) -> int:
        return 0 if self.extra_blocks is None else self.extra_blocks.num_levels

    def forward(self, inputs: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """inputs [C_i] (ascending stride) -> (outputs: one per input then the extra levels, merged: one
        per input, the top-down sum before its 3x3 conv)."""
        inputs = list(inputs)
        if len(inputs) != len(self.inner_blocks):
            raise ValueError(f"FPN: expected {len(self.inner_blocks)} input maps, got {len(inputs)}")
        last = self.inner_blocks[-1](inputs[-1])
        merged = [last]
        outputs = [self.layer_blocks[-1](last)]
        for idx in range(len(inputs) - 2, -1, -1):
            lateral = self.inner_blocks[idx](inputs[idx])
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            merged.insert(0, last)
            outputs.insert(0, self.layer_blocks[idx](last))
        if self.extra_blocks is not None:
            outputs.extend(self.extra_blocks(outputs, inputs))
        return outputs, merged
