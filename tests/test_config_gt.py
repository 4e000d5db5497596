"""``losses.gt`` is the running family's own block, and what a run shows and exports is what it uses:
the family's gt keys and the active method's blocks (detectors/config_gt.py, detectors.config.used_config_dict)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import yaml

from detectors.config import (
    METHOD_BLOCKS,
    METHODS,
    config_to_dict,
    flatten_config,
    parse_config,
    parse_saved_config,
    used_config_dict,
)
from detectors.engine.checkpoint import check_resumable
from detectors.errors import ConfigError
from detectors.zoo import DETECTORS, FAMILIES
from study.config import config_to_yaml, load_config, load_saved_config, save_config

FCOS = "fcos_tiny"
YOLOX = "yolox_nano"
# What losses.gt held for every family before each family had its own block (YOLOv5's gains + YOLOX's prior).
EVERY_FAMILY_GT = {"box": 0.05, "obj": 1.0, "cls": 0.5, "anchor_t": 4.0, "label_smoothing": 0.0,
                   "simota_prior": "main"}


def config(detector: str, **losses) -> dict:
    return {"detector": {"name": detector}, "data": {"root": "/tmp/none"}, "losses": losses}


def write(tmp_path, data: dict):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_an_exported_fcos_config_has_no_yolov5_gains_and_no_unused_method_block(tmp_path):
    cfg = parse_config(config(FCOS))
    save_config(cfg, tmp_path / "best.yaml")
    saved = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert saved["losses"]["gt"] == {}
    assert not {"kd", "fgfi", "defeat", "lgd"} & set(saved["losses"]) and "distill" not in saved
    assert {"mssd", "mad"} <= set(saved["losses"])
    assert load_config(tmp_path / "best.yaml") == cfg


def test_losses_gt_box_on_fcos_is_one_line_naming_the_file_line_family_and_owner(tmp_path):
    path = write(tmp_path, config(FCOS, gt={"box": 0.1}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:") and "losses.gt.box: unknown key for detector fcos_tiny" in message
    assert "family fcos: its loss reads no losses.gt setting" in message and "box is a setting of yolov5" in message


def test_a_yolov5_gain_on_yolox_names_the_keys_yolox_has():
    with pytest.raises(ConfigError, match=r"losses.gt.obj: unknown key for detector yolox_nano \(family yolox: "
                                          r"expected one of: simota_prior; obj is a setting of yolov5"):
        parse_config(config(YOLOX, gt={"obj": 1.0}))


def test_a_misspelt_gt_key_gets_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"did you mean losses.gt.simota_prior\?"):
        parse_config(config(YOLOX, gt={"simota_prio": "main"}))


def test_yolox_simota_prior_is_still_set_and_checked():
    assert parse_config(config(YOLOX, gt={"simota_prior": "0.3.0"})).losses.gt.simota_prior == "0.3.0"
    with pytest.raises(ConfigError, match=r"losses.gt.simota_prior: expected one of main, 0.3.0, got 'v2'"):
        parse_config(config(YOLOX, gt={"simota_prior": "v2"}))


def test_yolov5_keeps_its_gains_and_their_checks():
    gt = parse_config(config("yolov5n", gt={"box": 0.1})).losses.gt
    assert (gt.box, gt.obj, gt.cls, gt.anchor_t) == (0.1, 1.0, 0.5, 4.0)
    with pytest.raises(ConfigError, match=r"losses.gt.anchor_t: expected a value > 1.0, got 0.5"):
        parse_config(config("yolov5n", gt={"anchor_t": 0.5}))


def test_a_gt_block_that_is_not_a_mapping_is_refused():
    with pytest.raises(ConfigError, match=r"losses.gt: expected a mapping \(the yolox family's L_gt settings\)"):
        parse_config(config(YOLOX, gt=[1]))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_declares_a_gt_block_whose_defaults_parse(family):
    detector = FAMILIES[family].sizes[0]
    gt = parse_config(config(detector)).losses.gt
    assert isinstance(gt, FAMILIES[family].gt_config)
    assert dataclasses.asdict(gt) == dataclasses.asdict(FAMILIES[family].gt_config())


def test_config_show_prints_the_family_gt_keys_and_only_the_active_method(tmp_path, capsys):
    from study.cli import main

    path = write(tmp_path, config(YOLOX, method="kd"))
    assert main(["config", "show", str(path)]) == 0
    keys = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert "losses.gt.simota_prior" in keys and "losses.gt.box" not in keys
    assert "losses.kd.mu" in keys and "distill.teacher.name" in keys
    assert not any(key.startswith(("losses.mssd.", "losses.mad.", "losses.fgfi.", "losses.lgd.")) for key in keys)


def test_method_none_shows_no_method_block_and_mssd_shows_mssd_and_mad():
    def blocks(method):
        return {key for key in used_config_dict(parse_config(config("yolov5n", method=method)))["losses"]
                if key in {b for bs in METHOD_BLOCKS.values() for b in bs}}

    assert blocks("none") == set()
    assert blocks("mssd") == {"mssd", "mad"}
    assert blocks("lgd") == {"lgd"}


def test_every_method_names_its_blocks():
    assert set(METHOD_BLOCKS) == set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_what_a_run_shows_reloads_to_the_same_run(method):
    cfg = parse_config(config(YOLOX, method=method, gt={"simota_prior": "0.3.0"}))
    assert flatten_config(used_config_dict(parse_config(used_config_dict(cfg)))) == \
        flatten_config(used_config_dict(cfg))


def test_a_study_base_config_keeps_every_method_block():
    cfg = parse_config(config("yolov5n", method="none", kd={"mu": 0.3}))
    assert yaml.safe_load(config_to_yaml(cfg))["losses"]["kd"]["mu"] == 0.3


def _written_by_an_older_release(detector: str) -> dict:
    saved = copy.deepcopy(config_to_dict(parse_config(config(detector))))
    saved["losses"]["gt"] = dict(EVERY_FAMILY_GT, **saved["losses"]["gt"])
    return saved


@pytest.mark.parametrize("detector", [FCOS, YOLOX, "yolov5n"])
def test_a_checkpoint_config_with_every_family_gt_keys_still_resumes(detector):
    check_resumable(_written_by_an_older_release(detector), parse_config(config(detector)), "old/last.pt")


def test_a_changed_own_gt_setting_in_an_old_checkpoint_is_still_refused():
    saved = _written_by_an_older_release(YOLOX)
    saved["losses"]["gt"]["simota_prior"] = "0.3.0"
    with pytest.raises(ConfigError, match=r"losses.gt.simota_prior \('0.3.0' -> 'main'\)"):
        check_resumable(saved, parse_config(config(YOLOX)), "old/last.pt")


def test_an_old_study_base_config_loads_but_the_same_keys_in_a_user_file_are_refused(tmp_path):
    path = write(tmp_path, _written_by_an_older_release(FCOS))
    assert load_saved_config(path) == parse_config(config(FCOS))
    assert parse_saved_config(_written_by_an_older_release(FCOS)).losses.gt == DETECTORS[FCOS].gt_config()
    with pytest.raises(ConfigError, match=r"losses.gt.box: unknown key for detector fcos_tiny"):
        load_config(path)


def test_an_unknown_key_in_an_old_saved_config_is_still_refused():
    saved = _written_by_an_older_release(FCOS)
    saved["losses"]["gt"]["boxx"] = 1.0
    with pytest.raises(ConfigError, match=r"losses.gt.boxx: unknown key"):
        parse_saved_config(saved)


def test_a_search_space_sweeping_a_family_gt_key_validates_against_its_base_config(tmp_path):
    from study.search_space import load_search_space

    space = tmp_path / "space.yaml"
    space.write_text("params:\n  losses.gt.simota_prior: {distribution: choice, values: [main, '0.3.0']}\n")
    loaded = load_search_space(space, parse_config(config(YOLOX)))
    assert loaded.params[0].key == "losses.gt.simota_prior"
    with pytest.raises(ConfigError, match=r"losses.gt.simota_prior"):
        load_search_space(space, parse_config(config("yolov5n")))
