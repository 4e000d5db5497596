"""LGD: label-guided self-distillation (Zhang et al., AAAI 2022, "LGD: Label-guided self-distillation for
object detection"; reference code megvii-research/LGD): the tensor math, no parameters.

LGD has no pretrained teacher. From the labels and the student's own features it builds an
"instance-aware teacher" map per level, trains it with the detection loss through the student's head,
and distils it into the student. The modules that own parameters (label encoder, relation adapter,
knowledge mapper, adapters) are ``detectors/comparators/lgd.py``; here are the pieces between them.
Notation: B images, T objects in the batch (plus one context box per image when enabled), C channels,
a level of stride s with an (H, W) grid, p a cell of it.

1. Label descriptors (``label_descriptors``): object t of image b with box (x1, y1, x2, y2) in input
   pixels and class c becomes

       d_t = 2 * [x1 / W_img, y1 / H_img, x2 / W_img, y2 / H_img, onehot(c)] - 1      in [-1, 1]^(4 + nc)

   (coordinates clamped to the image). The optional context box of image b is the whole image with an
   all-zero class part (``ADD_CONTEXT_BOX``).
2. Inside-box masks (``inside_box_masks``): m_tp = 1 if the centre of cell p, ((j + 0.5) s, (i + 0.5) s),
   lies in box t (borders included), else 0. (The reference compares the box with the cell index j
   instead of j + 0.5, half a cell up-left; centres are this project's convention.)
3. Mask pooling (``mask_pool``), the appearance embedding of object t from a map F of its image b:

       a_t = sum_p m_tp F_b[:, p] / max(sum_p m_tp, 1)                                 (T, C)

   (an object that covers no cell centre at this level pools to zero, as in the reference).
4. Inter-object attention is restricted to objects of the same image (``same_image_attention_mask``):
   the mask is True (attention forbidden) where b(t) != b(u).
5. Rendering (``render``), the intra-object knowledge map from per-object vectors e_t:

       R_b[:, p] = sum_{t in image b} e_t m_tp                                         (B, C, H, W)

6. Distillation (``lgd_distill_loss``), with IN the per-sample, per-channel instance normalisation over
   the grid (no affine, eps 1e-5), S_l the student's adapted map and T_l the teacher map at level l
   (detached):

       L_distill = sum_l ||IN(S_l) - IN(T_l)||^2 / (B * sum_l C_l H_l W_l)

   i.e. the mean squared error over every element of every level concatenated (the reference's
   ``F.mse_loss`` over the levels flattened and joined), so each level weighs by its element count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def label_descriptors(
    boxes: Tensor,
    classes: Tensor,
    batch_index: Tensor,
    batch_size: int,
    img_size: tuple[int, int],
    num_classes: int,
    *,
    context_box: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The label encoder's input, object by object, grouped by image.

    Args:
        boxes: (M, 4) xyxy input pixels; classes: (M,) int in [0, num_classes); batch_index: (M,) int.
        img_size: (H_img, W_img) of the input.
        context_box: append one whole-image box per image (after that image's objects).

    Returns:
        descriptors (T, 4 + num_classes) in [-1, 1], batch_index (T,) long (non-decreasing),
        is_context (T,) bool, boxes (T, 4) xyxy pixels clamped to the image; T = M (+ B with context).
    """
    h, w = img_size
    batch_index = batch_index.long()
    classes = classes.long()
    if classes.numel() and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f"label_descriptors: classes must lie in [0, {num_classes}), got {classes.tolist()}")
    scale = boxes.new_tensor([w, h, w, h])
    clamped = torch.minimum(boxes.float().clamp(min=0), scale)
    onehot = F.one_hot(classes, num_classes).to(clamped.dtype)
    context = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    if context_box:
        images = torch.arange(batch_size, device=boxes.device)
        clamped = torch.cat([clamped, scale.expand(batch_size, 4) * clamped.new_tensor([0, 0, 1, 1])])
        onehot = torch.cat([onehot, onehot.new_zeros(batch_size, num_classes)])
        batch_index = torch.cat([batch_index, images])
        context = torch.cat([context, torch.ones(batch_size, dtype=torch.bool, device=boxes.device)])
    # Group by image, objects before the context box, each image's objects in their given order.
    order = torch.argsort(batch_index * 2 + context.long(), stable=True)
    clamped, onehot, batch_index, context = clamped[order], onehot[order], batch_index[order], context[order]
    descriptors = torch.cat([clamped / scale, onehot], dim=1) * 2 - 1
    return descriptors, batch_index, context, clamped


