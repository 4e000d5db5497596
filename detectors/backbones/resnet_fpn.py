"""ResNet + FPN as torchvision's ``BackboneWithFPN`` / ``_resnet_fpn_extractor``: same keys, same freezing.

``resnet_fpn_backbone(...)`` builds ``body`` (the ResNet stem and stages up to the last returned one;
torchvision's ``IntermediateLayerGetter`` keeps the same names, so keys read
``backbone.body.layer1.0.conv1.weight`` once a detector names this module ``backbone``) and ``fpn``
(``detectors.necks.fpn.FeaturePyramidNetwork``). ``forward(images)`` returns ``FPNMaps`` keyed by
stride: ``outputs`` (every FPN output, extra levels included: what the heads read) and ``merged`` (the
top-down merged map of each non-extra level before its 3x3 output conv: MSSD's teachers).

Freezing (``trainable_layers``, torchvision's fine-tuning rule): the last ``trainable_layers`` of
``layer4, layer3, layer2, layer1, conv1`` keep ``requires_grad`` (5 also ``bn1``), every other body
parameter is frozen. Detectors fine-tuned from ImageNet weights use 3 (conv1 and layer1 frozen) with
``FrozenBatchNorm2d``, whose affine terms are buffers and never train.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor, nn

from detectors.backbones.resnet import FrozenBatchNorm2d, NormLayer, ResNet, resnet50
from detectors.necks.fpn import ExtraLevels, FeaturePyramidNetwork, LastLevelMaxPool

_TRAINABLE_ORDER = ("layer4", "layer3", "layer2", "layer1", "conv1")


class FPNMaps(NamedTuple):
    outputs: dict[int, Tensor]  # stride -> FPN output (after the 3x3 conv; extra levels included)
    merged: dict[int, Tensor]  # stride -> top-down merged map before its 3x3 conv (no extra levels)


def freeze_resnet_layers(body: nn.Module, trainable_layers: int) -> None:
    """torchvision's ``_resnet_fpn_extractor`` freezing: parameters outside the last ``trainable_layers``
    stages (counting conv1 as the fifth; 5 also keeps bn1) stop requiring gradients."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers: expected 0..5, got {trainable_layers}")
    train = list(_TRAINABLE_ORDER[:trainable_layers]) + (["bn1"] if trainable_layers == 5 else [])
    for name, parameter in body.named_parameters():
        if not any(name.startswith(layer) for layer in train):
            parameter.requires_grad_(False)


class BackboneWithFPN(nn.Module):
    """``body`` (a ResNet) then ``fpn`` over the stages in ``returned_layers`` (1-based: 2 = layer2)."""

    def __init__(self, body: ResNet, returned_layers: Sequence[int], fpn_channels: int,
                 extra_blocks: ExtraLevels | None) -> None:
        super().__init__()
        returned = tuple(returned_layers)
        if not returned or list(returned) != sorted(set(returned)) or returned[0] < 1 or returned[-1] > 4:
            raise ValueError(f"returned_layers: expected increasing stage numbers in 1..4, got {returned_layers}")
        if body.num_stages < returned[-1]:
            raise ValueError(f"returned_layers: the body has {body.num_stages} stages, asked for {returned}")
        self.body = body
        self.returned_layers = returned
        self.in_channels_list = [body.stage_channels[i - 1] for i in returned]
        self.fpn = FeaturePyramidNetwork(self.in_channels_list, fpn_channels, extra_blocks)
        self.out_channels = fpn_channels
        self.merged_strides = tuple(body.stage_strides[i - 1] for i in returned)
        last = self.merged_strides[-1]
        self.strides = self.merged_strides + tuple(last * 2 ** (k + 1) for k in range(self.fpn.num_extra_levels))

    def forward(self, images: Tensor) -> FPNMaps:
        stages = self.body(images)
        outputs, merged = self.fpn([stages[i - 1] for i in self.returned_layers])
        return FPNMaps(dict(zip(self.strides, outputs, strict=True)), dict(zip(self.merged_strides, merged, strict=True)))


def resnet_fpn_backbone(*, base_width: int = 64, fpn_channels: int = 256, returned_layers: Sequence[int] = (2, 3, 4),
                        extra_blocks: ExtraLevels | None = None, trainable_layers: int = 3,
                        norm_layer: NormLayer = FrozenBatchNorm2d, style: str = "pytorch") -> BackboneWithFPN:
    """ResNet-50 (``base_width`` 64; 16 for the narrow test size) + FPN, frozen as torchvision fine-tunes.

    ``extra_blocks=None`` means ``LastLevelMaxPool()``, torchvision's default; RetinaNet and FCOS pass
    ``LastLevelP6P7(fpn_channels, fpn_channels)``. The body stops at the last returned stage, as
    torchvision's ``IntermediateLayerGetter`` does. ``style="caffe"``: MMDetection's caffe-style ResNet
    (``resnet.py``).
    """
    returned = tuple(returned_layers)
    if not returned or returned[-1] > 4:
        raise ValueError(f"returned_layers: expected stage numbers in 1..4, got {returned_layers}")
    body = resnet50(base_width=base_width, norm_layer=norm_layer, num_stages=max(returned), style=style)
    freeze_resnet_layers(body, trainable_layers)
    return BackboneWithFPN(body, returned, fpn_channels, LastLevelMaxPool() if extra_blocks is None else extra_blocks)
