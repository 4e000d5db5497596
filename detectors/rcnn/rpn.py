"""Region proposal network (Ren et al. 2015, "Faster R-CNN", section 3.1) as torchvision computes it.

Names, settings and arithmetic are torchvision's ``RegionProposalNetwork`` / ``RPNHead``
(models/detection/rpn.py, 0.26-0.29): state-dict keys ``head.conv.0.0.*`` (3x3 conv + ReLU),
``head.cls_logits.*`` (A objectness logits per cell), ``head.bbox_pred.*`` (4A deltas per cell); anchors
of sizes 32..512 (one per FPN level, strides 4..64) x aspect ratios (0.5, 1, 2).

Unlike torchvision's, the forward pass takes no targets (the detector contract's ``forward(images)`` has
none): ``forward`` returns an ``RPNOutput`` with the raw predictions, the anchors and the proposals, and
``loss(output, gt_boxes)`` computes torchvision's two loss items from it:

- proposals: deltas decoded on the anchors (BoxCoder weights 1), per level the ``pre_nms_top_n`` best
  objectness logits, then per image: clip to the image, drop boxes under 1e-3 px, keep sigmoid score >=
  ``score_thresh``, NMS at ``nms_thresh`` within each level (``batched_nms``), the ``post_nms_top_n`` best.
  Top-n values: 2000/2000 in training mode, 1000/1000 in eval mode.
- loss: anchors matched to the ground truth by IoU (>= 0.7 positive, < 0.3 negative, between ignored, plus
  each box's best anchors: ``Matcher(0.7, 0.3, allow_low_quality_matches=True)``), 256 anchors per image
  sampled with at most half positives (``BalancedPositiveNegativeSampler``, torchvision's draws);
  ``loss_objectness`` = BCE-with-logits mean over the sampled anchors, ``loss_rpn_box_reg`` = smooth-L1
  (beta 1/9) summed over the sampled positives / number sampled.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors.ops.anchors import AnchorGenerator
from detectors.ops.box_coder import BoxCoder
from detectors.ops.boxes import box_iou, clip_boxes_to_image, remove_small_boxes
from detectors.ops.matcher import Matcher
from detectors.ops.nms import batched_nms
from detectors.ops.sampler import BalancedPositiveNegativeSampler

ANCHOR_SIZES = ((32,), (64,), (128,), (256,), (512,))  # one size per FPN level, strides 4..64
ASPECT_RATIOS = ((0.5, 1.0, 2.0),) * len(ANCHOR_SIZES)
MIN_SIZE = 1e-3  # torchvision's RegionProposalNetwork.min_size


class RPNHead(nn.Module):
    """3x3 conv + ReLU shared over levels, then 1x1 convs to A logits and 4A deltas per cell."""

    def __init__(self, in_channels: int, num_anchors: int, conv_depth: int = 1) -> None:
        super().__init__()
        # conv.{i}.0: torchvision's Conv2dNormActivation(norm_layer=None) is Sequential(Conv2d, ReLU)
        self.conv = nn.Sequential(
            *(
                nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(inplace=True))
                for _ in range(conv_depth)
            )
        )
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.constant_(layer.bias, 0)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level (N, C, h, w) -> logits (N, A, h, w) and deltas (N, 4A, h, w)."""
        logits, deltas = [], []
        for feature in features:
            t = self.conv(feature)
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def flatten_predictions(logits: list[Tensor], deltas: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-level (N, A*C, h, w) maps -> (N * sum(h w A), C) rows in (image, level, y, x, anchor) order.

    torchvision's ``concat_box_prediction_layers``: the order of the anchors (``AnchorGenerator``).
    """
    flat_logits, flat_deltas = [], []
    for logit, delta in zip(logits, deltas, strict=True):
        n, a, h, w = logit.shape
        flat_logits.append(logit.view(n, a, 1, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 1))
        flat_deltas.append(delta.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
    return torch.cat(flat_logits, 1).flatten(0, -2), torch.cat(flat_deltas, 1).reshape(-1, 4)


class RPNOutput(NamedTuple):
    objectness: Tensor  # (N * A_total, 1) logits, torchvision's flattened order
    pred_bbox_deltas: Tensor  # (N * A_total, 4)
    anchors: list[Tensor]  # per image (A_total, 4) xyxy input px
    num_anchors_per_level: list[int]
    proposals: list[Tensor]  # per image (P_i, 4) xyxy, detached, best objectness first
    scores: list[Tensor]  # per image (P_i,) sigmoid objectness


class RegionProposalNetwork(nn.Module):
    def __init__(
        self,
        anchor_generator: AnchorGenerator,
        head: RPNHead,
        fg_iou_thresh: float = 0.7,
        bg_iou_thresh: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_top_n: dict[str, int] | None = None,
        post_nms_top_n: dict[str, int] | None = None,
        nms_thresh: float = 0.7,
        score_thresh: float = 0.0,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(
            batch_size_per_image, positive_fraction, generator=generator
        )
        self._pre_nms_top_n = pre_nms_top_n or {"training": 2000, "testing": 1000}
        self._post_nms_top_n = post_nms_top_n or {"training": 2000, "testing": 1000}
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh
        self.min_size = MIN_SIZE

    def pre_nms_top_n(self) -> int:
        return self._pre_nms_top_n["training" if self.training else "testing"]

    def post_nms_top_n(self) -> int:
        return self._post_nms_top_n["training" if self.training else "testing"]

    def forward(
        self,
        features: list[Tensor],
        image_size: tuple[int, int],
        image_sizes: list[tuple[int, int]] | None = None,
    ) -> RPNOutput:
        """features: per level (N, C, h_l, w_l), finest first; image_size: (H, W) of the input batch (the
        anchors' strides are H // h_l, W // w_l, as torchvision's); image_sizes: per-image (h, w) the
        proposals are clipped to (torchvision's ``ImageList.image_sizes``; default ``image_size``)."""
        num_images = features[0].shape[0]
        sizes = image_sizes if image_sizes is not None else [tuple(image_size)] * num_images
        if len(sizes) != num_images:
            raise ValueError(f"RPN: {len(sizes)} image_sizes for a batch of {num_images}")
        logits, deltas = self.head(features)
        anchors = self.anchors(features, image_size)
        num_anchors_per_level = [int(o[0].numel()) for o in logits]  # A * h * w per level
        objectness, pred_bbox_deltas = flatten_predictions(logits, deltas)
        proposals = self.box_coder.decode_single(pred_bbox_deltas.detach(), torch.cat(anchors))
        proposals = proposals.view(num_images, -1, 4)
        boxes, scores = self.filter_proposals(proposals, objectness, sizes, num_anchors_per_level)
        return RPNOutput(objectness, pred_bbox_deltas, anchors, num_anchors_per_level, boxes, scores)

    def anchors(self, features: list[Tensor], image_size: tuple[int, int]) -> list[Tensor]:
        """Per image (A_total, 4): the same anchors for every image of the batch."""
        shapes = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
        # strides None: image_size // feature size per dimension, torchvision's
        per_level = self.anchor_generator(
            image_size, shapes, None, device=features[0].device, dtype=features[0].dtype
        )
        return [torch.cat(per_level)] * features[0].shape[0]

    def filter_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_sizes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        """(N, A_total, 4) decoded boxes and their logits -> per image kept boxes and sigmoid scores."""
        num_images = proposals.shape[0]
        device = proposals.device
        objectness = objectness.detach().reshape(num_images, -1)
        levels = torch.cat(
            [
                torch.full((n,), i, dtype=torch.int64, device=device)
                for i, n in enumerate(num_anchors_per_level)
            ]
        )
        top_n_idx, offset = [], 0
        for ob in objectness.split(num_anchors_per_level, 1):  # best pre_nms_top_n of each level
            top_n_idx.append(ob.topk(min(self.pre_nms_top_n(), ob.shape[1]), dim=1).indices + offset)
            offset += ob.shape[1]
        top_n_idx = torch.cat(top_n_idx, dim=1)
        batch_idx = torch.arange(num_images, device=device)[:, None]
        objectness = objectness[batch_idx, top_n_idx]
        levels = levels[top_n_idx]
        proposals = proposals[batch_idx, top_n_idx]
        probabilities = torch.sigmoid(objectness)

        final_boxes, final_scores = [], []
        for boxes, scores, lvl, size in zip(proposals, probabilities, levels, image_sizes, strict=True):
            boxes = clip_boxes_to_image(boxes, size)
            keep = remove_small_boxes(boxes, self.min_size)
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = torch.where(scores >= self.score_thresh)[0]
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = batched_nms(boxes, scores, lvl, self.nms_thresh)[: self.post_nms_top_n()]
            final_boxes.append(boxes[keep])
            final_scores.append(scores[keep])
        return final_boxes, final_scores

    def assign_targets_to_anchors(
        self, anchors: list[Tensor], gt_boxes: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: labels (A,) float (1 fg, 0 bg, -1 ignored) and the matched ground-truth box (A, 4)."""
        labels, matched_gt_boxes = [], []
        for anchors_per_image, gt in zip(anchors, gt_boxes, strict=True):
            if gt.numel() == 0:  # an image without objects: every anchor is background
                device = anchors_per_image.device
                matched = torch.zeros(anchors_per_image.shape, dtype=torch.float32, device=device)
                labels_per_image = torch.zeros(anchors_per_image.shape[0], dtype=torch.float32, device=device)
            else:
                matched_idxs = self.proposal_matcher(box_iou(gt, anchors_per_image))
                matched = gt[matched_idxs.clamp(min=0)]
                labels_per_image = (matched_idxs >= 0).to(torch.float32)
                labels_per_image[matched_idxs == Matcher.BELOW_LOW_THRESHOLD] = 0.0
                labels_per_image[matched_idxs == Matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(labels_per_image)
            matched_gt_boxes.append(matched)
        return labels, matched_gt_boxes

    def loss(self, output: RPNOutput, gt_boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """(loss_objectness, loss_rpn_box_reg) of ``output`` against per-image (G_i, 4) xyxy boxes."""
        if len(gt_boxes) != len(output.anchors):
            raise ValueError(f"RPN loss: {len(gt_boxes)} ground-truth lists for {len(output.anchors)} images")
        labels, matched_gt_boxes = self.assign_targets_to_anchors(output.anchors, gt_boxes)
        regression_targets = self.box_coder.encode_single(
            torch.cat(matched_gt_boxes), torch.cat(output.anchors)
        )
        sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
        sampled_pos = torch.where(torch.cat(sampled_pos))[0]
        sampled_neg = torch.where(torch.cat(sampled_neg))[0]
        sampled = torch.cat([sampled_pos, sampled_neg])
        box_loss = (
            F.smooth_l1_loss(
                output.pred_bbox_deltas[sampled_pos],
                regression_targets[sampled_pos],
                beta=1 / 9,
                reduction="sum",
            )
            / sampled.numel()
        )
        objectness_loss = F.binary_cross_entropy_with_logits(
            output.objectness.flatten()[sampled], torch.cat(labels)[sampled]
        )
        return objectness_loss, box_loss


def build_rpn(
    in_channels: int = 256,
    *,
    pre_nms_top_n: dict[str, int] | None = None,
    post_nms_top_n: dict[str, int] | None = None,
    generator: torch.Generator | None = None,
) -> RegionProposalNetwork:
    """torchvision's ``fasterrcnn_resnet50_fpn`` RPN on ``in_channels``-channel FPN maps (strides 4..64)."""
    anchor_generator = AnchorGenerator(ANCHOR_SIZES, ASPECT_RATIOS)
    head = RPNHead(in_channels, len(ASPECT_RATIOS[0]) * len(ANCHOR_SIZES[0]))
    return RegionProposalNetwork(
        anchor_generator,
        head,
        pre_nms_top_n=pre_nms_top_n,
        post_nms_top_n=post_nms_top_n,
        generator=generator,
    )
