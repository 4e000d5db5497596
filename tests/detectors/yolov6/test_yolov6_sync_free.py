"""YOLOv6's loss without reading the device (detectors/yolov6/loss.py, assigners.py): the ground truth as one
row per object instead of padded to the most objects in one image, the normalisers as tensors. The padded
assigners as they were (their ``ATSSAssigner`` / ``TaskAlignedAssigner`` arithmetic) are kept below as the
oracle: the assignment, the loss and its gradients must be the same bits, on random batches and on tied ones
(boxes labelled twice, centres on cell centres, an image without objects, a box that does not count)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from detectors.yolov6 import loss as loss_module
from detectors.yolov6.assigners import anchor_iou, atss_assign, tal_assign
from detectors.yolov6.family import YOLOv6GtConfig
from detectors.yolov6.head import YOLOv6HeadOutput, dist_to_xyxy
from detectors.yolov6.loss import YOLOv6Loss, anchor_layout, padded_targets

STRIDES = (8, 16, 32)
IMG = 64
EPS = 1e-9


# --- the padded assigners as they were (oracle) -------------------------------------------------------------
def old_pairwise_iou(gt, boxes):
    a, b = gt.unsqueeze(2), boxes.unsqueeze(1)
    overlap = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clip(0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clip(0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clip(0).prod(-1)
    return overlap / (area_a + area_b - overlap + EPS)


def old_centres_inside(points, gt):
    lt = points[None, None] - gt[..., None, :2]
    rb = gt[..., None, 2:] - points[None, None]
    return (torch.cat((lt, rb), -1).min(-1)[0] > EPS).to(gt.dtype)


def old_one_per_anchor(mask_pos, overlaps):
    fg = mask_pos.sum(-2)
    if fg.max() > 1:
        contested = (fg.unsqueeze(1) > 1).expand_as(mask_pos)
        best = F.one_hot(overlaps.argmax(1), mask_pos.shape[1]).permute(0, 2, 1).to(overlaps.dtype)
        mask_pos = torch.where(contested, best, mask_pos)
        fg = mask_pos.sum(-2)
    return mask_pos.argmax(-2), fg, mask_pos


def old_gather(gt_labels, gt_boxes, matched):
    b, g = gt_boxes.shape[:2]
    flat = (matched + torch.arange(b)[:, None] * g).long()
    return gt_labels.flatten()[flat], gt_boxes.reshape(-1, 4)[flat]


def old_topk_mask(values, k, valid, largest):
    _, idx = values.topk(k, dim=-1, largest=largest)
    idx = torch.where(valid, idx, torch.zeros_like(idx))
    count = F.one_hot(idx, values.shape[-1]).sum(-2)
    return torch.where(count > 1, torch.zeros_like(count), count).to(values.dtype)


def old_atss(anchors, level_sizes, gt_labels, gt_boxes, mask_gt, pred_boxes, num_classes, topk=9):
    b, g = gt_boxes.shape[:2]
    n = anchors.shape[0]
    overlaps = anchor_iou(gt_boxes.reshape(-1, 4), anchors).reshape(b, g, n)
    gt_centres = torch.stack(((gt_boxes[..., 0] + gt_boxes[..., 2]) / 2.0, (gt_boxes[..., 1] + gt_boxes[..., 3]) / 2.0), -1)
    points = torch.stack(((anchors[:, 0] + anchors[:, 2]) / 2.0, (anchors[:, 1] + anchors[:, 3]) / 2.0), -1)
    distances = (gt_centres.reshape(-1, 1, 2) - points[None]).pow(2).sum(-1).sqrt().reshape(b, g, n)
    valid = mask_gt.repeat(1, 1, topk).bool()
    candidate, candidate_idx, start = [], [], 0
    for level, size in zip(distances.split(level_sizes, dim=-1), level_sizes, strict=True):
        k = min(topk, size)
        _, idx = level.topk(k, dim=-1, largest=False)
        candidate_idx.append(idx + start)
        idx = torch.where(valid[..., :k], idx, torch.zeros_like(idx))
        count = F.one_hot(idx, size).sum(-2)
        candidate.append(torch.where(count > 1, torch.zeros_like(count), count).to(distances.dtype))
        start += size
    is_candidate, candidate_idx = torch.cat(candidate, -1), torch.cat(candidate_idx, -1)
    candidate_iou = torch.where(is_candidate > 0, overlaps, torch.zeros_like(overlaps))
    picked = candidate_iou.reshape(b * g, n).gather(1, candidate_idx.reshape(b * g, -1)).reshape(b, g, -1)
    threshold = picked.mean(-1, keepdim=True) + picked.std(-1, keepdim=True)
    is_pos = torch.where(candidate_iou > threshold.repeat(1, 1, n), is_candidate, torch.zeros_like(is_candidate))
    mask_pos = is_pos * old_centres_inside(points, gt_boxes) * mask_gt
    matched, fg, mask_pos = old_one_per_anchor(mask_pos, overlaps)
    labels, boxes = old_gather(gt_labels, gt_boxes, matched)
    labels = torch.where(fg > 0, labels.reshape(b, n), torch.full_like(labels.reshape(b, n), num_classes))
    scores = F.one_hot(labels.long(), num_classes + 1).float()[..., :num_classes]
    ious = (old_pairwise_iou(gt_boxes, pred_boxes) * mask_pos).max(-2)[0].unsqueeze(-1)
    return labels.long(), boxes.reshape(b, n, 4), scores * ious, fg.bool()


def old_tal(pred_scores, pred_boxes, points, gt_labels, gt_boxes, mask_gt, num_classes, topk=13, alpha=1.0, beta=6.0):
    b, g = gt_boxes.shape[:2]
    cls_idx = gt_labels.long().squeeze(-1).clamp(min=0)
    box_scores = pred_scores.permute(0, 2, 1)[torch.arange(b)[:, None], cls_idx]
    overlaps = old_pairwise_iou(gt_boxes, pred_boxes)
    metric = box_scores.pow(alpha) * overlaps.pow(beta)
    inside = old_centres_inside(points, gt_boxes)
    in_topk = old_topk_mask(metric * inside, topk, mask_gt.repeat(1, 1, topk).bool(), largest=True)
    mask_pos = in_topk * inside * mask_gt
    matched, fg, mask_pos = old_one_per_anchor(mask_pos, overlaps)
    labels, boxes = old_gather(gt_labels.long(), gt_boxes, matched)
    labels = labels.clamp(min=0)
    scores = torch.where(fg[..., None].repeat(1, 1, num_classes) > 0, F.one_hot(labels, num_classes), 0)
    metric = metric * mask_pos
    best_metric = metric.max(-1, keepdim=True)[0]
    best_iou = (overlaps * mask_pos).max(-1, keepdim=True)[0]
    norm = (metric * best_iou / (best_metric + EPS)).max(-2)[0].unsqueeze(-1)
    return labels, boxes, scores * norm, fg.bool()


def old_loss(loss: YOLOv6Loss, head: YOLOv6HeadOutput, targets):
    """Their ComputeLoss as the family wrote it: padded targets, Python ``if`` on the normalisers."""
    anchors, points, level_sizes, cell_strides = anchor_layout(head.maps, loss.strides)
    gt_labels, gt_boxes = padded_targets(targets, head.cls_scores.shape[0], IMG, IMG)
    mask_gt = (gt_boxes.sum(-1, keepdim=True) > 0).float()
    points_s = points / cell_strides
    pred_boxes = dist_to_xyxy(loss._distances(head.reg_distri), points_s)
    pred_px = pred_boxes.detach() * cell_strides
    s = loss.settings
    with torch.no_grad():
        if loss.assigner == "atss":
            assigned = old_atss(anchors, level_sizes, gt_labels, gt_boxes, mask_gt, pred_px, loss.num_classes,
                                s.atss_topk)
        else:
            assigned = old_tal(head.cls_scores.detach(), pred_px, points, gt_labels, gt_boxes, mask_gt,
                               loss.num_classes, s.tal_topk, s.tal_alpha, s.tal_beta)
    labels, boxes, target_scores, fg = assigned
    target_boxes = boxes / cell_strides
    one_hot = F.one_hot(torch.where(fg, labels, torch.full_like(labels, loss.num_classes)), loss.num_classes + 1)
    loss_cls = loss_module.varifocal_loss(head.cls_scores, target_scores, one_hot[..., :-1])
    score_sum = target_scores.sum()
    if score_sum > 0:
        loss_cls = loss_cls / score_sum
    zero = pred_boxes.new_zeros(())
    loss_iou = loss_dfl = zero
    if fg.sum() > 0:
        weight = target_scores.sum(-1)[fg].unsqueeze(-1)
        loss_iou = (loss_module.iou_loss(pred_boxes[fg], target_boxes[fg], loss.iou_type) * weight).sum()
        loss_iou = loss_iou if score_sum == 0 else loss_iou / score_sum
        if loss.reg_max:
            lt, rb = target_boxes.split(2, -1)
            ltrb = torch.cat((points_s - lt, rb - points_s), -1).clip(0, loss.reg_max - 0.01)
            pos = head.reg_distri[fg].reshape(-1, 4, loss.reg_max + 1)
            loss_dfl = (loss_module.distribution_focal_loss(pos, ltrb[fg], loss.reg_max) * weight).sum()
            loss_dfl = loss_dfl if score_sum == 0 else loss_dfl / score_sum
    iou, dfl, cls = s.iou_weight * loss_iou, s.dfl_weight * loss_dfl, s.class_weight * loss_cls
    return (cls + iou + dfl).float(), assigned


# --- batches --------------------------------------------------------------------------------------------------
def head_output(seed: int, batch: int, reg_max: int, nc: int = 3) -> YOLOv6HeadOutput:
    """Random head maps at 64 px; box distances around 1-3 cells, so predictions overlap the objects."""
    g = torch.Generator().manual_seed(seed)
    maps = [torch.zeros(batch, 1, IMG // s, IMG // s) for s in STRIDES]
    n = sum(m.shape[-1] * m.shape[-2] for m in maps)
    scores = torch.rand(batch, n, nc, generator=g).requires_grad_(True)
    if reg_max:
        distri = (torch.randn(batch, n, 4 * (reg_max + 1), generator=g) * 2).requires_grad_(True)
    else:
        distri = (torch.rand(batch, n, 4, generator=g) * 2 + 0.5).requires_grad_(True)
    return YOLOv6HeadOutput(maps, scores, distri)


def batch_targets(seed: int, batch: int, *, tied: bool) -> torch.Tensor:
    """Loader rows; the last image has none. ``tied``: boxes labelled twice, centres on cell centres (equal
    distances to the anchors around), one box of zero size at the origin (it does not count)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for image in range(batch - 1):
        n = 2 + 3 * image
        wh = torch.rand(n, 2, generator=g) * 0.5 + 0.05
        xy = wh / 2 + torch.rand(n, 2, generator=g) * (1 - wh)
        if tied:
            xy = (torch.floor(xy * 8) + 0.5) / 8  # the centre of a stride-8 cell
        rows.append(torch.cat((torch.full((n, 1), float(image)), torch.randint(0, 3, (n, 1), generator=g).float(),
                               xy, wh), 1))
        if tied:  # the same two boxes again with another class: equal overlaps, different targets
            twice = rows[-1][:2].clone()
            twice[:, 1] = (twice[:, 1] + 1) % 3
            rows.append(twice)
    if tied:
        rows.append(torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0, 0.0]]))
    return torch.cat(rows)


