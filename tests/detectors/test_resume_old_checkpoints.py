"""A checkpoint written before a config key existed resumes: the saved config is read through today's
schema (new keys take their defaults, renamed keys their new names); a real change is still refused."""

from __future__ import annotations

import copy

import pytest

from detectors.config import config_to_dict, parse_config
from detectors.engine.checkpoint import check_resumable
from detectors.errors import ConfigError


@pytest.fixture
def cfg():
    return parse_config({"detector": {"name": "yolov5n"}, "data": {"root": "/tmp/none", "classes": ["Car"]}})


def _as_written_before(cfg) -> dict:
    """The config as an older release saved it: no comparator or multistep keys, the old flip key."""
    saved = copy.deepcopy(config_to_dict(cfg))
    for key in ("method", "kd", "fgfi", "defeat", "lgd"):
        saved["losses"].pop(key)
    for key in ("lr_steps", "lr_gamma", "warmup_iters", "warmup_ratio", "nesterov", "weight_decay_scope"):
        saved["train"].pop(key)
    saved.pop("distill")
    saved["data"]["augment"]["hflip"] = saved["data"]["augment"].pop("fliplr")
    return saved


def test_a_config_saved_before_new_keys_existed_resumes(cfg):
    check_resumable(_as_written_before(cfg), cfg, "old/last.pt")


def test_a_changed_setting_in_an_old_config_is_still_refused_by_name(cfg):
    saved = _as_written_before(cfg)
    saved["train"]["lr0"] = 0.02
    with pytest.raises(ConfigError, match=r"old/last.pt: cannot resume with a different config: train.lr0 \(0.02 -> 0.01\)"):
        check_resumable(saved, cfg, "old/last.pt")
    saved = _as_written_before(cfg)
    saved["data"]["augment"]["hflip"] = 0.0
    with pytest.raises(ConfigError, match=r"data.augment.fliplr"):
        check_resumable(saved, cfg, "old/last.pt")
