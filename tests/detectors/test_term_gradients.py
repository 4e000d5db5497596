"""train.diagnose_every: each eq-7 term's gradient on the detector, without changing the run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from detectors.config import parse_config
from detectors.distillation import build_distillation
from detectors.engine.term_gradients import TermGradientProbe
from detectors.engine.trainer import Trainer


def test_opposite_terms_have_cosine_minus_one_and_their_own_norms():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    probe = TermGradientProbe(1, [w], grad_clip=None)
    probe.probe({"gt": (w * w).sum() / 2, "pull": -(w * w).sum()}, batch_scale=1)
    metrics = probe.epoch_metrics()
    assert metrics["diag/grad/gt"] == pytest.approx(5.0)
    assert metrics["diag/grad/pull"] == pytest.approx(10.0)
    assert metrics["diag/cos/pull"] == pytest.approx(-1.0)
    assert metrics["diag/value/gt"] == pytest.approx(12.5)
    assert "diag/cos/gt" not in metrics


def test_a_term_that_does_not_reach_the_detector_has_zero_gradient_and_cosine():
    w = nn.Parameter(torch.ones(3))
    elsewhere = nn.Parameter(torch.ones(1))
    probe = TermGradientProbe(1, [w], grad_clip=None)
    probe.probe({"gt": w.sum(), "adapter_only": elsewhere.sum() * 2}, batch_scale=2)
    metrics = probe.epoch_metrics()
    assert metrics["diag/grad/adapter_only"] == 0.0
    assert metrics["diag/cos/adapter_only"] == 0.0
    assert metrics["diag/value/adapter_only"] == pytest.approx(1.0)  # per image: 2 / batch scale 2


def test_clipped_fraction_counts_steps_above_the_clip():
    probe = TermGradientProbe(1, [nn.Parameter(torch.ones(1))], grad_clip=10.0)
    for norm in (5.0, 20.0, 30.0, 1.0):
        probe.record_total_norm(torch.tensor(norm))
    metrics = probe.epoch_metrics()
    assert metrics["diag/grad_total"] == pytest.approx(14.0)
    assert metrics["diag/clipped"] == pytest.approx(0.5)
    assert probe.epoch_metrics() == {}  # reset after each epoch


def test_contributions_sum_to_the_backpropagated_eq7(yolov5n_tap_maps):
    from detectors.config import LossesConfig

    model, output, targets = yolov5n_tap_maps
    losses = LossesConfig(lambda_distill=0.3, lambda_mask=2.0)
    distillation = build_distillation(losses, model)
    terms = distillation(output, targets, 64)
    gt_total = torch.tensor(1.7)
    parts = distillation.contributions(gt_total, terms, 4)
    total = distillation.total_loss(gt_total, terms, 4)
    assert torch.stack(list(parts.values())).sum().item() == pytest.approx(total.item(), rel=1e-6)
    assert set(parts) == {"gt", "distill_s", "distill_m", "distill_l", "mask"}


@pytest.fixture
def yolov5n_tap_maps():
    from detectors.zoo import build_detector

    torch.manual_seed(0)
    model = build_detector("yolov5n", num_classes=3).train()
    output = model(torch.rand(2, 3, 64, 64))
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.4], [1, 2, 0.3, 0.6, 0.2, 0.2]])
    return model, output, targets


def _config(root: Path, **train):
    return parse_config({
        "seed": 0, "detector": {"name": "yolov5n"},
        "data": {"format": "synthetic", "root": str(root), "img_size": 64, "workers": 0,
                 "synthetic": {"images": 10, "seed": 0, "width": 256, "height": 96}},
        "train": {"epochs": 1, "batch_size": 4, "warmup_epochs": 0.0, "device": "cpu", **train},
        "eval": {"max_det": 50},
    })


@pytest.mark.slow
def test_probing_logs_diag_metrics_and_leaves_the_weights_as_without_it(tmp_path):
    plain = Trainer(_config(tmp_path / "data"), tmp_path / "plain")
    plain.fit()
    probed = Trainer(_config(tmp_path / "data", diagnose_every=1), tmp_path / "probed")
    metrics = probed.fit()
    for name in ("gt", "distill_s", "distill_m", "distill_l", "mask"):
        assert metrics[f"diag/grad/{name}"] > 0.0
    assert -1.0 <= metrics["diag/cos/mask"] <= 1.0
    assert 0.0 <= metrics["diag/clipped"] <= 1.0 and metrics["diag/grad_total"] > 0.0
    assert not any(key.startswith("diag/") for key in plain.history[-1])
    for (name, a), b in zip(plain.model.state_dict().items(), probed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
