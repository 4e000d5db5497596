"""Faster R-CNN's RoI heads (torchvision's ``RoIHeads``, box branch): pool, two FCs, classify and regress.

Module names as torchvision's, so keys read ``roi_heads.box_head.fc6.weight`` ...
``roi_heads.box_predictor.bbox_pred.bias``; ``box_roi_pool`` (``MultiScaleRoIAlign(['0', '1', '2',
'3'], 7, 2)``) has no parameters.

The contract's ``forward(images)`` gets no targets, so this module does not branch on ``self.training``
the way torchvision's does: the model calls ``outputs`` (eval: every proposal) and the family's loss
calls ``loss`` (training: matched, sampled RoIs, ``roi_sampling.py``) with the ground truth it has.
Training settings: ``Matcher(0.5, 0.5)``, ``BalancedPositiveNegativeSampler(512, 0.25)``, ``BoxCoder((10,
10, 5, 5))``; inference: ``postprocess.py`` (torchvision's score 0.05, NMS 0.5 and 100 detections are
``predict``'s defaults).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors.ops.box_coder import BoxCoder
from detectors.ops.matcher import Matcher
from detectors.ops.sampler import BalancedPositiveNegativeSampler
from detectors.rcnn.roi_loss import fastrcnn_loss
from detectors.rcnn.roi_sampling import RoISamples, sample_rois

BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


class RoIPredictions(NamedTuple):
    """What ``postprocess.py`` needs of every proposal of a batch (eval mode)."""

    probabilities: Tensor  # (N, K + 1) class probabilities, background at 0
    boxes: Tensor  # (N, K + 1, 4) decoded boxes per class, xyxy input px (not yet clipped)
    counts: list[int]  # RoIs per image, in batch order


class RoIHeads(nn.Module):
    def __init__(self, box_roi_pool: nn.Module, box_head: nn.Module, box_predictor: nn.Module, *,
                 fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.5, batch_size_per_image: int = 512,
                 positive_fraction: float = 0.25, bbox_reg_weights: tuple[float, ...] = BBOX_REG_WEIGHTS) -> None:
        super().__init__()
        self.box_roi_pool = box_roi_pool
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.last_samples: RoISamples | None = None  # the last training sample (tests, parity script)

    def box_outputs(self, features: dict[str, Tensor], boxes: list[Tensor], image_size: tuple[int, int]
                    ) -> tuple[Tensor, Tensor]:
        """Class logits (N, K + 1) and box deltas (N, 4 (K + 1)) of the RoIs ``boxes`` (per image)."""
        pooled = self.box_roi_pool(features, boxes, [image_size] * len(boxes))  # (N, C, 7, 7)
        return self.box_predictor(self.box_head(pooled))

    def loss(self, features: dict[str, Tensor], proposals: list[Tensor], image_size: tuple[int, int],
             gt_boxes: list[Tensor], gt_labels: list[Tensor]) -> tuple[Tensor, Tensor]:
        """torchvision's (loss_classifier, loss_box_reg) on a fresh sample of ``proposals`` (labels 1..K)."""
        samples = sample_rois(proposals, gt_boxes, gt_labels, matcher=self.proposal_matcher,
                              sampler=self.fg_bg_sampler, box_coder=self.box_coder)
        self.last_samples = samples
        logits, deltas = self.box_outputs(features, samples.proposals, image_size)
        return fastrcnn_loss(logits, deltas, samples.labels, samples.regression_targets)

    def predictions(self, features: dict[str, Tensor], proposals: list[Tensor], image_size: tuple[int, int]
                    ) -> RoIPredictions:
        """Every proposal classified and regressed (what ``predict`` post-processes)."""
        logits, deltas = self.box_outputs(features, proposals, image_size)
        boxes = decode_boxes(self.box_coder, deltas, torch.cat(proposals))
        return RoIPredictions(F.softmax(logits, -1), boxes, [len(p) for p in proposals])


def decode_boxes(box_coder: BoxCoder, deltas: Tensor, proposals: Tensor) -> Tensor:
    """(N, 4 C) deltas applied to their (N, 4) proposals -> (N, C, 4) boxes (torchvision's ``decode``)."""
    n = proposals.shape[0]
    return box_coder.decode_single(deltas.reshape(n, -1), proposals).reshape(n, -1, 4)
