"""Inputs a study refuses in one line, before Ray or any trial starts (no training here)."""

from __future__ import annotations

import pytest
from study_helpers import REPO, SPACES

from detectors.errors import ConfigError, MSSDError
from study import faults
from study.errors import StudyError
from study.tune import StudyOptions, run_study
from study.tune.ray_runtime import check_storage


def test_a_multi_host_cluster_with_local_storage_is_refused(monkeypatch):
    # Two hosts cannot be produced on one machine: ray.nodes() is the one thing faked here.
    from study.tune import ray_runtime

    nodes = [{"Alive": True, "NodeManagerAddress": "10.0.0.1"}, {"Alive": True, "NodeManagerAddress": "10.0.0.2"}]
    monkeypatch.setattr(ray_runtime.ray, "nodes", lambda: nodes)
    with pytest.raises(StudyError) as info:
        check_storage("/home/me/runs")
    assert "\n" not in str(info.value) and "spans 2 hosts" in str(info.value) and "s3://" in str(info.value)
    check_storage("s3://bucket/studies")
    check_storage("file:///mnt/shared/studies")
    monkeypatch.setattr(ray_runtime.ray, "nodes", lambda: nodes[:1] * 2)  # two nodes, one host: fine
    check_storage("/home/me/runs")


@pytest.mark.parametrize("name", ["a b", "../x", "q'uote", ""])
def test_a_study_name_that_cannot_name_a_folder_and_an_experiment_is_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="--name"):
        StudyOptions(config=str(REPO / "configs" / "smoke.yaml"), space=str(SPACES / "mssd.yaml"),
                     name=name or "-x", workdir=str(tmp_path))


def test_resuming_a_study_that_does_not_exist_is_one_line(tmp_path):
    with pytest.raises(MSSDError, match="no study 'nope'"):
        run_study(StudyOptions(config="", space="", name="nope", workdir=str(tmp_path), resume=True))


def test_fault_specs_parse_and_bad_ones_are_one_line():
    specs = faults.parse_faults("raise-once@2;nonfinite@1:losses.mssd.gamma=1.0")
    assert specs == [faults.FaultSpec("raise-once", 2), faults.FaultSpec("nonfinite", 1, "losses.mssd.gamma", 1.0)]
    assert specs[1].applies_to({"losses.mssd.gamma": 1.0}) and not specs[1].applies_to({"losses.mssd.gamma": 0.1})
    with pytest.raises(ConfigError, match="KIND@EPOCH"):
        faults.parse_faults("explode@2")


def test_a_truncated_latest_checkpoint_restores_from_the_previous_complete_one(tmp_path):
    import json

    import torch

    from detectors.engine.checkpoint import save_checkpoint
    from study.tune import trainable

    trial = tmp_path / "trial_x"
    for index, epoch in enumerate((1, 2)):
        folder = trial / f"checkpoint_00000{index}"
        save_checkpoint({"epoch": epoch, "weights": torch.zeros(1000)}, folder / "last.pt")
        (folder / "epoch.json").write_text(json.dumps({"epoch": epoch}))
    latest = trial / "checkpoint_000001" / "last.pt"
    latest.write_bytes(latest.read_bytes()[:100])  # cut short, as by a node lost mid-upload
    checkpoint = trainable.tune.Checkpoint.from_directory(str(trial / "checkpoint_000001"))
    local = tmp_path / "local"
    assert trainable.restore_checkpoint(checkpoint, local) == 1
    assert torch.load(local / "last.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("gpus", [-0.5, 1.5])
def test_gpus_per_trial_ray_cannot_schedule_is_refused_in_one_line(tmp_path, gpus):
    with pytest.raises(ConfigError, match=r"--gpus-per-trial: expected 0, a fraction below 1") as info:
        StudyOptions(config=str(REPO / "configs" / "smoke.yaml"), space=str(SPACES / "mssd.yaml"),
                     gpus_per_trial=gpus, workdir=str(tmp_path))
    assert "\n" not in str(info.value)


def test_gpu_trials_on_a_local_ray_without_a_gpu_are_refused_before_anything_is_written(tmp_path):
    from study.tune.options import check_local_gpus

    check_local_gpus(0.5, None, cuda_available=True)  # a GPU machine: fine
    check_local_gpus(0.5, "10.0.0.1:6379", cuda_available=False)  # a cluster's GPUs: Ray decides
    check_local_gpus(0.0, None, cuda_available=False)
    with pytest.raises(ConfigError, match=r"--gpus-per-trial 0.25: this machine has no CUDA GPU"):
        check_local_gpus(0.25, None, cuda_available=False)
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal below cannot be produced")
    workdir = tmp_path / "runs"
    with pytest.raises(ConfigError, match=r"no CUDA GPU for the local Ray") as info:
        run_study(StudyOptions(config=str(REPO / "configs" / "smoke.yaml"), space=str(SPACES / "mssd.yaml"),
                               gpus_per_trial=0.5, workdir=str(workdir)))
    assert "\n" not in str(info.value)
    assert not workdir.exists()
