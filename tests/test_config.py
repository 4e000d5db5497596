"""The typed run config: defaults, strict validation with key paths and file lines, overrides."""

import math
from pathlib import Path

import pytest

from detectors.config import RunConfig, flatten_config, parse_config
from detectors.errors import ConfigError
from study.config import config_to_yaml, load_config, parse_override, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_empty_config_takes_the_paper_defaults():
    cfg = parse_config({})
    assert cfg.train.lr0 == 0.01 and cfg.train.lrf == 0.1 and cfg.train.momentum == 0.937
    assert cfg.losses.mssd.gamma == 0.05 and cfg.losses.mad.sigma2 == 2.0
    assert cfg.num_classes == 3


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_loads(name):
    assert isinstance(load_config(CONFIGS / name), RunConfig)


def test_paper_recipe_matches_section_4_1():
    cfg = load_config(CONFIGS / "yolov5s-kitti.yaml")
    assert (cfg.detector.name, cfg.data.img_size, cfg.train.batch_size, cfg.train.epochs) == ("yolov5s", 640, 16, 200)
    assert (cfg.train.lr0, cfg.train.lrf) == (0.01, 0.1)


def test_unknown_key_names_its_path_and_line(tmp_path):
    path = write(tmp_path, "train:\n  epochs: 3\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"run.yaml:3: train.learning_rate: unknown key"):
        load_config(path)


def test_wrong_type_names_path_and_expected_type(tmp_path):
    path = write(tmp_path, "train:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=r"run.yaml:2: train.epochs: expected an integer, got 'many'"):
        load_config(path)


def test_out_of_range_value_is_refused_with_the_bound(tmp_path):
    path = write(tmp_path, "losses:\n  mad:\n    sigma2: -1\n")
    with pytest.raises(ConfigError, match=r"run.yaml:3: losses.mad.sigma2: expected a value > 0.0, got -1.0"):
        load_config(path)


def test_bad_choice_lists_the_choices():
    with pytest.raises(ConfigError, match=r"detector.name: expected one of yolov5n, .*got 'yolov9'"):
        parse_config({"detector": {"name": "yolov9"}})


def test_img_size_must_be_a_multiple_of_the_largest_stride():
    with pytest.raises(ConfigError, match=r"data.img_size: expected a multiple of 32"):
        parse_config({"data": {"img_size": 100}})


def test_set_override_changes_a_nested_value(tmp_path):
    cfg = load_config(CONFIGS / "smoke.yaml", ["train.epochs=5", "losses.mssd.gamma=1e-3"])
    assert cfg.train.epochs == 5 and cfg.losses.mssd.gamma == pytest.approx(1e-3)


def test_bad_override_is_blamed_on_the_command_line():
    with pytest.raises(ConfigError, match=r"^--set train.epochs: expected an integer"):
        load_config(CONFIGS / "smoke.yaml", ["train.epochs=x"])
    with pytest.raises(ConfigError, match=r"^--set train.nope: unknown key"):
        load_config(CONFIGS / "smoke.yaml", ["train.nope=1"])


def test_malformed_override_syntax_is_refused():
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        parse_override("train.epochs")


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "train:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"run.yaml:\d+: invalid YAML"):
        load_config(path)


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


def test_infinite_sigma2_is_accepted_for_the_binary_mask():
    cfg = parse_config({"losses": {"mad": {"sigma2": ".inf"}}})
    assert math.isinf(cfg.losses.mad.sigma2)


def test_saved_config_reloads_identically_with_its_header(tmp_path):
    cfg = load_config(CONFIGS / "smoke.yaml", ["train.epochs=7"])
    out = tmp_path / "exported.yaml"
    save_config(cfg, out, header=["study: demo", "trial: 3"])
    assert out.read_text().startswith("# study: demo\n# trial: 3\n")
    assert load_config(out) == cfg
    assert config_to_yaml(load_config(out)) == config_to_yaml(cfg)


def test_flattened_config_uses_dotted_paths():
    flat = flatten_config(parse_config({}))
    assert flat["losses.mssd.gamma"] == 0.05 and flat["train.epochs"] == 200


def test_yaml_exponent_without_dot_is_read_as_a_number(tmp_path):
    path = write(tmp_path, "train:\n  lr0: 1e-3\n")
    assert load_config(path).train.lr0 == pytest.approx(1e-3)


def test_the_family_recipe_fills_what_the_config_leaves_out_and_an_explicit_value_wins():
    from detectors.zoo import family_of

    recipe = family_of("yolov5s").recipe
    cfg = parse_config({"detector": {"name": "yolov5s"}, "train": {"momentum": 0.9}})
    assert (cfg.train.lr0, cfg.train.nominal_batch, cfg.train.momentum) == (recipe.lr0, recipe.nominal_batch, 0.9)
    assert flatten_config(cfg)["detector.taps"] == "fpn_to_pan"  # the default tap set is logged by name


def test_an_unknown_tap_set_names_the_familys_tap_sets():
    with pytest.raises(ConfigError, match=r"detector.taps: yolov5n has no tap set 'sideways', expected one of "
                                          r"fpn_to_pan, pan_to_fpn, backbone_to_pan"):
        parse_config({"detector": {"name": "yolov5n", "taps": "sideways"}})
