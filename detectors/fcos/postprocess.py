"""FCOS's post-processing, as torchvision's ``FCOS.postprocess_detections`` (pure tensor functions).

Per image and level: score ``sqrt(sigmoid(cls) * sigmoid(centerness))`` for every (point, class) pair,
kept above ``score_thresh``, the ``topk_candidates`` best of them, boxes decoded from the point's anchor
(``BoxLinearCoder``, distances scaled by the anchor's size) and clipped to the image; then class-aware
NMS over all levels (``batched_nms``) and the ``detections_per_img`` best. Same operations in the same
order as torchvision, so the same weights give the same detections.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detectors.api import Detections
from detectors.ops.box_coder import BoxLinearCoder
from detectors.ops.boxes import clip_boxes_to_image
from detectors.ops.nms import batched_nms

BOX_CODER = BoxLinearCoder(normalize_by_size=True)


def split_head(level: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One level's ``(B, 4 + 1 + K, H, W)`` map -> regression (B, HW, 4), centerness (B, HW, 1), logits
    (B, HW, K), in torchvision's flattened (y, x) order, as float32."""
    b, c = level.shape[:2]
    flat = level.float().permute(0, 2, 3, 1).reshape(b, -1, c)
    return flat[..., :4], flat[..., 4:5], flat[..., 5:]


def postprocess_detections(head: list[Tensor], anchors: list[Tensor], image_size: tuple[int, int], *,
                           score_thresh: float, nms_thresh: float, detections_per_img: int,
                           topk_candidates: int = 1000) -> list[Detections]:
    """``head``: per level ``(B, 4 + 1 + K, H, W)``; ``anchors``: per level ``(H*W, 4)``; -> per image."""
    levels = [split_head(level) for level in head]
    out = []
    for index in range(head[0].shape[0]):
        image_boxes, image_scores, image_labels = [], [], []
        for (regression, ctrness, logits), level_anchors in zip(levels, anchors, strict=True):
            num_classes = logits.shape[-1]
            scores = torch.sqrt(torch.sigmoid(logits[index]) * torch.sigmoid(ctrness[index])).flatten()
            keep = scores > score_thresh
            scores = scores[keep]
            topk_idxs = torch.where(keep)[0]
            scores, idxs = scores.topk(min(int(topk_idxs.numel()), topk_candidates))
            topk_idxs = topk_idxs[idxs]
            anchor_idxs = torch.div(topk_idxs, num_classes, rounding_mode="floor")
            boxes = BOX_CODER.decode(regression[index][anchor_idxs], level_anchors[anchor_idxs])
            image_boxes.append(clip_boxes_to_image(boxes, image_size))
            image_scores.append(scores)
            image_labels.append(topk_idxs % num_classes)
        boxes, scores, labels = torch.cat(image_boxes), torch.cat(image_scores), torch.cat(image_labels)
        keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
        out.append(Detections(boxes[keep], scores[keep], labels[keep]))
    return out
