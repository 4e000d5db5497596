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


def _two_stage_cfg(tmp_path, method, **losses):
    teacher = tmp_path / "teacher.pt"
    torch.save(build_detector("fasterrcnn_tiny", num_classes=2).state_dict(), teacher)
    return parse_config({"detector": {"name": "fasterrcnn_tiny"}, "data": {"img_size": 64, "classes": ["a", "b"]},
                         "losses": {"method": method, **losses},
                         "distill": {"teacher": {"name": "fasterrcnn_tiny", "weights": str(teacher)}}})


@pytest.mark.parametrize(("method", "setting"), [("kd", "losses.method: kd"),
                                                 ("defeat", "losses.defeat.cls_object_weight / cls_background_weight")])
def test_the_pre_flight_check_refuses_prediction_distillation_of_a_two_stage_detector(tmp_path, method, setting):
    """``check_teacher`` is what train / tune / ablate / compare run before any folder or MLflow run exists."""
    from detectors.distillation import check_teacher

    with pytest.raises(ConfigError) as error:
        check_teacher(_two_stage_cfg(tmp_path, method))
    assert str(error.value).startswith(f"{setting}: needs dense heads") and "\n" not in str(error.value)


def test_defeat_without_its_classification_part_passes_the_pre_flight_check_of_a_two_stage_detector(tmp_path):
    from detectors.distillation import check_teacher

    check_teacher(_two_stage_cfg(tmp_path, "defeat", defeat={"cls_object_weight": 0.0, "cls_background_weight": 0.0}))
