"""RetinaNet's detection loss as torchvision computes it (``RetinaNet.compute_loss`` + ``RetinaNetHead``).

Per image: the IoU of every ground-truth box with every anchor, matched by ``Matcher(0.5, 0.4,
allow_low_quality_matches=True)`` (foreground >= 0.5, background < 0.4, ignored in between; each box's
best anchors are foreground whatever their IoU). With F_i the image's foreground anchors::

    cls_i = sum over non-ignored anchors and all classes of sigmoid_focal(logit, one-hot class;
            alpha 0.25, gamma 2) / max(1, F_i)
    box_i = sum over foreground anchors of |delta - encode(gt, anchor)|_1 / max(1, F_i)

(v1's ``_loss_type = "l1"`` on ``BoxCoder((1, 1, 1, 1))`` deltas; no smooth-L1 beta.) torchvision's
``classification`` and ``bbox_regression`` are the means of cls_i and box_i over the images, which are
our ``items`` ``cls`` and ``box`` (per image, as the contract asks), and ``L_gt = cls + box``, not
multiplied by the batch size (``Recipe.loss_scaled_by_batch`` false). An image without boxes has every
anchor as background (its focal sum divided by 1) and no box term.

Ground truth comes as the loader's ``(M, 6)`` rows ``[image, class, cx, cy, w, h]`` normalised to the
input; boxes with no width or height are dropped (torchvision refuses them); ignore regions (KITTI
``DontCare``) are not used, as torchvision has none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detectors.api import DetectorOutput
from detectors.ops.boxes import box_iou
from detectors.ops.detection_losses import sigmoid_focal_loss
from detectors.ops.matcher import Matcher
from detectors.retinanet.head import flatten_levels
from detectors.retinanet.postprocess import BOX_CODER

TERMS = ("cls", "box")


def targets_to_images(targets: Tensor, batch_size: int, img_h: int, img_w: int) -> list[tuple[Tensor, Tensor]]:
    """Loader rows -> per image ``(boxes (G, 4) xyxy input px, labels (G,) int64)``, in row order."""
    targets = targets[(targets[:, 4] > 0) & (targets[:, 5] > 0)].float()
    scale = targets.new_tensor([img_w, img_h])
    centre, size = targets[:, 2:4] * scale, targets[:, 4:6] * scale
    boxes = torch.cat((centre - size / 2, centre + size / 2), 1)
    image = targets[:, 0].long()
    return [(boxes[image == i], targets[image == i, 1].long()) for i in range(batch_size)]


class RetinaNetLoss:
    """``loss(output, targets) -> (L_gt, {"cls", "box"})`` (module docstring)."""

    term_names = TERMS

    def __init__(self, fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.4, *, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0) -> None:
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    def match(self, gt_boxes: Tensor, anchors: Tensor) -> Tensor:
        """(N,) matched box index per anchor; -1 background, -2 ignored (torchvision's ``compute_loss``)."""
        if gt_boxes.numel() == 0:
            return torch.full((anchors.shape[0],), -1, dtype=torch.int64, device=anchors.device)
        return self.matcher(box_iou(gt_boxes, anchors))

    def __call__(self, output: DetectorOutput, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        head = output.head
        num_anchors = head.anchors[0].shape[0] // (head.cls_logits[0].shape[2] * head.cls_logits[0].shape[3])
        num_classes = head.cls_logits[0].shape[1] // num_anchors
        logits = flatten_levels(head.cls_logits, num_classes).float()  # (B, N, K)
        deltas = flatten_levels(head.bbox_regression, 4).float()  # (B, N, 4)
        anchors = torch.cat(head.anchors)  # (N, 4) float32
        batch_size = logits.shape[0]
        img_h, img_w = (head.cls_logits[0].shape[2] * 8, head.cls_logits[0].shape[3] * 8)  # P3 is stride 8
        cls_terms, box_terms = [], []
        for index, (gt_boxes, gt_labels) in enumerate(targets_to_images(targets, batch_size, img_h, img_w)):
            matched = self.match(gt_boxes, anchors)
            foreground = torch.where(matched >= 0)[0]
            num_foreground = max(1, int(foreground.numel()))
            target = torch.zeros_like(logits[index])
            target[foreground, gt_labels[matched[foreground]]] = 1.0
            valid = matched != Matcher.BETWEEN_THRESHOLDS
            cls_terms.append(sigmoid_focal_loss(logits[index][valid], target[valid], alpha=self.focal_alpha,
                                                gamma=self.focal_gamma, reduction="sum") / num_foreground)
            regression_target = BOX_CODER.encode(gt_boxes[matched[foreground]], anchors[foreground])
            box_terms.append(F.l1_loss(deltas[index][foreground], regression_target, reduction="sum")
                             / num_foreground)
        cls = _sum(cls_terms) / batch_size
        box = _sum(box_terms) / batch_size
        return cls + box, {"cls": cls.detach(), "box": box.detach()}


def _sum(terms: list[Tensor]) -> Tensor:
    """Left to right, as torchvision's ``_sum`` (so the float sums agree to the bit)."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total
