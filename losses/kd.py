"""KD for object detection, Chen et al. 2017, "Learning Efficient Object Detection Models with Knowledge
Distillation" (NeurIPS), adapted to a one-stage head with objectness (YOLOv5), on pure tensors.

Chen et al.'s three parts and how each reads on a one-stage detector:

1. Classification, hard + soft (their eq 2): ``L_cls = mu * L_hard(P_s, y) + (1 - mu) * L_soft(P_s, P_t)``,
   ``L_soft = - sum_c w_c P_t[c] log P_s[c]`` with ``P = softmax(Z / T)`` and the background class weighted
   ``w_0 = 1.5``. L_hard is the detector's own classification/objectness loss, already in L_gt, which the
   trainer keeps at its own gains: dividing L_cls by mu leaves ``L_hard + (1 - mu) / mu * L_soft``, so the
   soft term's weight is ``(1 - mu) / mu`` (1 at the paper's mu = 0.5). A YOLO head has no background
   class but an objectness sigmoid per anchor and cell, whose "no object" side is the background, and one
   sigmoid per class. Per level, with ``q = sigmoid(t / T)``, ``p = sigmoid(s / T)`` (teacher/student)::

       L_soft_obj = mean_{b,a,i,j} [ - q_o log p_o - w_0 (1 - q_o) log(1 - p_o) ]
       L_soft_cls = sum_{b,a,i,j} q_o * mean_c [ - q_c log p_c - (1 - q_c) log(1 - p_c) ] / max(1, sum q_o)

   (classes count where the teacher sees an object, as YOLOv5's class loss counts only assigned anchors;
   no class term for one class, which YOLOv5 never trains). ``L_soft`` is their sum, averaged over levels.
   Cross-entropies as Chen et al. write them (no T^2 factor, and the teacher's entropy is not removed, so
   the term does not reach 0 when the student equals the teacher; its gradient does).

2. Bounded regression (their eq 4): ``L_b = ||R_s - y||^2 if ||R_s - y||^2 + m > ||R_t - y||^2 else 0``,
   added with weight nu = 0.5: the teacher is an upper bound the student is pushed below, not a target.
   The regression error here is the detector's own regression loss on the same targets (YOLOv5: 1 - CIoU
   over the assigned anchors) for student (``e_s``, with gradient) and teacher (``e_t``, without), per
   batch: the detector contract reports its loss per batch, not per prediction::

       L_b = e_s  if  e_s + m > e_t  else  0

3. Hint (their eq 5, FitNets): ``L_hint = mean || A(S) - T ||^2`` on the neck maps the heads read, through a
   learned adaptation layer A (student channels -> teacher's), averaged over levels, weight gamma = 0.5.

``kd_loss`` returns ``{"soft": (1 - mu) / mu * L_soft, "regression": nu * L_b, "hint": gamma * L_hint}``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor


def soft_objectness_loss(student: Tensor, teacher: Tensor, temperature: float = 1.0,
                         background_weight: float = 1.5) -> Tensor:
    """``mean [ - q log p - w_0 (1 - q) log(1 - p) ]`` over objectness logits of any (equal) shape."""
    dtype = torch.promote_types(torch.promote_types(student.dtype, teacher.dtype), torch.float32)
    s = student.to(dtype) / temperature
    q = torch.sigmoid(teacher.detach().to(dtype) / temperature)
    # log p = logsigmoid(s), log(1 - p) = logsigmoid(-s): finite for any logit
    return (-(q * F.logsigmoid(s)) - background_weight * (1 - q) * F.logsigmoid(-s)).mean()


def soft_class_loss(student: Tensor, teacher: Tensor, teacher_objectness: Tensor, temperature: float = 1.0) -> Tensor:
    """``sum_p q_o(p) mean_c BCE(p_c, q_c) / max(1, sum q_o)``: ``student``/``teacher`` (..., nc) class
    logits, ``teacher_objectness`` (...) the teacher's objectness logits at the same positions."""
    dtype = torch.promote_types(torch.promote_types(student.dtype, teacher.dtype), torch.float32)
    s = student.to(dtype) / temperature
    q = torch.sigmoid(teacher.detach().to(dtype) / temperature)
    per_position = F.binary_cross_entropy_with_logits(s, q, reduction="none").mean(dim=-1)
    weight = torch.sigmoid(teacher_objectness.detach().to(dtype) / temperature)
    return (weight * per_position).sum() / torch.clamp(weight.sum(), min=1.0)


def soft_head_loss(student: Mapping[int, Tensor], teacher: Mapping[int, Tensor], *, temperature: float = 1.0,
                   background_weight: float = 1.5) -> Tensor:
    """L_soft averaged over levels. ``student``/``teacher``: ``{stride: (B, A, H, W, 1 + K)}`` logits, the
    objectness first, then the K >= 0 distilled class outputs."""
    if not student or set(student) != set(teacher):
        raise ValueError(f"soft_head_loss: expected the same non-empty strides, got {sorted(student)} and {sorted(teacher)}")
    levels = []
    for k in sorted(student):
        s, t = student[k], teacher[k]
        if s.shape != t.shape:
            raise ValueError(f"soft_head_loss: stride {k}: student {tuple(s.shape)} != teacher {tuple(t.shape)}")
        level = soft_objectness_loss(s[..., 0], t[..., 0], temperature, background_weight)
        if s.shape[-1] > 1:
            level = level + soft_class_loss(s[..., 1:], t[..., 1:], t[..., 0], temperature)
        levels.append(level)
    return torch.stack(levels).mean()


def bounded_regression_loss(student_error: Tensor, teacher_error: Tensor, margin: float = 0.0) -> Tensor:
    """``e_s if e_s + m > e_t else 0`` (scalars; the teacher's error carries no gradient)."""
    return torch.where(student_error + margin > teacher_error.detach(), student_error, torch.zeros_like(student_error))


def hint_loss(adapted: Mapping[int, Tensor], teachers: Mapping[int, Tensor]) -> Tensor:
    """``mean_levels mean((A(S) - T)^2)``: ``{stride: (B, C, H, W)}`` dicts of equal shapes per stride."""
    if not adapted or set(adapted) != set(teachers):
        raise ValueError(f"hint_loss: expected the same non-empty strides, got {sorted(adapted)} and {sorted(teachers)}")
    levels = []
    for k in sorted(adapted):
        a, t = adapted[k], teachers[k]
        if a.shape != t.shape:
            raise ValueError(f"hint_loss: stride {k}: adapted {tuple(a.shape)} != teacher {tuple(t.shape)}")
        dtype = torch.promote_types(torch.promote_types(a.dtype, t.dtype), torch.float32)
        levels.append(F.mse_loss(a.to(dtype), t.detach().to(dtype)))
    return torch.stack(levels).mean()


def kd_loss(soft: Tensor, regression: Tensor, hint: Tensor, *, mu: float = 0.5, regression_weight: float = 0.5,
            hint_weight: float = 0.5) -> dict[str, Tensor]:
    """Chen et al.'s weighting of the three parts (module docstring): ``{"soft", "regression", "hint"}``."""
    if not 0 < mu <= 1:
        raise ValueError(f"kd_loss: mu must be in (0, 1], got {mu}")
    return {"soft": (1 - mu) / mu * soft, "regression": regression_weight * regression, "hint": hint_weight * hint}
