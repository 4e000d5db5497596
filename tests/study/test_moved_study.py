"""A study folder moved or copied elsewhere never reads or writes the original MLflow store: the embedded
store is recorded relative to the workdir, and a store (or artifact location) that is not the one next
to the study is refused in one line (real Ray, real MLflow on SQLite)."""

from __future__ import annotations

import json
import shutil

import pytest
from study_helpers import write_space, write_tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(ray_address, tiny_data, tmp_path_factory):
    from study.cli import main

    tmp = tmp_path_factory.mktemp("moved")
    config = write_tiny_config(tmp, tiny_data, epochs=1)
    space = write_space(tmp, "params:\n  losses.mssd.gamma: {distribution: grid, values: [0.1]}\n")
    workdir = tmp / "a" / "runs"
    assert main(["tune", str(config), "--space", str(space), "--workdir", str(workdir), "--name", "m",
                 "--address", ray_address, "--quiet"]) == 0
    return workdir


def _tree(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_the_embedded_store_is_recorded_relative_to_the_workdir(study):
    meta = json.loads((study / "m" / "study.json").read_text())
    assert str(study.resolve()) not in json.dumps({k: meta[k] for k in ("tracking_uri",)})


def test_a_copied_study_is_refused_in_one_line_and_the_original_store_is_untouched(study, tmp_path, capsys,
                                                                                   monkeypatch):
    from study.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy = tmp_path / "b" / "runs"
    shutil.copytree(study, copy)
    before = _tree(study)
    code = main(["export", "m", "--workdir", str(copy), "--out", str(tmp_path / "best.yaml")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "moved or copied" in err and str(study.resolve()) in err, err
    assert _tree(study) == before and not (tmp_path / "best.yaml").exists()


def test_a_study_moved_with_an_absolute_store_in_study_json_is_refused(study, tmp_path, capsys, monkeypatch):
    """study.json as older versions wrote it: the absolute path of the embedded store."""
    from study.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    moved = tmp_path / "c" / "runs"
    shutil.copytree(study, moved)
    meta_path = moved / "m" / "study.json"
    meta = json.loads(meta_path.read_text())
    meta["tracking_uri"] = f"sqlite:///{tmp_path / 'gone' / 'runs' / 'mlflow.db'}"
    meta_path.write_text(json.dumps(meta))
    code = main(["report", "m", "--workdir", str(moved)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "not the one next to it" in err, err
    assert not (tmp_path / "gone").exists()  # never created at the recorded place
