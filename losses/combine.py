"""The total loss, eq 7 of Jia et al. 2024, in YOLOv5's batch convention.

    L = L_gt + lambda_distill * L_distill + lambda_mask * L_mask        (paper: both lambdas 1)

Every term is a per-image quantity (YOLOv5's ``ComputeLoss`` items are, and the MSE means of eqs 1-6
average over the batch). YOLOv5 backpropagates ``(box + obj + cls) * batch_size``. Two readings of how
eq 7 meets that convention (docs/design-notes.md):

- ``scale="batch"`` (default): the same factor multiplies the whole of eq 7, so the distillation terms
  keep their weight relative to L_gt whatever the batch;
- ``scale="unscaled_terms"``: only L_gt carries the factor and the distillation terms are added as they
  are, what a straightforward patch of Ultralytics' ``train.py`` does (an effective weight of 1/batch).
"""

from __future__ import annotations

from torch import Tensor

SCALES = ("batch", "unscaled_terms")


def combine_losses(
    gt: Tensor,
    distill: Tensor | float,
    mask: Tensor | float,
    *,
    lambda_distill: float = 1.0,
    lambda_mask: float = 1.0,
    batch_size: int = 1,
    scale: str = "batch",
) -> Tensor:
    """Eq 7: ``batch_size * (gt + lambda_distill * distill + lambda_mask * mask)`` (``scale="batch"``) or
    ``batch_size * gt + lambda_distill * distill + lambda_mask * mask`` (``scale="unscaled_terms"``).

    ``gt`` is L_gt = box + obj + cls per image (a scalar tensor); ``distill`` and ``mask`` are the
    scalar L_distill (eq 4) and L_mask (eq 6), or 0 for a switched-off term. Returns a scalar tensor.
    """
    if batch_size < 1:
        raise ValueError(f"combine_losses: batch_size must be >= 1, got {batch_size}")
    if scale not in SCALES:
        raise ValueError(f"combine_losses: scale must be one of {SCALES}, got {scale!r}")
    terms = lambda_distill * distill + lambda_mask * mask
    if scale == "unscaled_terms":
        return batch_size * gt + terms
    return batch_size * (gt + terms)
