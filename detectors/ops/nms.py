"""Class-aware non-maximum suppression in pure torch, batched over images (no torchvision).

The input is a detector's decoded output ``(B, N, 5 + nc)`` (xywh, objectness, class scores), as from
``model.inference_raw``. Candidates are chosen as Ultralytics' ``non_max_suppression`` does: objectness
> ``conf``, score = objectness * class score > ``conf``, best class per box (or every class above
``conf`` with ``multi_label``), at most ``max_nms`` by score. Suppression is greedy NMS (a box is dropped
when its IoU with a kept, higher-scoring box of the same class is > ``iou``), exactly as
``torchvision.ops.nms`` with their class offsets.

Vectorised greedy NMS: sorted candidates are processed in blocks of ``block`` boxes for all images at
once. A block is first checked against the boxes kept so far (one (B, T, D) IoU matrix), then resolved
inside itself by the Cluster-NMS fixed point (Zheng et al. 2020, "Enhancing geometric factors..."):
``keep[j] = not any(keep[i] and IoU[i, j] > iou for i < j)`` iterated from ``keep = all``; the unique
fixed point of that recursion is the greedy result. Processing stops once every image has ``max_det``
boxes, since greedy NMS never revisits a kept box.

Box-level ``nms`` / ``batched_nms`` (torchvision.ops' signatures, for the ResNet-FPN families) run the
same vectorised loop on one image's boxes.
"""

from __future__ import annotations

import torch

from detectors.api import Detections
from detectors.ops.boxes import box_iou, xywh_to_xyxy


def _check_args(prediction: torch.Tensor, conf: float, iou: float, max_det: int) -> None:
    if prediction.dim() != 3 or prediction.shape[-1] < 6:
        raise ValueError(f"prediction: expected (B, N, 5 + nc) with nc >= 1, got {tuple(prediction.shape)}")
    if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0:
        raise ValueError(f"conf and iou: expected values in [0, 1], got conf={conf}, iou={iou}")
    if max_det < 1:
        raise ValueError(f"max_det: expected >= 1, got {max_det}")


