"""train.schedule: multistep (torchvision's detection reference / MMDetection's step policy), plain SGD and
weight decay on every parameter: lrs against a hand-computed table and against torch's own schedulers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detectors.config import parse_config
from detectors.engine.schedule import (
    Schedule,
    apply_settings,
    build_sgd,
    multistep_lr,
    resolve_milestones,
)
from detectors.errors import ConfigError


def multistep(**overrides) -> Schedule:
    # 12 epochs of 10 iterations, milestones at 2/3 and 11/12 of the run, 5 warmup iterations from 1/1000.
    settings = dict(lr0=0.01, lrf=0.1, epochs=12, momentum=0.9, batch_size=16, warmup_iters=5,
                    warmup_bias_lr=0.0, warmup_momentum=0.9, nominal_batch=None, shape="multistep",
                    steps_per_epoch=10, milestones=resolve_milestones([0.667, 0.917], 12), lr_gamma=0.1,
                    warmup_ratio=0.001)
    return Schedule(**{**settings, **overrides})


# (iteration, epoch) -> lr, worked by hand: warmup factor 0.001 + 0.999 * i / 5 below iteration 5, then
# 0.01 until epoch 8 (iteration 80), 0.001 in epochs 8-10, 0.0001 from epoch 11 (iteration 110).
HAND_TABLE = [
    (0, 0, 0.01 * 0.001),
    (1, 0, 0.01 * 0.2008),
    (4, 0, 0.01 * 0.8002),
    (5, 0, 0.01),
    (9, 0, 0.01),
    (79, 7, 0.01),
    (80, 8, 0.001),
    (109, 10, 0.001),
    (110, 11, 0.0001),
    (119, 11, 0.0001),
]


@pytest.mark.parametrize(("iteration", "epoch", "lr"), HAND_TABLE)
def test_multistep_lr_matches_the_hand_computed_table(iteration, epoch, lr):
    settings = multistep().at(iteration, epoch)
    assert settings.lrs == pytest.approx((lr, lr, lr), rel=1e-12)
    assert settings.momentum == 0.9 and settings.accumulate == 1  # no momentum warmup, no accumulation


def test_fractions_and_epoch_numbers_give_the_same_milestones():
    assert resolve_milestones([0.667, 0.917], 12) == (8, 11) == resolve_milestones([8, 11], 12)
    assert resolve_milestones([16, 22], 26) == (16, 22)
    assert resolve_milestones([0.5], 5) == (3,)  # 2.5 -> 3: halves round up, not to even
    assert resolve_milestones([], 12) == ()


def test_multistep_equals_torchvisions_linearlr_then_multisteplr_loop():
    """torchvision's references/detection: LinearLR(start_factor=1/1000, total_iters=W) stepped per
    iteration in epoch 0, MultiStepLR(milestones, 0.1) stepped per epoch, both on one SGD."""
    epochs, per_epoch, warmup = 5, 7, 6
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.02, momentum=0.9, weight_decay=1e-4)
    steps = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[3, 4], gamma=0.1)
    theirs = []
    for epoch in range(epochs):
        warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / 1000, total_iters=warmup) \
            if epoch == 0 else None
        for _ in range(per_epoch):
            theirs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if warm is not None:
                warm.step()
        steps.step()
    ours = [multistep_lr(i, i // per_epoch, lr=0.02, milestones=(3, 4), gamma=0.1, warmup_iters=warmup,
                         warmup_ratio=1.0 / 1000) for i in range(epochs * per_epoch)]
    assert ours == pytest.approx(theirs, rel=1e-9)


def test_a_multistep_config_builds_the_schedule_and_warmup_iters_overrides_warmup_epochs():
    cfg = parse_config({"train": {"schedule": "multistep", "epochs": 12, "lr_steps": [0.667, 0.917],
                                  "warmup_iters": 500, "warmup_ratio": 0.001, "lr_gamma": 0.1}})
    schedule = Schedule.from_config(cfg.train, steps_per_epoch=100)
    assert schedule.milestones == (8, 11) and schedule.warmup_iters == 500 and schedule.shape == "multistep"
    assert schedule.at(250, 2).lrs[0] == pytest.approx(cfg.train.lr0 * (0.001 + 0.999 * 0.5))
    assert schedule.at(1100, 11).lrs[0] == pytest.approx(cfg.train.lr0 * 0.01)
    # Without warmup_iters the warmup stays warmup_epochs long (YOLO configs unchanged).
    default = Schedule.from_config(parse_config({"train": {"warmup_epochs": 2.0}}).train, steps_per_epoch=100)
    assert default.warmup_iters == 200 and default.shape == "cosine"


@pytest.mark.parametrize(("steps", "message"), [
    ([8, 0.5], "train.lr_steps: expected ascending milestones"),
    ([1.5], r"train.lr_steps\[0\]: expected a fraction of the run \(0 < x < 1\) or a whole epoch number"),
    ([0.0], r"train.lr_steps\[0\]"),
    ([0.5, -2], r"train.lr_steps\[1\]"),
])
def test_bad_milestones_are_refused_with_the_key(steps, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"train": {"schedule": "multistep", "lr_steps": steps}})


def test_plain_sgd_decays_every_group_when_asked_and_yolos_default_is_unchanged():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    yolo = build_sgd([model], lr=0.01, momentum=0.9, weight_decay=1e-4)
    assert [g["weight_decay"] for g in yolo.param_groups] == [0.0, 1e-4, 0.0]
    assert all(g["nesterov"] for g in yolo.param_groups)
    torch_like = build_sgd([model], lr=0.01, momentum=0.9, weight_decay=1e-4, nesterov=False,
                           weight_decay_scope="all")
    assert [g["weight_decay"] for g in torch_like.param_groups] == [1e-4, 1e-4, 1e-4]
    assert not any(g["nesterov"] for g in torch_like.param_groups)
    apply_settings(torch_like, multistep().at(80, 8))
    assert [g["lr"] for g in torch_like.param_groups] == pytest.approx([0.001] * 3)


def test_one_plain_sgd_step_equals_torch_optim_sgd_on_all_parameters():
    """weight_decay_scope all + nesterov off is exactly torch.optim.SGD(params, momentum, weight_decay)."""
    torch.manual_seed(0)
    ours_model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ref_model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ref_model.load_state_dict(ours_model.state_dict())
    ours = build_sgd([ours_model], lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=False,
                     weight_decay_scope="all")
    ref = torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    x = torch.randn(2, 3, 6, 6)
    for _ in range(2):
        for model, optimizer in ((ours_model, ours), (ref_model, ref)):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_a_config_and_recipe_keep_the_yolo_defaults():
    train = parse_config({}).train
    assert (train.schedule, train.nesterov, train.weight_decay_scope, train.warmup_iters, train.lr_steps) == (
        "cosine", True, "weights", None, [])
    with pytest.raises(ConfigError, match="train.weight_decay_scope: expected one of weights, all"):
        parse_config({"train": {"weight_decay_scope": "biases"}})
