"""Training samples of an RoI head: proposals matched to ground truth, then a balanced subsample.

torchvision's ``RoIHeads.select_training_samples`` (and one stage of MMDetection's Cascade R-CNN, where
the thresholds change per stage), per image:

1. the ground-truth boxes are appended to the proposals (every object has at least one perfect RoI);
2. each proposal is matched to the ground truth of highest IoU (``Matcher(fg, bg)``, no low-quality
   matches): IoU >= fg -> that object's label (1..K), IoU < bg -> background (0), in between -> ignored
   (-1, only when fg > bg);
3. ``BalancedPositiveNegativeSampler(512, 0.25)`` keeps at most 128 positives and fills up to 512 with
   negatives, at random (the global torch generator: seed it for a reproducible sample);
4. regression targets: the matched ground-truth box encoded against its proposal (``BoxCoder``).

An image without ground truth gets label 0 everywhere and the zero box as its (unused) target.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from detectors.ops.boxes import box_iou


class RoISamples(NamedTuple):
    """The sampled RoIs of a batch, one entry per image."""

    proposals: list[Tensor]  # (S_i, 4) xyxy input px: the sampled boxes the head pools
    labels: list[Tensor]  # (S_i,) int64: 0 background, 1..K the matched object's class + 1
    regression_targets: list[Tensor]  # (S_i, 4): matched box encoded against the proposal
    matched_idxs: list[Tensor]  # (S_i,) int64: index of the matched ground truth (0 for background)
    is_gt: list[Tensor]  # (S_i,) bool: the RoI is an appended ground-truth box (Cascade drops them on refining)


def match_proposals(proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor, matcher) -> tuple[Tensor, Tensor]:
    """(P, 4) proposals vs (G, 4) ground truth -> (matched index clamped at 0 (P,), label (P,) in -1/0/1..K).

    ``gt_labels`` are 1..K (background 0 is reserved); ``matcher`` is ``detectors.ops.matcher.Matcher``.
    """
    if gt_boxes.numel() == 0:
        zeros = torch.zeros(proposals.shape[0], dtype=torch.int64, device=proposals.device)
        return zeros, zeros.clone()
    matched = matcher(box_iou(gt_boxes, proposals))  # (P,): gt index, or BELOW_LOW (-1) / BETWEEN (-2)
    clamped = matched.clamp(min=0)
    labels = gt_labels[clamped].to(torch.int64)
    labels[matched == matcher.BELOW_LOW_THRESHOLD] = 0
    labels[matched == matcher.BETWEEN_THRESHOLDS] = -1  # ignored by the sampler
    return clamped, labels


def sample_rois(proposals: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor], *, matcher, sampler,
                box_coder) -> RoISamples:
    """Steps 1-4 of the module docstring for a batch; ``proposals`` are detached (P_i, 4) boxes."""
    out = RoISamples([], [], [], [], [])
    with_gt = [torch.cat((p, g.to(p.dtype))) for p, g in zip(proposals, gt_boxes, strict=True)]
    matches = [match_proposals(p, g.to(p.dtype), lab, matcher) for p, g, lab in zip(with_gt, gt_boxes, gt_labels, strict=True)]
    positives, negatives = sampler([labels for _, labels in matches])
    for image, (boxes, (matched, labels)) in enumerate(zip(with_gt, matches, strict=True)):
        keep = torch.where(positives[image] | negatives[image])[0]
        gt = gt_boxes[image].to(boxes.dtype)
        if gt.numel() == 0:
            gt = boxes.new_zeros(1, 4)
        sampled = boxes[keep]
        out.proposals.append(sampled)
        out.labels.append(labels[keep])
        out.matched_idxs.append(matched[keep])
        out.regression_targets.append(box_coder.encode_single(gt[matched[keep]], sampled))
        out.is_gt.append(keep >= proposals[image].shape[0])
    return out
