"""The balanced sampler and the region proposal network (anchors, proposals, losses) on hand-checkable cases."""

from __future__ import annotations

import pytest
import torch

from detectors.ops.sampler import BalancedPositiveNegativeSampler


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
