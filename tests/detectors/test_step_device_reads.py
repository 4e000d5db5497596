"""A whole training step of YOLOX, FCOS and YOLOv5 reads nothing from the device.

The trainer's ``train_step`` (forward, L_gt, MSSD + MAD, backward) and ``optimizer_step`` (SGD, EMA) under
the ``device_reads`` check of ``conftest.py``, on a tiny generated set: what a GPU step would wait for.
"""

from __future__ import annotations

import pytest

from detectors.config import parse_config
from detectors.engine.trainer import Trainer


@pytest.mark.slow
@pytest.mark.parametrize(("name", "img"), [("yolox_nano", 64), ("fcos_tiny", 128), ("yolov5n", 64)])
def test_a_training_step_reads_nothing_from_the_device(tmp_path, device_reads, name, img):
    cfg = parse_config({
        "seed": 0,
        "detector": {"name": name},
        "data": {"format": "synthetic", "root": str(tmp_path / "data"), "img_size": img, "workers": 0,
                 "synthetic": {"images": 8, "seed": 0, "width": 256, "height": 128}},
        "losses": {"method": "mssd"},
        "train": {"epochs": 1, "batch_size": 2, "warmup_epochs": 0.0, "device": "cpu", "max_steps_per_epoch": 2,
                  "eval_interval": 100, "nominal_batch": 2},  # an optimizer step per step (YOLOv5's 64 accumulates)
    })
    trainer = Trainer(cfg, tmp_path / "run")
    reads: list[tuple[str, list[str]]] = []

    def watched(method):
        def run(*args, **kwargs):
            with device_reads() as check:
                result = method(*args, **kwargs)
            reads.append((method.__name__, check.ops))
            return result
        return run

    trainer.train_step = watched(trainer.train_step)
    trainer.optimizer_step = watched(trainer.optimizer_step)
    trainer.run_epoch(1)
    assert [name for name, _ in reads] == ["train_step", "optimizer_step"] * 2
    assert [ops for _, ops in reads] == [[]] * 4
