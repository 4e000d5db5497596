"""RetinaNet's post-processing, as torchvision's ``RetinaNet.postprocess_detections`` (pure tensor functions).

Per image and level: ``sigmoid`` of every (anchor, class) logit, kept above ``score_thresh``, the
``topk_candidates`` best of them, boxes decoded from their anchors (``BoxCoder`` weights (1, 1, 1, 1),
dw/dh clamped at log(1000/16)) and clipped to the image; then class-aware NMS over all levels
(``batched_nms``) and the ``detections_per_img`` best. Same operations in the same order as torchvision,
so the same weights give the same detections.
"""

from __future__ import annotations

import torch

from detectors.api import Detections
from detectors.ops.box_coder import BoxCoder
from detectors.ops.boxes import clip_boxes_to_image
from detectors.ops.nms import batched_nms
from detectors.retinanet.head import flatten_level

BOX_CODER = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))


def postprocess_detections(head, image_size: tuple[int, int], *, score_thresh: float, nms_thresh: float,
                           detections_per_img: int, topk_candidates: int = 1000) -> list[Detections]:
    """``head``: the model's ``HeadOutput`` (per-level logits, deltas, anchors) -> one ``Detections`` per image."""
    levels = []
    for logits, deltas, anchors in zip(head.cls_logits, head.bbox_regression, head.anchors, strict=True):
        per_cell = anchors.shape[0] // (logits.shape[2] * logits.shape[3])  # A
        k = logits.shape[1] // per_cell
        levels.append((flatten_level(logits.float(), k), flatten_level(deltas.float(), 4), anchors))
    out = []
    for index in range(head.cls_logits[0].shape[0]):
        image_boxes, image_scores, image_labels = [], [], []
        for logits, deltas, anchors in levels:
            num_classes = logits.shape[-1]
            scores = torch.sigmoid(logits[index]).flatten()
            keep = scores > score_thresh
            scores = scores[keep]
            topk_idxs = torch.where(keep)[0]
            scores, idxs = scores.topk(min(int(topk_idxs.numel()), topk_candidates))
            topk_idxs = topk_idxs[idxs]
            anchor_idxs = torch.div(topk_idxs, num_classes, rounding_mode="floor")
            boxes = BOX_CODER.decode_single(deltas[index][anchor_idxs], anchors[anchor_idxs])
            image_boxes.append(clip_boxes_to_image(boxes, image_size))
            image_scores.append(scores)
            image_labels.append(topk_idxs % num_classes)
        boxes, scores, labels = torch.cat(image_boxes), torch.cat(image_scores), torch.cat(image_labels)
        keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
        out.append(Detections(boxes[keep], scores[keep], labels[keep]))
    return out
