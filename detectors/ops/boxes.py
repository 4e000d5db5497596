"""Box conversions and IoU in pure torch (there is no torchvision in this environment).

Formats: ``xyxy`` = (x1, y1, x2, y2) corners; ``xywh`` = (cx, cy, w, h) centre and size; both in the same
units (pixels or normalised), last dimension 4, any leading dimensions.
"""

from __future__ import annotations

import math

import torch


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cxcy, wh = boxes[..., :2], boxes[..., 2:4]
    return torch.cat((cxcy - wh / 2, cxcy + wh / 2), -1)


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    p1, p2 = boxes[..., :2], boxes[..., 2:4]
    return torch.cat(((p1 + p2) / 2, p2 - p1), -1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy -> (...); degenerate boxes (x2 < x1) have area 0."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of (..., N, 4) and (..., M, 4) xyxy boxes -> (..., N, M); 0 where the union is empty
    (two empty boxes have IoU 0, not NaN). Leading dimensions broadcast (NMS passes a batch).

    Per coordinate rather than on (..., N, M, 2) pairs: half the temporaries; this is NMS's hot spot.
    """
    ax1, ay1, ax2, ay2 = (t[..., :, None] for t in a.unbind(-1))  # (..., N, 1)
    bx1, by1, bx2, by2 = (t[..., None, :] for t in b.unbind(-1))  # (..., 1, M)
    inter = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp_(min=0)
    inter *= (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp_(min=0)
    area_a = (ax2 - ax1).clamp(min=0) * (ay2 - ay1).clamp(min=0)
    area_b = (bx2 - bx1).clamp(min=0) * (by2 - by1).clamp(min=0)
    union = (area_a + area_b - inter).clamp_(min=torch.finfo(inter.dtype).tiny)
    return inter.div_(union)


def bbox_iou(
    box1: torch.Tensor,
    box2: torch.Tensor,
    *,
    xywh: bool = True,
    giou: bool = False,
    ciou: bool = False,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Element-wise IoU, GIoU or CIoU of broadcastable (..., 4) boxes -> (..., 1), as Ultralytics' shape.

    The project's one implementation of the paired IoU family (the YOLOv5 box loss uses it), with the
    formula and ``eps`` placement of Ultralytics' ``bbox_iou`` (utils/metrics.py), so the loss values
    match theirs bit for bit: IoU = inter / (area1 + area2 - inter + eps); GIoU = IoU - (C - union) / C
    with C the enclosing box's area (+ eps); CIoU = IoU - (rho^2 / c^2 + v * alpha), with
    v = (4 / pi^2) (atan(w2/h2) - atan(w1/h1))^2 and alpha = v / (v - IoU + 1 + eps) held constant (no
    gradient). Coordinates are unbound rather than chunked, which only changes the order in which the
    backward pass sums gradients (ulps), and keeps the trainer's recorded runs reproducible.
    """
    if giou and ciou:
        raise ValueError("bbox_iou: ask for giou or ciou, not both")
    if xywh:
        (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
        b1_x1, b1_x2, b1_y1, b1_y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
        b2_x1, b2_x2, b2_y1, b2_y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    else:
        b1_x1, b1_y1, b1_x2, b1_y2 = box1.unbind(-1)
        b2_x1, b2_y1, b2_x2, b2_y2 = box2.unbind(-1)
        w1, h1 = b1_x2 - b1_x1, (b1_y2 - b1_y1).clamp(eps)
        w2, h2 = b2_x2 - b2_x1, (b2_y2 - b2_y1).clamp(eps)

    inter = (torch.minimum(b1_x2, b2_x2) - torch.maximum(b1_x1, b2_x1)).clamp(0) * (
        torch.minimum(b1_y2, b2_y2) - torch.maximum(b1_y1, b2_y1)
    ).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not (giou or ciou):
        return iou[..., None]
    cw = torch.maximum(b1_x2, b2_x2) - torch.minimum(b1_x1, b2_x1)  # enclosing box width
    ch = torch.maximum(b1_y2, b2_y2) - torch.minimum(b1_y1, b2_y1)
    if giou:
        c_area = cw * ch + eps
        return (iou - (c_area - union) / c_area)[..., None]
    c2 = cw**2 + ch**2 + eps  # enclosing diagonal squared
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4  # centre dist^2
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return (iou - (rho2 / c2 + v * alpha))[..., None]


def clip_boxes_to_image(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., 4) xyxy boxes clamped into an image of ``size = (height, width)`` (torchvision's)."""
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x, y), dim=boxes.dim()).reshape(boxes.shape)


def remove_small_boxes(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """Indices of the (N, 4) xyxy boxes whose width and height are both >= ``min_size`` (torchvision's)."""
    ws, hs = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return torch.where((ws >= min_size) & (hs >= min_size))[0]
