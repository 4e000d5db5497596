"""`mssd tune --resume` continues the study as it started: another CONFIG, `--set`, `--space` or an option
given with another value (more `--samples` included) is refused in one line naming each change, before
anything is written; the same command line resumes. The study folder is written as `mssd tune` writes
it (no Ray needed: the refusal comes first)."""

from __future__ import annotations

import pytest
from study_helpers import write_space, write_tiny_config

SPACE = "params:\n  losses.mssd.gamma: {distribution: grid, values: [0.1, 0.2]}\n"


@pytest.fixture
def study(tmp_path, tiny_data):
    """A study folder `s` (study.json, base-config.yaml, search-space.yaml) started with --samples 2."""
    from study.config import config_to_yaml, load_config
    from study.search_space import load_search_space
    from study.study_files import study_dir, write_study_files
    from study.tune.driver import _absolute_paths
    from study.tune.options import StudyOptions

    config = write_tiny_config(tmp_path, tiny_data, epochs=1)
    space = write_space(tmp_path, SPACE)
    workdir = tmp_path / "runs"
    options = StudyOptions(config=str(config), space=str(space), name="s", workdir=str(workdir), samples=2)
    cfg = _absolute_paths(load_config(config))
    meta = {"name": "s", "options": options.to_json(), "tracking_uri": "embedded", "storage": str(workdir.resolve()),
            "metric": "map", "mode": "max", "searched": ["losses.mssd.gamma"]}
    write_study_files(study_dir(workdir, "s"), meta, config_to_yaml(cfg), load_search_space(space).text)
    return config, space, workdir


def _files(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _resume(study, *extra):
    config, space, workdir = study
    return ["tune", str(config), "--space", str(space), "--resume", "--name", "s", "--workdir", str(workdir), *extra]


@pytest.mark.parametrize(("extra", "named"), [
    (["--set", "train.epochs=3"], "train.epochs (1 -> 3)"),
    (["--samples", "5"], "--samples 5 (the study has 2)"),
    (["--no-asha"], "--no-asha"),
    (["--metric", "ap50"], "--metric ap50 (the study has map)"),
])
def test_a_resume_with_a_change_is_refused_by_name_and_writes_nothing(study, capsys, extra, named):
    from study.cli import main

    before = _files(study[2])
    code = main(_resume(study, *extra))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "cannot resume study 's'" in err and named in err, err
    assert _files(study[2]) == before


def test_another_space_and_config_are_both_named(study, tmp_path, capsys):
    from study.cli import main

    config, _, workdir = study
    other = write_space(tmp_path, SPACE.replace("0.2]", "0.3]"), name="other.yaml")
    code = main(["tune", str(config), "--space", str(other), "--set", "seed=7", "--resume", "--name", "s",
                 "--workdir", str(workdir)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "seed (0 -> 7)" in err and f"--space {other}" in err, err


def test_the_same_command_line_passes_the_check(study):
    from study.tune.driver import _prepare
    from study.tune.options import StudyOptions

    config, space, workdir = study
    options, _, _, _, meta = _prepare(StudyOptions(config=str(config), space=str(space), name="s",
                                                   workdir=str(workdir), resume=True))
    assert options.samples == 2 and meta["name"] == "s"  # the study's own options, not the defaults
