"""The training step's host-overhead pieces (issue 13), each against the per-tensor / per-step code it
replaced: deferred loss reads with an exact non-finite check, the step timer, foreach EMA, foreach SGD
and gradient clipping. (Whole seeded runs against recorded values: test_trainer_regression.py.)"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from detectors.engine.ema import ModelEMA
from detectors.engine.loss_log import LossLog
from detectors.engine.schedule import build_sgd, set_multi_tensor
from detectors.engine.step_timer import StepTimer
from detectors.errors import NonFiniteLossError

NAMES = ("total", "gt", "box")


def describe(values, epoch, step):
    term = next((k for k in NAMES[2:] if not math.isfinite(values[k])), "total")
    return f"epoch {epoch}, step {step}: loss/{term} = {values[term]}"


def test_the_log_reads_all_pending_steps_at_once_and_sums_them_as_the_per_step_loop_did():
    log = LossLog(NAMES, describe)
    rows = [[0.5, 0.25, 0.125], [0.3, 0.2, 0.1], [0.7, 0.6, 0.05]]
    sizes = [4, 4, 2]
    items = [log.add(torch.tensor(r), epoch=1, step=i + 1, batch_size=n) for i, (r, n) in enumerate(zip(rows, sizes, strict=True))]
    assert log.pending == 3  # nothing read yet
    means = log.means()
    assert log.pending == 0
    float_rows = [torch.tensor(r).tolist() for r in rows]  # float32 values, as the device holds them
    sums = dict.fromkeys(NAMES, 0.0)
    for row, n in zip(float_rows, sizes, strict=True):
        for name, value in zip(NAMES, row, strict=True):
            sums[name] += value * n
    assert means == {name: sums[name] / 10 for name in NAMES}  # exactly, same order of additions
    assert dict(items[1]) == dict(zip(NAMES, float_rows[1], strict=True))
    log.start_epoch()
    assert log.means() == dict.fromkeys(NAMES, 0.0)


def test_a_callback_reading_a_step_reads_the_pending_ones():
    log = LossLog(NAMES, describe)
    first = log.add(torch.tensor([1.0, 2.0, 3.0]), epoch=1, step=1, batch_size=1)
    log.add(torch.tensor([4.0, 5.0, 6.0]), epoch=1, step=2, batch_size=1)
    assert first["gt"] == 2.0 and log.pending == 0
    assert list(first) == list(NAMES) and len(first) == 3


def test_a_deferred_read_names_the_first_non_finite_step_and_term():
    log = LossLog(NAMES, describe)
    log.add(torch.tensor([1.0, 1.0, 1.0]), epoch=3, step=1, batch_size=2)
    log.add(torch.tensor([math.nan, math.nan, math.inf]), epoch=3, step=2, batch_size=2)
    log.add(torch.tensor([math.nan, math.nan, math.nan]), epoch=3, step=3, batch_size=2)
    with pytest.raises(NonFiniteLossError, match=r"^epoch 3, step 2: loss/box = inf$"):
        log.read()


def test_the_log_refuses_a_misshapen_step():
    with pytest.raises(ValueError, match=r"expected shape \(3,\)"):
        LossLog(NAMES, describe).add(torch.zeros(4), epoch=1, step=1, batch_size=1)


def test_the_cpu_step_timer_sums_wall_time_and_the_cuda_path_is_chosen_by_device():
    timer = StepTimer(torch.device("cpu"))
    assert not timer.use_events
    timer.start()
    sum(range(10000))
    timer.stop()
    first = timer.seconds()
    assert first > 0
    timer.start()
    timer.stop()
    assert timer.seconds() >= first
    timer.reset()
    assert timer.seconds() == 0.0
    with pytest.raises(RuntimeError, match="without start"):
        timer.stop()
    assert StepTimer(torch.device("cuda")).use_events  # events are created only when a step is timed


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 4, 1))


def test_foreach_ema_equals_the_per_tensor_update_bit_for_bit():
    model = _model()
    ema = ModelEMA(model, decay=0.99, tau=3.0)
    reference = copy.deepcopy(ema.module)
    for step in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        model.train()(torch.randn(2, 3, 8, 8))  # moves the BatchNorm statistics too
        ema.update(model)
        d = 0.99 * (1 - math.exp(-step / 3.0))
        source = model.state_dict()
        for key, value in reference.state_dict().items():  # the update as it was written before
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[key].detach(), alpha=1 - d)
    for key, value in reference.state_dict().items():
        assert torch.equal(ema.module.state_dict()[key], value), key


def test_foreach_ema_follows_a_model_moved_after_the_ema_was_made():
    model = _model()
    ema = ModelEMA(model, decay=0.5, tau=1e-9)  # d = 0.5 from the first update
    model.to(torch.float64).to(torch.float32)  # replaces every parameter's data and buffer
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    before = ema.module[0].weight.clone()
    ema.update(model)
    assert torch.allclose(ema.module[0].weight, 0.5 * before + 0.5)


def _sgd_run(foreach: bool, clip: float) -> list[torch.Tensor]:
    model = _model()
    optimizer = build_sgd([model], lr=0.05, momentum=0.9, weight_decay=5e-4)
    if not foreach:  # what build_sgd made before: torch's per-tensor loop on the CPU
        for group in optimizer.param_groups:
            group["foreach"] = False
    params = [p for g in optimizer.param_groups for p in g["params"]]
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        model(torch.rand(2, 3, 8, 8, generator=gen)).square().mean().backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm=clip, foreach=foreach)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("clip", [10.0, 1e-3])  # 1e-3: the clipping really scales the gradients
def test_foreach_sgd_and_clipping_equal_the_per_tensor_loop_on_the_cpu(clip):
    for a, b in zip(_sgd_run(True, clip), _sgd_run(False, clip), strict=True):
        assert torch.equal(a, b)


def test_build_sgd_uses_foreach_on_the_cpu_and_a_resume_gets_this_devices_choice():
    model = _model()
    cpu = build_sgd([model], lr=0.01, momentum=0.9, weight_decay=0.0)
    assert all(g["foreach"] and not g["fused"] for g in cpu.param_groups)
    saved_on_cuda = cpu.state_dict()
    for group in saved_on_cuda["param_groups"]:
        group["fused"], group["foreach"] = True, False
    cpu.load_state_dict(saved_on_cuda)
    assert all(g["fused"] for g in cpu.param_groups)
    set_multi_tensor(cpu, fused=False)
    assert all(g["foreach"] and not g["fused"] for g in cpu.param_groups)


def test_the_fused_sgd_chosen_on_cuda_matches_foreach_where_it_can_run_here():
    # torch also implements fused SGD on the CPU: the CUDA choice's arithmetic, checked without a GPU.
    results = []
    for fused in (False, True):
        model = _model()
        optimizer = build_sgd([model], lr=0.05, momentum=0.9, weight_decay=5e-4, fused=fused)
        assert all(g["fused"] is fused and g["foreach"] is not fused for g in optimizer.param_groups)
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            model(torch.rand(2, 3, 8, 8, generator=gen)).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)
