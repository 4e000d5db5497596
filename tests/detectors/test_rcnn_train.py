"""`mssd train` runs Faster R-CNN and Cascade R-CNN through the common engine: one tiny epoch each (the smoke
configs at 64 px, 2 steps), logging the family's own loss terms and evaluating with predict."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trains and starts MLflow

REPO = Path(__file__).resolve().parents[2]
GT_TERMS = ("loss/gt/rpn_obj", "loss/gt/rpn_box", "loss/gt/cls", "loss/gt/box")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data") / "smoke"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """One study folder (one MLflow store, created once) for both runs: each smoke config has its experiment."""
    return tmp_path_factory.mktemp("runs")


@pytest.mark.parametrize("config", ["faster_rcnn-smoke.yaml", "cascade_rcnn-smoke.yaml"])
def test_mssd_train_runs_an_rcnn_epoch_and_logs_its_rpn_and_roi_terms(config, data_root, workdir, tmp_path):
    from mlflow.tracking import MlflowClient

    from study import tracking
    from study.cli import main
    from study.config import load_config, save_config

    cfg = load_config(REPO / "configs" / config, [
        f"data.root={data_root}", "data.img_size=64", "data.synthetic.images=8", "train.batch_size=2",
        "train.max_steps_per_epoch=2", "train.epochs=1", "train.warmup_iters=0", "eval.max_det=20"])
    assert cfg.detector.name.endswith("rcnn_tiny")
    path = tmp_path / "tiny.yaml"
    save_config(cfg, path)
    assert main(["train", str(path), "--workdir", str(workdir)]) == 0
    client = MlflowClient(tracking.default_tracking_uri(workdir))
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["detector.taps"] == "merged_to_output"
    metrics = run.data.metrics
    assert set(GT_TERMS) <= set(metrics)
    assert metrics["loss/gt"] == pytest.approx(sum(metrics[k] for k in GT_TERMS), rel=1e-5)
    assert metrics["loss/distill"] > 0 and metrics["loss/mask"] > 0 and "map" in metrics
