"""`mssd demo` (what `make demo` runs), end to end at the smallest budget: sweep, export, report."""

from __future__ import annotations

import io

import pytest


@pytest.mark.slow
def test_demo_sweeps_then_exports_a_loadable_best_config_and_writes_the_report(ray_address, tmp_path, monkeypatch):
    from study import tracking
    from study.config import load_config
    from study.demo import DEMO_IMG_SIZE, run_demo

    monkeypatch.chdir(tmp_path)  # the demo generates its data set under ./data/demo
    workdir = tmp_path / "runs"
    out = io.StringIO()
    run_demo(workdir, samples=2, epochs=1, out=out)

    (study,) = [p for p in workdir.iterdir() if p.is_dir() and p.name.startswith("demo-")]
    best = study / "best.yaml"
    cfg = load_config(best)  # what `mssd train best.yaml` loads, unchanged
    assert cfg.train.epochs == 200 and cfg.data.img_size == DEMO_IMG_SIZE
    assert len(tracking.study_trials(tracking.default_tracking_uri(workdir), study.name)) == 2
    assert (study / "report" / "learning_curves.png").stat().st_size > 0
    printed = out.getvalue()
    assert f"best config: {best}" in printed and f"mssd ui --workdir {workdir}" in printed
