"""The trainer on a tiny generated set: schedule, groups, EMA, checkpoints, resume, errors, callbacks.

Runs use YOLOv5n at 64 px on 8 training images (2 steps per epoch); a module-scoped 2-epoch run is
shared by the tests that only read its results.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from detectors.config import parse_config
from detectors.engine.checkpoint import load_checkpoint, save_checkpoint
from detectors.engine.ema import ModelEMA
from detectors.engine.schedule import (
    Schedule,
    accumulate_steps,
    build_sgd,
    parameter_groups,
    scaled_weight_decay,
)
from detectors.engine.trainer import Trainer, fit
from detectors.engine.validate import evaluate_checkpoint, fitness, resolve_device
from detectors.errors import ConfigError, MSSDError, NonFiniteLossError
from detectors.yolov5.loss import YOLOv5Loss

METRIC_NAMES = {
    "epoch", "lr", "loss/total", "loss/gt", "loss/gt/box", "loss/gt/obj", "loss/gt/cls", "loss/distill",
    "loss/distill_s", "loss/distill_m", "loss/distill_l", "loss/mask", "map", "ap50", "ap75", "aps", "apm",
    "apl", "ap/Car", "ap/Pedestrian", "ap/Cyclist", "time/epoch", "time/train_steps", "time/eval",
}


def tiny_config(data_root: Path, *, seed: int = 0, **train):
    return parse_config({
        "seed": seed,
        "detector": {"name": "yolov5n"},
        "data": {"format": "synthetic", "root": str(data_root), "img_size": 64, "workers": 0,
                 "synthetic": {"images": 10, "seed": 0, "width": 256, "height": 96}},
        "train": {"epochs": 2, "batch_size": 4, "warmup_epochs": 1.0, "device": "cpu", **train},
        "eval": {"max_det": 50},
    })


class Recorder:
    """Records every hook call, and what the optimizer held at each step."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.settings: list[tuple] = []
        self.stop_after = stop_after

    def before_train(self, trainer):
        self.calls.append(("before_train",))

    def after_step(self, trainer, step, items):
        self.calls.append(("after_step", step, dict(items)))
        groups = trainer.optimizer.param_groups
        self.settings.append((tuple(g["lr"] for g in groups), groups[0]["momentum"]))

    def after_epoch(self, trainer, epoch, metrics):
        on_disk = load_checkpoint(trainer.last_checkpoint)["epoch"]
        self.calls.append(("after_epoch", epoch, dict(metrics), on_disk))
        if epoch == self.stop_after:
            trainer.stop_requested = True

    def after_train(self, trainer, metrics):
        self.calls.append(("after_train", dict(metrics)))

    def hooks(self) -> list[str]:
        return [c[0] for c in self.calls]

    def step_losses(self) -> list[float]:
        return [c[2]["total"] for c in self.calls if c[0] == "after_step"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data") / "synthetic"


@pytest.fixture(scope="module")
def straight(data_root, tmp_path_factory):
    """Two epochs, uninterrupted."""
    workdir = tmp_path_factory.mktemp("straight")
    recorder = Recorder()
    metrics = fit(tiny_config(data_root), workdir, callbacks=[recorder])
    return SimpleNamespace(workdir=workdir, recorder=recorder, metrics=metrics)


def state_of(path: Path) -> dict:
    return load_checkpoint(path)


# ------------------------------------------------------------------------------------------------
# schedule, groups, EMA (no training)


def test_warmup_moves_bias_lr_down_and_weight_lr_momentum_and_accumulation_up():
    s = Schedule(lr0=0.01, lrf=0.1, epochs=10, momentum=0.937, batch_size=16, warmup_iters=100,
                 warmup_bias_lr=0.1, warmup_momentum=0.8)
    start, middle, end = s.at(0, 0), s.at(50, 0), s.at(100, 0)
    assert start.lrs == pytest.approx((0.1, 0.0, 0.0)) and start.momentum == pytest.approx(0.8)
    assert start.accumulate == 1 and end.accumulate == accumulate_steps(16) == 4
    assert middle.lrs == pytest.approx((0.055, 0.005, 0.005))
    assert middle.momentum == pytest.approx((0.8 + 0.937) / 2) and middle.accumulate == 2  # 2.5 -> 2 (half to even)
    assert end.lrs == pytest.approx((0.01,) * 3) and end.momentum == pytest.approx(0.937)


def test_warmup_ends_at_the_current_epochs_cosine_lr():
    s = Schedule(lr0=0.01, lrf=0.1, epochs=4, momentum=0.937, batch_size=16, warmup_iters=10,
                 warmup_bias_lr=0.1, warmup_momentum=0.8)
    assert s.at(10, 1).lrs == pytest.approx((s.epoch_lr(1),) * 3)
    assert s.at(5, 1).lrs[1] == pytest.approx(s.epoch_lr(1) / 2)


def test_cosine_decays_from_lr0_to_lr0_times_lrf():
    s = Schedule(lr0=0.01, lrf=0.1, epochs=10, momentum=0.937, batch_size=16, warmup_iters=0,
                 warmup_bias_lr=0.1, warmup_momentum=0.8)
    assert s.epoch_lr(0) == pytest.approx(0.01)
    assert s.epoch_lr(5) == pytest.approx(0.0055)
    assert s.epoch_lr(10) == pytest.approx(0.001)
    lrs = [s.epoch_lr(e) for e in range(11)]
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert s.at(7, 0) == s.at(7, 0) and s.at(7, 3).lrs == (s.epoch_lr(3),) * 3  # no warmup at all


def test_yolox_cosine_warms_up_quadratically_then_decays_and_holds_its_floor_in_the_no_aug_epochs():
    # 10 epochs of 10 steps, 2 warmup epochs, the last 3 without mosaic; YOLOX counts iterations from 1.
    s = Schedule(lr0=0.01, lrf=0.05, epochs=10, momentum=0.9, batch_size=16, warmup_iters=20,
                 warmup_bias_lr=0.0, warmup_momentum=0.9, nominal_batch=None, shape="yolox_cosine",
                 steps_per_epoch=10, no_aug_epochs=3)
    lrs = [s.at(i, i // 10).lrs for i in range(100)]
    assert all(a == b == c for a, b, c in lrs)  # one lr for every group, no bias warmup
    lr = [g[0] for g in lrs]
    assert lr[0] == pytest.approx(0.01 * (1 / 20) ** 2) and lr[19] == pytest.approx(0.01)  # quadratic, to lr0
    halfway = 20 + (70 - 20) // 2  # the cosine runs from iteration 20 to 70 (1-based), halfway at 45
    assert lr[halfway - 1] == pytest.approx(0.0005 + 0.5 * (0.01 - 0.0005))
    assert lr[69:] == [pytest.approx(0.0005)] * 31  # the no-aug epochs hold lr0 * lrf
    assert all(a >= b for a, b in zip(lr[19:-1], lr[20:], strict=True))
    assert {s.at(i, i // 10).momentum for i in range(100)} == {0.9}
    assert {s.at(i, i // 10).accumulate for i in range(100)} == {1}  # no nominal batch


def test_nominal_batch_sets_accumulation_and_scales_weight_decay():
    assert [accumulate_steps(b) for b in (1, 8, 16, 24, 64, 128)] == [64, 8, 4, 3, 1, 1]
    assert scaled_weight_decay(5e-4, 16) == pytest.approx(5e-4)  # 16 * 4 = 64
    assert scaled_weight_decay(5e-4, 24) == pytest.approx(5e-4 * 72 / 64)
    assert scaled_weight_decay(5e-4, 128) == pytest.approx(1e-3)


def test_parameter_groups_put_each_parameter_once_by_rule():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1), nn.LayerNorm(4))
    extra = nn.Linear(4, 2)
    biases, weights, norms = parameter_groups([net, extra, net])  # a module listed twice counts once
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(biases) == ids([net[1].bias, net[2].bias, net[3].bias, extra.bias])
    assert ids(weights) == ids([net[0].weight, net[2].weight, extra.weight])
    assert ids(norms) == ids([net[1].weight, net[3].weight])
    optimizer = build_sgd([net, extra], lr=0.01, momentum=0.937, weight_decay=5e-4)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 5e-4, 0.0]
    assert all(g["nesterov"] for g in optimizer.param_groups)


def test_ema_ramps_its_decay_and_averages_float_state():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.9, tau=1.0)
    before = ema.module[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1))
    assert torch.allclose(ema.module[0].weight, d * before + (1 - d) * model[0].weight)
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert ema.module[1].num_batches_tracked == model[1].num_batches_tracked  # integers are copied, not averaged


def test_devices_resolve_to_the_cpu_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="train.device"):
        resolve_device("cuda")


def test_a_checkpoint_write_that_dies_midway_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, target)

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("detectors.engine.checkpoint.torch.save", dying_save)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, target)
    assert load_checkpoint(target)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_loading_a_foreign_or_broken_file_says_so(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a zip")
    with pytest.raises(MSSDError, match="broken.pt: not a readable checkpoint"):
        load_checkpoint(broken)
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(1)}, plain)
    with pytest.raises(MSSDError, match="not an mssd training checkpoint"):
        load_checkpoint(plain)


