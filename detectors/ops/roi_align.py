"""RoIAlign in pure torch, exactly as torchvision's compiled CPU kernel computes it.

``roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)`` has the signature and the
semantics of ``torchvision.ops.roi_align`` (He et al. 2017, "Mask R-CNN", section 3). For RoI ``r`` with
corners scaled by ``spatial_scale`` (minus 0.5 when ``aligned``), each of the ``PH x PW`` bins averages
``gh x gw`` bilinear samples, ``gh = sampling_ratio`` or, when ``sampling_ratio <= 0``, ``ceil(roi_h / PH)``
per RoI (same for ``gw``). The kernel's rules, which torchvision's own pure-Python fallback gets wrong for
boxes crossing the border, are followed literally:

- a sample with ``y < -1``, ``y > H``, ``x < -1`` or ``x > W`` (or a NaN coordinate) contributes 0;
- otherwise negative coordinates are clamped to 0, and a sample whose integer part reaches ``H - 1``
  (``W - 1``) reads row ``H - 1`` (column ``W - 1``) only;
- without ``aligned`` a RoI is at least 1 x 1 feature pixel; with it an empty RoI gives zeros;
- the bin value is ``sum_samples (w1 v1 + w2 v2 + w3 v3 + w4 v4) / max(gh * gw, 1)``.

Every arithmetic step is the kernel's, in its order and in the input's dtype (coordinates, weights, the
per-sample sum accumulated sample after sample), so the forward pass equals the kernel bit for bit in
float64 and float32 (benchmarks/verify_roi_align_parity.py checks it on random boxes). The backward pass
is the transpose of the forward's gathers (index_add of ``weight * grad / count`` onto each sample's four
pixels), equal to the kernel's backward up to the order of the additions; like the kernel's, it gives
no gradient to the boxes.

Vectorised: RoIs are sorted by their number of samples ``gh * gw`` and the loop runs over sample slots
``s`` (0 .. max samples - 1), each slot handling, for all RoIs that have one and all their bins at once,
one bilinear sample per bin; accumulating slot after slot reproduces the kernel's summation order.
Features are read channels-last so each gather fetches whole channel vectors.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) == 1:
        return int(size[0]), int(size[0])
    if len(size) != 2:
        raise ValueError(f"roi_align: output_size must be an int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def boxes_to_rois(boxes: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """(L, 5) ``[batch_index, x1, y1, x2, y2]`` RoIs from a list of per-image (Li, 4) boxes (or checked as is)."""
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(
                f"roi_align: boxes tensor must be (L, 5) [batch_index, x1, y1, x2, y2], got {tuple(boxes.shape)}"
            )
        return boxes
    if not isinstance(boxes, (list, tuple)) or not boxes:
        raise ValueError("roi_align: boxes must be an (L, 5) tensor or a non-empty list of (Li, 4) tensors")
    for i, b in enumerate(boxes):
        if not isinstance(b, torch.Tensor) or b.dim() != 2 or b.shape[1] != 4:
            shape = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
            raise ValueError(f"roi_align: boxes[{i}] must be an (Li, 4) tensor, got {shape}")
    ids = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)])
    return torch.cat([ids, torch.cat(list(boxes))], dim=1)


def _axis_samples(coord: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """The kernel's bilinear rule along one axis: coord (...,) -> (valid, low, high, l, h) of the same shape.

    ``l`` is the weight of ``high`` and ``h = 1 - l`` the weight of ``low``; invalid samples get index 0.
    """
    valid = (coord >= -1.0) & (coord <= size)  # False for NaN, as the kernel's !(in range) test
    coord = torch.where(valid & (coord > 0), coord, torch.zeros_like(coord))  # "if (y <= 0) y = 0"
    low = coord.to(torch.int64)  # truncation == floor here, coord >= 0
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    coord = torch.where(at_edge, low.to(coord.dtype), coord)
    frac = coord - low.to(coord.dtype)
    return valid, low, high, frac, 1.0 - frac


class _SamplingPlan(NamedTuple):
    """Per-RoI geometry, RoIs sorted by descending number of samples (the slot loop's prefix order)."""

    order: torch.Tensor  # (L,) original index of each sorted RoI
    count: torch.Tensor  # (L,) max(gh * gw, 1), dtype: the divisor of each bin
    base_y: torch.Tensor  # (L, PH) roi_start_h + ph * bin_size_h
    base_x: torch.Tensor  # (L, PW)
    bin_h: torch.Tensor  # (L,)
    bin_w: torch.Tensor
    grid_h: torch.Tensor  # (L,) int64
    grid_w: torch.Tensor
    pixel_base: torch.Tensor  # (L, 1, 1) first row of the RoI's image in the flat channels-last map
    active_at: list[int]  # active_at[s]: number of RoIs with more than s samples


def _sampling_plan(
    rois: torch.Tensor,
    size: tuple[int, int],
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> _SamplingPlan:
    """The kernel's per-RoI arithmetic, step by step in ``rois``' dtype."""
    h, w = size
    ph, pw = output_size
    dtype, device = rois.dtype, rois.device
    batch = rois[:, 0].to(torch.int64)  # the kernel's (int) cast truncates
    scale = torch.tensor(spatial_scale, dtype=dtype, device=device)  # the kernel's T spatial_scale
    offset = 0.5 if aligned else 0.0
    start_w, start_h, end_w, end_h = (rois[:, k] * scale - offset for k in range(1, 5))
    roi_w, roi_h = end_w - start_w, end_h - start_h
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / ph, roi_w / pw
    if sampling_ratio > 0:
        grid_h = torch.full_like(batch, sampling_ratio)
        grid_w = torch.full_like(batch, sampling_ratio)
    else:
        grid_h = torch.ceil(roi_h / ph).to(torch.int64).clamp(min=0)  # <= 0: no samples, output 0
        grid_w = torch.ceil(roi_w / pw).to(torch.int64).clamp(min=0)
    samples = grid_h * grid_w
    samples, order = torch.sort(samples, descending=True, stable=True)
    count = samples.clamp(min=1).to(dtype)
    start_h, start_w, bin_h, bin_w = start_h[order], start_w[order], bin_h[order], bin_w[order]
    base_y = start_h[:, None] + torch.arange(ph, dtype=dtype, device=device) * bin_h[:, None]
    base_x = start_w[:, None] + torch.arange(pw, dtype=dtype, device=device) * bin_w[:, None]
    total = int(samples[0]) if len(samples) else 0
    active_at = torch.searchsorted(-samples, -torch.arange(total, device=device)).tolist()
    pixel_base = (batch[order] * (h * w))[:, None, None]
    return _SamplingPlan(
        order, count, base_y, base_x, bin_h, bin_w, grid_h[order], grid_w[order], pixel_base, active_at
    )


def _slot_corners(
    plan: _SamplingPlan, s: int, size: tuple[int, int]
) -> tuple[int, list[torch.Tensor], list[torch.Tensor]]:
    """Sample slot ``s`` of the first k RoIs, every bin: k, 4 x flat row indices (k * PH * PW,) and 4 x
    weights (k, PH * PW, 1), corners in the kernel's order (low/low, low/high, high/low, high/high)."""
    h, w = size
    k = plan.active_at[s]
    dtype = plan.base_y.dtype
    grid_w = plan.grid_w[:k]
    iy = torch.div(s, grid_w, rounding_mode="floor")  # row-major over (iy, ix), the kernel's order
    ix = s - iy * grid_w
    # roi_start + p * bin_size + (i + .5) * bin_size / grid, in that order
    y = (
        plan.base_y[:k] + ((iy.to(dtype) + 0.5) * plan.bin_h[:k] / plan.grid_h[:k].to(dtype))[:, None]
    )  # (k, PH)
    x = plan.base_x[:k] + ((ix.to(dtype) + 0.5) * plan.bin_w[:k] / grid_w.to(dtype))[:, None]  # (k, PW)
    valid_y, y_low, y_high, ly, hy = _axis_samples(y, h)
    valid_x, x_low, x_high, lx, hx = _axis_samples(x, w)
    valid = valid_y[:, :, None] & valid_x[:, None, :]  # (k, PH, PW)
    zero = torch.zeros((), dtype=dtype, device=y.device)
    indices, weights = [], []
    for wy, yi in ((hy, y_low), (ly, y_high)):
        for wx, xi in ((hx, x_low), (lx, x_high)):
            # an invalid sample reads row 0 with weight 0, as the kernel's PreCalc does
            weights.append(torch.where(valid, wy[:, :, None] * wx[:, None, :], zero).reshape(k, -1, 1))
            indices.append(
                torch.where(valid, plan.pixel_base[:k] + yi[:, :, None] * w + xi[:, None, :], 0).reshape(-1)
            )
    return k, indices, weights


class _RoIAlign(torch.autograd.Function):
    """Forward: gathers into two reused buffers (fresh 10-100 MB tensors per corner and slot cost more in
    page faults than the gathers). Backward: the transposed gathers, index_add into one gradient buffer
    (autograd through index_select would allocate a full-size gradient per corner and slot)."""

    @staticmethod
    def forward(ctx, input, rois, output_size, spatial_scale, sampling_ratio, aligned):  # noqa: ANN001
        n, c, h, w = input.shape
        ph, pw = output_size
        plan = _sampling_plan(rois, (h, w), output_size, spatial_scale, sampling_ratio, aligned)
        num_rois, bins = rois.shape[0], ph * pw
        features = input.permute(0, 2, 3, 1).reshape(n * h * w, c)  # channels-last rows
        out = input.new_zeros(num_rois, bins, c)
        term_buffer, value_buffer = (
            features.new_empty(num_rois * bins, c),
            features.new_empty(num_rois * bins, c),
        )
        for s in range(len(plan.active_at)):
            k, indices, weights = _slot_corners(plan, s, (h, w))
            term = torch.index_select(features, 0, indices[0], out=term_buffer[: k * bins]).view(k, bins, c)
            term.mul_(weights[0])
            for index, weight in zip(indices[1:], weights[1:], strict=True):
                value = torch.index_select(features, 0, index, out=value_buffer[: k * bins]).view(k, bins, c)
                term.add_(value.mul_(weight))  # ((w1 v1 + w2 v2) + w3 v3) + w4 v4
            out[:k] += term
        out /= plan.count[:, None, None]
        inverse = torch.empty_like(plan.order)
        inverse[plan.order] = torch.arange(num_rois, device=input.device)
        ctx.save_for_backward(rois)
        ctx.setup = (input.shape, output_size, spatial_scale, sampling_ratio, aligned)
        return out.index_select(0, inverse).view(num_rois, ph, pw, c).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):  # noqa: ANN001
        (rois,) = ctx.saved_tensors
        (n, c, h, w), output_size, spatial_scale, sampling_ratio, aligned = ctx.setup
        plan = _sampling_plan(rois, (h, w), output_size, spatial_scale, sampling_ratio, aligned)
        num_rois, bins = rois.shape[0], output_size[0] * output_size[1]
        grad = (
            grad_output.permute(0, 2, 3, 1).reshape(num_rois, bins, c)[plan.order] / plan.count[:, None, None]
        )
        grad_features = grad.new_zeros(n * h * w, c)
        scratch = grad.new_empty(num_rois, bins, c)
        for s in range(len(plan.active_at)):
            k, indices, weights = _slot_corners(plan, s, (h, w))
            for index, weight in zip(indices, weights, strict=True):
                grad_features.index_add_(
                    0, index, torch.mul(grad[:k], weight, out=scratch[:k]).view(k * bins, c)
                )
        grad_input = grad_features.view(n, h, w, c).permute(0, 3, 1, 2)
        return grad_input, None, None, None, None, None


def roi_align(
    input: torch.Tensor,
    boxes: torch.Tensor | list[torch.Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """RoIAlign of (N, C, H, W) ``input`` -> (L, C, PH, PW), as ``torchvision.ops.roi_align``.

    ``boxes``: (L, 5) ``[batch_index, x1, y1, x2, y2]`` or a list of N (Li, 4) xyxy tensors, in input-image
    coordinates (``spatial_scale`` maps them onto the feature map); cast to ``input``'s dtype.
    """
    if input.dim() != 4:
        raise ValueError(f"roi_align: input must be (N, C, H, W), got {tuple(input.shape)}")
    if not input.is_floating_point():
        raise ValueError(f"roi_align: input must be floating point, got {input.dtype}")
    output_size = _pair(output_size)
    if min(output_size) < 1:
        raise ValueError(f"roi_align: output_size must be positive, got {output_size}")
    rois = boxes_to_rois(boxes).detach().to(device=input.device, dtype=input.dtype)
    n, c = input.shape[:2]
    if rois.shape[0] == 0 or input.numel() == 0:
        # An empty sum keeps the result connected to ``input`` (zero gradient), as the kernel's output is.
        return input.new_zeros(rois.shape[0], c, *output_size) + input.reshape(-1)[:0].sum()
    batch = rois[:, 0].to(torch.int64)
    if bool((batch < 0).any()) or bool((batch >= n).any()):
        raise ValueError(
            f"roi_align: RoI batch indices must be in [0, {n}), got {batch.min().item()}..{batch.max().item()}"
        )
    return _RoIAlign.apply(input, rois, output_size, float(spatial_scale), int(sampling_ratio), bool(aligned))
