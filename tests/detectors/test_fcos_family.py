"""FCOS in the zoo: names, tap sets, recipe defaults in the config, and runs through the engine and `mssd train`."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors.config import parse_config
from detectors.engine.trainer import fit
from detectors.errors import ConfigError
from detectors.zoo import DETECTORS, build_detector, family_of

REPO = Path(__file__).resolve().parents[2]
TERMS = ("loss/gt/cls", "loss/gt/box", "loss/gt/ctrness")


def test_the_sizes_are_in_the_zoo_and_build_with_any_tap_set():
    assert [n for n in DETECTORS if n.startswith("fcos")] == [
        "fcos_resnet50_fpn", "fcos_tiny", "fcos_resnet50_fpn_mmdet2"]
    model = build_detector("fcos_tiny", num_classes=5, taps="backbone_to_output")
    assert model.num_classes == 5 and model.tap_channels == {8: (128, 64), 16: (256, 64), 32: (512, 64)}
    with pytest.raises(ConfigError, match="detector.taps: fcos_tiny has no tap set 'fpn_to_pan'"):
        build_detector("fcos_tiny", num_classes=5, taps="fpn_to_pan")


def test_a_fcos_config_starts_from_torchvisions_recipe_and_needs_multiples_of_128():
    cfg = parse_config({"detector": {"name": "fcos_resnet50_fpn"}})
    train = cfg.train
    assert (train.lr0, train.momentum, train.weight_decay, train.nominal_batch) == (0.01, 0.9, 1e-4, None)
    assert (train.schedule, train.lr_steps, train.lr_gamma, train.warmup_iters, train.warmup_ratio) == (
        "multistep", [16 / 26, 22 / 26], 0.1, 1000, 0.001)
    assert not train.nesterov and train.weight_decay_scope == "all" and not train.ema and train.grad_clip is None
    assert cfg.detector.taps == "merged_to_output" and not family_of("fcos_tiny").recipe.loss_scaled_by_batch
    augment = family_of("fcos_tiny").recipe.augment
    assert augment["mosaic"] == 0 and augment["fliplr"] == 0.5  # torchvision's reference: flips only
    with pytest.raises(ConfigError, match="data.img_size"):
        parse_config({"detector": {"name": "fcos_tiny"}, "data": {"img_size": 640 - 32}})


def test_fcos_trains_and_evaluates_through_the_engine(tmp_path):
    cfg = parse_config({
        "detector": {"name": "fcos_tiny"},
        "data": {"format": "synthetic", "root": str(tmp_path / "data"), "img_size": 128, "workers": 0,
                 "synthetic": {"images": 8, "seed": 0, "width": 256, "height": 96}},
        "losses": {"mssd": {"enabled": True}, "mad": {"enabled": True}},
        "train": {"epochs": 1, "batch_size": 4, "warmup_iters": 0, "grad_clip": 10.0, "device": "cpu",
                  "max_steps_per_epoch": 2},
        "eval": {"max_det": 50, "conf": 0.05},
    })
    metrics = fit(cfg, tmp_path / "run")
    for name in (*TERMS, "loss/distill", "loss/mask", "map"):
        assert name in metrics, name
    assert metrics["loss/gt"] == pytest.approx(sum(metrics[k] for k in TERMS), rel=1e-5)
    assert metrics["loss/gt/cls"] > 0 and metrics["loss/distill"] > 0
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow
def test_mssd_train_runs_the_fcos_smoke_config(tmp_path):
    from mlflow.tracking import MlflowClient

    from study import tracking
    from study.cli import main
    from study.config import load_config, save_config

    config = tmp_path / "fcos.yaml"
    cfg = load_config(REPO / "configs" / "fcos-smoke.yaml", [
        f"data.root={tmp_path / 'data'}", "data.synthetic.images=8", "train.batch_size=4", "train.epochs=1",
        "train.max_steps_per_epoch=2", "eval.max_det=50"])
    save_config(cfg, config)
    assert main(["train", str(config), "--workdir", str(tmp_path / "runs")]) == 0
    client = MlflowClient(tracking.default_tracking_uri(tmp_path / "runs"))
    (run,) = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert run.info.status == "FINISHED" and run.data.params["detector.taps"] == "merged_to_output"
    assert set(TERMS) <= set(run.data.metrics) and "loss/gt/obj" not in run.data.metrics


def test_a_search_space_over_fcos_tap_sets_is_checked_against_the_studys_detector(tmp_path):
    from study.config import load_config
    from study.search_space import load_search_space

    space = tmp_path / "taps.yaml"
    space.write_text("params:\n  detector.taps: {distribution: grid, values: [merged_to_output, backbone_to_output]}\n")
    base = load_config(REPO / "configs" / "fcos-smoke.yaml", [])
    assert load_search_space(space, base).params[0].values == ("merged_to_output", "backbone_to_output")
    with pytest.raises(ConfigError, match=r"taps\.yaml:2: detector\.taps: value 'merged_to_output' is not allowed"):
        load_search_space(space)  # against the default config, a YOLOv5: not one of its tap sets
