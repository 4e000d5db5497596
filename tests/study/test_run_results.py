"""`results.csv` and `results.png` in a run folder (study.run_results), from real tiny trainings."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from study_helpers import write_tiny_config

pytestmark = pytest.mark.slow


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_one_row_per_epoch_with_every_metric_and_a_resumed_run_keeps_its_earlier_epochs(tiny_data, tmp_path):
    from detectors.engine.trainer import fit
    from study.config import load_config
    from study.run_results import RunResults

    written: list[list[Path]] = []
    cfg = load_config(write_tiny_config(tmp_path, tiny_data, epochs=1))
    first = fit(cfg, tmp_path / "run", callbacks=[RunResults(tmp_path / "run", written.append)])
    rows = _rows(tmp_path / "run" / "results.csv")
    assert [r["epoch"] for r in rows] == ["1"]
    numeric = {k for k, v in first.items() if isinstance(v, float)}
    assert numeric <= set(rows[0]) and list(rows[0])[0] == "epoch"
    assert float(rows[0]["loss/total"]) == pytest.approx(first["loss/total"], rel=1e-5)

    cfg2 = load_config(write_tiny_config(tmp_path, tiny_data, epochs=2))
    fit(cfg2, tmp_path / "run", callbacks=[RunResults(tmp_path / "run", written.append)],
        resume=tmp_path / "run" / "checkpoints" / "last.pt")
    rows = _rows(tmp_path / "run" / "results.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]  # epoch 1 comes back from the checkpoint's history
    assert float(rows[0]["loss/total"]) == pytest.approx(first["loss/total"], rel=1e-5)
    png = tmp_path / "run" / "results.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert written[-1] == [tmp_path / "run" / "results.csv", png]


def test_mssd_train_writes_both_files_in_the_run_folder_and_logs_them_to_mlflow(tiny_data, tmp_path):
    from mlflow.tracking import MlflowClient

    from study import tracking
    from study.cli import main

    config = write_tiny_config(tmp_path, tiny_data, epochs=2)
    workdir = tmp_path / "runs"
    assert main(["train", str(config), "--workdir", str(workdir)]) == 0
    (run_dir,) = (workdir / "train").iterdir()
    rows = _rows(run_dir / "results.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    client = MlflowClient(tracking.default_tracking_uri(workdir))
    (run,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert set(run.data.metrics) <= set(rows[0])  # every metric MLflow has is a column
    assert float(rows[1]["map"]) == pytest.approx(run.data.metrics["map"], rel=1e-5, abs=1e-12)
    assert (run_dir / "results.png").stat().st_size > 10_000
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.csv", "results.png"} <= logged