def family_loss(reg_max: int, iou_type: str, epoch: int) -> YOLOv6Loss:
    loss = YOLOv6Loss(3, STRIDES, reg_max=reg_max, iou_type=iou_type, settings=YOLOv6GtConfig())
    loss.start_epoch(epoch, 20)
    return loss


CASES = [(reg_max, iou_type, epoch, tied) for reg_max, iou_type in ((0, "siou"), (16, "giou"))
         for epoch in (1, 10) for tied in (False, True)]


@pytest.mark.parametrize(("reg_max", "iou_type", "epoch", "tied"), CASES)
def test_assignment_loss_and_gradients_are_the_bits_of_the_padded_code(reg_max, iou_type, epoch, tied):
    for seed in range(3):
        loss = family_loss(reg_max, iou_type, epoch)
        head, targets = head_output(seed, 4, reg_max), batch_targets(seed, 4, tied=tied)
        l_gt, _ = loss(YOLOv6Output(head), targets)
        grads = torch.autograd.grad(l_gt, (head.cls_scores, head.reg_distri))
        l_ref, assigned_ref = old_loss(loss, head, targets)
        grads_ref = torch.autograd.grad(l_ref, (head.cls_scores, head.reg_distri))
        assigned = loss.assign(head, targets)
        assert all(torch.equal(a, b) for a, b in zip(assigned, assigned_ref, strict=True)), loss.assigner
        assert assigned.fg.any()  # the case has positives to compare
        assert torch.equal(l_gt, l_ref) and all(torch.equal(a, b) for a, b in zip(grads, grads_ref, strict=True))


