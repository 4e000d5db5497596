"""The R-CNN detection loss: RPN objectness and box terms, then the RoI heads' classification and box terms.

torchvision's ``GeneralizedRCNN`` returns, in training mode, ``loss_objectness``, ``loss_rpn_box_reg``,
``loss_classifier`` and ``loss_box_reg`` and its reference trainer backpropagates their sum; these are
our items ``rpn_obj``, ``rpn_box``, ``cls``, ``box`` and ``L_gt`` their sum (each a mean over sampled
anchors / RoIs already: not multiplied by the batch size, ``Recipe.loss_scaled_by_batch`` false).
Cascade R-CNN's ``cls`` / ``box`` are its stage-weighted sums (1, 0.5, 0.25).

Why the loss runs the RoI heads: the contract's ``forward(images)`` has no targets, and the RoI heads
train on RoIs sampled against the ground truth. So ``forward`` stops after the RPN in training mode
and puts the FPN features and the (detached) proposals in ``output.head``; this loss, built with the
model (``Family.build_loss(model, cfg)``), matches and samples the proposals, runs
``model.roi_heads`` on them (its parameters get their gradients through this call) and scores the
RPN's raw output against the anchors' targets (``model.rpn.loss``). Nothing is stored on the model
between the two calls.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detectors.api import DetectorOutput

TERMS = ("rpn_obj", "rpn_box", "cls", "box")


def targets_to_boxes(targets: Tensor, batch_size: int, image_size: tuple[int, int]
                     ) -> tuple[list[Tensor], list[Tensor]]:
    """Loader rows (M, 6) ``[image, class, cx, cy, w, h]`` normalised -> per image xyxy px boxes (G_i, 4)
    and labels (G_i,) in 1..K (class + 1: index 0 is the background), in ``targets``' order."""
    height, width = image_size
    image = targets[:, 0].long()
    cx, cy = targets[:, 2] * width, targets[:, 3] * height
    w, h = targets[:, 4] * width, targets[:, 5] * height
    boxes = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), 1)
    labels = targets[:, 1].long() + 1
    per_image = [image == i for i in range(batch_size)]
    return [boxes[m] for m in per_image], [labels[m] for m in per_image]


class RCNNLoss:
    """``loss(output, targets) -> (L_gt, {"rpn_obj", "rpn_box", "cls", "box"})`` for a ``TwoStageDetector``."""

    term_names = TERMS

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, output: DetectorOutput, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        head = output.head
        batch_size = len(head.proposals)
        dtype = head.proposals[0].dtype if head.proposals else torch.float32
        gt_boxes, gt_labels = targets_to_boxes(targets.to(dtype), batch_size, head.image_size)
        rpn_obj, rpn_box = self.model.rpn.loss(head.rpn, gt_boxes)
        cls, box = self.model.roi_heads.loss(head.features, head.proposals, head.image_size, gt_boxes, gt_labels)
        items = {"rpn_obj": rpn_obj, "rpn_box": rpn_box, "cls": cls, "box": box}
        total = rpn_obj + rpn_box + cls + box
        return total, {k: v.detach() for k, v in items.items()}
