"""DeFeat, Guo et al. 2021, "Distilling Object Detectors via Decoupled Features" (CVPR), on pure tensors.

The ground-truth boxes split every map into an object region (mask ``I``) and the background (``1 - I``);
each is distilled with its own weight and its own normalisation, so the far larger background neither
drowns the objects nor is ignored.

Object mask (DeFeat.pytorch ``get_gt_mask``), per level of stride s: box b covers the cells
``int(x1/s) <= j < int(x2/s)``, ``int(y1/s) <= i < int(y2/s)`` (truncating, as their code), or the one
cell ``(int(y1/s), int(x1/s))`` when that range is empty; ``I`` is the union over the image's boxes.
(DeFeat.pytorch gives each box to one FPN level by its scale; here each box marks every level, as
YOLOv5 lets every level fit every box whose shape matches an anchor.)

Decoupled feature imitation (their eq 5, normalisations of DeFeat.pytorch) with the adapted student map
``A(S)`` and the teacher's ``T`` (C channels), per level, then averaged over levels::

    L_obj = sum I (A(S) - T)^2 / max(1, 2 C sum I)
    L_bg  = sum (1 - I) (A(S) - T)^2 / max(1, 2 C sum (1 - I))
    L_feat = w_obj * L_obj + w_bg * L_bg                      (DeFeat.pytorch: w_obj 3, w_bg 12)

Decoupled classification KD (their eq 6; KL with temperature T, times T^2). DeFeat splits the R-CNN's
RoIs into positives and negatives and distils each softmax apart; a one-stage YOLO head has, per anchor
and cell, independent sigmoid outputs (objectness, then one per class), so the KL of each output's
Bernoulli distribution is summed over the K distilled outputs, and positions split by ``I`` at the head's
level (every anchor of an object cell is an object position)::

    KL_p = sum_k [ q_k log(q_k / p_k) + (1 - q_k) log((1 - q_k) / (1 - p_k)) ],
           q_k = sigmoid(t_k / T), p_k = sigmoid(s_k / T)
    L_cls_obj = T^2 sum_{p in I} KL_p / max(1, |I|),    L_cls_bg = T^2 sum_{p not in I} KL_p / max(1, |not I|)
    L_cls = w_cls_obj * L_cls_obj + w_cls_bg * L_cls_bg      (DeFeat.pytorch: both 2, T 1)

averaged over levels like the features.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor


def box_mask(boxes: Tensor, batch_index: Tensor, batch_size: int, stride: float, size: tuple[int, int]) -> Tensor:
    """DeFeat's object mask at one level: ``(B, H, W)`` float 0/1 from xyxy input-pixel ``boxes`` (N, 4)."""
    height, width = size
    if boxes.shape[0] == 0:
        return torch.zeros(batch_size, height, width, device=boxes.device)
    cells = torch.trunc(boxes.float() / stride).long()  # int() of their code (coordinates are >= 0)
    lx, ly = cells[:, 0].clamp(0, width - 1), cells[:, 1].clamp(0, height - 1)
    rx, ry = cells[:, 2].clamp(max=width), cells[:, 3].clamp(max=height)
    cols = torch.arange(width, device=boxes.device)
    rows = torch.arange(height, device=boxes.device)
    in_cols = (cols[None] >= lx[:, None]) & (cols[None] < rx[:, None])  # (N, W)
    in_rows = (rows[None] >= ly[:, None]) & (rows[None] < ry[:, None])  # (N, H)
    region = in_rows[:, :, None] & in_cols[:, None, :]  # (N, H, W)
    single = (rows[None, :, None] == ly[:, None, None]) & (cols[None, None, :] == lx[:, None, None])
    empty = (lx >= rx) | (ly >= ry)
    per_box = torch.where(empty[:, None, None], single, region).float()
    mask = torch.zeros(batch_size, height, width, device=boxes.device)
    mask.index_add_(0, batch_index.long().to(boxes.device), per_box)
    return (mask > 0).float()


