"""The Gaussian ground-truth mask of mask-assisted detection (eq 5 of Jia et al. 2024).

For a ground-truth box B with centre (xc, yc), width w and height h, the mask at a point (x, y) is

    M(x, y) = exp(-(u^2 + v^2) / sigma2)   if (x, y) in B,   0 otherwise,
    u = (x - xc) / (w / 2),   v = (y - yc) / (h / 2).

Normalising the offsets by the half width/height (DESIGN.md, "The losses") lets one sigma2 serve every
box size: the mask falls to exp(-1 / sigma2) at the middle of each box edge, whatever the box's size.
sigma2 = inf gives the binary box mask, as the paper notes. Overlapping boxes take the element-wise max.

``coordinates="pixels"`` is the paper's literal formula instead: ``u = x - xc``, ``v = y - yc`` in input
pixels, so sigma2 is in pixels squared (sigma2 = 2 leaves a dot of about 1.4 px radius at each box centre,
whatever the box's size). ``downsample_mask`` resamples a mask built at a finer stride to a coarser map
(area average), for building it once at a fixed stride instead of at each level's own.

The mask is built directly at a feature map's resolution: cell (i, j) of an (H, W) map with stride s
is sampled at its centre ((j + 0.5) * s, (i + 0.5) * s) in input-image pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# How eq 5 measures the offset from the box centre (DESIGN.md "The losses"; docs/design-notes.md).
COORDINATES = ("box_normalised", "pixels")

# Elements of one (boxes, H, W) chunk: 4M float32 is 16 MiB, so thousands of boxes on a 160x160 map
# never materialise a multi-GiB tensor.
_CHUNK_ELEMENTS = 1 << 22


def gaussian_mask(
    boxes: Tensor,
    batch_index: Tensor,
    batch_size: int,
    feature_size: tuple[int, int],
    stride: float,
    sigma2: float,
    *,
    chunk_elements: int = _CHUNK_ELEMENTS,
    coordinates: str = "box_normalised",
) -> Tensor:
    """Eq 5: the per-image Gaussian box mask sampled at the cell centres of one feature map.

    Args:
        boxes: ``(N, 4)`` boxes ``x1, y1, x2, y2`` in input-image pixels (``x1 <= x2``, ``y1 <= y2``).
        batch_index: ``(N,)`` integer index in ``[0, batch_size)`` of the image each box belongs to.
        batch_size: B, the number of images (images without boxes get an all-zero mask).
        feature_size: ``(H, W)`` of the feature map.
        stride: input pixels per feature cell; cell ``(i, j)`` is sampled at
            ``((j + 0.5) * stride, (i + 0.5) * stride)``.
        sigma2: the decay sigma^2 (> 0) of the normalised offsets; ``float("inf")`` gives the binary mask.
        chunk_elements: upper bound on ``boxes_per_chunk * H * W``; bounds peak memory only.
        coordinates: ``"box_normalised"`` (offsets over the half width/height) or ``"pixels"`` (offsets in
            input pixels, sigma2 in pixels squared: the paper's formula taken literally).

    Returns:
        ``(B, 1, H, W)`` mask in ``[0, 1]`` with the dtype of ``boxes`` (float32 for integer boxes) on
        its device: ``exp(-(u^2 + v^2) / sigma2)`` for cells inside a box (``x1 <= x <= x2`` and
        ``y1 <= y <= y2``, bounds inclusive), the maximum over the image's boxes where they overlap,
        0 outside every box. The mask is a target: no gradient is meant to flow through it.
    """
    height, width = (int(v) for v in feature_size)
    _check_arguments(boxes, batch_index, batch_size, height, width, stride, sigma2)
    if coordinates not in COORDINATES:
        raise ValueError(f"gaussian_mask: coordinates must be one of {COORDINATES}, got {coordinates!r}")
    dtype = boxes.dtype if boxes.is_floating_point() else torch.float32
    device = boxes.device
    out = torch.zeros(batch_size, height * width, dtype=dtype, device=device)
    if boxes.shape[0] == 0:
        return out.view(batch_size, 1, height, width)

    boxes = boxes.to(dtype)
    xs = (torch.arange(width, dtype=dtype, device=device) + 0.5) * stride  # (W,) cell centres
    ys = (torch.arange(height, dtype=dtype, device=device) + 0.5) * stride  # (H,)
    # The mask is separable: exp(-(u^2 + v^2)/s) = exp(-u^2/s) * exp(-v^2/s), and "inside" is
    # "inside in x" and "inside in y". So per box we only build a (W,) and an (H,) profile and take
    # their outer product, instead of evaluating the exponential on every (box, cell) pair.
    normalise = coordinates == "box_normalised"
    gx = _profile(xs, boxes[:, 0], boxes[:, 2], sigma2, normalise)  # (N, W)
    gy = _profile(ys, boxes[:, 1], boxes[:, 3], sigma2, normalise)  # (N, H)
    index = batch_index.to(device=device, dtype=torch.long)

    cells = height * width
    per_chunk = max(1, chunk_elements // cells)
    for start in range(0, boxes.shape[0], per_chunk):
        stop = start + per_chunk
        values = (gy[start:stop, :, None] * gx[start:stop, None, :]).reshape(-1, cells)  # (n, H*W)
        # Element-wise max over the boxes of each image; out starts at 0, the value outside every box.
        out.scatter_reduce_(0, index[start:stop, None].expand_as(values), values, reduce="amax")
    return out.view(batch_size, 1, height, width)


def _profile(centres: Tensor, low: Tensor, high: Tensor, sigma2: float, normalise: bool = True) -> Tensor:
    """``(N, L)`` one-axis factor: ``exp(-t^2 / sigma2)`` with ``t`` the offset (over the half extent when
    ``normalise``, else in pixels) where ``low <= centre <= high``, else 0."""
    mid = (low + high) / 2
    t = centres[None, :] - mid[:, None]
    if normalise:
        half = (high - low) / 2
        # A zero-extent box contains only cells exactly at its centre, where t is 0; clamping the
        # denominator keeps that 0 / 0 from turning into NaN.
        t = t / half.clamp_min(torch.finfo(half.dtype).tiny)[:, None]
    inside = (centres[None, :] >= low[:, None]) & (centres[None, :] <= high[:, None])
    # sigma2 = inf: t^2 / inf = 0 inside, so exp gives exactly 1 (the binary mask). Outside cells are
    # selected away by `where`, never multiplied, because their t^2 may be inf and inf / inf is NaN.
    return torch.where(inside, torch.exp(-(t * t) / sigma2), torch.zeros((), dtype=t.dtype, device=t.device))


def downsample_mask(mask: Tensor, factor: int) -> Tensor:
    """A ``(B, 1, H * factor, W * factor)`` mask averaged over ``factor x factor`` cells: ``(B, 1, H, W)``.

    Building the mask once at a fine stride t and averaging it down to a level of stride s = factor * t
    keeps the share of each cell that the Gaussian covers (area resampling); ``factor = 1`` is the mask
    itself.
    """
    if factor < 1:
        raise ValueError(f"downsample_mask: factor must be >= 1, got {factor}")
    if factor == 1:
        return mask
    return F.avg_pool2d(mask, kernel_size=factor, stride=factor)


def _check_arguments(
    boxes: Tensor, batch_index: Tensor, batch_size: int, height: int, width: int, stride: float, sigma2: float
) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"gaussian_mask: boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if batch_index.shape != (boxes.shape[0],):
        raise ValueError(
            f"gaussian_mask: batch_index must have shape ({boxes.shape[0]},) to match boxes, "
            f"got {tuple(batch_index.shape)}"
        )
    if batch_index.is_floating_point():
        raise ValueError(f"gaussian_mask: batch_index must be an integer tensor, got {batch_index.dtype}")
    if batch_size < 1 or height < 1 or width < 1:
        raise ValueError(
            f"gaussian_mask: batch_size and feature_size must be positive, got {batch_size} and ({height}, {width})"
        )
    if not stride > 0:
        raise ValueError(f"gaussian_mask: stride must be > 0, got {stride}")
    if math.isnan(sigma2) or not sigma2 > 0:
        raise ValueError(f"gaussian_mask: sigma2 must be > 0 (inf for the binary mask), got {sigma2}")
