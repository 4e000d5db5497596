"""Mask-assisted detection (MAD), eqs 5-6 of Jia et al. 2024.

The Gaussian ground-truth mask (eq 5, ``losses.gaussian_mask``) is built at the resolution of each
detect-input feature map F; a feature adaptation layer per level (conv 1 -> C channels, "same"
padding, then ReLU) lifts it to F's channels, and eq 6 pulls F towards it:

    L_mask = mean over levels of mean((M_adap - F)^2)      mean over N = H*W*C and the batch.

The gradient reaches both F (so the detector's features highlight the objects) and the adapters.
The adapters are training-only parameters owned by ``MaskAssistedLoss``, never by the detector.

Readings the paper leaves open are arguments (docs/design-notes.md): ``coordinates`` of eq 5
(box-normalised or pixels), ``mask_stride`` (build the mask at each level's own stride, or once at one
fixed finer stride and average it down to each level), the adapter's ``kernel_size`` and ``relu``. Which
map F is (the detect input or the head's output maps) is the caller's choice of ``features``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losses.gaussian_mask import downsample_mask, gaussian_mask


def mask_loss(adapted: Mapping[int, Tensor], features: Mapping[int, Tensor]) -> Tensor:
    """Eq 6 averaged over levels: ``mean_k mean((adapted[k] - features[k])^2)``, a scalar tensor.

    ``adapted`` and ``features`` are ``{stride: (B, C, H, W)}`` with the same keys and shapes per key.
    Computed in float32 at least, so an fp16 autocast forward cannot overflow the squares.
    """
    if set(adapted) != set(features):
        raise ValueError(
            f"mask_loss: adapted masks and features must have the same strides, got {sorted(adapted)} and {sorted(features)}"
        )
    if not adapted:
        raise ValueError("mask_loss: expected at least one level, got none")
    levels = []
    for k in sorted(adapted):
        m, f = adapted[k], features[k]
        if m.shape != f.shape:
            raise ValueError(f"mask_loss: stride {k}: adapted mask shape {tuple(m.shape)} != feature shape {tuple(f.shape)}")
        dtype = torch.promote_types(torch.promote_types(m.dtype, f.dtype), torch.float32)
        levels.append(F.mse_loss(m.to(dtype), f.to(dtype)))  # mean((m - f)^2), one fused kernel
    return torch.stack(levels).mean()


class MaskAssistedLoss(nn.Module):
    """Eqs 5-6 with a feature adaptation layer per level (training-only parameters).

    Args:
        feature_channels: ``{stride: C}``, channels of the feature map F at each stride (the detect input).
        sigma2: decay of the Gaussian mask (eq 5); ``float("inf")`` gives the binary box mask.
        kernel_size: adaptation conv kernel (odd or even; padding "same" keeps H x W).
        relu: end the adaptation layer with a ReLU (the paper's "convolutional layer and a ReLU").
        coordinates: eq 5's offsets, ``"box_normalised"`` or ``"pixels"`` (``losses.gaussian_mask``).
        mask_stride: ``None`` builds each level's mask at that level's stride; an integer t builds it once
            at stride t and averages it down to each level (t must divide every level's stride).

    ``forward(features, boxes, batch_index)`` with ``features`` ``{stride: (B, C, H, W)}``,
    ``boxes`` ``(N, 4)`` xyxy input pixels and ``batch_index`` ``(N,)`` returns ``{"mask": L_mask}``.
    """

    def __init__(
        self,
        feature_channels: Mapping[int, int],
        *,
        sigma2: float = 2.0,
        kernel_size: int = 3,
        relu: bool = True,
        coordinates: str = "box_normalised",
        mask_stride: int | None = None,
    ) -> None:
        super().__init__()
        if not feature_channels:
            raise ValueError("MaskAssistedLoss: feature_channels is empty")
        if kernel_size < 1:
            raise ValueError(f"MaskAssistedLoss: kernel_size must be >= 1, got {kernel_size}")
        self.strides = tuple(sorted(int(s) for s in feature_channels))
        if mask_stride is not None and (mask_stride < 1 or any(s % mask_stride for s in self.strides)):
            raise ValueError(
                f"MaskAssistedLoss: mask_stride must divide every level's stride {self.strides}, got {mask_stride}"
            )
        self.sigma2 = float(sigma2)
        self.coordinates = coordinates
        self.mask_stride = mask_stride
        self.adapters = nn.ModuleDict(
            {
                str(s): nn.Sequential(
                    nn.Conv2d(1, int(feature_channels[s]), kernel_size, padding="same"),
                    *([nn.ReLU(inplace=True)] if relu else []),
                )
                for s in self.strides
            }
        )

    def masks(self, features: Mapping[int, Tensor], boxes: Tensor, batch_index: Tensor) -> dict[int, Tensor]:
        """``{stride: (B, 1, H, W)}`` Gaussian masks at each feature map's resolution (eq 5)."""
        masks = {}
        fine: Tensor | None = None  # the mask at mask_stride, built once
        for s in self.strides:
            f = features[s]
            # float32 masks: built from targets, independent of the forward's autocast dtype.
            boxes32 = boxes.to(device=f.device, dtype=torch.float32)
            size = (f.shape[-2], f.shape[-1])
            if self.mask_stride is None:
                masks[s] = gaussian_mask(boxes32, batch_index, f.shape[0], size, s, self.sigma2,
                                         coordinates=self.coordinates)
                continue
            factor = s // self.mask_stride
            if fine is None:
                fine = gaussian_mask(boxes32, batch_index, f.shape[0], (size[0] * factor, size[1] * factor),
                                     self.mask_stride, self.sigma2, coordinates=self.coordinates)
            masks[s] = downsample_mask(fine, fine.shape[-1] // size[1])
        return masks

    def forward(self, features: Mapping[int, Tensor], boxes: Tensor, batch_index: Tensor) -> dict[str, Tensor]:
        masks = self.masks(features, boxes, batch_index)
        # Masks stay in the adapters' dtype (float32); autocast, when on, casts them for the conv.
        adapted = {s: self.adapters[str(s)](masks[s]) for s in self.strides}
        return {"mask": mask_loss(adapted, {s: features[s] for s in self.strides})}
