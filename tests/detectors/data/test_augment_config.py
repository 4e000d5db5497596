"""``data.augment.*``: YOLOv5's defaults, one-value overrides over the family recipe, clear errors."""

import pytest

from detectors.config import AugmentConfig, parse_config
from detectors.data.augment import AugmentParams, resolve_augment
from detectors.errors import ConfigError
from detectors.zoo import FAMILIES

# Ultralytics YOLOv5 data/hyps/hyp.scratch-low.yaml (v7.0), in our key names.
SCRATCH_LOW = {"mosaic": 1.0, "mixup": 0.0, "degrees": 0.0, "translate": 0.1, "scale": (0.5, 1.5), "shear": 0.0,
               "perspective": 0.0, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "flipud": 0.0, "fliplr": 0.5}
YOLOX_EXP = {"mosaic": 1.0, "mixup": 1.0, "degrees": 10.0, "translate": 0.1, "scale": [0.1, 2.0], "shear": 2.0,
             "hsv_mode": "shift", "hsv_h": 5.0, "hsv_s": 30.0, "hsv_v": 30.0, "fliplr": 0.5, "close_mosaic": 15,
             "affine_without_mosaic": False, "style": "yolox"}


def _subset(params: AugmentParams, keys) -> dict:
    return {key: getattr(params, key) for key in keys}


def test_the_base_is_yolov5_scratch_low_without_a_switch_off():
    params = resolve_augment()
    assert _subset(params, SCRATCH_LOW) == SCRATCH_LOW
    assert params.close_mosaic == 0 and params.hsv_mode == "gain"


def test_the_yolov5_family_recipe_is_scratch_low():
    cfg = parse_config({"detector": {"name": "yolov5s"}})
    assert _subset(resolve_augment(cfg.data.augment), SCRATCH_LOW) == SCRATCH_LOW


def test_a_config_value_overrides_one_recipe_value_and_leaves_the_others():
    params = resolve_augment(AugmentConfig(mixup=0.2), YOLOX_EXP)
    assert params.mixup == 0.2 and params.scale == (0.1, 2.0) and params.close_mosaic == 15
    assert params.hsv_mode == "shift" and params.degrees == 10.0 and params.style == "yolox"


def test_yaml_sets_any_single_value():
    cfg = parse_config({"data": {"augment": {"scale": [0.5, 1.5], "close_mosaic": 10, "degrees": 5}}})
    params = resolve_augment(cfg.data.augment)
    assert params.scale == (0.5, 1.5) and params.close_mosaic == 10 and params.degrees == 5.0
    assert params.mosaic == 1.0 and params.translate == 0.1


def test_the_old_flip_key_names_its_new_name():
    with pytest.raises(ConfigError, match=r"data\.augment\.hflip: renamed to data\.augment\.fliplr"):
        parse_config({"data": {"augment": {"hflip": 0.5}}})


@pytest.mark.parametrize(("augment", "message"), [
    ({"mosaic": 1.5}, r"data\.augment\.mosaic: expected a value >= 0.0 and <= 1.0, got 1.5"),
    ({"scale": 1.2}, r"data\.augment\.scale: expected a gain >= 0 and < 1 or a range \[lo, hi\], got 1.2"),
    ({"scale": [2.0, 1.0]}, r"data\.augment\.scale: expected a range \[lo, hi\] with 0 < lo <= hi"),
    ({"hsv_h": 5}, r"data\.augment\.hsv_h: expected a value >= 0 and <= 1.0 for hsv_mode gain, got 5"),
    ({"hsv_mode": "hls"}, r"data\.augment\.hsv_mode: expected one of gain, shift"),
    ({"close_mosaic": -1}, r"data\.augment\.close_mosaic: expected a value >= 0"),
    ({"style": "yolov8"}, r"data\.augment\.style: expected one of yolov5, yolox, got 'yolov8'"),
])
def test_bad_values_name_the_key_and_what_was_expected(augment, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"data": {"augment": augment}})


def test_shift_mode_takes_opencv_units():
    cfg = parse_config({"data": {"augment": {"hsv_mode": "shift", "hsv_h": 5, "hsv_s": 30, "hsv_v": 30}}})
    assert resolve_augment(cfg.data.augment).hsv_v == 30.0


def test_a_bad_recipe_key_or_value_is_named():
    with pytest.raises(ConfigError, match=r"recipe augment\.hflip: unknown key"):
        resolve_augment(None, {"hflip": 0.5})
    with pytest.raises(ConfigError, match=r"recipe augment\.degrees: expected a value >= 0.0 and <= 180.0"):
        resolve_augment(None, {"degrees": -3})


def test_every_family_recipe_resolves():
    for family in FAMILIES.values():
        resolve_augment(None, family.recipe.augment)


def test_the_yolox_family_recipe_is_yoloxs_exp():
    # yolox/exp/yolox_base.py (yolox_s/m/l/x; tiny and nano change scale, mixup and mosaic per size).
    family = FAMILIES.get("yolox")
    if family is None:
        pytest.skip("no yolox family in detectors.zoo")
    params = resolve_augment(None, family.recipe.augment)
    expected = {**YOLOX_EXP, "scale": (0.1, 2.0)}
    assert {key: getattr(params, key) for key in expected} == expected
