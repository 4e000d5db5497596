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

The loss reads nothing back from the device (a GPU step never waits for it): the ground truths stay the
loader's rows (no padding to the largest count), the foreground sums are masked sums over every cell
rather than sums over the selected cells (no data-dependent shape), and F stays a tensor. The terms equal
the selected-cell sums to float rounding (the summation order differs); their gradients are the same.

``start_epoch(epoch, epochs)`` (the contract's epoch hook) switches the L1 term on for the last
``no_aug_epochs`` epochs, as Megvii's trainer does when it closes mosaic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from detectors.api import DetectorOutput
from detectors.ops.boxes import bbox_iou
from detectors.yolox.assignment import DEFAULT_PRIOR, GEOMETRY_PRIORS, Assignment, simota_assign_rows
from detectors.yolox.head import cell_grid, decode_boxes, flatten_maps

TERMS = ("iou", "obj", "cls", "l1")
IOU_WEIGHT = 5.0  # Megvii's reg_weight


def target_rows(targets: torch.Tensor, img_h: int, img_w: int) -> tuple[torch.Tensor, ...]:
    """Loader rows (M, 6) ``[image, class, cx, cy, w, h]`` normalised -> boxes (M, 4) (cx, cy, w, h) px,
    classes (M,) int64 and images (M,) int64, in the rows' order."""
    scale = targets.new_tensor([img_w, img_h, img_w, img_h])
    return targets[:, 2:6] * scale, targets[:, 1].long(), targets[:, 0].long()


def slot_in_image(image: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(M,) int64: each row's index among its image's rows, in the rows' order (no read from the device)."""
    order = torch.sort(image, stable=True).indices
    counts = torch.zeros(batch_size, dtype=torch.long, device=image.device)
    counts.index_add_(0, image, torch.ones_like(image))
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(image)
    slot[order] = torch.arange(image.shape[0], device=image.device) - starts[image[order]]
    return slot


def pad_targets(targets: torch.Tensor, batch_size: int, img_h: int, img_w: int) -> tuple[torch.Tensor, ...]:
    """Loader rows (M, 6) ``[image, class, cx, cy, w, h]`` normalised -> padded per image, in pixels.

    Returns boxes (B, G, 4) (cx, cy, w, h) px, classes (B, G) int64 and valid (B, G) bool, G the largest
    count of any image; an image's ground truths keep their order in ``targets``. G is read from the
    device: for ``simota_assign``'s padded form outside the training step (the loss uses rows).
    """
    boxes_px, classes_of_row, image = target_rows(targets, img_h, img_w)
    slot = slot_in_image(image, batch_size)
    g = int(slot.max()) + 1 if targets.shape[0] else 0
    boxes = targets.new_zeros(batch_size, g, 4)
    classes = torch.zeros(batch_size, g, dtype=torch.long, device=targets.device)
    valid = torch.zeros(batch_size, g, dtype=torch.bool, device=targets.device)
    boxes[image, slot] = boxes_px
    classes[image, slot] = classes_of_row
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
        objects = targets.shape[0] > 0  # a shape: host data
        # without objects, one row that takes nothing keeps the gathers below well-formed
        targets = targets.float() if objects else targets.new_zeros(1, 6)
        gt_boxes, gt_classes, gt_image = target_rows(targets, img_h, img_w)
        gt_valid = torch.full_like(gt_image, objects, dtype=torch.bool)

        centers = (offsets + 0.5) * cell_strides[:, None]
        fg, row, row_iou = simota_assign_rows(
            boxes.detach(), cls.detach(), obj.detach(), centers, cell_strides, gt_boxes, gt_classes, gt_image,
            gt_valid, self.prior,
        )
        row = torch.where(fg, row, torch.zeros_like(row))  # background cells: any row (masked out below)
        matched_iou = row_iou.gather(0, row)  # (B, A)
        self.last_assignment = Assignment(fg, slot_in_image(gt_image, b)[row], matched_iou)
        num_fg = fg.sum().clamp(min=1).to(raw.dtype)  # a tensor: dividing by it reads nothing
        matched_boxes = gt_boxes[row]  # (B, A, 4)

        iou = bbox_iou(boxes, matched_boxes, eps=1e-16)[..., 0]  # Megvii's IOUloss eps
        loss_iou = IOU_WEIGHT * torch.where(fg, 1 - iou**2, 0.0).sum() / num_fg
        obj_target = fg.to(obj.dtype).view(-1, 1)
        loss_obj = F.binary_cross_entropy_with_logits(obj.reshape(-1, 1), obj_target, reduction="sum") / num_fg
        # one-hot class x IoU, built by a scatter (F.one_hot checks its input's range: a read on a GPU)
        cls_target = torch.zeros_like(cls).scatter_(2, gt_classes[row][..., None], matched_iou[..., None])
        cls_terms = F.binary_cross_entropy_with_logits(cls, cls_target, reduction="none")
        loss_cls = torch.where(fg[..., None], cls_terms, 0.0).sum() / num_fg
        if self.use_l1:
            cell = cell_strides[:, None]  # (A, 1)
            l1_target = torch.cat(
                (matched_boxes[..., :2] / cell - offsets, torch.log(matched_boxes[..., 2:] / cell + 1e-8)), -1
            )
            l1_terms = F.l1_loss(raw[..., :4], l1_target, reduction="none")
            loss_l1 = torch.where(fg[..., None], l1_terms, 0.0).sum() / num_fg
        else:
            loss_l1 = raw.new_zeros(())
        total = loss_iou + loss_obj + loss_cls + loss_l1
        items = {"iou": loss_iou, "obj": loss_obj, "cls": loss_cls, "l1": loss_l1}
        return total, {k: v.detach() for k, v in items.items()}