def candidates(
    prediction: torch.Tensor, conf: float, *, multi_label: bool = False, max_nms: int = 30000
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score-sorted candidates, padded over the batch.

    Returns boxes (B, K, 4) xyxy, scores (B, K), classes (B, K) int64 and valid (B, K) bool; within an
    image valid candidates come first, by descending score (stable sort: ties keep anchor order).
    """
    b, n, no = prediction.shape
    nc = no - 5
    boxes = xywh_to_xyxy(prediction[..., :4])
    obj = prediction[..., 4:5]
    cls_scores = prediction[..., 5:] * obj  # (B, N, nc): YOLOv5's score is obj * cls
    if multi_label:
        scores = cls_scores.reshape(b, n * nc)
        classes = torch.arange(nc, device=prediction.device).repeat(n).expand(b, -1)
        boxes = boxes.repeat_interleave(nc, dim=1)
        ok = (scores > conf) & (obj.expand(-1, -1, nc).reshape(b, n * nc) > conf)
    else:
        scores, classes = cls_scores.max(-1)
        ok = (scores > conf) & (obj[..., 0] > conf)
    masked = torch.where(ok, scores, torch.full_like(scores, -1.0))  # scores are in [0, 1]
    k = int(min(int(ok.sum(1).max()) if b else 0, max_nms))
    order = torch.sort(masked, dim=1, descending=True, stable=True).indices[:, :k]
    return (
        torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4)),
        torch.gather(scores, 1, order),
        torch.gather(classes, 1, order),
        torch.gather(ok, 1, order),
    )


def greedy_nms_positions(
    boxes: torch.Tensor, classes: torch.Tensor, valid: torch.Tensor, iou: float, max_det: int, *, block: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy class-aware NMS of score-sorted, padded candidates, vectorised over images and blocks.

    boxes (B, K, 4) xyxy, classes (B, K), valid (B, K) bool, each image's candidates by descending score.
    Returns (positions (B, max_det) int64, n_kept (B,)): the first ``n_kept[i]`` entries of
    ``positions[i]`` index the kept candidates in score order; the rest is padding.
    """
    b, k = valid.shape
    dev = boxes.device
    kept_boxes = boxes.new_zeros(b, max_det, 4)  # kept so far, per image, in order (padded to max_det)
    kept_classes = classes.new_zeros(b, max_det)
    positions = torch.zeros(b, max_det, dtype=torch.long, device=dev)
    n_kept = torch.zeros(b, dtype=torch.long, device=dev)
    slots = torch.arange(max_det, device=dev)
    rows = torch.arange(b, device=dev)[:, None]

    for start in range(0, k, block):
        counts = n_kept.tolist()  # one host sync per block: the stop test and the slots in use
        if min(counts) >= max_det:
            break
        used = max(counts)
        bb = boxes[:, start : start + block]  # (B, T, 4)
        bc = classes[:, start : start + block]
        alive = valid[:, start : start + block]  # (B, T)
        t = bb.shape[1]

        # 1. Suppressed by a box kept in an earlier block (same class, IoU > thr); only the slots in use
        # are compared (box-level NMS pads to max_det = all candidates).
        if used:
            kept_valid = slots[None, :used] < n_kept[:, None]  # (B, D)
            hits = (box_iou(bb, kept_boxes[:, :used]) > iou) & (bc[:, :, None] == kept_classes[:, None, :used])
            alive = alive & ~(hits & kept_valid[:, None, :]).any(-1)

        # 2. Inside the block: M[i, j] = box i (higher score) would suppress box j.
        m = (box_iou(bb, bb) > iou) & (bc[:, :, None] == bc[:, None, :])
        m = m & torch.ones(t, t, dtype=torch.bool, device=dev).triu(1)
        m = m & alive[:, :, None]
        keep = alive
        for _ in range(t):  # converges in (longest suppression chain + 1) steps, usually a handful
            new_keep = alive & ~(m & keep[:, :, None]).any(1)
            if torch.equal(new_keep, keep):
                break
            keep = new_keep

        # 3. Append this block's kept boxes after the earlier ones, up to max_det per image.
        pos = n_kept[:, None] + keep.long().cumsum(1) - 1  # (B, T) slot of each kept box
        write = keep & (pos < max_det)
        r, c = rows.expand(-1, t)[write], pos[write]
        kept_boxes[r, c] = bb[write]
        kept_classes[r, c] = bc[write]
        positions[r, c] = (torch.arange(t, device=dev) + start).expand(b, -1)[write]
        n_kept = (n_kept + keep.sum(1)).clamp(max=max_det)
    return positions, n_kept


def non_max_suppression(
    prediction: torch.Tensor,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    *,
    multi_label: bool = False,
    max_nms: int = 30000,
    block: int = 128,
) -> list[Detections]:
    """Greedy class-aware NMS of (B, N, 5 + nc) decoded predictions -> one ``Detections`` per image."""
    _check_args(prediction, conf, iou, max_det)
    prediction = prediction.detach().float()
    boxes, scores, classes, valid = candidates(prediction, conf, multi_label=multi_label, max_nms=max_nms)
    positions, n_kept = greedy_nms_positions(boxes, classes, valid, iou, max_det, block=block)
    out = []
    for i in range(scores.shape[0]):
        kept = positions[i, : n_kept[i]]
        out.append(Detections(boxes[i, kept], scores[i, kept], classes[i, kept]))
    return out


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, *, block: int = 128) -> torch.Tensor:
    """``torchvision.ops.nms``: indices (int64) of the boxes greedy NMS keeps, by descending score.

    boxes (N, 4) xyxy, scores (N,); a box is dropped when its IoU with a kept higher-scoring box is
    > ``iou_threshold``. Equal scores keep input order (stable sort, as torchvision's CPU kernel).
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms: expected boxes (N, 4) and scores (N,), got {tuple(boxes.shape)} and "
                         f"{tuple(scores.shape)}")
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores.detach(), descending=True, stable=True).indices
    sorted_boxes = boxes.detach()[order][None]
    same_class = torch.zeros(1, n, dtype=torch.long, device=boxes.device)
    valid = torch.ones(1, n, dtype=torch.bool, device=boxes.device)
    positions, n_kept = greedy_nms_positions(sorted_boxes, same_class, valid, iou_threshold, n, block=block)
    return order[positions[0, : n_kept[0]]]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """``torchvision.ops.batched_nms``: NMS within each category ``idxs``; kept indices by descending score.

    As torchvision: up to 4,000 coordinates on CPU (100,000 on GPU) the boxes of category c are offset
    by c * (max coordinate + 1) so that categories never overlap, and one NMS runs (the offsets change
    IoUs by rounding, which torchvision's results carry too); above that, categories are compared
    without offsets (torchvision's per-class loop, here the class-aware vectorised NMS).
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    if boxes.numel() <= (4000 if boxes.device.type == "cpu" else 100_000):
        offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
        return nms(boxes + offsets[:, None], scores, iou_threshold)
    order = torch.sort(scores.detach(), descending=True, stable=True).indices
    n = boxes.shape[0]
    valid = torch.ones(1, n, dtype=torch.bool, device=boxes.device)
    positions, n_kept = greedy_nms_positions(boxes.detach()[order][None], idxs[order][None], valid, iou_threshold, n)
    # torchvision's loop returns the kept indices ascending, then sorted by score with the default
    # (unstable) sort: the same call here orders equal scores as it does.
    kept = order[positions[0, : n_kept[0]]].sort().values
    return kept[scores[kept].sort(descending=True)[1]]


def non_max_suppression_reference(
    prediction: torch.Tensor,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    *,
    multi_label: bool = False,
    max_nms: int = 30000,
) -> list[Detections]:
    """The plain greedy loop, one box at a time: the specification the vectorised version is tested against."""
    _check_args(prediction, conf, iou, max_det)
    prediction = prediction.detach().float()
    boxes, scores, classes, valid = candidates(prediction, conf, multi_label=multi_label, max_nms=max_nms)
    out = []
    for i in range(prediction.shape[0]):
        n = int(valid[i].sum())
        bx, sc, cl = boxes[i, :n], scores[i, :n], classes[i, :n]
        suppressed = torch.zeros(n, dtype=torch.bool, device=bx.device)
        keep: list[int] = []
        for j in range(n):
            if suppressed[j]:
                continue
            keep.append(j)
            if len(keep) == max_det:
                break
            overlaps = box_iou(bx[None, j : j + 1], bx[None])[0, 0] > iou
            suppressed |= overlaps & (cl == cl[j])
        idx = torch.tensor(keep, dtype=torch.long, device=bx.device)
        out.append(Detections(bx[idx], sc[idx], cl[idx]))
    return out
