"""FCOS with a ResNet-50-FPN (torchvision's ``fcos_resnet50_fpn``): keys, outputs and detections as theirs.

``state_dict()`` keys and shapes equal those of torchvision 0.26-0.29's
``fcos_resnet50_fpn(weights=None, weights_backbone=<any>, num_classes=K)`` (the fine-tuning build:
``FrozenBatchNorm2d`` in the ResNet, conv1 and layer1 frozen, FPN on layer2-4 with P6/P7 from P5,
GroupNorm head), so their checkpoints load with ``strict=True``:
``backbone.body.conv1.weight`` ... ``backbone.fpn.extra_blocks.p7.bias``, ``head.classification_head.*``,
``head.regression_head.*`` (``head.py``).

Sizes (``SIZES``): ``fcos_resnet50_fpn`` (ResNet-50, 256-channel FPN and head); ``fcos_tiny``, the
project's narrow test size (base width 16, 64 channels; same layout); ``fcos_resnet50_fpn_mmdet2``,
MMDetection 2.x's ``fcos_r50_caffe_fpn_gn-head`` (caffe-style ResNet: stride on each first block's 1x1
conv, BGR 0-255 input minus the caffe mean; head ``style="mmdet2"``; points at the cell centres).

Input: RGB in [0, 1] (B, 3, H, W), H and W multiples of 128 (P7's stride), letterboxed by our loader;
normalised here with ImageNet's mean and std as torchvision's ``GeneralizedRCNNTransform`` does. There
is no resize: torchvision's transform would rescale to ``min_size`` 800; our loader sets the size.

Points ("anchors", torchvision's FCOS ``AnchorGenerator`` with one square anchor of the level's stride
per cell): cell (x, y) of stride s is the box ``[x s - s/2, y s - s/2, x s + s/2, y s + s/2]``, its
centre ``(x s, y s)``, the cell's top-left corner (MMDetection: ``(x s + s//2, y s + s//2)``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from detectors.api import Detections, DetectorOutput, TapSet
from detectors.backbones.resnet_fpn import resnet_fpn_backbone
from detectors.fcos.head import STYLES, FCOSHead
from detectors.fcos.postprocess import postprocess_detections
from detectors.fcos.taps import DEFAULT_TAPS, HEAD_INPUTS, STRIDES, TAP_SETS
from detectors.necks.fpn import LastLevelP6P7

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (102.9801, 115.9465, 122.7717)  # MMDetection's caffe img_norm_cfg (std 1, BGR, 0-255)


@dataclass(frozen=True)
class FCOSSize:
    base_width: int  # ResNet stem width (64: ResNet-50)
    fpn_channels: int  # FPN and head width
    style: str = "torchvision"  # torchvision | mmdet2 (head.py, the backbone style, input, points)


SIZES: dict[str, FCOSSize] = {
    "fcos_resnet50_fpn": FCOSSize(64, 256),
    "fcos_tiny": FCOSSize(16, 64),
    "fcos_resnet50_fpn_mmdet2": FCOSSize(64, 256, style="mmdet2"),
}


class FCOS(nn.Module):
    """FCOS. ``forward`` -> ``DetectorOutput`` (head: per-level maps, ``head.py``); ``predict`` -> detections.

    Post-processing settings are torchvision's defaults: ``topk_candidates`` 1000 per level before NMS;
    ``predict``'s ``conf`` / ``iou`` / ``max_det`` are its ``score_thresh`` / ``nms_thresh`` /
    ``detections_per_img``. ``center_sampling_radius`` (1.5) is read by the loss.
    """

    def __init__(self, size: str = "fcos_resnet50_fpn", num_classes: int = 91, *, taps: TapSet | None = None,
                 trainable_layers: int = 3, topk_candidates: int = 1000, style: str | None = None) -> None:
        """``style`` overrides the size's (``fcos_tiny`` with ``style="mmdet2"``: MMDetection's layout, narrow)."""
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"unknown FCOS size {size!r}: expected one of {', '.join(SIZES)}")
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        spec = SIZES[size] if style is None else replace(SIZES[size], style=style)
        if spec.style not in STYLES:
            raise ValueError(f"FCOS style: expected one of {STYLES}, got {spec.style!r}")
        self.size = size
        self.style = spec.style
        self.num_classes = num_classes
        self.strides: tuple[int, ...] = STRIDES
        self.topk_candidates = topk_candidates
        self.center_sampling_radius = 1.5
        # Points at the cells' top-left corners (torchvision) or their centres (MMDetection), in strides.
        self.point_offset = 0.5 if spec.style == "mmdet2" else 0.0
        c = spec.fpn_channels
        self.backbone = resnet_fpn_backbone(base_width=spec.base_width, fpn_channels=c, returned_layers=(2, 3, 4),
                                            extra_blocks=LastLevelP6P7(c, c), trainable_layers=trainable_layers,
                                            style="caffe" if spec.style == "mmdet2" else "pytorch")
        if spec.style == "mmdet2":
            mean, std = torch.tensor(CAFFE_MEAN_BGR), torch.ones(3)
        else:
            mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        # Not in the state dict (torchvision keeps them in its transform, which has no state).
        self.register_buffer("image_mean", mean, persistent=False)
        self.register_buffer("image_std", std, persistent=False)
        self.head = FCOSHead(c, num_classes, STRIDES, style=spec.style)

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
        """RGB [0, 1] -> the network's input: ImageNet-normalised RGB (torchvision's arithmetic), or
        BGR 0-255 minus the caffe mean (mmdet2)."""
        if self.style == "mmdet2":
            images = images.flip(1) * 255.0
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

    def forward(self, images: Tensor) -> DetectorOutput:
        """images (B, 3, H, W) RGB in [0, 1], H and W multiples of 128 -> head maps and taps.

        Head: per level (stride 8 .. 128) ``(B, 4 + 1 + K, H/s, W/s)``: regression, centerness logit, class logits.
        """
        maps = self.features(images)
        head_inputs = {s: maps[HEAD_INPUTS[s]] for s in STRIDES}
        head = self.head([head_inputs[s] for s in STRIDES])
        teachers = {s: maps[t] for s, (t, _student) in self.tap_names.items()}
        students = {s: maps[st] for s, (_teacher, st) in self.tap_names.items()}
        return DetectorOutput(head, teachers, students, head_inputs)

    def anchors(self, head: list[Tensor]) -> list[Tensor]:
        """Per level the (H*W, 4) square anchor of each point (see the module doc), row-major."""
        return level_anchors([tuple(m.shape[-2:]) for m in head], self.strides, self.point_offset,
                             device=head[0].device)

    @torch.no_grad()
    def predict(self, images: Tensor, *, conf: float = 0.2, iou: float = 0.6, max_det: int = 100) -> list[Detections]:
        """Per image: boxes (K, 4) xyxy input px, scores sqrt(sigmoid(cls) x sigmoid(centerness)), classes.

        torchvision's ``FCOS.postprocess_detections``; defaults are its ``score_thresh`` 0.2,
        ``nms_thresh`` 0.6 and ``detections_per_img`` 100 (MMDetection evaluates at 0.05 / 0.6 / 100).
        Uses the module's current mode (``model.eval()`` first).
        """
        head = self.forward(images).head
        return postprocess_detections(head, self.anchors(head), tuple(images.shape[-2:]), score_thresh=conf,
                                      nms_thresh=iou, detections_per_img=max_det, topk_candidates=self.topk_candidates)


def level_anchors(shapes: list[tuple[int, int]], strides: tuple[int, ...], offset: float = 0.0, *,
                  device: torch.device | None = None) -> list[Tensor]:
    """FCOS's one anchor per cell: ``[cx - s/2, cy - s/2, cx + s/2, cy + s/2]`` with ``cx = (x + offset) s``,
    row-major over (y, x) as torchvision's ``AnchorGenerator`` lays them out (float32)."""
    anchors = []
    for (h, w), s in zip(shapes, strides, strict=True):
        ys = (torch.arange(h, device=device, dtype=torch.float32) + offset) * s
        xs = (torch.arange(w, device=device, dtype=torch.float32) + offset) * s
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        cx, cy = cx.reshape(-1), cy.reshape(-1)
        half = s / 2
        anchors.append(torch.stack((cx - half, cy - half, cx + half, cy + half), 1))
    return anchors


def _check_taps(taps: TapSet, points: dict[str, tuple[int, int]]) -> None:
    for pair in taps.pairs:
        for role, name in (("teacher", pair.teacher), ("student", pair.student)):
            if points.get(name, (None,))[0] != pair.stride:
                choices = [n for n, (s, _) in points.items() if s == pair.stride]
                raise ValueError(f"taps {taps.name}: {role} {name!r} is not a stride-{pair.stride} FCOS map; "
                                 f"expected one of {choices}")


def build_fcos(size: str, num_classes: int, **kwargs) -> FCOS:
    """A freshly initialised FCOS of ``size`` (``fcos_resnet50_fpn``, ``fcos_tiny``...) for ``num_classes``."""
    return FCOS(size, num_classes, **kwargs)
