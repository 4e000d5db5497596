"""Box regression encodings as torchvision's ``_utils.BoxCoder`` and ``BoxLinearCoder``.

``BoxCoder(weights)`` (R-CNN deltas; RetinaNet (1, 1, 1, 1), Faster R-CNN's RPN (1, 1, 1, 1) and box
head (10, 10, 5, 5)): for a reference box with centre (x_a, y_a), size (w_a, h_a) and a target with
(x, y, w, h), ``encode`` gives (wx (x - x_a) / w_a, wy (y - y_a) / h_a, ww log(w / w_a),
wh log(h / h_a)); ``decode_single`` inverts it, clamping dw, dh at ``bbox_xform_clip`` (log(1000/16))
before the exponential. Widths are x2 - x1 (no +1), centres x1 + w / 2, in torchvision's operation
order so results agree to the ulp.

``BoxLinearCoder(normalize_by_size)`` (FCOS): distances (l, t, r, b) from the reference box centre to
the target's edges, divided by the reference box's (w, h, w, h) when ``normalize_by_size``.

Argument order follows torchvision: ``encode(reference_boxes = the ground-truth boxes, proposals = the
anchors)`` and ``decode(rel_codes, boxes = the anchors)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_XFORM_CLIP = math.log(1000.0 / 16)


class BoxCoder:
    def __init__(self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                 bbox_xform_clip: float = DEFAULT_XFORM_CLIP) -> None:
        if len(weights) != 4:
            raise ValueError(f"BoxCoder: expected 4 weights (x, y, w, h), got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """(N, 4) targets ``reference_boxes`` relative to (N, 4) ``proposals`` -> (N, 4) deltas."""
        wx, wy, ww, wh = torch.as_tensor(self.weights, dtype=reference_boxes.dtype, device=reference_boxes.device)
        px1, py1, px2, py2 = (proposals[:, i].unsqueeze(1) for i in range(4))
        gx1, gy1, gx2, gy2 = (reference_boxes[:, i].unsqueeze(1) for i in range(4))
        ex_w, ex_h = px2 - px1, py2 - py1
        ex_cx, ex_cy = px1 + 0.5 * ex_w, py1 + 0.5 * ex_h
        gt_w, gt_h = gx2 - gx1, gy2 - gy1
        gt_cx, gt_cy = gx1 + 0.5 * gt_w, gy1 + 0.5 * gt_h
        return torch.cat((
            wx * (gt_cx - ex_cx) / ex_w,
            wy * (gt_cy - ex_cy) / ex_h,
            ww * torch.log(gt_w / ex_w),
            wh * torch.log(gt_h / ex_h),
        ), dim=1)

    encode_single = encode  # torchvision's name for the tensor form (its ``encode`` takes per-image lists)

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        """(N, 4k) deltas applied to (N, 4) ``boxes`` -> (N, 4k) xyxy boxes (k boxes per row, class-specific)."""
        boxes = boxes.to(rel_codes.dtype)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = rel_codes[:, 0::4] / wx
        dy = rel_codes[:, 1::4] / wy
        dw = torch.clamp(rel_codes[:, 2::4] / ww, max=self.bbox_xform_clip)
        dh = torch.clamp(rel_codes[:, 3::4] / wh, max=self.bbox_xform_clip)
        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        half_w = torch.tensor(0.5, dtype=pred_ctr_x.dtype, device=rel_codes.device) * (torch.exp(dw) * widths[:, None])
        half_h = torch.tensor(0.5, dtype=pred_ctr_y.dtype, device=rel_codes.device) * (torch.exp(dh) * heights[:, None])
        return torch.stack(
            (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h), dim=2
        ).flatten(1)

    def decode(self, rel_codes: Tensor, boxes: list[Tensor]) -> Tensor:
        """torchvision's batched form: per-image reference boxes concatenated -> (sum N, k, 4)."""
        concat = torch.cat(boxes, dim=0)
        total = concat.shape[0]
        if total > 0:
            rel_codes = rel_codes.reshape(total, -1)
        pred = self.decode_single(rel_codes, concat)
        return pred.reshape(total, -1, 4) if total > 0 else pred


class BoxLinearCoder:
    def __init__(self, normalize_by_size: bool = True) -> None:
        self.normalize_by_size = normalize_by_size

    def _size(self, boxes: Tensor) -> Tensor:
        w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        return torch.stack((w, h, w, h), dim=-1)

    def encode(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """(..., 4) distances from ``reference_boxes``' centres (the anchors) to ``proposals``' edges (the
        targets): (l, t, r, b). torchvision's FCOS calls it ``encode(anchors, gt_boxes)``."""
        cx = 0.5 * (reference_boxes[..., 0] + reference_boxes[..., 2])
        cy = 0.5 * (reference_boxes[..., 1] + reference_boxes[..., 3])
        targets = torch.stack(
            (cx - proposals[..., 0], cy - proposals[..., 1], proposals[..., 2] - cx, proposals[..., 3] - cy), dim=-1
        )
        return targets / self._size(reference_boxes) if self.normalize_by_size else targets

    def decode(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        """(..., 4) (l, t, r, b) codes around ``boxes``' centres -> (..., 4) xyxy."""
        boxes = boxes.to(dtype=rel_codes.dtype)
        cx = 0.5 * (boxes[..., 0] + boxes[..., 2])
        cy = 0.5 * (boxes[..., 1] + boxes[..., 3])
        if self.normalize_by_size:
            rel_codes = rel_codes * self._size(boxes)
        return torch.stack(
            (cx - rel_codes[..., 0], cy - rel_codes[..., 1], cx + rel_codes[..., 2], cy + rel_codes[..., 3]), dim=-1
        )
