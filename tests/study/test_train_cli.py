"""`mssd train` checks everything before it writes anything, resumes from any of the three forms the
README names, and back-fills MLflow from the checkpoint's history (real tiny trainings, real MLflow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_helpers import write_tiny_config

pytestmark = pytest.mark.slow


def _client(workdir: Path):
    from mlflow.tracking import MlflowClient

    from study import tracking

    return MlflowClient(tracking.default_tracking_uri(workdir))


def _runs(workdir: Path) -> list:
    client = _client(workdir)
    experiment = client.get_experiment_by_name("smoke")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def _run_id(run_dir: Path) -> str:
    import json

    return json.loads((run_dir / "run.json").read_text())["run_id"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tiny_data, tmp_path_factory):
    """One finished 1-epoch `mssd train` run: (config, workdir, run folder)."""
    from study.cli import main

    tmp = tmp_path_factory.mktemp("train")
    config = write_tiny_config(tmp, tiny_data, epochs=1)
    workdir = tmp / "runs"
    assert main(["train", str(config), "--workdir", str(workdir)]) == 0
    (run_dir,) = (workdir / "train").iterdir()
    return config, workdir, run_dir


def test_a_refused_resume_changes_nothing_on_disk_or_in_mlflow(finished, capsys):
    from study.cli import main

    config, workdir, run_dir = finished
    before = _snapshot(run_dir)
    (run,) = [r for r in _runs(workdir) if r.info.run_id == _run_id(run_dir)]
    assert run.info.status == "FINISHED"
    code = main(["train", str(config), "--workdir", str(workdir), "--resume", str(run_dir),
                 "--set", "losses.mssd.gamma=0.5"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cannot resume with a different config" in err and "\n" not in err
    assert _snapshot(run_dir) == before
    (after,) = [r for r in _runs(workdir) if r.info.run_id == run.info.run_id]
    assert after.info.status == "FINISHED" and after.info.end_time == run.info.end_time


@pytest.mark.parametrize("bad", ["missing weights", "weights not a torch file", "malformed label", "corrupt checkpoint"])
def test_input_errors_leave_no_run_folder_and_no_mlflow_run(tiny_data, tmp_path, capsys, bad):
    import shutil

    from study.cli import main

    data = tiny_data
    args = []
    if bad == "missing weights":
        args = ["--weights", str(tmp_path / "nope.pt")]
    elif bad == "weights not a torch file":
        (tmp_path / "junk.pt").write_text("not weights")
        args = ["--weights", str(tmp_path / "junk.pt")]
    elif bad == "malformed label":
        data = tmp_path / "data"
        shutil.copytree(tiny_data, data)
        label = sorted((data / "training" / "label_2").glob("*.txt"))[0]
        label.write_text("Car 0 0 x 1 2 3 4 1 1 1 0 0 0 0\n")
    elif bad == "corrupt checkpoint":
        ckpt = tmp_path / "old" / "checkpoints" / "last.pt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"PK\x03\x04 truncated")
        args = ["--resume", str(ckpt)]
    config = write_tiny_config(tmp_path, data, epochs=1)
    workdir = tmp_path / "runs"
    code = main(["train", str(config), "--workdir", str(workdir), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("mssd: error: ") and "\n" not in err, err
    if bad == "malformed label":
        assert f"{label}:1" in err
    assert not (workdir / "train").exists()
    assert not (workdir / "mlflow.db").exists() or not _runs(workdir)


@pytest.mark.parametrize("form", ["checkpoint file", "checkpoints folder", "run folder"])
def test_resume_accepts_a_checkpoint_file_its_folder_or_the_run_folder(finished, tmp_path, form):
    import shutil

    from study.cli import main

    config, workdir, original = finished
    run_dir = tmp_path / original.name
    shutil.copytree(original, run_dir)
    target = {"checkpoint file": run_dir / "checkpoints" / "last.pt", "checkpoints folder": run_dir / "checkpoints",
              "run folder": run_dir}[form]
    assert main(["train", str(config), "--workdir", str(workdir), "--resume", str(target),
                 "--set", "train.epochs=2"]) == 0
    from detectors.engine.checkpoint import load_checkpoint

    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 2
    assert "epochs: 2" in (run_dir / "config.yaml").read_text()


def test_resume_back_fills_the_epochs_mlflow_never_got_exactly_once(finished, tmp_path):
    """The state a SIGKILL leaves: the checkpoint holds epoch 1, the MLflow run never got it."""
    import json
    import shutil

    from study.cli import main

    config, workdir, original = finished
    run_dir = tmp_path / original.name
    shutil.copytree(original, run_dir)
    client = _client(workdir)
    done = client.get_run(_run_id(original))
    # The run as the killed process left it: created, epoch 1's write lost with the process.
    lost = client.create_run(done.info.experiment_id, run_name=run_dir.name)
    client.set_terminated(lost.info.run_id, status="KILLED")
    meta = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**meta, "run_id": lost.info.run_id}))

    assert main(["train", str(config), "--workdir", str(workdir), "--resume", str(run_dir),
                 "--set", "train.epochs=2"]) == 0
    epochs = sorted(int(m.step) for m in client.get_metric_history(lost.info.run_id, "epoch"))
    assert epochs == [1, 2]
    losses = {int(m.step): m.value for m in client.get_metric_history(lost.info.run_id, "loss/total")}
    first = next(m.value for m in client.get_metric_history(done.info.run_id, "loss/total") if m.step == 1)
    assert sorted(losses) == [1, 2] and losses[1] == pytest.approx(first)
    assert client.get_run(lost.info.run_id).info.status == "FINISHED"
