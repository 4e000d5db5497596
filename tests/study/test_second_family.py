"""A second detector family (YOLOX) goes through the same engine unchanged: `mssd train`, `mssd tune` and
`mssd ablate` on the YOLOX smoke config, each a few CPU steps (yolox_nano at 64 px)."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_helpers import REPO, write_space

pytestmark = pytest.mark.slow

SMOKE = REPO / "configs" / "yolox-smoke.yaml"
GT_TERMS = ("loss/gt/iou", "loss/gt/obj", "loss/gt/cls", "loss/gt/l1")


def tiny_yolox_config(folder: Path, data_root: Path, epochs: int = 1) -> Path:
    """The YOLOX smoke config made seconds-long: 64 px, batch 4, 2 steps per epoch."""
    from study.config import load_config, save_config

    path = folder / "tiny-yolox.yaml"
    cfg = load_config(SMOKE, [f"data.root={data_root}", "data.img_size=64", "train.batch_size=4",
                              "train.max_steps_per_epoch=2", f"train.epochs={epochs}", "eval.max_det=50",
                              "train.warmup_epochs=0"])
    assert cfg.detector.name.startswith("yolox")
    save_config(cfg, path)
    return path


def test_mssd_train_runs_yolox_and_logs_its_own_loss_terms(tiny_data, tmp_path):
    from mlflow.tracking import MlflowClient

    from study import tracking
    from study.cli import main

    config = tiny_yolox_config(tmp_path, tiny_data)
    workdir = tmp_path / "runs"
    assert main(["train", str(config), "--workdir", str(workdir)]) == 0
    client = MlflowClient(tracking.default_tracking_uri(workdir))
    (run,) = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert run.info.status == "FINISHED"
    assert run.data.params["detector.taps"] == "fpn_to_pan"
    metrics = run.data.metrics
    assert set(GT_TERMS) <= set(metrics) and "loss/gt/box" not in metrics
    assert metrics["loss/gt"] == pytest.approx(sum(metrics[k] for k in GT_TERMS), rel=1e-5)
    assert metrics["loss/distill"] > 0 and metrics["loss/mask"] > 0 and "map" in metrics


def test_mssd_tune_sweeps_yolox_tap_sets_on_ray(ray_address, tiny_data, tmp_path):
    from study import tracking
    from study.tune import StudyOptions, run_study

    config = tiny_yolox_config(tmp_path, tiny_data)
    space = write_space(tmp_path, "params:\n  detector.taps: {distribution: grid, values: [fpn_to_pan, pan_to_fpn]}\n")
    run_study(StudyOptions(config=str(config), space=str(space), name="yolox-grid", workdir=str(tmp_path / "runs"),
                           address=ray_address, max_concurrent=2, verbose=0, asha=False))
    trials = tracking.study_trials(tracking.default_tracking_uri(tmp_path / "runs"), "yolox-grid")
    assert sorted(t.params["detector.taps"] for t in trials) == ["fpn_to_pan", "pan_to_fpn"]
    assert all(t.status == "completed" and "loss/gt/iou" in t.metrics for t in trials)


def test_mssd_ablate_runs_the_four_yolox_variants(tiny_data, tmp_path):
    from study import tracking
    from study.ablation import AblationOptions, run_ablation

    config = tiny_yolox_config(tmp_path, tiny_data)
    result = run_ablation(AblationOptions(config=str(config), seeds=1, name="abl-yolox",
                                          workdir=str(tmp_path / "runs"), backend="local"))
    assert [r.runs for r in result.rows] == [1, 1, 1, 1]
    extra = [r.training_params for r in result.rows]  # baseline, +MAD, +MSSD, both (YOLOX's projector)
    assert extra[0] == 0 and extra[1] > 0 and extra[2] > 0 and extra[3] == extra[1] + extra[2]
    trials = tracking.study_trials(tracking.default_tracking_uri(tmp_path / "runs"), "abl-yolox")
    assert len(trials) == 4 and {t.status for t in trials} == {"completed"}
