"""RetinaNet's head with torchvision's module names (``RetinaNetHead``, v1: no normalisation).

Keys: ``head.classification_head.conv.{0..3}.0.{weight,bias}`` (four 3x3 convs + ReLU, torchvision's
``Conv2dNormActivation`` without norm: a Sequential whose conv is ``.0``), ``...cls_logits.*`` (3x3, A x K
channels), ``head.regression_head.conv.{0..3}.0.*`` and ``...bbox_reg.*`` (3x3, A x 4). Initialisation as
theirs: normal(std 0.01) weights, zero biases, the class bias at the prior -log((1 - 0.01) / 0.01).

``forward`` returns the raw per-level maps, ``(B, A * K, H, W)`` and ``(B, A * 4, H, W)``;
``flatten_level`` lays one out as torchvision's head does, ``(B, H * W * A, C)`` with the anchors of a cell
together, which is also the order of ``detectors.ops.anchors``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _tower(channels: int) -> nn.Sequential:
    return nn.Sequential(*(nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(inplace=True))
                           for _ in range(4)))


class RetinaNetClassificationHead(nn.Module):
    def __init__(self, channels: int, num_anchors: int, num_classes: int, prior_probability: float = 0.01) -> None:
        super().__init__()
        self.conv = _tower(channels)
        self.cls_logits = nn.Conv2d(channels, num_anchors * num_classes, 3, 1, 1)
        for layer in self.conv.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.constant_(layer.bias, 0)
        nn.init.normal_(self.cls_logits.weight, std=0.01)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))
        self.num_classes = num_classes

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        return [self.cls_logits(self.conv(x)) for x in features]


class RetinaNetRegressionHead(nn.Module):
    def __init__(self, channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = _tower(channels)
        self.bbox_reg = nn.Conv2d(channels, num_anchors * 4, 3, 1, 1)
        nn.init.normal_(self.bbox_reg.weight, std=0.01)
        nn.init.zeros_(self.bbox_reg.bias)
        for layer in self.conv.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        return [self.bbox_reg(self.conv(x)) for x in features]


class RetinaNetHead(nn.Module):
    def __init__(self, channels: int, num_anchors: int, num_classes: int) -> None:
        super().__init__()
        self.classification_head = RetinaNetClassificationHead(channels, num_anchors, num_classes)
        self.regression_head = RetinaNetRegressionHead(channels, num_anchors)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        return self.classification_head(features), self.regression_head(features)


def flatten_level(level: Tensor, channels: int) -> Tensor:
    """``(B, A * C, H, W)`` -> ``(B, H * W * A, C)`` (torchvision's view / permute / reshape)."""
    b, _, h, w = level.shape
    return level.view(b, -1, channels, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, channels)


def flatten_levels(levels: list[Tensor], channels: int) -> Tensor:
    """Every level flattened and concatenated: ``(B, sum H * W * A, C)``."""
    return torch.cat([flatten_level(x, channels) for x in levels], dim=1)