def decoupled_feature_loss(adapted: Tensor, teacher: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(L_obj, L_bg)`` at one level (unweighted): ``adapted``/``teacher`` (B, C, H, W), ``mask`` (B, H, W)."""
    if adapted.shape != teacher.shape or mask.shape != (adapted.shape[0], *adapted.shape[2:]):
        raise ValueError(f"decoupled_feature_loss: adapted {tuple(adapted.shape)}, teacher {tuple(teacher.shape)}, "
                         f"mask {tuple(mask.shape)}: expected (B, C, H, W), (B, C, H, W), (B, H, W)")
    dtype = torch.promote_types(torch.promote_types(adapted.dtype, teacher.dtype), torch.float32)
    squared = (adapted.to(dtype) - teacher.to(dtype)).pow(2).sum(dim=1)  # (B, H, W): sum over channels
    m = mask.to(dtype)
    channels = adapted.shape[1]
    obj = (squared * m).sum() / torch.clamp(2 * channels * m.sum(), min=1.0)
    bg = (squared * (1 - m)).sum() / torch.clamp(2 * channels * (1 - m).sum(), min=1.0)
    return obj, bg


def binary_kl_with_logits(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Elementwise KL(Bernoulli(sigmoid(teacher / T)) || Bernoulli(sigmoid(student / T))), float32 at least.

    Written as BCE(student, q) - BCE(teacher, q), both stable for any logits; the teacher gets no gradient.
    """
    dtype = torch.promote_types(torch.promote_types(student.dtype, teacher.dtype), torch.float32)
    s, t = student.to(dtype) / temperature, teacher.detach().to(dtype) / temperature
    q = torch.sigmoid(t)
    return (F.binary_cross_entropy_with_logits(s, q, reduction="none")
            - F.binary_cross_entropy_with_logits(t, q, reduction="none"))


def decoupled_head_kd(student: Tensor, teacher: Tensor, mask: Tensor, temperature: float = 1.0
                      ) -> tuple[Tensor, Tensor]:
    """``(L_cls_obj, L_cls_bg)`` at one level (unweighted, times T^2).

    ``student``/``teacher``: ``(B, A, H, W, K)`` logits of the K distilled outputs; ``mask``: ``(B, H, W)``.
    """
    if student.shape != teacher.shape or student.dim() != 5 or mask.shape != (student.shape[0], *student.shape[2:4]):
        raise ValueError(f"decoupled_head_kd: student {tuple(student.shape)}, teacher {tuple(teacher.shape)}, "
                         f"mask {tuple(mask.shape)}: expected (B, A, H, W, K) twice and (B, H, W)")
    kl = binary_kl_with_logits(student, teacher, temperature).sum(dim=-1)  # (B, A, H, W): KL_p
    m = mask.to(kl.dtype)[:, None].expand_as(kl)
    scale = temperature ** 2
    obj = scale * (kl * m).sum() / torch.clamp(m.sum(), min=1.0)
    bg = scale * (kl * (1 - m)).sum() / torch.clamp((1 - m).sum(), min=1.0)
    return obj, bg


def defeat_loss(adapted: Mapping[int, Tensor], teachers: Mapping[int, Tensor], feature_masks: Mapping[int, Tensor],
                student_logits: Mapping[int, Tensor] | None, teacher_logits: Mapping[int, Tensor] | None,
                head_masks: Mapping[int, Tensor] | None, *, feature_object_weight: float = 3.0,
                feature_background_weight: float = 12.0, cls_object_weight: float = 2.0,
                cls_background_weight: float = 2.0, temperature: float = 1.0) -> dict[str, Tensor]:
    """DeFeat's four weighted terms, each averaged over levels: ``{"feature_object", "feature_background",
    "cls_object", "cls_background"}`` (scalars). Dicts are keyed by stride; the head dicts may be ``None``
    (no classification KD: its terms are 0)."""
    if not adapted or set(adapted) != set(teachers) or set(adapted) != set(feature_masks):
        raise ValueError(f"defeat_loss: expected the same non-empty strides, got {sorted(adapted)}, "
                         f"{sorted(teachers)}, {sorted(feature_masks)}")
    feats = [decoupled_feature_loss(adapted[s], teachers[s], feature_masks[s]) for s in sorted(adapted)]
    f_obj = torch.stack([o for o, _ in feats]).mean()
    f_bg = torch.stack([b for _, b in feats]).mean()
    zero = f_obj.new_zeros(())
    c_obj = c_bg = zero
    if student_logits is not None:
        if set(student_logits) != set(teacher_logits or {}) or set(student_logits) != set(head_masks or {}):
            raise ValueError("defeat_loss: student_logits, teacher_logits and head_masks need the same strides")
        cls = [decoupled_head_kd(student_logits[s], teacher_logits[s], head_masks[s], temperature)
               for s in sorted(student_logits)]
        c_obj = torch.stack([o for o, _ in cls]).mean()
        c_bg = torch.stack([b for _, b in cls]).mean()
    return {"feature_object": feature_object_weight * f_obj, "feature_background": feature_background_weight * f_bg,
            "cls_object": cls_object_weight * c_obj, "cls_background": cls_background_weight * c_bg}
