"""`mssd demo` (what `make demo` runs): its settings, and end to end at the smallest budget."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest


def test_the_demo_uses_a_gpu_at_the_papers_input_size_and_falls_back_to_the_cpu_setting():
    from study.config import load_config
    from study.demo import CPU_DEMO, GPU_DEMO, REPO, demo_settings

    assert demo_settings(cuda_available=False) == CPU_DEMO
    import torch

    if not torch.cuda.is_available():  # this machine: the fallback `make demo` takes
        assert demo_settings() == CPU_DEMO
    gpu = demo_settings(cuda_available=True, cpu_count=16)
    assert gpu.img_size == 640 and gpu.device == "cuda" and gpu.gpus_per_trial == 0.5 and gpu.cpus_per_trial == 8
    for settings in (CPU_DEMO, GPU_DEMO):  # both make a valid config from the smoke config
        cfg = load_config(REPO / "configs" / "smoke.yaml", settings.overrides())
        assert cfg.data.img_size == settings.img_size and cfg.train.device == settings.device
        assert cfg.train.nominal_batch == settings.nominal_batch and cfg.train.lr0 == settings.lr0


@pytest.mark.slow
def test_demo_sweeps_then_exports_a_loadable_best_config_and_writes_the_report(ray_address, tmp_path, monkeypatch):
    from study import tracking
    from study.config import load_config
    from study.demo import CPU_DEMO, run_demo

    monkeypatch.chdir(tmp_path)  # the demo generates its data set under ./data/demo
    workdir = tmp_path / "runs"
    out = io.StringIO()
    small = replace(CPU_DEMO, images=40, steps_per_epoch=3)  # the real demo's code path, seconds long
    run_demo(workdir, samples=2, epochs=1, out=out, settings=small)

    (study,) = [p for p in workdir.iterdir() if p.is_dir() and p.name.startswith("demo-")]
    best = study / "best.yaml"
    cfg = load_config(best)  # what `mssd train best.yaml` loads, unchanged
    assert cfg.train.epochs == 200 and cfg.data.img_size == CPU_DEMO.img_size
    assert len(tracking.study_trials(tracking.default_tracking_uri(workdir), study.name)) == 2
    assert (study / "report" / "learning_curves.png").stat().st_size > 0
    printed = out.getvalue()
    assert f"best config: {best}" in printed and f"mssd ui {study.name} --workdir {workdir}" in printed
    assert "best trial t0" in printed and "AP50" in printed
