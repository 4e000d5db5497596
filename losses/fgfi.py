"""Fine-grained feature imitation (FGFI), Wang et al. 2019, "Distilling Object Detectors with Fine-grained
Feature Imitation" (CVPR), on the pure tensors: the imitation mask and the masked imitation loss.

Imitation mask (their section 3.1), per feature level of stride s with anchors ``A`` (w, h in pixels) at
every cell: for each ground-truth box b, the IoU map ``m_b[i, j, a]`` of the anchors of cell (i, j) with
b; its maximum ``M_b``; the cells where some anchor's IoU exceeds ``psi * M_b`` (psi = 0.5) belong to b's
mask; the image's mask ``I`` is the union over its boxes::

    I[i, j] = 1  if  exists b, a:  IoU(anchor(i, j, a), b) > psi * max_{i', j', a'} IoU(anchor(i', j', a'), b)

Anchors are centred on the cell centres ``((j + 0.5) s, (i + 0.5) s)`` (where YOLOv5's decoded box
centre sits at zero logits).

Imitation loss (their eq 3) with the student's adapted map ``A(S)`` and the teacher's map ``T``::

    L_imitation = lambda / (2 N_p) * sum_{i, j} I[i, j] * sum_c (A(S)[c, i, j] - T[c, i, j])^2,
    N_p = sum_{i, j} I[i, j]                       (normalise="positions", the paper; lambda 0.01)
    N_p = C * sum_{i, j} I[i, j]                   (normalise="elements", DeFeat.pytorch's FGFI config)

over the batch (N_p counts every image's mask), computed per level and averaged over the levels (FGFI
imitates one map; multi-level as DeFeat.pytorch does for FPN). A level without positives contributes 0
(``N_p`` is floored at 1, as DeFeat.pytorch's ``max(1, 2 N_p)``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

NORMALISE = ("positions", "elements")


def pairwise_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), both xyxy: (N, M)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=1e-9)


def cell_anchors(anchors_wh: Tensor, stride: float, size: tuple[int, int]) -> Tensor:
    """``(H, W, A, 4)`` xyxy pixel anchors: each (w, h) of ``anchors_wh`` (A, 2) at every cell centre."""
    height, width = size
    device, dtype = anchors_wh.device, anchors_wh.dtype
    cy = (torch.arange(height, device=device, dtype=dtype) + 0.5) * stride
    cx = (torch.arange(width, device=device, dtype=dtype) + 0.5) * stride
    centre = torch.stack(torch.meshgrid(cx, cy, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    half = anchors_wh / 2  # (A, 2)
    return torch.cat((centre[:, :, None] - half, centre[:, :, None] + half), dim=-1)


def imitation_mask(boxes: Tensor, batch_index: Tensor, batch_size: int, anchors_wh: Tensor, stride: float,
                   size: tuple[int, int], psi: float = 0.5) -> Tensor:
    """FGFI's mask at one level: ``(B, H, W)`` float 0/1 (module docstring).

    Args:
        boxes: ``(N, 4)`` ground-truth boxes, xyxy input pixels; ``batch_index``: ``(N,)`` their images.
        anchors_wh: ``(A, 2)`` the level's anchors, (w, h) in pixels; ``stride``: the level's stride.
        size: ``(H, W)`` of the level's map; ``psi``: the threshold factor.
    """
    height, width = size
    mask = torch.zeros(batch_size, height * width, device=boxes.device, dtype=torch.float32)
    if boxes.shape[0] == 0:
        return mask.view(batch_size, height, width)
    anchors = cell_anchors(anchors_wh.to(boxes.device, torch.float32), stride, size)  # (H, W, A, 4)
    na = anchors.shape[2]
    iou = pairwise_iou(boxes.float(), anchors.reshape(-1, 4)).view(-1, height * width, na)  # (N, HW, A)
    best = iou.amax(dim=(1, 2), keepdim=True)  # M_b
    hit = (iou > psi * best).any(dim=2).float()  # (N, HW): cells of box b's mask
    mask.index_add_(0, batch_index.long().to(boxes.device), hit)
    return (mask > 0).float().view(batch_size, height, width)


def fgfi_level_loss(adapted: Tensor, teacher: Tensor, mask: Tensor, normalise: str = "positions") -> Tensor:
    """``sum I (A(S) - T)^2 / max(1, 2 N_p)`` at one level: ``adapted``/``teacher`` (B, C, H, W), ``mask``
    (B, H, W); float32 at least."""
    if normalise not in NORMALISE:
        raise ValueError(f"fgfi_loss: normalise must be one of {NORMALISE}, got {normalise!r}")
    if adapted.shape != teacher.shape or mask.shape != (adapted.shape[0], *adapted.shape[2:]):
        raise ValueError(f"fgfi_loss: adapted {tuple(adapted.shape)}, teacher {tuple(teacher.shape)} and mask "
                         f"{tuple(mask.shape)} must be (B, C, H, W), (B, C, H, W), (B, H, W)")
    dtype = torch.promote_types(torch.promote_types(adapted.dtype, teacher.dtype), torch.float32)
    m = mask.to(dtype)[:, None]
    squared = ((adapted.to(dtype) - teacher.to(dtype)).pow(2) * m).sum()
    n_p = m.sum() * (adapted.shape[1] if normalise == "elements" else 1)
    return squared / torch.clamp(2 * n_p, min=1.0)


def fgfi_loss(adapted: Mapping[int, Tensor], teachers: Mapping[int, Tensor], masks: Mapping[int, Tensor], *,
              weight: float = 0.01, normalise: str = "positions") -> Tensor:
    """``weight * mean_levels fgfi_level_loss``: the FGFI term, a scalar. Dicts are keyed by stride."""
    if not adapted or set(adapted) != set(teachers) or set(adapted) != set(masks):
        raise ValueError(f"fgfi_loss: expected the same non-empty strides, got {sorted(adapted)}, "
                         f"{sorted(teachers)}, {sorted(masks)}")
    levels = [fgfi_level_loss(adapted[s], teachers[s], masks[s], normalise) for s in sorted(adapted)]
    return weight * torch.stack(levels).mean()
