"""A warm-up of the distillation weights of eq 7 (not in the paper; docs/design-notes.md).

At initialisation L_distill and L_mask are 2-3x L_gt on YOLOv5, so a run may keep them off while the
detector's own loss settles: the weight factor is 0 for the first ``zero_epochs`` epochs, then rises
linearly over ``ramp_epochs`` epochs to 1, and stays there. ``zero_epochs = ramp_epochs = 0`` is no
warm-up (factor 1 from the first epoch).
"""

from __future__ import annotations


def warmup_factor(epoch: int, zero_epochs: int = 0, ramp_epochs: int = 0) -> float:
    """The factor on lambda_distill and lambda_mask during ``epoch`` (counted from 1).

    Epochs ``1..zero_epochs`` give 0; epoch ``zero_epochs + k`` gives ``min(1, k / ramp_epochs)``
    (so the ramp reaches 1 at epoch ``zero_epochs + ramp_epochs``); no ramp gives 1 straight away.
    """
    if epoch < 1:
        raise ValueError(f"warmup_factor: epoch counts from 1, got {epoch}")
    if zero_epochs < 0 or ramp_epochs < 0:
        raise ValueError(f"warmup_factor: epochs must be >= 0, got zero={zero_epochs} ramp={ramp_epochs}")
    into = epoch - zero_epochs
    if into <= 0:
        return 0.0
    if ramp_epochs == 0:
        return 1.0
    return min(1.0, into / ramp_epochs)
