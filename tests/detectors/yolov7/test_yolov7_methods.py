"""Every distillation method trains a step on YOLOv7-tiny's taps (MSSD + MAD, and the comparators with a
YOLOv7-tiny teacher), through the common trainer."""

from __future__ import annotations

import pytest
import torch

from detectors.config import parse_config
from detectors.engine.trainer import fit
from detectors.zoo import build_detector

CLASSES = ["Car", "Pedestrian", "Cyclist"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data") / "synthetic"


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.save(build_detector("yolov7_tiny", num_classes=len(CLASSES)).state_dict(), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mssd", "kd", "fgfi", "defeat", "lgd"])
def test_each_method_trains_a_step_on_yolov7_tiny(method, teacher_file, data_root, tmp_path):
    cfg = parse_config({
        "detector": {"name": "yolov7_tiny"},
        "data": {"format": "synthetic", "root": str(data_root), "img_size": 64, "workers": 0, "classes": CLASSES,
                 "synthetic": {"images": 5, "seed": 0, "width": 128, "height": 64}, "augment": {"mosaic": 0.0}},
        "losses": {"method": method},
        "distill": {"teacher": {"name": "yolov7_tiny", "weights": str(teacher_file)}},
        "train": {"epochs": 1, "batch_size": 2, "max_steps_per_epoch": 1, "warmup_epochs": 0, "device": "cpu"},
        "eval": {"max_det": 10},
    })
    metrics = fit(cfg, tmp_path)
    term = "loss/distill" if method == "mssd" else f"loss/{method}"
    assert metrics[term] == metrics[term] and metrics[term] > 0
    assert metrics["loss/gt"] > 0
