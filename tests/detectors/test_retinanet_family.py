"""RetinaNet in the zoo: names, tap sets, the recipe in the config, and one run through the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors.config import parse_config
from detectors.engine.schedule import Schedule
from detectors.engine.trainer import Trainer
from detectors.errors import ConfigError
from detectors.zoo import DETECTORS, build_detector, family_of

REPO = Path(__file__).resolve().parents[2]
TERMS = ("loss/gt/cls", "loss/gt/box")


def test_the_sizes_are_in_the_zoo_and_build_with_any_tap_set():
    assert [n for n in DETECTORS if n.startswith("retinanet")] == [
        "retinanet_resnet50_fpn", "retinanet_tiny", "retinanet_resnet50_fpn_mmdet2"]
    model = build_detector("retinanet_tiny", num_classes=5, taps="output_to_merged")
    assert model.num_classes == 5 and model.tap_channels == {s: (64, 64) for s in (8, 16, 32)}
    with pytest.raises(ConfigError, match="detector.taps: retinanet_tiny has no tap set 'fpn_to_pan'"):
        build_detector("retinanet_tiny", num_classes=5, taps="fpn_to_pan")


def test_a_retinanet_config_starts_from_torchvisions_recipe():
    cfg = parse_config({"detector": {"name": "retinanet_resnet50_fpn"}, "train": {"epochs": 26}})
    train = cfg.train
    assert (train.lr0, train.momentum, train.weight_decay, train.nominal_batch) == (0.01, 0.9, 1e-4, None)
    assert (train.schedule, train.nesterov, train.weight_decay_scope, train.ema, train.grad_clip) == (
        "multistep", False, "all", False, None)
    schedule = Schedule.from_config(train, steps_per_epoch=7330)  # COCO train2017 at batch 16
    assert schedule.milestones == (16, 22) and schedule.warmup_iters == 1000 and schedule.warmup_ratio == 0.001
    assert cfg.detector.taps == "merged_to_output" and not family_of("retinanet_tiny").recipe.loss_scaled_by_batch
    with pytest.raises(ConfigError, match="data.img_size: expected a multiple of 128"):
        parse_config({"detector": {"name": "retinanet_tiny"}, "data": {"img_size": 640 - 32}})


def test_retinanet_trains_and_evaluates_through_the_engine(tmp_path):
    cfg = parse_config({
        "detector": {"name": "retinanet_tiny"},
        "data": {"format": "synthetic", "root": str(tmp_path / "data"), "img_size": 128, "workers": 0,
                 "synthetic": {"images": 5, "seed": 0, "width": 256, "height": 96}},
        "losses": {"mssd": {"enabled": True}, "mad": {"enabled": True}},
        "train": {"epochs": 1, "batch_size": 2, "warmup_iters": 1, "device": "cpu", "max_steps_per_epoch": 2},
        "eval": {"max_det": 50, "conf": 0.05},
    })
    trainer = Trainer(cfg, tmp_path / "run")
    metrics = trainer.fit()
    # the recipe's plain SGD reaches the optimiser: no Nesterov, weight decay on biases too
    assert [(g["nesterov"], g["weight_decay"]) for g in trainer.optimizer.param_groups] == [(False, 1e-4)] * 3
    for name in (*TERMS, "loss/distill", "loss/mask", "map"):
        assert name in metrics, name
    assert metrics["loss/gt"] == pytest.approx(sum(metrics[k] for k in TERMS), rel=1e-5)
    assert metrics["loss/gt/cls"] > 0 and metrics["loss/gt/box"] > 0 and metrics["loss/distill"] > 0
    assert metrics["lr"] == pytest.approx(0.01)  # multistep after a 1-iteration warmup, no milestone in 1 epoch
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow
def test_mssd_train_runs_the_retinanet_smoke_config(tmp_path):
    from mlflow.tracking import MlflowClient

    from study import tracking
    from study.cli import main
    from study.config import load_config, save_config

    config = tmp_path / "retinanet.yaml"
    cfg = load_config(REPO / "configs" / "retinanet-smoke.yaml", [
        f"data.root={tmp_path / 'data'}", "data.synthetic.images=8", "train.batch_size=4", "train.epochs=1",
        "train.max_steps_per_epoch=2", "eval.max_det=50"])
    save_config(cfg, config)
    assert main(["train", str(config), "--workdir", str(tmp_path / "runs")]) == 0
    client = MlflowClient(tracking.default_tracking_uri(tmp_path / "runs"))
    (run,) = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert run.info.status == "FINISHED" and run.data.params["train.schedule"] == "multistep"
    assert set(TERMS) <= set(run.data.metrics) and "loss/gt/obj" not in run.data.metrics
