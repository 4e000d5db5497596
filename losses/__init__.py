"""The MSSD paper's losses (Jia et al. 2024, eqs 1-7), on tensors only: this package imports only torch.

- ``gaussian_mask`` (eq 5): Gaussian ground-truth box mask at a feature map's resolution.
- ``mssd_loss`` / ``MSSDLoss`` (eqs 1-4): multi-scale self-distillation, with student projectors.
- ``mask_loss`` / ``MaskAssistedLoss`` (eq 6): mask-assisted detection, with adaptation layers.
- ``combine_losses`` (eq 7): the total, in YOLOv5's batch convention.
- ``warmup_factor``: the optional warm-up of eq 7's distillation weights.

The methods MSSD is compared with (paper Table 4), one module each, imported by their comparators
(``detectors/comparators/``): ``kd`` (Chen et al. 2017), ``fgfi`` (Wang et al. 2019), ``defeat`` (Guo et
al. 2021), ``lgd`` (Zhang et al. 2022).
"""

from losses.combine import combine_losses
from losses.gaussian_mask import gaussian_mask
from losses.mask_loss import MaskAssistedLoss, mask_loss
from losses.mssd import MSSDLoss, mssd_loss, scale_weights, standardise_channels
from losses.warmup import warmup_factor

__all__ = [
    "MSSDLoss",
    "MaskAssistedLoss",
    "combine_losses",
    "gaussian_mask",
    "mask_loss",
    "mssd_loss",
    "scale_weights",
    "standardise_channels",
    "warmup_factor",
]
