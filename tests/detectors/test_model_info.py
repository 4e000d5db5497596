"""Parameter and GFLOPs counts (Ultralytics' convention) and ``mssd model info``."""

from __future__ import annotations

import pytest
from torch import nn

from detectors import build_detector
from detectors.config import parse_config
from detectors.distillation import build_distillation
from detectors.model_info import count_gflops, count_params_fused, format_model_info, model_info
from study.cli import main


def test_gflops_are_twice_the_conv_multiply_accumulates():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU())
    macs = 64 * 64 * 8 * 3 * 3 * 3  # output positions x channels x kernel volume
    assert count_gflops(conv, 64) == pytest.approx(2 * macs / 1e9)


# Ultralytics' printed GFLOPs for the fused COCO models at 640 (thop MACs x 2 at 32 px, scaled by 20^2).
@pytest.mark.parametrize(("size", "gflops"), [("yolov5n", 4.5), ("yolov5s", 16.4), ("yolov5m", 48.9)])
def test_gflops_at_640_match_ultralytics_summaries(size, gflops):
    model = build_detector(size, num_classes=80)
    # Conv FLOPs scale exactly with the input area (every size divides by 32), so 64 px x 100 = 640 px.
    assert round(count_gflops(model, 64) * 100, 1) == gflops


def test_fused_parameter_count_drops_one_parameter_per_batchnorm_channel():
    block = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8))
    assert count_params_fused(block) == 3 * 8 + 8  # conv weight + the fused bias


def test_model_info_counts_training_only_parts_separately():
    cfg = parse_config({"detector": {"name": "yolov5n"}})
    model = build_detector("yolov5n", num_classes=cfg.num_classes)
    distillation = build_distillation(cfg.losses, model)
    info = model_info(model, name="yolov5n", num_classes=3, img_size=64, distillation=distillation)
    assert info.params == sum(p.numel() for p in model.parameters())
    assert set(info.training_parts) == {"mssd", "mad"}
    assert info.training_params == distillation.count_parameters()["total"]
    # MSSD projects the stride-32 student (256 ch for yolov5n) to the teacher's 128 ch with a 1x1 conv.
    assert info.training_parts["mssd"].gflops == pytest.approx(2 * 2 * 2 * 256 * 128 / 1e9)
    assert info.training_parts["mad"].gflops > 0
    text = format_model_info(info)
    assert "MSSD projectors (training only)" in text and "training total" in text


def test_model_info_without_distillation_says_training_parts_are_not_counted():
    model = build_detector("yolov5n", num_classes=3)
    info = model_info(model, name="yolov5n", num_classes=3, img_size=64)
    assert info.training_parts is None
    assert "not counted" in format_model_info(info)
    assert model.training  # the count does not leave the model in eval mode


def test_cli_model_info_prints_the_table(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("detector:\n  name: yolov5n\n")
    assert main(["model", "info", str(config), "--img", "64", "--set", "losses.mad.enabled=false"]) == 0
    out = capsys.readouterr().out
    assert "yolov5n: 3 classes, 64x64 input" in out
    assert "MSSD projectors" in out and "MAD adapters" not in out
    n = sum(p.numel() for p in build_detector("yolov5n", num_classes=3).parameters())
    assert f"{n:,}" in out


def test_cli_model_info_refuses_an_image_size_off_the_stride(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("detector:\n  name: yolov5n\n")
    assert main(["model", "info", str(config), "--img", "100"]) == 2
    assert "--img: expected a positive multiple of 32" in capsys.readouterr().err

