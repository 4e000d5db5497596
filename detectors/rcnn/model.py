"""Faster R-CNN and Cascade R-CNN with a ResNet-50-FPN backbone, as torchvision builds them for fine-tuning.

``state_dict()`` keys and shapes equal torchvision 0.26's (and 0.29's) ``fasterrcnn_resnet50_fpn(weights=
COCO_V1, num_classes=K + 1)`` (FrozenBatchNorm2d, layers 2-4 trainable): ``backbone.body.*``,
``backbone.fpn.*`` (layers 1-4 returned, plus the max-pool "pool" level), ``rpn.head.*``,
``roi_heads.box_head.fc6/fc7``, ``roi_heads.box_predictor.cls_score/bbox_pred``; K object classes plus
the background at index 0. Cascade R-CNN has three box heads and class-agnostic predictors
(``cascade_heads.py``). Sizes: ``*_resnet50_fpn`` (ResNet-50, FPN 256, FC 1024) and ``*_tiny`` (the
same layout with base width 16, FPN 64 and FC 256, and fewer proposals and sampled RoIs: tests and
smoke runs).

Input: RGB [0, 1] (B, 3, H, W), H and W multiples of 64 (the stride of the "pool" level); the ImageNet
mean/std normalisation of torchvision's ``GeneralizedRCNNTransform`` happens here, its resizing does not
(our loader letterboxes; every image of a batch has the batch's size).

What ``forward`` computes, in either mode (the contract gives it no targets)::

    FPN maps            P2..P6 at strides 4..64 ("0".."3", "pool")    -> head_inputs, students (4..32)
    top-down merges     before each 3x3 output conv, strides 4..32     -> teachers (tap set merged_to_output)
    RPN                 objectness + deltas per anchor, proposals      -> head.rpn, head.proposals
    RoI heads (eval)    every proposal classified and regressed        -> head.predictions

In training mode ``head.predictions`` is None: the RoI heads need the ground truth to sample their
RoIs, so the family's loss (``loss.py``, built with the model) runs them on ``head.features`` and
``head.proposals``. ``predict`` runs ``forward`` in eval mode and ``postprocess.py`` on the predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from detectors.api import Detections, DetectorOutput, TapSet
from detectors.backbones.resnet_fpn import resnet_fpn_backbone
from detectors.necks.fpn import LastLevelMaxPool
from detectors.ops.multiscale_roi_align import MultiScaleRoIAlign
from detectors.rcnn.box_head import FastRCNNPredictor, TwoMLPHead
from detectors.rcnn.cascade_heads import CascadeRoIHeads
from detectors.rcnn.postprocess import postprocess_image
from detectors.rcnn.roi_heads import RoIHeads, RoIPredictions
from detectors.rcnn.rpn import build_rpn
from detectors.rcnn.taps import DEFAULT_TAPS, HEAD_STRIDES, MERGED, OUTPUT, TAP_SETS, TAP_STRIDES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_NAMES = ("0", "1", "2", "3", "pool")  # torchvision's FPN output names, strides 4..64
ROI_LEVELS = ["0", "1", "2", "3"]
# torchvision's predict defaults (RoIHeads' box_score_thresh, box_nms_thresh, box_detections_per_img)
SCORE_THRESH, NMS_THRESH, DETECTIONS_PER_IMG = 0.05, 0.5, 100


@dataclass(frozen=True)
class RCNNSize:
    base_width: int  # ResNet width (64: ResNet-50)
    fpn_channels: int
    representation_size: int  # TwoMLPHead's fc6/fc7 width
    cascade: bool
    # RPN proposals kept per image before / after NMS, {training, testing} (torchvision: 2000/2000, 1000/1000)
    # and RoIs sampled per image (torchvision: 512). The tiny sizes keep fewer: NMS and RoIAlign dominate a
    # CPU step at test sizes, and a 64-192 px image has few objects to propose.
    pre_nms_top_n: tuple[int, int] = (2000, 1000)
    post_nms_top_n: tuple[int, int] = (2000, 1000)
    rois_per_image: int = 512


TINY = {"pre_nms_top_n": (600, 300), "post_nms_top_n": (300, 100), "rois_per_image": 128}
SIZES: dict[str, RCNNSize] = {
    "fasterrcnn_resnet50_fpn": RCNNSize(64, 256, 1024, cascade=False),
    "fasterrcnn_tiny": RCNNSize(16, 64, 256, cascade=False, **TINY),
    "cascadercnn_resnet50_fpn": RCNNSize(64, 256, 1024, cascade=True),
    "cascadercnn_tiny": RCNNSize(16, 64, 256, cascade=True, **TINY),
}


class RCNNHead(NamedTuple):
    """``DetectorOutput.head`` of the R-CNNs: what the loss and ``predict`` read."""

    features: dict[str, Tensor]  # FPN outputs by torchvision's names "0".."3", "pool"
    image_size: tuple[int, int]  # (H, W) of the input batch
    rpn: Any  # the RPN's raw output (objectness, deltas, anchors): its loss reads it
    proposals: list[Tensor]  # (P_i, 4) xyxy input px per image, detached
    predictions: RoIPredictions | None  # eval mode only


class TwoStageDetector(nn.Module):
    """Faster R-CNN (``cascade=False``) or Cascade R-CNN on ResNet-50-FPN; see the module docstring."""

    def __init__(self, size: str = "fasterrcnn_resnet50_fpn", num_classes: int = 80, *,
                 taps: TapSet | None = None) -> None:
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"unknown R-CNN size {size!r}: expected one of {', '.join(SIZES)}")
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        spec = SIZES[size]
        self.size, self.num_classes, self.cascade = size, num_classes, spec.cascade
        self.strides: tuple[int, ...] = HEAD_STRIDES
        self.backbone = resnet_fpn_backbone(base_width=spec.base_width, fpn_channels=spec.fpn_channels,
                                            returned_layers=(1, 2, 3, 4), extra_blocks=LastLevelMaxPool(),
                                            trainable_layers=3)
        self.rpn = build_rpn(spec.fpn_channels, pre_nms_top_n=_top_n(spec.pre_nms_top_n),
                             post_nms_top_n=_top_n(spec.post_nms_top_n))
        # torchvision's pooler; Cascade R-CNN's is mmcv's RoIAlign (aligned, adaptive sampling), which its
        # MMDetection weights were trained with.
        pool = (MultiScaleRoIAlign(ROI_LEVELS, output_size=7, sampling_ratio=0, aligned=True) if spec.cascade
                else MultiScaleRoIAlign(ROI_LEVELS, output_size=7, sampling_ratio=2))
        pooled = spec.fpn_channels * 7 * 7
        classes = num_classes + 1  # background at index 0
        rep = spec.representation_size
        if spec.cascade:
            self.roi_heads = CascadeRoIHeads(
                pool, [TwoMLPHead(pooled, rep) for _ in range(3)],
                [FastRCNNPredictor(rep, classes, class_agnostic=True) for _ in range(3)],
                batch_size_per_image=spec.rois_per_image)
        else:
            self.roi_heads = RoIHeads(pool, TwoMLPHead(pooled, rep), FastRCNNPredictor(rep, classes),
                                      batch_size_per_image=spec.rois_per_image)
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        self.taps = TAP_SETS[DEFAULT_TAPS] if taps is None else taps
        _check_taps(self.taps)
        c = spec.fpn_channels
        self.tap_channels: dict[int, tuple[int, int]] = {p.stride: (c, c) for p in self.taps.pairs}
        self.head_input_channels = {s: c for s in HEAD_STRIDES}

    def forward(self, images: Tensor) -> DetectorOutput:
        """images (B, 3, H, W) RGB in [0, 1], H and W multiples of 64 -> ``RCNNHead`` and the FPN taps."""
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] % 64 or images.shape[3] % 64:
            raise ValueError(f"images: expected (B, 3, H, W) with H, W multiples of 64, got {tuple(images.shape)}")
        image_size = (int(images.shape[2]), int(images.shape[3]))
        maps = self.backbone((images - self.image_mean) / self.image_std)
        features = {name: maps.outputs[s] for name, s in zip(FEATURE_NAMES, HEAD_STRIDES, strict=True)}
        rpn_output = self.rpn(list(features.values()), image_size)
        proposals = [p.detach() for p in rpn_output.proposals]
        predictions = None if self.training else self.roi_heads.predictions(features, proposals, image_size)
        head = RCNNHead(features, image_size, rpn_output, proposals, predictions)
        by_name = {MERGED: maps.merged, OUTPUT: maps.outputs}
        teachers = {p.stride: by_name[p.teacher][p.stride] for p in self.taps.pairs}
        students = {p.stride: by_name[p.student][p.stride] for p in self.taps.pairs}
        return DetectorOutput(head, teachers, students, {s: maps.outputs[s] for s in HEAD_STRIDES})

    @torch.no_grad()
    def predict(self, images: Tensor, *, conf: float = SCORE_THRESH, iou: float = NMS_THRESH,
                max_det: int = DETECTIONS_PER_IMG) -> list[Detections]:
        """Per image: boxes (D, 4) xyxy input px, scores (D,), classes (D,) in 0..K-1 (torchvision's
        ``postprocess_detections`` with score > ``conf``, class-wise NMS at ``iou``, ``max_det`` kept).

        Always in eval mode (the RPN's test top-n: 1000 proposals per image), restoring the caller's mode."""
        was_training = self.training
        self.eval()
        try:
            head = self.forward(images).head
        finally:
            self.train(was_training)
        p = head.predictions
        out = []
        per_image = zip(p.probabilities.float().split(p.counts), p.boxes.float().split(p.counts), strict=True)
        for probabilities, boxes in per_image:
            b, s, labels = postprocess_image(probabilities, boxes, head.image_size, score_thresh=conf,
                                             nms_thresh=iou, detections_per_img=max_det)
            out.append(Detections(b, s, labels - 1))
        return out


def _top_n(values: tuple[int, int]) -> dict[str, int]:
    return {"training": values[0], "testing": values[1]}


def _check_taps(taps: TapSet) -> None:
    for pair in taps.pairs:
        if pair.stride not in TAP_STRIDES or {pair.teacher, pair.student} - {MERGED, OUTPUT}:
            raise ValueError(f"taps {taps.name}: expected pairs of 'merged'/'output' maps at strides {TAP_STRIDES}, "
                             f"got {pair}")
