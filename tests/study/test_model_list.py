"""``mssd model list`` shows every detector of the zoo, and a misspelt detector name gets a suggestion."""

from __future__ import annotations

import pytest

from detectors.errors import ConfigError
from study.cli import main


def test_model_list_names_every_detector_with_its_parameters_and_every_family_its_reference(capsys):
    from detectors import build_detector
    from detectors.zoo import DETECTORS, FAMILIES, REFERENCES

    assert main(["model", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[1]: line for line in lines[1:] if line.strip() and len(line.split()) > 2
            and line.split()[0] in FAMILIES}
    assert set(rows) == set(DETECTORS)
    nano = sum(p.numel() for p in build_detector("yolox_nano", num_classes=3).parameters())
    assert f"{nano / 1e6:.2f} M" in rows["yolox_nano"]  # counted on the meta device, equal to a real build
    assert all(REFERENCES.get(name) for name in FAMILIES), [n for n in FAMILIES if not REFERENCES.get(n)]


def test_model_list_refuses_a_class_count_below_one(capsys):
    assert main(["model", "list", "--classes", "0"]) == 2
    assert "--classes: expected a class count >= 1, got 0" in capsys.readouterr().err


def test_an_unknown_detector_name_gets_a_did_you_mean():
    from detectors.zoo import family_of

    with pytest.raises(ConfigError, match=r"unknown detector 'yolo5s'; did you mean yolov5s\?"):
        family_of("yolo5s")


def test_a_misspelt_detector_in_a_config_gets_a_did_you_mean():
    from detectors.config import parse_config

    with pytest.raises(ConfigError, match=r"detector.name: expected one of .*, got 'yolox_nan'; did you mean yolox_nano\?"):
        parse_config({"detector": {"name": "yolox_nan"}})
