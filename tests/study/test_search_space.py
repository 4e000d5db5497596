"""Search-space files: the shipped ones load, and every mistake is one line naming file and line."""

from __future__ import annotations

import pytest
from study_helpers import SPACES, write_space

from detectors.config import RunConfig, flatten_config
from detectors.errors import ConfigError
from study.search_space import load_search_space


@pytest.mark.parametrize("name", sorted(p.name for p in SPACES.glob("*.yaml")))
def test_every_shipped_space_loads_and_its_paths_exist_in_the_config(name):
    space = load_search_space(SPACES / name)
    known = flatten_config(RunConfig())
    assert space.params and all(p.key in known for p in space.params)


def test_paper_grids_hold_the_paper_values():
    assert load_search_space(SPACES / "paper-table5-gamma.yaml").params[0].values == (1.0, 0.1, 0.05, 0.01, 0.001)
    assert load_search_space(SPACES / "paper-table6-sigma2.yaml").params[0].values == (0.5, 1.0, 2.0, 4.0, 8.0)
    assert load_search_space(SPACES / "ablation.yaml").grid_size() == 4
    assert not load_search_space(SPACES / "mssd.yaml").is_grid


BAD = {
    "unknown key path": ("params:\n  losses.mssd.gama: {distribution: uniform, low: 0, high: 1}\n",
                         ":2: losses.mssd.gama: unknown config key path (did you mean"),
    "low >= high": ("params:\n  train.lr0: {distribution: uniform, low: 0.1, high: 0.01}\n",
                    ":2: train.lr0: expected low < high"),
    "non-positive log bound": ("params:\n  losses.mssd.gamma: {distribution: loguniform, low: 0, high: 1}\n",
                               ":2: losses.mssd.gamma: loguniform needs positive bounds"),
    "empty choice": ("params:\n  x: 1\n" if False else
                     "params:\n  losses.mssd.w_m: {distribution: choice, values: []}\n",
                     ":2: losses.mssd.w_m: choice needs a non-empty list of values"),
    "section, not value": ("params:\n  losses.mssd: {distribution: uniform, low: 0, high: 1}\n",
                           ":2: losses.mssd: is a config section"),
    "unknown distribution": ("params:\n  train.lr0: {distribution: normal, low: 0, high: 1}\n",
                             ":2: train.lr0: distribution: expected one of"),
    "value the schema rejects": ("params:\n  losses.mssd.gamma: {distribution: grid, values: [0.1, -1]}\n",
                                 ":2: losses.mssd.gamma: value -1.0 is not allowed"),
    "grid mixed with sampled": ("params:\n  train.lr0: {distribution: grid, values: [0.1]}\n"
                                "  losses.mssd.gamma: {distribution: uniform, low: 0, high: 1}\n",
                                ":3: losses.mssd.gamma: a space is all grid"),
    "no params": ("description: nothing\n", ": expected a top-level 'params' mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_space_gives_one_line_naming_file_and_line(tmp_path, case):
    text, expected = BAD[case]
    path = write_space(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_search_space(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)) and expected in message, message


def test_cli_reports_a_bad_space_in_one_line_before_starting_anything(tmp_path, capsys):
    from study.cli import main

    path = write_space(tmp_path, "params:\n  losses.mssd.gamma: {distribution: loguniform, low: -1, high: 1}\n")
    code = main(["tune", str(SPACES.parent / "configs" / "smoke.yaml"), "--space", str(path),
                 "--workdir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"{path}:2:" in err
    assert not (tmp_path / "runs").exists()


def test_the_tap_set_is_searchable_and_an_unknown_one_is_refused(tmp_path):
    taps = "params:\n  detector.taps: {distribution: grid, values: [fpn_to_pan, pan_to_fpn, backbone_to_pan]}\n"
    assert load_search_space(write_space(tmp_path, taps)).grid_size() == 3
    bad = write_space(tmp_path, "params:\n  detector.taps: {distribution: choice, values: [fpn_to_pan, sideways]}\n")
    with pytest.raises(ConfigError, match=r":2: detector.taps: value 'sideways' is not allowed.*has no tap set"):
        load_search_space(bad)
