"""Detections from RoI-head outputs: torchvision's ``RoIHeads.postprocess_detections``, per image.

``probabilities (N, K + 1)`` (softmax of the class logits; Cascade: of the stages' averaged logits) and
``boxes (N, K + 1, 4)`` decoded per class (a class-agnostic head repeats its one box) of the RoIs of one
image: clip to the image, drop the background column, one candidate per (RoI, class), keep scores >
``score_thresh``, drop boxes under 0.01 px a side, class-wise NMS at ``nms_thresh``, the best
``detections_per_img``. Labels come out as 1..K (background 0 removed); the model shifts them to 0..K-1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detectors.ops.boxes import clip_boxes_to_image, remove_small_boxes
from detectors.ops.nms import batched_nms

MIN_BOX_SIZE = 1e-2  # torchvision's remove_small_boxes(min_size=1e-2)


def postprocess_image(probabilities: Tensor, boxes: Tensor, image_size: tuple[int, int], *, score_thresh: float,
                      nms_thresh: float, detections_per_img: int) -> tuple[Tensor, Tensor, Tensor]:
    """(boxes (D, 4), scores (D,), labels (D,) in 1..K) of one image, by descending score."""
    num_classes = probabilities.shape[-1]
    boxes = clip_boxes_to_image(boxes, image_size)
    labels = torch.arange(num_classes, device=probabilities.device).view(1, -1).expand_as(probabilities)
    boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), probabilities[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
    keep = torch.where(scores > score_thresh)[0]
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = remove_small_boxes(boxes, min_size=MIN_BOX_SIZE)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
    return boxes[keep], scores[keep], labels[keep]