def test_initial_weights_from_a_checkpoint_are_its_ema_weights(tmp_path):
    from detectors import build_detector
    from detectors.engine.validate import load_model_weights
    from detectors.zoo import family_of

    torch.manual_seed(1)
    trained, ema = build_detector("yolov5n", num_classes=3), build_detector("yolov5n", num_classes=3)
    save_checkpoint({"model": trained.state_dict(), "ema": {"module": ema.state_dict(), "updates": 5}},
                    tmp_path / "last.pt")
    fresh = build_detector("yolov5n", num_classes=3)
    load_model_weights(fresh, tmp_path / "last.pt", family_of("yolov5n").load_weights)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in ema.state_dict().items())
    with pytest.raises(MSSDError, match="does not fit"):
        load_model_weights(build_detector("yolov5n", num_classes=5), tmp_path / "last.pt",
                           family_of("yolov5n").load_weights)


# ------------------------------------------------------------------------------------------------
# a real (tiny) run


def test_callbacks_run_in_order_and_after_epoch_sees_its_checkpoint_on_disk(straight):
    rec = straight.recorder
    assert rec.hooks() == ["before_train", "after_step", "after_step", "after_epoch",
                           "after_step", "after_step", "after_epoch", "after_train"]
    assert [c[1] for c in rec.calls if c[0] == "after_step"] == [1, 2, 3, 4]
    epochs = [c for c in rec.calls if c[0] == "after_epoch"]
    assert [(c[1], c[3]) for c in epochs] == [(1, 1), (2, 2)]  # epoch n's checkpoint is complete before the hook
    assert rec.calls[-1][1] == straight.metrics == epochs[-1][2]


