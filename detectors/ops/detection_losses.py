"""Dense-detector loss functions as torchvision.ops computes them (pure functions over tensors).

- ``sigmoid_focal_loss`` (Lin et al. 2017, eq. 5; RetinaNet, FCOS): per element
  ``alpha_t * (1 - p_t) ** gamma * BCE(logit, target)``, p_t = p if target = 1 else 1 - p, alpha_t =
  alpha for positives, 1 - alpha for negatives (alpha = -1: no weighting).
- ``giou_loss`` (Rezatofighi et al. 2019; torchvision's ``generalized_box_iou_loss``, from fvcore):
  ``1 - GIoU`` of paired (N, 4) xyxy boxes, intersection counted only where positive, eps in both
  denominators as torchvision.
- ``smooth_l1_loss`` (Faster R-CNN's box loss, torch's ``F.smooth_l1_loss`` as torchvision calls it):
  Huber with ``beta``; reduction "sum" by default since the R-CNN heads divide by the sample count.

``reduction`` is "none", "mean" or "sum" everywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss: Tensor, reduction: str, *, empty_mean_zero: bool = False) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "mean":
        # torchvision's GIoU loss returns 0 (keeping the graph) for an empty batch instead of NaN.
        return 0.0 * loss.sum() if empty_mean_zero and loss.numel() == 0 else loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction: expected one of {', '.join(_REDUCTIONS)}, got {reduction!r}")


def sigmoid_focal_loss(inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "none") -> Tensor:
    """Focal loss of logits ``inputs`` against 0/1 ``targets`` of the same shape."""
    if not (0 <= alpha <= 1) and alpha != -1:
        raise ValueError(f"alpha: expected a value in [0, 1] or -1 (no weighting), got {alpha}")
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, reduction)


def giou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """1 - GIoU of paired (..., 4) xyxy boxes (symmetric in its arguments)."""
    if boxes1.dtype not in (torch.float32, torch.float64):
        boxes1 = boxes1.float()
    if boxes2.dtype not in (torch.float32, torch.float64):
        boxes2 = boxes2.float()
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xk1, yk1 = torch.max(x1, x1g), torch.max(y1, y1g)
    xk2, yk2 = torch.min(x2, x2g), torch.min(y2, y2g)
    # where rather than a masked assignment: the same values, without a data-dependent shape (a GPU sync)
    inter = torch.where((yk2 > yk1) & (xk2 > xk1), (xk2 - xk1) * (yk2 - yk1), 0.0)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    iou = inter / (union + eps)
    area_c = (torch.max(x2, x2g) - torch.min(x1, x1g)) * (torch.max(y2, y2g) - torch.min(y1, y1g))
    giou = iou - ((area_c - union) / (area_c + eps))
    return _reduce(1 - giou, reduction, empty_mean_zero=True)


def smooth_l1_loss(input: Tensor, target: Tensor, beta: float = 1.0 / 9, reduction: str = "sum") -> Tensor:
    """Huber loss: 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (beta 0: L1).

    torchvision's R-CNN heads call ``F.smooth_l1_loss(..., beta=1 / 9, reduction="sum")`` and divide by
    the sample count themselves; these are its defaults.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {', '.join(_REDUCTIONS)}, got {reduction!r}")
    return F.smooth_l1_loss(input, target, beta=beta, reduction=reduction)
