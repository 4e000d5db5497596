"""ResNet-50 with torchvision's module names, so torchvision's checkpoints load key for key.

Layout (torchvision ``resnet50``, the "v1.5" bottleneck with the stride on the 3x3 conv)::

    conv1 7x7/2 -> bn1 -> relu -> maxpool 3x3/2           stride 4, base_width channels
    layer1: 3 Bottleneck(base_width)      -> 4 * base_width    stride 4
    layer2: 4 Bottleneck(2 * base_width)  -> 8 * base_width    stride 8
    layer3: 6 Bottleneck(4 * base_width)  -> 16 * base_width   stride 16
    layer4: 3 Bottleneck(8 * base_width)  -> 32 * base_width   stride 32

``base_width=64`` is ResNet-50 (256/512/1024/2048 channels out); ``base_width=16`` is the project's
narrow test size (64/128/256/512). The classifier (``avgpool``, ``fc``) is left out: detectors use
the stages only (torchvision's ``IntermediateLayerGetter`` drops them too), and the ImageNet loader
reports the ``fc.*`` tensors it skips.

``style="caffe"`` is MMDetection's caffe-style ResNet (its ``*_caffe`` configs, Detectron's ImageNet
weights): the first block of each stage strides on its 1x1 ``conv1`` instead of the 3x3 ``conv2``; the
parameters and keys are the same, only the computation moves (such weights also expect BGR 0-255 input
minus the caffe mean, std 1: the family's input normalisation, not the backbone's).

``FrozenBatchNorm2d`` is torchvision's ``ops.misc.FrozenBatchNorm2d``: BatchNorm with fixed statistics
and affine parameters held as buffers (no gradient, no ``num_batches_tracked``), the normalisation
torchvision uses when a detector fine-tunes from ImageNet weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

# torchvision's ResNet-50 block counts per stage.
RESNET50_BLOCKS = (3, 4, 6, 3)
EXPANSION = 4  # Bottleneck output channels = EXPANSION * planes


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with frozen statistics and affine parameters: y = (x - mean) / sqrt(var + eps) * w + b."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # A checkpoint saved with nn.BatchNorm2d (torchvision's ImageNet resnet50) has this counter.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        # torchvision's formula (scale and shift folded first), so outputs match it to the ulp.
        w = self.weight.reshape(1, -1, 1, 1)
        b = self.bias.reshape(1, -1, 1, 1)
        rv = self.running_var.reshape(1, -1, 1, 1)
        rm = self.running_mean.reshape(1, -1, 1, 1)
        scale = w * (rv + self.eps).rsqrt()
        bias = b - rm * scale
        return x * scale + bias

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


NormLayer = Callable[[int], nn.Module]
STYLES = ("pytorch", "caffe")


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride here, as torchvision) -> 1x1 expand, plus the identity or ``downsample``."""

    expansion = EXPANSION

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 norm_layer: NormLayer = FrozenBatchNorm2d, style: str = "pytorch") -> None:
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"ResNet style: expected one of {', '.join(STYLES)}, got {style!r}")
        stride1, stride2 = (stride, 1) if style == "caffe" else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride2, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = norm_layer(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """The stem and ``num_stages`` bottleneck stages of a ResNet; ``forward`` returns every stage's output.

    ``stage_channels[i]`` / ``stage_strides[i]`` describe ``layer{i+1}``'s output.
    """

    def __init__(self, blocks: Sequence[int] = RESNET50_BLOCKS, *, base_width: int = 64,
                 norm_layer: NormLayer = FrozenBatchNorm2d, num_stages: int = 4, style: str = "pytorch") -> None:
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"ResNet style: expected one of {', '.join(STYLES)}, got {style!r}")
        self.style = style
        if base_width < 1:
            raise ValueError(f"base_width: expected >= 1, got {base_width}")
        if not 1 <= num_stages <= len(blocks):
            raise ValueError(f"num_stages: expected 1..{len(blocks)}, got {num_stages}")
        self.inplanes = base_width
        self.conv1 = nn.Conv2d(3, base_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.stage_channels: list[int] = []
        self.stage_strides: list[int] = []
        for i in range(num_stages):
            planes, stride = base_width * 2**i, 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", self._make_layer(planes, blocks[i], stride, norm_layer))
            self.stage_channels.append(planes * EXPANSION)
            self.stage_strides.append(4 * 2**i)
        # torchvision's initialisation (zero_init_residual=False); frozen norms start as the identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int, norm_layer: NormLayer) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * EXPANSION:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * EXPANSION, 1, stride=stride, bias=False),
                norm_layer(planes * EXPANSION),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, norm_layer, self.style)]
        self.inplanes = planes * EXPANSION
        layers += [Bottleneck(self.inplanes, planes, norm_layer=norm_layer, style=self.style) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @property
    def num_stages(self) -> int:
        return len(self.stage_channels)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> [layer1 (B, 4w, H/4, W/4), layer2 (H/8), ...], one map per built stage."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outputs = []
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
            outputs.append(x)
        return outputs


def resnet50(*, base_width: int = 64, norm_layer: NormLayer = FrozenBatchNorm2d, num_stages: int = 4,
             style: str = "pytorch") -> ResNet:
    """ResNet-50's stages (torchvision names); ``base_width=16`` is the narrow test size."""
    return ResNet(RESNET50_BLOCKS, base_width=base_width, norm_layer=norm_layer, num_stages=num_stages, style=style)
