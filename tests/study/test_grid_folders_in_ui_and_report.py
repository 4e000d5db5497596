"""``mssd ui NAME`` and ``mssd report NAME`` find the folders ``mssd ablate / compare / reproduce`` leave in
``runs/`` when their runs train in this process (no study.json there)."""

from __future__ import annotations

import pytest
from study_helpers import free_port, write_tiny_config

from study.cli import main


def test_a_reproduce_folder_is_found_and_report_says_where_its_table_is(tmp_path, capsys):
    from study.study_files import find_study_meta

    folder = tmp_path / "runs" / "repro-1"
    (folder / "reproduce").mkdir(parents=True)
    (folder / "base-config.yaml").write_text("seed: 0\n")
    meta = find_study_meta(tmp_path / "runs", "repro-1")
    assert (meta["name"], meta["metric"], meta["mode"], meta["written_by"]) == ("repro-1", "map", "max",
                                                                               "mssd reproduce")
    assert main(["report", "repro-1", "--workdir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mssd: error: repro-1: written by mssd reproduce") and "\n" not in err
    assert "mssd ui repro-1" in err and not (folder / "report").exists()


def test_a_folder_that_is_no_study_is_still_refused_by_name(tmp_path, capsys):
    (tmp_path / "runs" / "junk").mkdir(parents=True)
    assert main(["report", "junk", "--workdir", str(tmp_path / "runs")]) == 2
    assert "no study 'junk'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_local_ablation_opens_in_ui_and_reports(tiny_data, tmp_path, capsys, monkeypatch):
    import signal
    import subprocess

    workdir = tmp_path / "runs"
    config = write_tiny_config(tmp_path, tiny_data, epochs=1)
    assert main(["ablate", str(config), "--seeds", "1", "--name", "abl", "--workdir", str(workdir),
                 "--backend", "local"]) == 0
    assert not (workdir / "abl" / "study.json").exists()
    capsys.readouterr()

    assert main(["report", "abl", "--workdir", str(workdir)]) == 0
    out = capsys.readouterr().out
    assert "study abl: 4 trials" in out and (workdir / "abl" / "report" / "top_trials.txt").is_file()

    class NoServer:  # the URL is what is checked; no server is started
        def __init__(self, *args, **kwargs):
            self.pid = 0

        def wait(self):
            return 0

        def poll(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", NoServer)
    handler = signal.getsignal(signal.SIGTERM)  # mssd ui installs its own; the session keeps pytest's
    try:
        assert main(["ui", "abl", "--workdir", str(workdir), "--port", str(free_port())]) == 0
    finally:
        signal.signal(signal.SIGTERM, handler)
    out = capsys.readouterr().out
    assert "/#/experiments/" in out and "viewStateShareKey" in out
