"""YOLOX's SimOTA and loss read nothing from the device, and assign as the algorithm they replaced.

The oracle below is the assignment as it was before (commit b0b3a61): ground truths padded to the batch's
largest count, each row's ``k_max`` cheapest cells by ``topk`` with k_max read from the device, contested
cells checked with a read. On equal costs its choice of cells was torch's ``topk`` order, which depends on
k_max, i.e. on the other images of the batch; ``stable=True`` makes that rule explicit (the lower cell index
first), which is the rule of the code under test. Equal costs are common: the geometry penalty (1e5, 1e6)
swamps the rest of a penalised candidate's cost in float32.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from detectors.api import DetectorOutput
from detectors.ops.boxes import bbox_iou
from detectors.yolox.assignment import GEOMETRY_PRIORS, TOP_IOU_CANDIDATES, _regions, simota_assign
from detectors.yolox.head import cell_grid, decode_boxes, flatten_maps
from detectors.yolox.loss import YOLOXLoss, pad_targets
from detectors.yolox.model import build_yolox


def old_class_cost(cls_logits, obj_logits, gt_classes):
    p = (cls_logits.float().sigmoid() * obj_logits.float().sigmoid()).sqrt()
    log_p, log_not_p = torch.log(p).clamp(min=-100.0), torch.log(1 - p).clamp(min=-100.0)
    index = gt_classes[:, None, :].expand(-1, p.shape[1], -1)
    swap = log_not_p.gather(2, index) - log_p.gather(2, index)
    return (-log_not_p.sum(-1)[:, :, None] + swap).transpose(1, 2)  # (B, G, A)


def old_simota(pred_boxes, cls_logits, obj_logits, centers, strides, gt_boxes, gt_classes, gt_valid, prior,
               *, stable=False):
    """(foreground, gt_index, iou) as the code before; ``stable``: equal costs go to the lower cell index."""
    b, a = pred_boxes.shape[:2]
    valid = gt_valid[:, :, None]
    near, inside = _regions(gt_boxes, centers, strides, prior)
    near = near & valid
    if inside is None:
        own_region, candidate = near, near.any(1)
    else:
        inside = inside & valid
        own_region, candidate = near & inside, (near | inside).any(1)
    iou = bbox_iou(gt_boxes[:, :, None, :], pred_boxes[:, None, :, :], eps=0.0)[..., 0]
    iou = torch.where(candidate[:, None, :] & valid, iou, torch.zeros_like(iou))
    cost = old_class_cost(cls_logits, obj_logits, gt_classes) + 3.0 * -torch.log(iou + 1e-8)
    cost = cost + prior.penalty * (~own_region)
    cost = torch.where(candidate[:, None, :] & valid, cost, torch.full_like(cost, float("inf")))
    dynamic_k = iou.topk(min(TOP_IOU_CANDIDATES, a), dim=2).values.sum(2).int().clamp(min=1)
    dynamic_k = torch.where(gt_valid, dynamic_k, torch.zeros_like(dynamic_k))
    k_max = int(dynamic_k.max()) if dynamic_k.numel() else 0
    if k_max == 0:
        return torch.zeros(b, a, dtype=torch.bool), torch.zeros(b, a, dtype=torch.long), torch.zeros(b, a)
    if stable:
        cheapest = torch.sort(cost, dim=2, stable=True).indices[:, :, :k_max]
    else:
        cheapest = cost.topk(min(k_max, a), dim=2, largest=False).indices
    take = torch.arange(cheapest.shape[2])[None, None, :] < dynamic_k[:, :, None]
    take &= cost.gather(2, cheapest).isfinite()
    matching = torch.zeros_like(cost, dtype=torch.bool).scatter_(2, cheapest, take)
    contested = matching.sum(1) > 1
    if bool(contested.any()):
        one_hot = torch.arange(cost.shape[1])[None, :, None] == cost.min(1).indices[:, None, :]
        matching = torch.where(contested[:, None, :], one_hot, matching)
    gt_index = matching.to(torch.uint8).argmax(1)
    return matching.any(1), gt_index, iou.gather(1, gt_index[:, None, :])[:, 0]


def cells(img: int) -> tuple[torch.Tensor, torch.Tensor]:
    offsets, strides = [], []
    for s in (8, 16, 32):
        rows, cols = torch.meshgrid(torch.arange(img // s), torch.arange(img // s), indexing="ij")
        offsets.append(torch.stack((cols, rows), -1).view(-1, 2).float())
        strides.append(torch.full((rows.numel(),), float(s)))
    offsets, strides = torch.cat(offsets), torch.cat(strides)
    return (offsets + 0.5) * strides[:, None], strides


def crowded_batch(seed: int, img: int, *, tied: bool, batch: int = 3, nc: int = 4):
    """Images of 1-11 objects whose cells predict jittered copies of the nearest object (k up to 10, many
    contested cells). ``tied``: boxes on an 8 px lattice, jitter in quarters, one class score everywhere,
    so that many cells cost exactly the same."""
    gen = torch.Generator().manual_seed(seed)
    centers, strides = cells(img)
    counts = [int(torch.randint(1, 12, (1,), generator=gen)) for _ in range(batch)]
    g = max(counts)
    gt = torch.zeros(batch, g, 4)
    classes = torch.zeros(batch, g, dtype=torch.long)
    valid = torch.zeros(batch, g, dtype=torch.bool)
    preds = torch.zeros(batch, len(centers), 4)
    for i, n in enumerate(counts):
        gt[i, :n, :2] = torch.rand(n, 2, generator=gen) * img * 0.9 + img * 0.05
        gt[i, :n, 2:] = torch.rand(n, 2, generator=gen) ** 1.5 * img * 0.4 + 6
        jitter = 1 + 0.25 * torch.randn(len(centers), 4, generator=gen)
        if tied:
            gt[i, :n] = (gt[i, :n] / 8).round().clamp(min=1) * 8
            jitter = (jitter * 4).round() / 4
        classes[i, :n] = torch.randint(0, nc, (n,), generator=gen)
        valid[i, :n] = True
        nearest = torch.cdist(centers, gt[i, :n, :2]).argmin(1)
        preds[i] = gt[i, nearest] * jitter.abs().clamp(min=0.25)
    cls = torch.randn(batch, len(centers), nc, generator=gen)
    obj = torch.randn(batch, len(centers), 1, generator=gen)
    if tied:
        cls, obj = torch.full_like(cls, 0.5), torch.zeros_like(obj)
    return preds, cls, obj, centers, strides, gt, classes, valid


def one_image(args, image: int, *, unpadded: bool = False) -> list[torch.Tensor]:
    """The arguments of ``crowded_batch`` for one of its images (``unpadded``: its own ground truths only)."""
    preds, cls, obj, centers, strides, gt, classes, valid = args
    count = int(valid[image].sum()) if unpadded else valid.shape[1]
    one = [x[image : image + 1] for x in (preds, cls, obj)] + [centers, strides]
    return one + [x[image : image + 1, :count] for x in (gt, classes, valid)]


def boundary_tie(args, prior, image: int) -> bool:
    """Whether a ground truth of the image has a tie at its k-th cheapest cost (where topk's order decides)."""
    preds, cls, obj, centers, strides, gt, classes, valid = one_image(args, image)
    near, inside = _regions(gt, centers, strides, prior)
    near = near & valid[:, :, None]
    own = near if inside is None else near & inside
    wanted = near if inside is None else near | (inside & valid[:, :, None])
    iou = bbox_iou(gt[:, :, None, :], preds[:, None, :, :], eps=0.0)[..., 0]
    iou = torch.where(wanted.any(1)[:, None, :], iou, torch.zeros_like(iou))
    cost = old_class_cost(cls, obj, classes) + 3.0 * -torch.log(iou + 1e-8) + prior.penalty * (~own)
    cost = torch.where(wanted.any(1)[:, None, :], cost, torch.full_like(cost, float("inf")))
    k = iou.topk(TOP_IOU_CANDIDATES, dim=2).values.sum(2).int().clamp(min=1)
    ordered = cost.sort(dim=2).values
    kth, next_ = ordered.gather(2, (k - 1)[..., None]), ordered.gather(2, k[..., None])
    return bool(((kth == next_) & kth.isfinite())[valid].any())


@pytest.mark.parametrize("prior", ["main", "0.3.0"])
def test_simota_equals_the_old_algorithm_on_random_images_without_a_tie_at_the_kth_cost(prior):
    compared = 0
    for seed, img in [(s, img) for s in range(6) for img in (64, 128)]:
        args = crowded_batch(seed, img, tied=False)
        old_fg, old_gt, old_iou = old_simota(*args, GEOMETRY_PRIORS[prior])
        new = simota_assign(*args, GEOMETRY_PRIORS[prior])
        for image in range(3):
            if boundary_tie(args, GEOMETRY_PRIORS[prior], image):
                continue  # the old choice there was topk's order: the tied test below covers it
            compared += 1
            fg = old_fg[image]
            assert torch.equal(new.foreground[image], fg), (seed, img, image)
            assert torch.equal(new.gt_index[image][fg], old_gt[image][fg])
            assert torch.equal(new.iou[image], old_iou[image])
    assert compared >= 30  # of 36 images


@pytest.mark.parametrize("prior", ["main", "0.3.0"])
def test_simota_equals_the_old_algorithm_with_its_tie_rule_made_explicit_on_tied_images(prior):
    ties = 0
    for seed, img in [(s, img) for s in range(6) for img in (64, 128)]:
        args = crowded_batch(seed, img, tied=True)
        ties += sum(boundary_tie(args, GEOMETRY_PRIORS[prior], image) for image in range(3))
        old_fg, old_gt, old_iou = old_simota(*args, GEOMETRY_PRIORS[prior], stable=True)
        new = simota_assign(*args, GEOMETRY_PRIORS[prior])
        assert torch.equal(new.foreground, old_fg), (seed, img)
        assert torch.equal(new.gt_index[old_fg], old_gt[old_fg])
        assert torch.equal(new.iou, old_iou)
    assert ties >= 10  # the inputs do exercise the rule


def test_an_images_assignment_does_not_depend_on_the_rest_of_the_batch():
    # The old order on equal costs came from topk over the batch's largest k: another image could change it.
    args = crowded_batch(3, 128, tied=True)
    batched = simota_assign(*args, GEOMETRY_PRIORS["main"])
    for image in range(3):
        alone = simota_assign(*one_image(args, image, unpadded=True), GEOMETRY_PRIORS["main"])
        assert torch.equal(alone.foreground[0], batched.foreground[image])
        assert torch.equal(alone.gt_index[0], batched.gt_index[image])


TARGETS = torch.tensor([  # [image, class, cx, cy, w, h]: unsorted, two objects sharing cells, image 2 empty
    [1, 1, 0.50, 0.50, 0.50, 0.50],
    [0, 0, 0.30, 0.40, 0.25, 0.30],
    [0, 2, 0.70, 0.60, 0.20, 0.40],
    [0, 2, 0.32, 0.42, 0.20, 0.30],
])


def old_yolox_loss(loss_fn, output, targets):
    """The loss as before: padded targets, sums over the selected foreground cells, F read as a float."""
    maps = output.head
    b = maps[0].shape[0]
    raw = flatten_maps(maps).float()
    offsets, cell_strides = cell_grid(maps, loss_fn.strides)
    boxes = decode_boxes(raw[..., :4], offsets, cell_strides)
    obj, cls = raw[..., 4:5], raw[..., 5:]
    img_h, img_w = maps[0].shape[-2] * loss_fn.strides[0], maps[0].shape[-1] * loss_fn.strides[0]
    gt_boxes, gt_classes, gt_valid = pad_targets(targets.float(), b, img_h, img_w)
    centers = (offsets + 0.5) * cell_strides[:, None]
    with torch.no_grad():
        fg, gt_index, matched_iou = old_simota(boxes.detach(), cls.detach(), obj.detach(), centers, cell_strides,
                                               gt_boxes, gt_classes, gt_valid, loss_fn.prior, stable=True)
    num_fg = max(float(fg.sum()), 1.0)
    image_of_fg = torch.nonzero(fg)[:, 0]
    matched_boxes = gt_boxes[image_of_fg, gt_index[fg]]
    iou = bbox_iou(boxes[fg], matched_boxes, eps=1e-16)[:, 0]
    loss_iou = 5.0 * (1 - iou**2).sum() / num_fg
    loss_obj = F.binary_cross_entropy_with_logits(obj.reshape(-1, 1), fg.to(obj.dtype).view(-1, 1), reduction="sum")
    cls_target = F.one_hot(gt_classes[image_of_fg, gt_index[fg]], loss_fn.num_classes) * matched_iou[fg][:, None]
    loss_cls = F.binary_cross_entropy_with_logits(cls[fg], cls_target, reduction="sum") / num_fg
    fg_strides = cell_strides.expand(b, -1)[fg][:, None]
    l1_target = torch.cat((matched_boxes[:, :2] / fg_strides - offsets.expand(b, -1, -1)[fg],
                           torch.log(matched_boxes[:, 2:] / fg_strides + 1e-8)), 1)
    loss_l1 = F.l1_loss(raw[..., :4][fg], l1_target, reduction="sum") / num_fg
    items = {"iou": loss_iou, "obj": loss_obj / num_fg, "cls": loss_cls, "l1": loss_l1}
    return sum(items.values()), items, (fg, gt_index)


@pytest.fixture(scope="module")
def maps():
    torch.manual_seed(0)
    return [m.detach() for m in build_yolox("yolox_nano", 3).train()(torch.rand(3, 3, 96, 96)).head]


def head_output(maps):
    leaves = [m.clone().requires_grad_(True) for m in maps]
    return DetectorOutput(leaves, {}, {}, {}), leaves


@pytest.mark.parametrize("targets", [TARGETS, torch.zeros(0, 6)], ids=["objects", "no objects"])
def test_the_loss_and_its_backward_read_nothing_from_the_device(maps, targets, device_reads):
    output, _ = head_output(maps)
    with device_reads() as reads:
        total, _ = YOLOXLoss(3, use_l1=True)(output, targets)
        total.backward()
    assert reads.ops == []


def test_the_old_loss_reads_the_device_so_the_check_above_can_fail(maps, device_reads):
    output, _ = head_output(maps)
    with device_reads() as reads:
        old_yolox_loss(YOLOXLoss(3, use_l1=True), output, TARGETS)
    assert {"_local_scalar_dense", "nonzero", "index"} <= set(reads.ops)


def test_the_loss_equals_the_old_loss_to_rounding_with_the_same_assignment_and_gradients(maps):
    loss_fn = YOLOXLoss(3, use_l1=True)
    output, leaves = head_output(maps)
    total, items = loss_fn(output, TARGETS)
    total.backward()
    old_output, old_leaves = head_output(maps)
    old_total, old_items, (old_fg, old_gt) = old_yolox_loss(loss_fn, old_output, TARGETS)
    old_total.backward()
    assert torch.equal(loss_fn.last_assignment.foreground, old_fg) and int(old_fg.sum()) >= 4  # one cell per object
    assert torch.equal(loss_fn.last_assignment.gt_index[old_fg], old_gt[old_fg])
    for name, value in items.items():
        torch.testing.assert_close(value, old_items[name].detach(), rtol=1e-6, atol=0.0)
    for new, old in zip(leaves, old_leaves, strict=True):
        torch.testing.assert_close(new.grad, old.grad, rtol=1e-5, atol=1e-9)
