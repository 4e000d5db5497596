"""A refused resume lists every changed setting, the ones that make it another experiment first."""

from __future__ import annotations

import pytest

from detectors.config import config_to_dict, parse_config
from detectors.engine.checkpoint import RESUME_SHOWN_CHANGES, check_resumable
from detectors.errors import ConfigError

BASE = {"detector": {"name": "yolov5n"}, "data": {"root": "/tmp/none", "classes": ["Car"]}}


def _refusal(saved: dict, cfg) -> str:
    with pytest.raises(ConfigError) as info:
        check_resumable(saved, cfg, "run/last.pt")
    return str(info.value)


def test_the_detector_name_is_listed_first_among_many_changes():
    saved = config_to_dict(parse_config(BASE))
    cfg = parse_config({**BASE, "detector": {"name": "yolox_nano"}, "train": {"lr0": 0.02, "batch_size": 3}})
    details = _refusal(saved, cfg).split("cannot resume with a different config: ", 1)[1]
    assert details.startswith("detector.name ('yolov5n' -> 'yolox_nano')"), details


def test_more_than_five_changes_are_all_listed():
    saved = config_to_dict(parse_config(BASE))
    train = {"lr0": 0.02, "momentum": 0.8, "weight_decay": 1e-3, "warmup_epochs": 1.0, "lrf": 0.2, "batch_size": 3}
    text = _refusal(saved, parse_config({**BASE, "train": train}))
    assert all(f"train.{key} (" in text for key in train) and "more" not in text, text


def test_changes_beyond_what_one_line_shows_are_counted():
    saved = config_to_dict(parse_config(BASE))
    changed = {"lr0": 0.02, "lrf": 0.2, "momentum": 0.8, "weight_decay": 1e-3, "warmup_epochs": 1.0,
               "warmup_momentum": 0.5, "warmup_bias_lr": 0.05, "batch_size": 3, "ema_decay": 0.99}
    cfg = parse_config({**BASE, "seed": 7, "data": {**BASE["data"], "img_size": 320, "classes": ["Car", "Van"]},
                        "losses": {"lambda_distill": 0.5, "lambda_mask": 0.5}, "train": changed})
    text = _refusal(saved, cfg)
    listed = text.count(" -> ")
    total = 2 + 1 + 2 + len(changed)
    assert listed == RESUME_SHOWN_CHANGES and text.endswith(f" and {total - listed} more"), text
    details = text.split("config: ", 1)[1]
    assert details.index("data.classes") < details.index("data.img_size") < details.index("seed") \
        < details.index("losses.lambda") < details.index("train.")
