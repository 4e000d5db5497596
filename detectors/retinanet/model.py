"""RetinaNet with a ResNet-50-FPN (torchvision's ``retinanet_resnet50_fpn``, v1): keys, outputs, detections.

``state_dict()`` keys and shapes equal those of torchvision 0.26-0.29's
``retinanet_resnet50_fpn(weights=None, weights_backbone=<any>, num_classes=K)`` (the fine-tuning build:
``FrozenBatchNorm2d`` in the ResNet, conv1 and layer1 frozen, FPN on layer2-4 with P6/P7 from P5 by
``LastLevelP6P7(256, 256)``, the head of ``head.py``), so their checkpoints load with ``strict=True``.

Sizes (``SIZES``): ``retinanet_resnet50_fpn`` (ResNet-50, 256-channel FPN and head);
``retinanet_tiny``, the project's narrow test size (base width 16, 64 channels; same layout);
``retinanet_resnet50_fpn_mmdet2``, MMDetection 2.x's ``retinanet_r50_fpn_1x_coco`` (the model the paper's
counts point to): P6 from C5 (``add_extra_convs='on_input'``: ``LastLevelP6P7(2048, 256)``), P7 from P6
without the ReLU (``relu_before_extra_convs=False``), and its anchors (octave base scale 4, 3 scales per
octave: sizes 32 x 2^(k/3) exactly, not truncated to integers and not rounded as torchvision's). Its
ResNet is pytorch-style with ImageNet normalisation, like torchvision's. Difference kept: MMDetection
trains the BatchNorm affine terms (``requires_grad=True, norm_eval=True``); ours are frozen
(``FrozenBatchNorm2d``), as torchvision's.

Input: RGB in [0, 1] (B, 3, H, W), H and W multiples of 128 (P7's stride), letterboxed by our loader,
normalised here with ImageNet's mean and std as torchvision's ``GeneralizedRCNNTransform`` does; no
resize (torchvision's transform would rescale to ``min_size`` 800).

Anchors: 9 per cell (3 sizes x aspect ratios 0.5, 1, 2), torchvision's ``AnchorGenerator`` layout
(``detectors.ops.anchors``: shifted to the cell's top-left corner, the anchors of a cell together), always
float32 (torchvision makes them in the features' dtype; under AMP ours stay float32).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor, nn

from detectors.api import Detections, DetectorOutput, TapSet
from detectors.backbones.resnet_fpn import resnet_fpn_backbone
from detectors.necks.fpn import LastLevelP6P7
from detectors.ops.anchors import AnchorGenerator, grid_anchors
from detectors.retinanet.head import RetinaNetHead
from detectors.retinanet.postprocess import postprocess_detections
from detectors.retinanet.taps import DEFAULT_TAPS, HEAD_INPUTS, STRIDES, TAP_SETS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ASPECT_RATIOS = (0.5, 1.0, 2.0)
STYLES = ("torchvision", "mmdet2")
ANCHOR_CACHE_SIZE = 16  # input shapes whose anchors are kept (oldest dropped first)


@dataclass(frozen=True)
class RetinaNetSize:
    base_width: int  # ResNet stem width (64: ResNet-50)
    fpn_channels: int  # FPN and head width
    style: str = "torchvision"  # torchvision | mmdet2 (P6 from C5, P7 without ReLU, unrounded anchors)


SIZES: dict[str, RetinaNetSize] = {
    "retinanet_resnet50_fpn": RetinaNetSize(64, 256),
    "retinanet_tiny": RetinaNetSize(16, 64),
    "retinanet_resnet50_fpn_mmdet2": RetinaNetSize(64, 256, style="mmdet2"),
}


class HeadOutput(NamedTuple):
    """``DetectorOutput.head`` of RetinaNet: per level (stride 8 .. 128) the raw class logits
    ``(B, A * K, H, W)`` and box deltas ``(B, A * 4, H, W)``, and the level's anchors ``(H * W * A, 4)``
    (float32, input pixels) in the same order as ``head.flatten_level``."""

    cls_logits: list[Tensor]
    bbox_regression: list[Tensor]
    anchors: list[Tensor]


class LastLevelP6P7NoReLU(LastLevelP6P7):
    """MMDetection 2.x's RetinaNet extra levels: P7 = conv(P6) without torchvision's ReLU in between
    (``relu_before_extra_convs=False``). Same keys as ``LastLevelP6P7``."""

    def forward(self, outputs: list[Tensor], inputs: list[Tensor]) -> list[Tensor]:
        p6 = self.p6(outputs[-1] if self.use_P5 else inputs[-1])
        return [p6, self.p7(p6)]


def torchvision_anchor_sizes() -> tuple[tuple[int, ...], ...]:
    """torchvision's ``_default_anchorgen`` sizes: (x, int(x 2^(1/3)), int(x 2^(2/3))) for x = 32 .. 512."""
    return tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in (32, 64, 128, 256, 512))