def inside_box_masks(boxes: Tensor, stride: int, feature_size: tuple[int, int]) -> Tensor:
    """(T, H * W) float: 1 where the centre of a cell of the stride-``stride`` (H, W) grid is inside the box.

    boxes: (T, 4) xyxy input pixels.
    """
    h, w = feature_size
    ys = (torch.arange(h, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    xs = (torch.arange(w, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    inside_x = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] <= boxes[:, 2:3])  # (T, W)
    inside_y = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] <= boxes[:, 3:4])  # (T, H)
    return (inside_y[:, :, None] & inside_x[:, None, :]).flatten(1).to(boxes.dtype)


def mask_pool(features: Tensor, masks: Tensor, batch_index: Tensor) -> Tensor:
    """Mean of each object's image's feature map over its mask: (B, C, H, W), (T, H * W), (T,) -> (T, C)."""
    b, c = features.shape[:2]
    flat = features.flatten(2)  # (B, C, HW)
    pooled = features.new_zeros(masks.shape[0], c)
    for image in range(b):
        rows = (batch_index == image).nonzero().squeeze(1)
        if rows.numel():
            pooled[rows] = masks[rows].to(flat.dtype) @ flat[image].T
    return pooled / masks.sum(1, keepdim=True).clamp(min=1).to(pooled.dtype)


def render(embeddings: Tensor, masks: Tensor, batch_index: Tensor, batch_size: int,
           feature_size: tuple[int, int]) -> Tensor:
    """Paint each object's vector on its cells, summed over the objects of an image:
    (T, C), (T, H * W), (T,) -> (B, C, H, W); an image without objects gets zeros."""
    h, w = feature_size
    out = embeddings.new_zeros(batch_size, embeddings.shape[1], h * w)
    for image in range(batch_size):
        rows = (batch_index == image).nonzero().squeeze(1)
        if rows.numel():
            out[image] = embeddings[rows].T @ masks[rows].to(embeddings.dtype)
    return out.view(batch_size, -1, h, w)


def same_image_attention_mask(batch_index: Tensor) -> Tensor:
    """(T, T) bool for ``nn.MultiheadAttention``'s ``attn_mask``: True (not attended) across images."""
    return batch_index[:, None] != batch_index[None, :]


def lgd_distill_loss(students: list[Tensor], teachers: list[Tensor], eps: float = 1e-5) -> Tensor:
    """Mean squared error between instance-normalised student and (detached) teacher maps, all levels as one.

    students / teachers: per level (B, C_l, H_l, W_l), same shapes pairwise. Returns a 0-dim tensor.
    """
    if len(students) != len(teachers) or not students:
        raise ValueError(f"lgd_distill_loss: expected matching non-empty level lists, got {len(students)} "
                         f"and {len(teachers)}")
    total = students[0].new_zeros(())
    count = 0
    for s, t in zip(students, teachers, strict=True):
        if s.shape != t.shape:
            raise ValueError(f"lgd_distill_loss: student {tuple(s.shape)} and teacher {tuple(t.shape)} differ")
        diff = F.instance_norm(s.float(), eps=eps) - F.instance_norm(t.detach().float(), eps=eps)
        total = total + diff.pow(2).sum()
        count += diff.numel()
    return total / count
