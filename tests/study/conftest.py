"""Shared fixtures for the study tests: one real local Ray for the session, a generated data set."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_helpers import REPO


@pytest.fixture(scope="session")
def ray_address():
    """A real local Ray with 2 CPUs, started once; yields its address (for `mssd tune --address`)."""
    from study.tune import start_local_ray, stop_ray

    address = start_local_ray(num_cpus=2)
    yield address
    stop_ray()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The generated KITTI-like set, made once per session."""
    from detectors.data import load_samples
    from study.config import load_config

    root = tmp_path_factory.mktemp("data") / "smoke"
    cfg = load_config(REPO / "configs" / "smoke.yaml", [f"data.root={root}"])
    load_samples(cfg.data, "train")
    return root
