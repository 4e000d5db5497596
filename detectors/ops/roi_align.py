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
float64 and float32 (benchmarks/verify_roi_align_parity.py checks it on random boxes). The gradient
w.r.t. ``input`` comes from autograd through the gathers (index_select -> index_add), equal to the
kernel's backward up to the order of the additions; like the kernel, no gradient flows to the boxes.

Vectorised: RoIs are sorted by their number of samples ``gh * gw`` and the loop runs over sample slots
``s`` (0 .. max samples - 1), each slot handling, for all RoIs that have one and all their bins at once,
one bilinear sample per bin; accumulating slot after slot reproduces the kernel's summation order.
Features are read channels-last so each gather fetches whole channel vectors.
"""

from __future__ import annotations

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
    ph, pw = _pair(output_size)
    if ph < 1 or pw < 1:
        raise ValueError(f"roi_align: output_size must be positive, got {(ph, pw)}")
    rois = boxes_to_rois(boxes).detach().to(device=input.device, dtype=input.dtype)
    n, c, h, w = input.shape
    num_rois = rois.shape[0]
    dtype = input.dtype
    if num_rois == 0 or c == 0 or input.numel() == 0:
        # An empty sum keeps the result connected to ``input`` (zero gradient), as the kernel's output is.
        return input.new_zeros(num_rois, c, ph, pw) + input.reshape(-1)[:0].sum()
    batch = rois[:, 0].to(torch.int64)  # the kernel's (int) cast truncates
    if bool((batch < 0).any()) or bool((batch >= n).any()):
        raise ValueError(
            f"roi_align: RoI batch indices must be in [0, {n}), got {batch.min().item()}..{batch.max().item()}"
        )

    # Per-RoI geometry, each step as the kernel writes it.
    scale = torch.tensor(spatial_scale, dtype=dtype, device=input.device)
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
    count = samples.clamp(min=1).to(dtype)

    # Most samples first, so that the RoIs still sampling at slot s are a prefix.
    samples, order = torch.sort(samples, descending=True, stable=True)
    start_h, start_w, bin_h, bin_w = start_h[order], start_w[order], bin_h[order], bin_w[order]
    grid_h, grid_w, batch = grid_h[order], grid_w[order], batch[order]
    bins_h = torch.arange(ph, dtype=dtype, device=input.device)
    bins_w = torch.arange(pw, dtype=dtype, device=input.device)
    base_y = start_h[:, None] + bins_h * bin_h[:, None]  # (L, PH): roi_start_h + ph * bin_size_h
    base_x = start_w[:, None] + bins_w * bin_w[:, None]  # (L, PW)
    grid_h_f, grid_w_f = grid_h.to(dtype), grid_w.to(dtype)
    pixel_base = (batch * (h * w))[:, None, None]  # (L, 1, 1) row of image b in the flat map

    features = input.permute(0, 2, 3, 1).reshape(n * h * w, c)  # channels-last rows
    total = int(samples[0])
    # active_at[s] = number of RoIs with more than s samples
    active_at = torch.searchsorted(-samples, -torch.arange(total, device=input.device)).tolist()
    out = input.new_zeros(num_rois, ph * pw, c)
    if total == 0:  # every RoI empty (aligned, zero size): keep the result connected to input
        out = out + input.reshape(-1)[:0].sum()
    zero = torch.zeros((), dtype=dtype, device=input.device)
    buffers = None
    if not (torch.is_grad_enabled() and input.requires_grad):
        # No graph to keep: gather into two reused buffers (fresh 10-100 MB tensors per corner and slot
        # cost more in page faults than the gather itself).
        buffers = (features.new_empty(num_rois * ph * pw, c), features.new_empty(num_rois * ph * pw, c))
    for s in range(total):
        k = active_at[s]  # RoIs 0..k-1 have a sample at slot s
        iy = torch.div(s, grid_w[:k], rounding_mode="floor")  # row-major over (iy, ix), the kernel's order
        ix = s - iy * grid_w[:k]
        y = base_y[:k] + ((iy.to(dtype) + 0.5) * bin_h[:k] / grid_h_f[:k])[:, None]  # (k, PH)
        x = base_x[:k] + ((ix.to(dtype) + 0.5) * bin_w[:k] / grid_w_f[:k])[:, None]  # (k, PW)
        valid_y, y_low, y_high, ly, hy = _axis_samples(y, h)
        valid_x, x_low, x_high, lx, hx = _axis_samples(x, w)
        valid = (valid_y[:, :, None] & valid_x[:, None, :]).reshape(k, ph * pw, 1)
        term = None
        for wy, yi in ((hy, y_low), (ly, y_high)):
            for wx, xi in ((hx, x_low), (lx, x_high)):
                weight = torch.where(valid, (wy[:, :, None] * wx[:, None, :]).reshape(k, ph * pw, 1), zero)
                index = torch.where(
                    valid, (pixel_base[:k] + yi[:, :, None] * w + xi[:, None, :]).reshape(k, ph * pw, 1), 0
                )
                if buffers is None:  # autograd path: index_select's backward (index_add) needs no output
                    value = features.index_select(0, index.reshape(-1))
                else:
                    value = torch.index_select(
                        features, 0, index.reshape(-1), out=buffers[term is not None][: k * ph * pw]
                    )
                value = value.view(k, ph * pw, c).mul_(weight)
                term = value if term is None else term.add_(value)  # ((w1 v1 + w2 v2) + w3 v3) + w4 v4
        out[:k] += term
    out = out / count[order][:, None, None]  # sorted order; count was per original RoI
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(num_rois, device=input.device)
    return out.index_select(0, inverse).view(num_rois, ph, pw, c).permute(0, 3, 1, 2).contiguous()
