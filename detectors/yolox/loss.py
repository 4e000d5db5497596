"""YOLOX's detection loss (Ge et al. 2021; Megvii's ``YOLOXHead.get_losses``), batched over images.

With SimOTA's assignment (``assignment.py``) and ``F`` the number of foreground cells of the batch
(at least 1), the terms are::

    iou = 5 * sum_fg (1 - IoU(box, gt)^2) / F          box: the decoded prediction, (cx, cy, w, h) px
    obj = sum_all BCEWithLogits(obj, fg) / F            every cell of every image
    cls = sum_fg BCEWithLogits(cls, onehot(class) * IoU) / F
    l1  = sum_fg |raw offsets - encoded gt| / F         only when ``use_l1`` (YOLOX's last no_aug_epochs)

and ``L_gt = iou + obj + cls + l1``, the scalar YOLOX backpropagates for the batch (a mean over
foreground cells: it is not multiplied by the batch size, unlike YOLOv5's). The items are these four
terms, equal to Megvii's ``iou_loss`` (already x 5), ``conf_loss``, ``cls_loss`` and ``l1_loss``.

``start_epoch(epoch, epochs)`` (the contract's epoch hook) switches the L1 term on for the last
``no_aug_epochs`` epochs, as Megvii's trainer does when it closes mosaic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from detectors.api import DetectorOutput
from detectors.ops.boxes import bbox_iou
from detectors.yolox.assignment import DEFAULT_PRIOR, GEOMETRY_PRIORS, Assignment, simota_assign
from detectors.yolox.head import cell_grid, decode_boxes, flatten_maps

TERMS = ("iou", "obj", "cls", "l1")
IOU_WEIGHT = 5.0  # Megvii's reg_weight


def pad_targets(targets: torch.Tensor, batch_size: int, img_h: int, img_w: int) -> tuple[torch.Tensor, ...]:
    """Loader rows (M, 6) ``[image, class, cx, cy, w, h]`` normalised -> padded per image, in pixels.

    Returns boxes (B, G, 4) (cx, cy, w, h) px, classes (B, G) int64 and valid (B, G) bool, G the largest
    count of any image; an image's ground truths keep their order in ``targets``.
    """
    image = targets[:, 0].long()
    counts = torch.bincount(image, minlength=batch_size)
    g = int(counts.max()) if targets.shape[0] else 0
    order = torch.sort(image, stable=True).indices
    image = image[order]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(image.shape[0], device=targets.device) - starts[image]
    scale = targets.new_tensor([img_w, img_h, img_w, img_h])
    boxes = targets.new_zeros(batch_size, g, 4)
    classes = torch.zeros(batch_size, g, dtype=torch.long, device=targets.device)
    valid = torch.zeros(batch_size, g, dtype=torch.bool, device=targets.device)
    boxes[image, slot] = targets[order, 2:6] * scale
    classes[image, slot] = targets[order, 1].long()
    valid[image, slot] = True
    return boxes, classes, valid


class YOLOXLoss:
    """``loss(output, targets) -> (L_gt, {"iou", "obj", "cls", "l1"})`` for a YOLOX model's output."""

    term_names = TERMS

    def __init__(
        self,
        num_classes: int,
        strides: tuple[int, ...] = (8, 16, 32),
        *,
        simota_prior: str = DEFAULT_PRIOR,
        no_aug_epochs: int = 15,
        use_l1: bool = False,
    ) -> None:
        if simota_prior not in GEOMETRY_PRIORS:
            raise ValueError(f"simota_prior: expected one of {', '.join(GEOMETRY_PRIORS)}, got {simota_prior!r}")
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.prior = GEOMETRY_PRIORS[simota_prior]
        self.no_aug_epochs = no_aug_epochs
        self.use_l1 = use_l1
        self.last_assignment: Assignment | None = None  # kept for inspection (tests, parity script)

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Epoch hook: the L1 term is on for the last ``no_aug_epochs`` epochs (1-based ``epoch``)."""
        self.use_l1 = epoch > epochs - self.no_aug_epochs

    def __call__(self, output: DetectorOutput, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        maps = output.head
        b = maps[0].shape[0]
        # In float32 whatever the autocast dtype: box decoding (exp), pixel targets up to ~1000 px and the
        # sums over ~8000 cells per image lose too much in float16 (YOLOX computes in the maps' dtype).
        raw = flatten_maps(maps).float()  # (B, A, 5 + nc)
        offsets, cell_strides = cell_grid(maps, self.strides)  # (A, 2), (A,)
        boxes = decode_boxes(raw[..., :4], offsets, cell_strides)  # (B, A, 4) px, differentiable
        obj, cls = raw[..., 4:5], raw[..., 5:]
        img_h, img_w = maps[0].shape[-2] * self.strides[0], maps[0].shape[-1] * self.strides[0]
        gt_boxes, gt_classes, gt_valid = pad_targets(targets.float(), b, img_h, img_w)

        centers = (offsets + 0.5) * cell_strides[:, None]
        assign = simota_assign(
            boxes.detach(), cls.detach(), obj.detach(), centers, cell_strides, gt_boxes, gt_classes, gt_valid,
            self.prior,
        )
        self.last_assignment = assign
        fg = assign.foreground
        num_fg = max(float(assign.num_foreground), 1.0)
        image_of_fg = torch.nonzero(fg)[:, 0]
        matched_boxes = gt_boxes[image_of_fg, assign.gt_index[fg]]  # (F, 4)
        matched_classes = gt_classes[image_of_fg, assign.gt_index[fg]]  # (F,)

        iou = bbox_iou(boxes[fg], matched_boxes, eps=1e-16)[:, 0]  # Megvii's IOUloss eps
        loss_iou = IOU_WEIGHT * (1 - iou**2).sum() / num_fg
        obj_target = fg.to(obj.dtype).view(-1, 1)
        loss_obj = F.binary_cross_entropy_with_logits(obj.reshape(-1, 1), obj_target, reduction="sum") / num_fg
        cls_target = F.one_hot(matched_classes, self.num_classes) * assign.iou[fg].unsqueeze(-1)
        loss_cls = F.binary_cross_entropy_with_logits(cls[fg], cls_target, reduction="sum") / num_fg
        if self.use_l1:
            fg_strides = cell_strides.expand(b, -1)[fg][:, None]
            fg_offsets = offsets.expand(b, -1, -1)[fg]
            l1_target = torch.cat(
                (matched_boxes[:, :2] / fg_strides - fg_offsets, torch.log(matched_boxes[:, 2:] / fg_strides + 1e-8)), 1
            )
            loss_l1 = F.l1_loss(raw[..., :4][fg], l1_target, reduction="sum") / num_fg
        else:
            loss_l1 = raw.new_zeros(())
        total = loss_iou + loss_obj + loss_cls + loss_l1
        items = {"iou": loss_iou, "obj": loss_obj, "cls": loss_cls, "l1": loss_l1}
        return total, {k: v.detach() for k, v in items.items()}
