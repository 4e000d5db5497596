"""The total loss, eq 7 of Jia et al. 2024, in YOLOv5's batch convention.

    L = L_gt + lambda_distill * L_distill + lambda_mask * L_mask        (paper: both lambdas 1)

Every term is a per-image quantity (YOLOv5's ``ComputeLoss`` items are, and the MSE means of eqs 1-6
average over the batch). YOLOv5 backpropagates ``(box + obj + cls) * batch_size``; the same factor
multiplies the whole of eq 7 so the distillation terms keep their relative weight whatever the batch.
"""

from __future__ import annotations

from torch import Tensor


def combine_losses(
    gt: Tensor,
    distill: Tensor | float,
    mask: Tensor | float,
    *,
    lambda_distill: float = 1.0,
    lambda_mask: float = 1.0,
    batch_size: int = 1,
) -> Tensor:
    """Eq 7: ``batch_size * (gt + lambda_distill * distill + lambda_mask * mask)``.

    ``gt`` is L_gt = box + obj + cls per image (a scalar tensor); ``distill`` and ``mask`` are the
    scalar L_distill (eq 4) and L_mask (eq 6), or 0 for a switched-off term. Returns a scalar tensor.
    """
    if batch_size < 1:
        raise ValueError(f"combine_losses: batch_size must be >= 1, got {batch_size}")
    return batch_size * (gt + lambda_distill * distill + lambda_mask * mask)