def test_metrics_carry_exactly_the_documented_names(straight):
    assert set(straight.metrics) == METRIC_NAMES
    m = straight.metrics
    assert m["loss/gt"] == pytest.approx(m["loss/gt/box"] + m["loss/gt/obj"] + m["loss/gt/cls"], rel=1e-5)
    # per image, under the default reading (losses.scale unscaled_terms, lambdas 0.1; batch 4): only L_gt
    # carries the batch factor, so the distillation terms add 0.1 x term / 4 per image
    expected = m["loss/gt"] + 0.1 * (m["loss/distill"] + m["loss/mask"]) / 4
    assert m["loss/total"] == pytest.approx(expected, rel=1e-5)
    assert 0 < m["time/train_steps"] < m["time/epoch"] and m["time/eval"] > 0


def test_the_optimizer_follows_the_schedule_at_every_step(straight, data_root):
    cfg = tiny_config(data_root)
    schedule = Schedule.from_config(cfg.train, steps_per_epoch=2)
    expected = [schedule.at(i, i // 2) for i in range(4)]
    recorded = [lr for lrs, _ in straight.recorder.settings for lr in lrs]
    assert recorded == pytest.approx([lr for s in expected for lr in s.lrs])
    assert [m for _, m in straight.recorder.settings] == pytest.approx([s.momentum for s in expected])
    assert straight.metrics["lr"] == pytest.approx(schedule.epoch_lr(1))


def test_checkpoints_hold_the_whole_training_state(straight):
    last = state_of(straight.workdir / "checkpoints" / "last.pt")
    assert {"model", "ema", "optimizer", "scaler", "distillation", "epoch", "config", "metrics", "rng",
            "best_fitness"} <= set(last)
    assert last["epoch"] == 2 and last["config"]["detector"]["name"] == "yolov5n"
    assert last["distillation"], "MSSD projectors / MAD adapters are saved"
    best = state_of(straight.workdir / "checkpoints" / "best.pt")
    scores = [fitness(m) for m in last["history"]]
    assert fitness(best["metrics"]) == max(scores) and best["epoch"] == scores.index(max(scores)) + 1


def test_resume_continues_exactly_where_the_interrupted_run_stopped(straight, data_root, tmp_path):
    workdir = tmp_path / "interrupted"
    first = Recorder(stop_after=1)
    fit(tiny_config(data_root), workdir, callbacks=[first])
    assert first.hooks()[-2:] == ["after_epoch", "after_train"]
    # Same seed, same losses: the interrupted run's first epoch repeats the straight run's.
    assert first.step_losses() == straight.recorder.step_losses()[:2]

    second = Recorder()
    metrics = fit(tiny_config(data_root), workdir, callbacks=[second], resume=workdir / "checkpoints")
    assert [c[1] for c in second.calls if c[0] == "after_step"] == [3, 4]
    assert second.step_losses() == pytest.approx(straight.recorder.step_losses()[2:], rel=1e-6)
    resumed, reference = state_of(workdir / "checkpoints" / "last.pt"), state_of(straight.workdir / "checkpoints" / "last.pt")
    for key in ("model", "distillation"):
        for name, tensor in reference[key].items():
            assert torch.allclose(resumed[key][name].float(), tensor.float(), atol=1e-6), f"{key}.{name}"
    for name, tensor in reference["ema"]["module"].items():
        assert torch.allclose(resumed["ema"]["module"][name].float(), tensor.float(), atol=1e-6), f"ema.{name}"
    for key in ("loss/total", "loss/gt/box", "loss/gt/obj", "loss/gt/cls", "loss/mask", "map", "ap50"):
        assert metrics[key] == pytest.approx(straight.metrics[key], rel=1e-5, abs=1e-7), key


def test_a_different_seed_gives_a_different_run(straight, data_root, tmp_path):
    other = Recorder(stop_after=1)
    fit(tiny_config(data_root, seed=1), tmp_path, callbacks=[other])
    assert other.step_losses() != pytest.approx(straight.recorder.step_losses()[:2], rel=1e-4)


def test_resume_refuses_a_config_that_changes_the_math(straight, data_root, tmp_path):
    cfg = tiny_config(data_root, lr0=0.02)
    with pytest.raises(ConfigError, match=r"train.lr0 \(0.01 -> 0.02\)"):
        fit(cfg, tmp_path, resume=straight.workdir / "checkpoints" / "last.pt")


def test_resuming_a_finished_run_returns_its_metrics_without_training(straight, data_root, tmp_path):
    rec = Recorder()
    metrics = fit(tiny_config(data_root), tmp_path, callbacks=[rec], resume=straight.workdir)
    assert rec.hooks() == ["before_train", "after_train"]
    assert metrics == pytest.approx(straight.metrics, nan_ok=True)


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(data_root, tmp_path, monkeypatch):
    real_save = torch.save
    calls = []

    def save_then_die_on_the_second(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"PK\x03\x04 partial")
            raise KeyboardInterrupt  # the process is being killed mid-write
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr("detectors.engine.checkpoint.torch.save", save_then_die_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_config(data_root, eval_interval=2), tmp_path)
    folder = tmp_path / "checkpoints"
    assert load_checkpoint(folder / "last.pt")["epoch"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt"]


def test_a_non_finite_loss_stops_at_once_naming_epoch_step_and_term(data_root, tmp_path, monkeypatch):
    class PoisonedLoss(YOLOv5Loss):
        calls = 0

        def __call__(self, output, targets):
            total, items = super().__call__(output, targets)
            PoisonedLoss.calls += 1
            if PoisonedLoss.calls == 2:
                total, items["obj"] = total * math.nan, items["obj"] * math.nan
            return total, items

    monkeypatch.setattr("detectors.yolov5.loss.YOLOv5Loss", PoisonedLoss)  # what the family builds
    rec = Recorder()
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 2: loss/gt/obj = nan"):
        fit(tiny_config(data_root), tmp_path, callbacks=[rec])
    assert PoisonedLoss.calls == 2  # not retried
    assert rec.hooks() == ["before_train", "after_step"]


def test_evaluate_checkpoint_reproduces_the_runs_final_metrics(straight, data_root):
    metrics = evaluate_checkpoint(tiny_config(data_root), straight.workdir / "checkpoints" / "last.pt")
    for key in ("map", "ap50", "ap75", "ap/Car"):
        assert metrics[key] == pytest.approx(straight.metrics[key], abs=1e-6, nan_ok=True), key


def test_trainer_trains_the_distillation_modules(straight, data_root):
    trainer = Trainer(tiny_config(data_root), straight.workdir / "unused")
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    distill = list(trainer.distillation.parameters())
    assert distill and all(id(p) in in_optimizer for p in distill)
    assert all(id(p) in in_optimizer for p in trainer.model.parameters())


# ------------------------------------------------------------------------------------------------
# it learns


@pytest.mark.slow
def test_yolov5n_overfits_a_handful_of_synthetic_images(tmp_path):
    # Eight 128 px images, evaluated on themselves: the detector must fit what it was shown. With 8 images
    # per epoch (below the nominal 64) each epoch is one optimizer step on a gradient summed over 8
    # images, so lr0 is 10x the default; the cosine to lr0 * 0.01 lets the BatchNorm running statistics
    # catch up with the weights before the eval-mode scoring. An untrained model scores AP50 < 0.01 here.
    cfg = parse_config({
        "seed": 0,
        "detector": {"name": "yolov5n"},
        "data": {"format": "synthetic", "root": str(tmp_path / "data"), "img_size": 128, "workers": 0,
                 "val": "train", "synthetic": {"images": 10, "seed": 0, "width": 128, "height": 128},
                 "augment": {"mosaic": 0.0, "translate": 0.0, "scale": 0.0, "fliplr": 0.0,
                             "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}},
        "losses": {"mssd": {"enabled": False}, "mad": {"enabled": False}},
        "train": {"epochs": 150, "batch_size": 8, "lr0": 0.1, "lrf": 0.01, "warmup_epochs": 2,
                  "grad_clip": None, "device": "cpu", "eval_interval": 150},
    })
    losses: list[float] = []

    class GtLoss:
        def after_epoch(self, trainer, epoch, metrics):
            losses.append(metrics["loss/gt"])

    metrics = fit(cfg, tmp_path / "run", callbacks=[GtLoss()])
    assert len(losses) == 150
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    assert metrics["ap50"] > 0.05
