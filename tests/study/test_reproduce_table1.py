"""`mssd reproduce 1`: the paper's Table 1 runs every YOLO version it names, each family with its own recipe."""

from __future__ import annotations

import pytest

from study.paper_tables import load_paper_table
from study.reproduce import BUDGETS, _base_config, _detector_plan

TABLE1_SMALL = [("yolov3", "yolov3"), ("yolov4_csp", "yolov4_csp"), ("yolov5n", "yolov5s"), ("yolov6n", "yolov6s"),
                ("yolov7_tiny", "yolov7")]


@pytest.mark.parametrize("budget", ["smoke", "cpu"])
def test_table1_trains_each_yolo_version_at_its_smallest_size_on_small_budgets(budget):
    assert _detector_plan(load_paper_table(1), BUDGETS[budget], None) == TABLE1_SMALL


@pytest.mark.parametrize("budget", ["gpu", "paper"])
def test_table1_trains_the_papers_detectors_on_full_budgets(budget):
    table = load_paper_table(1)
    assert _detector_plan(table, BUDGETS[budget], None) == [(d, d) for d in table.detectors]
    for detector in table.detectors:  # each family's own config holds its recipe
        assert _base_config(BUDGETS[budget], detector, [], "runs").detector.name == detector


@pytest.mark.slow
def test_reproduce_1_runs_every_row_at_the_smoke_budget(tmp_path):
    from study import tracking
    from study.cli import main

    workdir = tmp_path / "runs"
    assert main(["reproduce", "1", "--budget", "smoke", "--workdir", str(workdir), "--name", "t1"]) == 0
    md = (workdir / "t1" / "reproduce" / "table1.md").read_text()
    for trained, _ in TABLE1_SMALL:
        rows = [line for line in md.split("Our paired deltas")[0].splitlines() if line.startswith(f"| {trained} |")]
        assert [r.split("|")[2].strip() for r in rows] == ["baseline", "ours"], trained
    trials = tracking.study_trials(tracking.default_tracking_uri(workdir), "t1")
    assert len(trials) == 10 and {t.status for t in trials} == {"completed"}