@pytest.mark.parametrize("epoch", [1, 10])
def test_the_padded_assigners_keep_their_outputs(epoch):
    head, targets = head_output(7, 3, 0), batch_targets(7, 3, tied=True)
    anchors, points, sizes, cell_strides = anchor_layout(head.maps, STRIDES)
    labels, boxes = padded_targets(targets, 3, IMG, IMG)
    mask_gt = (boxes.sum(-1, keepdim=True) > 0).float()
    pred = dist_to_xyxy(head.reg_distri.detach(), points / cell_strides) * cell_strides
    if epoch == 1:
        new, old = (f(anchors, sizes, labels, boxes, mask_gt, pred, 3) for f in (atss_assign, old_atss))
    else:
        new, old = (f(head.cls_scores.detach(), pred, points, labels, boxes, mask_gt, 3) for f in (tal_assign, old_tal))
    assert all(torch.equal(a, b) for a, b in zip(new, old, strict=True))


def test_without_positives_the_box_branch_gets_no_gradient_as_before():
    loss = family_loss(16, "giou", 10)  # TAL: a box smaller than a cell holds no anchor centre
    head = head_output(3, 2, 16)
    targets = torch.tensor([[0.0, 1.0, 0.01, 0.01, 0.005, 0.005]])
    l_gt, items = loss(YOLOv6Output(head), targets)
    l_gt.backward()
    l_ref, _ = old_loss(loss, head_output(3, 2, 16), targets)
    assert torch.equal(l_gt, l_ref) and float(items["iou"]) == 0.0 and head.reg_distri.grad is None


class YOLOv6Output:
    """What the loss reads of ``DetectorOutput``: the head."""

    def __init__(self, head: YOLOv6HeadOutput) -> None:
        self.head = head


@pytest.mark.parametrize("epoch", [1, 10])
def test_the_loss_reads_no_tensor_value_into_python(epoch, host_reads):
    loss = family_loss(16, "giou", epoch)
    head, targets = head_output(1, 3, 16), batch_targets(1, 3, tied=True)
    with host_reads() as reads:
        l_gt, _ = loss(YOLOv6Output(head), targets)
        l_gt.backward()
    assert reads == []


@pytest.mark.parametrize("epoch", [1, 10])
def test_the_loss_waits_for_the_device_only_to_find_its_positives(epoch, device_reads):
    """The strict check (tests/detectors/conftest.py): value reads and data-dependent shapes. One ``nonzero``
    is left, the positives' count, which the box losses' sums over positives need (a sum over every anchor
    would round differently)."""
    loss = family_loss(16, "giou", epoch)
    head, targets = head_output(1, 3, 16), batch_targets(1, 3, tied=True)
    with device_reads() as reads:
        l_gt, _ = loss(YOLOv6Output(head), targets)
        l_gt.backward()
    assert reads.ops == ["nonzero"]
