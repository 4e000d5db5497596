"""Prediction distillers (KD, DeFeat) on a two-stage detector: one ConfigError line, not an AttributeError."""

from __future__ import annotations

import pytest
import torch

from detectors.config import parse_config
from detectors.errors import ConfigError
from detectors.zoo import build_detector


@pytest.mark.parametrize("method", ["kd", "defeat"])
def test_prediction_distillers_refuse_a_two_stage_head_in_one_line(tmp_path, method):
    from detectors.distillation import build_distillation_for
    from detectors.zoo import build_detector_for

    teacher = tmp_path / "teacher.pt"
    torch.save(build_detector("fasterrcnn_tiny", num_classes=2).state_dict(), teacher)
    cfg = parse_config({"detector": {"name": "fasterrcnn_tiny"}, "data": {"img_size": 64, "classes": ["a", "b"]},
                        "losses": {"method": method},
                        "distill": {"teacher": {"name": "fasterrcnn_tiny", "weights": str(teacher)}}})
    with pytest.raises(ConfigError, match="needs dense heads with objectness") as error:
        build_distillation_for(cfg, build_detector_for(cfg))
    assert "\n" not in str(error.value)
