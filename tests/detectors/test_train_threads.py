"""`train.threads`: torch's CPU threads for a run. Null means the CPUs reserved for it (a tune trial's
CPUs, else OMP_NUM_THREADS when set, else the process's CPU affinity), never torch's one per core of
the machine; the trainer sets it before anything runs, and a tune trial logs the count it ran with."""

from __future__ import annotations

import pytest
import torch

from detectors.config import parse_config
from detectors.engine import threads


@pytest.fixture
def restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_null_threads_are_the_process_cpu_affinity_not_the_machines_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 3, 5})
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 64)
    assert threads.resolve_threads(None) == 3


def test_omp_num_threads_set_by_hand_is_the_reservation(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.resolve_threads(None) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert threads.resolve_threads(None) == 4


def test_a_configured_count_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.resolve_threads(3) == 3


def test_threads_below_one_are_refused_by_key():
    from detectors.errors import ConfigError

    with pytest.raises(ConfigError, match="train.threads"):
        parse_config({"train": {"threads": 0}})


@pytest.mark.parametrize("count", [1, 2])
def test_the_trainer_sets_torchs_threads_before_training(tmp_path, count, restore_torch_threads):
    from detectors.engine.trainer import Trainer

    torch.set_num_threads(3 - count)  # something else first, so the test sees the trainer's own setting
    cfg = parse_config({"seed": 0, "detector": {"name": "yolov5n"},
                        "data": {"format": "synthetic", "root": str(tmp_path / "data"), "img_size": 64, "workers": 0,
                                 "synthetic": {"images": 4, "seed": 0, "width": 128, "height": 64}},
                        "train": {"epochs": 1, "batch_size": 2, "max_steps_per_epoch": 1, "device": "cpu",
                                  "threads": count}})
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.threads == count and torch.get_num_threads() == count


def test_a_tune_trial_runs_and_logs_its_cpus_as_threads_unless_the_config_says():
    pytest.importorskip("ray")
    from study.tune.trainable import trial_config

    base = parse_config({"detector": {"name": "yolov5n"}})
    assert trial_config(base, {}, 2.0).train.threads == 2
    assert trial_config(base, {}, 0.5).train.threads == 1  # a fractional CPU still runs one thread
    pinned = parse_config({"detector": {"name": "yolov5n"}, "train": {"threads": 3}})
    assert trial_config(pinned, {}, 1.0).train.threads == 3
