"""The balanced sampler and the region proposal network (anchors, proposals, losses) on hand-checkable cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detectors.ops.anchors import AnchorGenerator
from detectors.ops.sampler import BalancedPositiveNegativeSampler
from detectors.rcnn.rpn import RegionProposalNetwork, build_rpn, flatten_predictions


def test_sampler_fills_the_positive_quota_then_the_batch_with_negatives():
    labels = torch.cat([torch.ones(10), torch.zeros(100), -torch.ones(50)])
    pos, neg = BalancedPositiveNegativeSampler(16, 0.25)([labels])
    assert pos[0].dtype == torch.uint8 and int(pos[0].sum()) == 4 and int(neg[0].sum()) == 12
    assert bool((labels[pos[0].bool()] == 1).all()) and bool((labels[neg[0].bool()] == 0).all())


def test_sampler_takes_more_negatives_when_positives_are_short():
    labels = torch.tensor([2.0, 0, 0, 0, 0, 0, -1, 1])
    pos, neg = BalancedPositiveNegativeSampler(6, 0.5)([labels])
    assert pos[0].tolist() == [1, 0, 0, 0, 0, 0, 0, 1]  # both positives (quota 3)
    assert int(neg[0].sum()) == 4 and neg[0][[0, 6, 7]].tolist() == [0, 0, 0]


def test_sampler_draws_positives_then_negatives_per_image_from_the_global_stream():
    labels = [torch.randint(-1, 2, (300,)).float(), torch.randint(-1, 2, (200,)).float()]
    torch.manual_seed(5)
    with_global = BalancedPositiveNegativeSampler(32, 0.25)(labels)
    torch.manual_seed(5)
    want = []
    for lab in labels:  # torchvision's order: randperm over positives, then over negatives
        p, n = torch.where(lab >= 1)[0], torch.where(lab == 0)[0]
        want.append((p[torch.randperm(p.numel())[:8]], n[torch.randperm(n.numel())[:24]]))
    for (pos, neg), (p, n) in zip(zip(*with_global, strict=True), want, strict=True):
        assert torch.equal(torch.where(pos)[0], p.sort().values) and torch.equal(
            torch.where(neg)[0], n.sort().values
        )
    seeded = BalancedPositiveNegativeSampler(32, 0.25, generator=torch.Generator().manual_seed(5))(labels)
    assert all(
        torch.equal(a, b) for a, b in zip(seeded[0] + seeded[1], with_global[0] + with_global[1], strict=True)
    )


def test_sampler_refuses_bad_settings():
    with pytest.raises(ValueError, match="positive_fraction"):
        BalancedPositiveNegativeSampler(8, 1.5)


class FixedHead(nn.Module):
    """Stands in for RPNHead so the proposals and losses can be worked by hand: fixed logits and deltas."""

    def __init__(self, logits: list[float], deltas: list[list[float]]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits).view(1, 1, 2, 2)  # one anchor per cell of a 2 x 2 map
        self.deltas = torch.tensor(deltas).t().reshape(1, 4, 2, 2).clone().requires_grad_(True)

    def forward(self, features):
        return [self.logits.expand(features[0].shape[0], -1, -1, -1)], [self.deltas]


def tiny_rpn(logits, deltas, **kw) -> RegionProposalNetwork:
    """One level, stride 16 on a 32 x 32 image, one 16 x 16 anchor per cell:
    [-8, -8, 8, 8], [8, -8, 24, 8], [-8, 8, 8, 24], [8, 8, 24, 24] (row-major cells)."""
    return RegionProposalNetwork(AnchorGenerator(((16,),), ((1.0,),)), FixedHead(logits, deltas), **kw)


ZERO = [[0.0] * 4] * 4
FEATURES = [torch.zeros(1, 1, 2, 2)]


def test_rpn_head_has_torchvision_names_and_shapes():
    shapes = {k: tuple(v.shape) for k, v in build_rpn(256).state_dict().items()}
    assert shapes == {
        "head.conv.0.0.weight": (256, 256, 3, 3),
        "head.conv.0.0.bias": (256,),
        "head.cls_logits.weight": (3, 256, 1, 1),
        "head.cls_logits.bias": (3,),
        "head.bbox_pred.weight": (12, 256, 1, 1),
        "head.bbox_pred.bias": (12,),
    }


def test_predictions_flatten_by_cell_then_anchor():
    logits = torch.arange(4.0).view(1, 2, 1, 2)  # anchors a0, a1 at cells x0, x1
    deltas = torch.arange(16.0).view(1, 8, 1, 2)
    flat_logits, flat_deltas = flatten_predictions([logits], [deltas])
    assert flat_logits.flatten().tolist() == [0.0, 2.0, 1.0, 3.0]  # (x0 a0), (x0 a1), (x1 a0), (x1 a1)
    assert flat_deltas[1].tolist() == [8.0, 10.0, 12.0, 14.0]  # x0, anchor 1: channels 4..7 at x0


def test_proposals_are_clipped_top_n_by_objectness():
    rpn = tiny_rpn(
        [2.0, -1.0, 0.0, 3.0],
        ZERO,
        pre_nms_top_n={"training": 4, "testing": 3},
        post_nms_top_n={"training": 4, "testing": 2},
    ).eval()
    out = rpn(FEATURES, (32, 32))
    # testing: the 3 best logits (3, 2, 0) before NMS, the best 2 kept, clipped to the image
    assert out.proposals[0].tolist() == [[8.0, 8.0, 24.0, 24.0], [0.0, 0.0, 8.0, 8.0]]
    assert torch.allclose(out.scores[0], torch.sigmoid(torch.tensor([3.0, 2.0])))
    assert len(rpn.train()(FEATURES, (32, 32)).proposals[0]) == 4  # training top-n


def test_proposal_overlapping_a_better_one_is_suppressed():
    deltas = [[1.0, 1.0, 0.0, 0.0], [0.0] * 4, [0.0] * 4, [0.0] * 4]  # moves anchor 0 onto anchor 3
    out = tiny_rpn([2.0, -1.0, 0.0, 3.0], deltas).eval()(FEATURES, (32, 32))
    assert out.proposals[0].tolist() == [[8.0, 8.0, 24.0, 24.0], [0.0, 8.0, 8.0, 24.0], [8.0, 0.0, 24.0, 8.0]]


def test_degenerate_and_low_score_proposals_are_dropped():
    deltas = [[0.0, 0.0, -20.0, 0.0], [0.0] * 4, [0.0] * 4, [0.0] * 4]  # anchor 0 shrinks to 3e-8 px wide
    out = tiny_rpn([2.0, -1.0, 0.0, 3.0], deltas, score_thresh=0.4).eval()(FEATURES, (32, 32))
    assert out.proposals[0].tolist() == [[8.0, 8.0, 24.0, 24.0], [0.0, 8.0, 8.0, 24.0]]  # sigmoid(-1) < 0.4


def test_anchor_labels_include_each_box_best_anchor():
    rpn = tiny_rpn([0.0] * 4, ZERO)
    anchors = rpn(FEATURES, (32, 32)).anchors
    # IoU with anchor 3 is 144 / 256 = 0.56, between the thresholds, but it is the box's best anchor
    labels, matched = rpn.assign_targets_to_anchors(anchors, [torch.tensor([[8.0, 8.0, 20.0, 20.0]])])
    assert labels[0].tolist() == [0.0, 0.0, 0.0, 1.0]
    labels, _ = rpn.assign_targets_to_anchors(anchors, [torch.zeros(0, 4)])
    assert labels[0].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_losses_by_hand_one_positive_three_negatives():
    deltas = [[0.0] * 4, [0.0] * 4, [0.0] * 4, [0.05, 0.0, 0.0, 0.2]]
    rpn = tiny_rpn([2.0, -1.0, 0.0, 3.0], deltas)
    objectness, box = rpn.loss(rpn(FEATURES, (32, 32)), [torch.tensor([[8.0, 8.0, 24.0, 24.0]])])
    # BCE: labels (0, 0, 0, 1) -> mean of softplus(2), softplus(-1), softplus(0), softplus(-3)
    want_obj = sum(math.log1p(math.exp(v)) for v in (2.0, -1.0, 0.0, -3.0)) / 4
    # smooth-L1, beta 1/9, target 0: 0.5 * 0.05^2 * 9 + (0.2 - 0.5 / 9), over 4 sampled anchors
    want_box = (0.5 * 0.05**2 * 9 + 0.2 - 0.5 / 9) / 4
    assert math.isclose(objectness.item(), want_obj, rel_tol=1e-6)
    assert math.isclose(box.item(), want_box, rel_tol=1e-6)
    box.backward()  # the box loss reaches the deltas
    assert rpn.head.deltas.grad.abs().sum() > 0
