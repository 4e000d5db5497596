"""YOLOX in the zoo: names, recipe defaults in the config, loss options, and a run through the engine."""

from __future__ import annotations

import pytest

from detectors.config import parse_config
from detectors.engine.trainer import fit
from detectors.errors import ConfigError
from detectors.zoo import DETECTORS, build_detector, family_of


def test_every_size_is_in_the_zoo_and_builds_with_any_tap_set():
    assert [n for n in DETECTORS if n.startswith("yolox")] == [
        "yolox_nano", "yolox_tiny", "yolox_s", "yolox_m", "yolox_l", "yolox_x"]
    model = build_detector("yolox_nano", num_classes=5, taps="backbone_to_pan")
    assert model.num_classes == 5 and model.tap_channels == {8: (64, 64), 16: (128, 128), 32: (256, 256)}
    with pytest.raises(ConfigError, match="detector.taps: yolox_nano has no tap set 'layer_15'"):
        build_detector("yolox_nano", num_classes=5, taps="layer_15")


def test_a_yolox_config_starts_from_yoloxs_recipe_and_explicit_values_win():
    cfg = parse_config({"detector": {"name": "yolox_s"}})
    train = cfg.train
    assert (train.lr0, train.lrf, train.momentum, train.weight_decay, train.warmup_epochs) == (
        0.01 * 16 / 64, 0.05, 0.9, 5e-4, 5.0)
    assert train.schedule == "yolox_cosine" and train.nominal_batch is None and train.ema_decay == 0.9998
    assert cfg.detector.taps == "fpn_to_pan" and cfg.losses.gt.simota_prior == "main"
    assert parse_config({"detector": {"name": "yolox_s"}, "train": {"lr0": 0.005}}).train.lr0 == 0.005
    assert not family_of("yolox_s").recipe.loss_scaled_by_batch


def test_the_loss_takes_its_prior_and_l1_switch_from_the_config():
    model = build_detector("yolox_nano", num_classes=3)
    family = family_of("yolox_nano")
    default = family.build_loss(model, parse_config({"detector": {"name": "yolox_nano"}}))
    assert default.prior.center_radius == 1.5 and default.no_aug_epochs == 15
    cfg = parse_config({"detector": {"name": "yolox_nano"}, "losses": {"gt": {"simota_prior": "0.3.0"}},
                        "data": {"augment": {"close_mosaic": 4}}})
    release = family.build_loss(model, cfg)
    assert release.prior.center_radius == 2.5 and release.prior.use_box and release.no_aug_epochs == 4
    with pytest.raises(ConfigError, match="losses.gt.simota_prior"):
        parse_config({"losses": {"gt": {"simota_prior": "latest"}}})


def test_yolox_trains_and_evaluates_through_the_engine(tmp_path):
    cfg = parse_config({
        "detector": {"name": "yolox_nano"},
        "data": {"format": "synthetic", "root": str(tmp_path / "data"), "img_size": 64, "workers": 0,
                 "synthetic": {"images": 10, "seed": 0, "width": 256, "height": 96},
                 "augment": {"close_mosaic": 1}},
        "train": {"epochs": 2, "batch_size": 4, "warmup_epochs": 1.0, "device": "cpu", "max_steps_per_epoch": 2},
        "eval": {"max_det": 50},
    })
    metrics = fit(cfg, tmp_path / "run")
    for name in ("loss/gt/iou", "loss/gt/obj", "loss/gt/cls", "loss/gt/l1", "loss/distill", "loss/mask", "map"):
        assert name in metrics
    assert metrics["loss/gt/l1"] > 0  # the last epoch is a no-mosaic epoch: L1 on
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
