"""Cascade R-CNN's RoI heads (Cai and Vasconcelos 2018; MMDetection's ``CascadeRoIHead`` config for R50-FPN).

Three stages, each a ``TwoMLPHead`` and a class-agnostic ``FastRCNNPredictor`` with torchvision-style
names ``roi_heads.box_head.{0,1,2}.fc6/fc7`` and ``roi_heads.box_predictor.{0,1,2}.cls_score/bbox_pred``
(``bbox_pred`` has 4 outputs: one box per RoI), one shared ``box_roi_pool`` (no parameters; the model
gives it mmcv's RoIAlign settings, ``aligned=True`` with adaptive sampling, as MMDetection trains it).

Stage t (IoU threshold 0.5 / 0.6 / 0.7, box-coder weights (10, 10, 5, 5) / (20, 20, 10, 10) / (30, 30,
15, 15), i.e. MMDetection's target stds 0.1/0.2, 0.05/0.1, 0.033/0.067, loss weight 1 / 0.5 / 0.25):

- training (``loss``): match its RoIs (plus the ground truth) at its threshold, sample 512 at 1:3,
  classify and regress them (cross entropy + smooth L1, beta 1.0 as MMDetection's config, sum over
  positives / sampled RoIs); the next stage's RoIs are this stage's sampled RoIs moved by its regression
  (no gradient, clipped to the image), the appended ground-truth boxes dropped (MMDetection's
  ``refine_bboxes``). ``cls`` and ``box`` are the stage-weighted sums.
- inference (``predictions``): every proposal goes through the three stages, each refining the boxes
  the next one pools; the class scores are the softmax of the three stages' logits averaged and the
  boxes the last stage's regression (MMDetection's ``_refine_roi`` + ``predict_by_feat``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors.ops.box_coder import BoxCoder
from detectors.ops.boxes import clip_boxes_to_image
from detectors.ops.matcher import Matcher
from detectors.ops.sampler import BalancedPositiveNegativeSampler
from detectors.rcnn.roi_heads import RoIPredictions
from detectors.rcnn.roi_loss import fastrcnn_loss
from detectors.rcnn.roi_sampling import RoISamples, sample_rois

STAGE_IOUS = (0.5, 0.6, 0.7)
STAGE_REG_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))
STAGE_LOSS_WEIGHTS = (1.0, 0.5, 0.25)
SMOOTH_L1_BETA = 1.0  # MMDetection's cascade_rcnn_r50_fpn bbox heads


class CascadeRoIHeads(nn.Module):
    def __init__(self, box_roi_pool: nn.Module, box_heads: list[nn.Module], box_predictors: list[nn.Module], *,
                 stage_ious: tuple[float, ...] = STAGE_IOUS,
                 stage_reg_weights: tuple[tuple[float, ...], ...] = STAGE_REG_WEIGHTS,
                 stage_loss_weights: tuple[float, ...] = STAGE_LOSS_WEIGHTS, batch_size_per_image: int = 512,
                 positive_fraction: float = 0.25, beta: float = SMOOTH_L1_BETA) -> None:
        super().__init__()
        stages = len(box_heads)
        if not stages == len(box_predictors) == len(stage_ious) == len(stage_reg_weights) == len(stage_loss_weights):
            raise ValueError("CascadeRoIHeads: one head, predictor, IoU, coder weight and loss weight per stage")
        self.box_roi_pool = box_roi_pool
        self.box_head = nn.ModuleList(box_heads)
        self.box_predictor = nn.ModuleList(box_predictors)
        self.matchers = [Matcher(iou, iou, allow_low_quality_matches=False) for iou in stage_ious]
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.box_coders = [BoxCoder(w) for w in stage_reg_weights]
        self.stage_loss_weights = tuple(stage_loss_weights)
        self.beta = beta
        self.last_samples: list[RoISamples] = []  # per stage, the last training sample (tests)
        self.last_stage_losses: list[tuple[Tensor, Tensor]] = []  # per stage (cls, box), unweighted, detached

    def stage_outputs(self, stage: int, features: dict[str, Tensor], boxes: list[Tensor],
                      image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Stage ``stage``'s class logits (N, K + 1) and class-agnostic deltas (N, 4) for RoIs ``boxes``."""
        pooled = self.box_roi_pool(features, boxes, [image_size] * len(boxes))
        return self.box_predictor[stage](self.box_head[stage](pooled))

    def refine(self, stage: int, deltas: Tensor, boxes: list[Tensor], image_size: tuple[int, int]) -> list[Tensor]:
        """The RoIs ``boxes`` moved by stage ``stage``'s deltas, clipped to the image (no gradient)."""
        decoded = self.box_coders[stage].decode_single(deltas.detach(), torch.cat(boxes).detach())
        decoded = clip_boxes_to_image(decoded, image_size)
        return list(decoded.split([len(b) for b in boxes]))

    def loss(self, features: dict[str, Tensor], proposals: list[Tensor], image_size: tuple[int, int],
             gt_boxes: list[Tensor], gt_labels: list[Tensor]) -> tuple[Tensor, Tensor]:
        """(sum_t w_t cls_t, sum_t w_t box_t) over the stages; labels 1..K."""
        self.last_samples, self.last_stage_losses = [], []
        cls_total = box_total = None
        rois = proposals
        for stage, weight in enumerate(self.stage_loss_weights):
            samples = sample_rois(rois, gt_boxes, gt_labels, matcher=self.matchers[stage],
                                  sampler=self.fg_bg_sampler, box_coder=self.box_coders[stage])
            logits, deltas = self.stage_outputs(stage, features, samples.proposals, image_size)
            cls, box = fastrcnn_loss(logits, deltas, samples.labels, samples.regression_targets, beta=self.beta)
            self.last_samples.append(samples)
            self.last_stage_losses.append((cls.detach(), box.detach()))
            cls_total = weight * cls if cls_total is None else cls_total + weight * cls
            box_total = weight * box if box_total is None else box_total + weight * box
            if stage < len(self.stage_loss_weights) - 1:
                refined = self.refine(stage, deltas, samples.proposals, image_size)
                rois = [boxes[~is_gt] for boxes, is_gt in zip(refined, samples.is_gt, strict=True)]
        return cls_total, box_total

    def predictions(self, features: dict[str, Tensor], proposals: list[Tensor], image_size: tuple[int, int]
                    ) -> RoIPredictions:
        """Every proposal through the cascade: averaged-logit probabilities, the last stage's boxes."""
        rois, logits_sum, deltas = proposals, None, None
        last = len(self.box_head) - 1
        for stage in range(last + 1):
            logits, deltas = self.stage_outputs(stage, features, rois, image_size)
            logits_sum = logits if logits_sum is None else logits_sum + logits
            if stage < last:
                rois = self.refine(stage, deltas, rois, image_size)
        probabilities = F.softmax(logits_sum / (last + 1), -1)
        boxes = self.box_coders[last].decode_single(deltas, torch.cat(rois))  # (N, 4): one box for every class
        return RoIPredictions(probabilities, boxes[:, None].expand(-1, probabilities.shape[1], 4),
                              [len(r) for r in rois])
