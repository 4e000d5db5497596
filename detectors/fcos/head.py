"""FCOS's head with torchvision's module names (``FCOSHead``: ``classification_head``, ``regression_head``).

Keys (``head.`` prefix in the model), as torchvision 0.26-0.29's ``fcos_resnet50_fpn``::

    classification_head.conv.{0,3,6,9}.{weight,bias}     3x3 convs of the class tower
    classification_head.conv.{1,4,7,10}.{weight,bias}    GroupNorm(32) after each (ReLU at 2, 5, 8, 11)
    classification_head.cls_logits.{weight,bias}         3x3, K outputs (sigmoid, no background)
    regression_head.conv.*                               the box tower, same layout
    regression_head.bbox_reg.{weight,bias}               3x3, 4 outputs (l, t, r, b), ReLU
    regression_head.bbox_ctrness.{weight,bias}           3x3, 1 output (centerness logit)

Both towers run on every level with shared weights. ``FCOSHead.forward`` returns one map per level,
``(B, 4 + 1 + K, H, W)``: the regression ``[l, t, r, b]`` (distances from the point to the box edges
divided by the level's anchor size, i.e. the stride, after torchvision's ReLU), the centerness logit and
the K class logits. That order puts the centerness, FCOS's "objectness", at channel 4 as in the YOLO
families' maps (``losses.mad.target: head_objectness`` reads it).

``style="mmdet2"`` is MMDetection 2.x's ``FCOSHead`` of ``fcos_r50_caffe_fpn_gn-head``: tower convs
without bias (GroupNorm follows), a learnable ``Scale`` per level (``regression_head.scales.{i}.scale``),
distances ``exp(scale * conv)`` in pixels (divided here by the stride to keep torchvision's encoding),
and the centerness conv reading the class tower (``centerness_on_reg=False``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

STYLES = ("torchvision", "mmdet2")


def _tower(channels: int, num_convs: int, bias: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=bias), nn.GroupNorm(32, channels), nn.ReLU()]
    tower = nn.Sequential(*layers)
    for layer in tower:
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, std=0.01)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return tower


class Scale(nn.Module):
    """A learnable scalar multiplier (MMCV's ``Scale``; key ``scale``)."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(value, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class FCOSClassificationHead(nn.Module):
    def __init__(self, channels: int, num_classes: int, num_convs: int = 4, prior_probability: float = 0.01,
                 bias: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = _tower(channels, num_convs, bias)
        self.cls_logits = nn.Conv2d(channels, num_classes, 3, padding=1)
        nn.init.normal_(self.cls_logits.weight, std=0.01)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))


class FCOSRegressionHead(nn.Module):
    def __init__(self, channels: int, num_convs: int = 4, bias: bool = True, num_scales: int = 0) -> None:
        super().__init__()
        self.conv = _tower(channels, num_convs, bias)
        self.bbox_reg = nn.Conv2d(channels, 4, 3, padding=1)
        self.bbox_ctrness = nn.Conv2d(channels, 1, 3, padding=1)
        for layer in (self.bbox_reg, self.bbox_ctrness):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        if num_scales:
            self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_scales))


class FCOSHead(nn.Module):
    """Class and box towers over the FPN levels -> per level ``(B, 4 + 1 + K, H, W)`` (see the module doc)."""

    def __init__(self, channels: int, num_classes: int, strides: tuple[int, ...], *, num_convs: int = 4,
                 style: str = "torchvision") -> None:
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"FCOS head style: expected one of {STYLES}, got {style!r}")
        self.style = style
        self.strides = tuple(strides)
        mmdet = style == "mmdet2"
        self.classification_head = FCOSClassificationHead(channels, num_classes, num_convs, bias=not mmdet)
        self.regression_head = FCOSRegressionHead(channels, num_convs, bias=not mmdet,
                                                  num_scales=len(self.strides) if mmdet else 0)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        cls_head, reg_head = self.classification_head, self.regression_head
        maps = []
        for level, x in enumerate(features):
            cls_feature = cls_head.conv(x)
            reg_feature = reg_head.conv(x)
            logits = cls_head.cls_logits(cls_feature)
            if self.style == "mmdet2":
                # exp(scale * x) px, as MMDetection (in float: exp overflows half precision early).
                distances = reg_head.scales[level](reg_head.bbox_reg(reg_feature)).float().exp()
                regression = distances / self.strides[level]
                ctrness = reg_head.bbox_ctrness(cls_feature)
            else:
                regression = nn.functional.relu(reg_head.bbox_reg(reg_feature))
                ctrness = reg_head.bbox_ctrness(reg_feature)
            maps.append(torch.cat((regression.to(logits.dtype), ctrness, logits), 1))
        return maps
