"""Anchor boxes as torchvision's ``AnchorGenerator`` makes them (RetinaNet, Faster R-CNN's RPN, FCOS).

Per level l: ``sizes[l]`` x ``aspect_ratios[l]`` (ratio = height / width) cell anchors centred on 0,
``[-w/2, -h/2, w/2, h/2]`` with ``h = size * sqrt(ratio)``, ``w = size / sqrt(ratio)``, ROUNDED to
integers (torchvision rounds; so do its checkpoints' trained regressions). Ratios vary slowest: cell
anchor index = ratio_index * len(sizes) + size_index. The grid shifts them to ``(x * stride_w,
y * stride_h)`` for every cell, row-major (y outer, x inner), all of a cell's anchors together: the
anchor of cell (y, x) and cell anchor a is row ``(y * W + x) * A + a`` of its level, matching heads
that reshape ``(B, A * C, H, W)`` to ``(B, H * W * A, C)``. Note the shift is the cell's top-left
corner, not its centre (torchvision's convention, which FCOS's points inherit).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class AnchorGenerator:
    """``AnchorGenerator(sizes, aspect_ratios)``; ``__call__`` returns one (H*W*A, 4) xyxy tensor per level.

    ``sizes`` is one tuple per level (a flat tuple means one size per level, as torchvision); a flat
    ``aspect_ratios`` is used for every level. Concatenate the levels (``torch.cat``) for torchvision's
    per-image anchor tensor.
    """

    def __init__(self, sizes: Sequence[Sequence[int]] | Sequence[int] = ((128, 256, 512),),
                 aspect_ratios: Sequence[Sequence[float]] | Sequence[float] = ((0.5, 1.0, 2.0),)) -> None:
        if not isinstance(sizes[0], (list, tuple)):
            sizes = tuple((s,) for s in sizes)
        if not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = (tuple(aspect_ratios),) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"AnchorGenerator: {len(sizes)} levels of sizes, {len(aspect_ratios)} of aspect ratios")
        self.sizes = tuple(tuple(s) for s in sizes)
        self.aspect_ratios = tuple(tuple(r) for r in aspect_ratios)
        self.cell_anchors = [cell_anchors(s, r) for s, r in zip(self.sizes, self.aspect_ratios, strict=True)]

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios, strict=True)]

    def __call__(self, image_size: tuple[int, int], feature_shapes: Sequence[tuple[int, int]],
                 strides: Sequence[int | tuple[int, int]] | None = None, *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> list[Tensor]:
        """Anchors of each level, (h * w * A, 4) xyxy in input pixels.

        ``strides`` per level (an int or (stride_h, stride_w)); None means torchvision's
        ``image_size // feature_size`` per dimension (equal for inputs that are multiples of the
        largest stride).
        """
        if len(feature_shapes) != len(self.cell_anchors):
            raise ValueError(f"AnchorGenerator: {len(self.cell_anchors)} levels configured, "
                             f"{len(feature_shapes)} feature maps given")
        if strides is None:
            strides = [(image_size[0] // h, image_size[1] // w) for h, w in feature_shapes]
        out = []
        for (h, w), stride, base in zip(feature_shapes, strides, self.cell_anchors, strict=True):
            sh, sw = (stride, stride) if isinstance(stride, int) else stride
            out.append(grid_anchors(base.to(device=device, dtype=dtype), (int(h), int(w)), (int(sh), int(sw))))
        return out


def cell_anchors(sizes: Sequence[int], aspect_ratios: Sequence[float]) -> Tensor:
    """(len(ratios) * len(sizes), 4) rounded anchors centred on 0, in torchvision's order and float32 math."""
    scales = torch.as_tensor(sizes, dtype=torch.float32)
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (h_ratios[:, None] * scales[None, :]).view(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


def grid_anchors(base: Tensor, grid: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """Cell anchors ``base`` (A, 4) shifted to every cell of an (h, w) grid -> (h * w * A, 4)."""
    h, w = grid
    # Integer shifts then one addition, as torchvision, so float16 anchors round the same way.
    shifts_x = torch.arange(0, w, dtype=torch.int32, device=base.device) * torch.tensor(stride[1], device=base.device)
    shifts_y = torch.arange(0, h, dtype=torch.int32, device=base.device) * torch.tensor(stride[0], device=base.device)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    return (shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4)