def mmdet_cell_anchors(stride: int, octave_base_scale: float = 4.0, scales_per_octave: int = 3,
                       ratios: tuple[float, ...] = ASPECT_RATIOS) -> Tensor:
    """MMDetection 2.x's ``AnchorGenerator.gen_single_level_base_anchors`` (centre offset 0, scale-major):
    sizes ``stride * octave_base_scale * 2^(k / scales_per_octave)``, unrounded; (len(ratios) * scales, 4)."""
    scales = torch.tensor([octave_base_scale * 2 ** (k / scales_per_octave) for k in range(scales_per_octave)])
    h_ratios = torch.sqrt(torch.tensor(ratios))
    w_ratios = 1 / h_ratios
    ws = (stride * w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (stride * h_ratios[:, None] * scales[None, :]).view(-1)
    return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1)


class RetinaNet(nn.Module):
    """RetinaNet. ``forward`` -> ``DetectorOutput`` (head: ``HeadOutput``); ``predict`` -> detections.

    Matching settings read by the loss: ``fg_iou_thresh`` 0.5, ``bg_iou_thresh`` 0.4 (torchvision's;
    MMDetection's MaxIoUAssigner has the same). Post-processing: ``topk_candidates`` 1000 per level.
    """

    def __init__(self, size: str = "retinanet_resnet50_fpn", num_classes: int = 91, *, taps: TapSet | None = None,
                 trainable_layers: int = 3, topk_candidates: int = 1000, style: str | None = None) -> None:
        """``style`` overrides the size's (``retinanet_tiny`` with ``style="mmdet2"``: MMDetection's layout, narrow)."""
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"unknown RetinaNet size {size!r}: expected one of {', '.join(SIZES)}")
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        spec = SIZES[size] if style is None else replace(SIZES[size], style=style)
        if spec.style not in STYLES:
            raise ValueError(f"RetinaNet style: expected one of {STYLES}, got {spec.style!r}")
        self.size = size
        self.style = spec.style
        self.num_classes = num_classes
        self.strides: tuple[int, ...] = STRIDES
        self.topk_candidates = topk_candidates
        self.fg_iou_thresh, self.bg_iou_thresh = 0.5, 0.4
        c = spec.fpn_channels
        if spec.style == "mmdet2":
            c5 = 32 * spec.base_width  # layer4's output channels (2048 for ResNet-50)
            extra = LastLevelP6P7NoReLU(c5, c)
        else:
            extra = LastLevelP6P7(c, c)
        self.backbone = resnet_fpn_backbone(base_width=spec.base_width, fpn_channels=c, returned_layers=(2, 3, 4),
                                            extra_blocks=extra, trainable_layers=trainable_layers)
        # Not in the state dict (torchvision keeps them in its transform, which has no state).
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD), persistent=False)
        if spec.style == "mmdet2":
            self.cell_anchors = [mmdet_cell_anchors(s) for s in STRIDES]
        else:
            self.cell_anchors = AnchorGenerator(torchvision_anchor_sizes(), (ASPECT_RATIOS,) * 5).cell_anchors
        self.num_anchors = int(self.cell_anchors[0].shape[0])
        self.head = RetinaNetHead(c, self.num_anchors, num_classes)
        self._anchor_cache: dict[tuple, list[Tensor]] = {}

        self.taps = TAP_SETS[DEFAULT_TAPS] if taps is None else taps
        stage_channels = dict(zip((8, 16, 32), self.backbone.in_channels_list, strict=True))
        levels = {8: 3, 16: 4, 32: 5, 64: 6, 128: 7}  # stride -> pyramid level (P3 = stride 8)
        self.tap_points: dict[str, tuple[int, int]] = {
            **{f"C{levels[s]}": (s, ch) for s, ch in stage_channels.items()},
            **{f"M{levels[s]}": (s, c) for s in (8, 16, 32)},
            **{f"P{levels[s]}": (s, c) for s in STRIDES},
        }
        _check_taps(self.taps, self.tap_points)
        self.tap_names = {p.stride: (p.teacher, p.student) for p in self.taps.pairs}
        self.tap_channels: dict[int, tuple[int, int]] = {
            s: (self.tap_points[t][1], self.tap_points[st][1]) for s, (t, st) in self.tap_names.items()
        }
        self.head_input_channels = {s: c for s in STRIDES}

    def normalise(self, images: Tensor) -> Tensor:
        """RGB [0, 1] -> ImageNet-normalised RGB, torchvision's ``(image - mean) / std``."""
        mean = self.image_mean.to(images.dtype)[None, :, None, None]
        std = self.image_std.to(images.dtype)[None, :, None, None]
        return (images - mean) / std

    def features(self, images: Tensor) -> dict[str, Tensor]:
        """Every map of ``tap_points`` by name (C3-C5, M3-M5, P3-P7) for RGB [0, 1] ``images``."""
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] % 128 or images.shape[3] % 128:
            raise ValueError(f"images: expected (B, 3, H, W) with H, W multiples of 128, got {tuple(images.shape)}")
        backbone = self.backbone
        stages = backbone.body(self.normalise(images))
        inputs = [stages[i - 1] for i in backbone.returned_layers]
        outputs, merged = backbone.fpn(inputs)
        maps = {f"C{level}": x for level, x in zip((3, 4, 5), inputs, strict=True)}
        maps.update({f"M{level}": x for level, x in zip((3, 4, 5), merged, strict=True)})
        maps.update({f"P{level}": x for level, x in zip((3, 4, 5, 6, 7), outputs, strict=True)})
        return maps

    def anchors(self, shapes: list[tuple[int, int]], device: torch.device) -> list[Tensor]:
        """Per level the ``(h * w * A, 4)`` anchors of feature maps of ``shapes`` (cached per shape)."""
        key = (tuple(shapes), str(device))
        if key not in self._anchor_cache:
            if len(self._anchor_cache) >= ANCHOR_CACHE_SIZE:  # rectangular evaluation brings many shapes
                self._anchor_cache.pop(next(iter(self._anchor_cache)))
            self._anchor_cache[key] = [grid_anchors(base.to(device), shape, (s, s))
                                       for base, shape, s in zip(self.cell_anchors, shapes, STRIDES, strict=True)]
        return self._anchor_cache[key]

    def forward_head(self, head_inputs: dict[int, Tensor]) -> HeadOutput:
        """The head alone on ``{stride: (B, C, H, W)}`` maps (strides 8 .. 128), as ``forward(images).head``."""
        levels = [head_inputs[s] for s in STRIDES]
        cls_logits, bbox_regression = self.head(levels)
        anchors = self.anchors([tuple(x.shape[-2:]) for x in levels], levels[0].device)
        return HeadOutput(cls_logits, bbox_regression, anchors)

    def forward(self, images: Tensor) -> DetectorOutput:
        """images (B, 3, H, W) RGB in [0, 1], H and W multiples of 128 -> head maps, anchors and taps."""
        maps = self.features(images)
        head_inputs = {s: maps[HEAD_INPUTS[s]] for s in STRIDES}
        head = self.forward_head(head_inputs)
        teachers = {s: maps[t] for s, (t, _student) in self.tap_names.items()}
        students = {s: maps[st] for s, (_teacher, st) in self.tap_names.items()}
        return DetectorOutput(head, teachers, students, head_inputs)

    @torch.no_grad()
    def predict(self, images: Tensor, *, conf: float = 0.05, iou: float = 0.5, max_det: int = 300) -> list[Detections]:
        """Per image: boxes (K, 4) xyxy input px, scores sigmoid(cls), classes (torchvision's post-processing).

        Defaults are torchvision's ``score_thresh`` 0.05, ``nms_thresh`` 0.5, ``detections_per_img`` 300
        (MMDetection: 0.05 / 0.5 / 100). Uses the module's current mode (``model.eval()`` first).
        """
        head = self.forward(images).head
        return postprocess_detections(head, tuple(images.shape[-2:]), score_thresh=conf, nms_thresh=iou,
                                      detections_per_img=max_det, topk_candidates=self.topk_candidates)

    def _apply(self, fn, recurse: bool = True):
        self._anchor_cache = {}  # anchors follow the module to its device
        return super()._apply(fn, recurse)


def _check_taps(taps: TapSet, points: dict[str, tuple[int, int]]) -> None:
    for pair in taps.pairs:
        for role, name in (("teacher", pair.teacher), ("student", pair.student)):
            if points.get(name, (None,))[0] != pair.stride:
                choices = [n for n, (s, _) in points.items() if s == pair.stride]
                raise ValueError(f"taps {taps.name}: {role} {name!r} is not a stride-{pair.stride} RetinaNet map; "
                                 f"expected one of {choices}")
