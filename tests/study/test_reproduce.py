"""`mssd reproduce TABLE`: the paper's tables as validated data, and our runs beside them."""

from __future__ import annotations

import csv
import math

import pytest
from study_helpers import SPACES

from detectors.errors import ConfigError
from study.paper_tables import METRICS, available_tables, load_paper_table
from study.reproduce import format_markdown, summarise, write_outputs
from study.search_space import load_search_space
from study.tracking import TrialRecord


def test_every_paper_table_loads_with_the_papers_numbers():
    assert {2, 3, 5, 6, 7} <= set(available_tables())
    t2, t5, t6 = load_paper_table(2), load_paper_table(5), load_paper_table(6)
    # Spot checks against the paper's text (Tables 2, 5, 6).
    n = {r.name: r.paper for r in t2.rows_for("yolov5n")}
    assert n["baseline"]["map"] == 29.4 and n["+MAD +MSSD"] == {
        "ap50": 59.4, "ap75": 23.9, "aps": 22.5, "apm": 32.4, "apl": 48.8, "map": 33.2}
    assert [r.settings.get("losses.mssd.gamma") for r in t5.rows] == [
        None, 1.0, 0.1, 0.001, 0.01, 0.05]
    assert [r.paper["map"] for r in t5.rows] == [36.6, 37.3, 37.7, 36.6, 37.9, 38.4]
    assert [r.paper["map"] for r in t6.rows] == [36.6, 36.9, 37.4, 37.6, 37.4, 36.7]
    assert t6.metrics == ("map",) and t2.metrics == tuple(METRICS)
    for number in available_tables():
        table = load_paper_table(number)
        for detector in table.detectors:
            assert sum(r.baseline for r in table.rows_for(detector)) == 1


@pytest.mark.parametrize(("edit", "message"), [
    (("metrics: [aps, apm, apl, map]", "metrics: [aps, apx]"), r"table5.yaml:\d+: metrics: expected"),
    (("paper: {aps: 18.2, apm: 36.9, apl: 53.5, map: 36.6}", "paper: {aps: 18.2, apm: 36.9, apl: 53.5, map: 366}"),
     r":\d+: rows\[0\]\.paper\.map: expected a percentage"),
    (("losses.mssd.gamma: 1.0}", "losses.mssd.gama: 1.0}"), r":\d+: rows\[1\]\.set\.losses\.mssd\.gama: not a config"),
    (("losses.mssd.gamma: 0.1}", "losses.mssd.gamma: -0.1}"), r"rows\[2\]\.set\.losses\.mssd\.gamma: value -0.1"),
    (("baseline: true,", "baseline: false,"), r"exactly one 'baseline: true' row for yolov5s"),
    (("default_detector: yolov5s", "default_detector: yolov5m"), r"default_detector: 'yolov5m' has no rows"),
    (("table: 5", "table: 5\ncolumns: 3"), r":\d+: columns: unknown key"),
])
def test_a_bad_paper_table_is_one_line_naming_file_line_and_key(tmp_path, edit, message):
    text = load_paper_table(5).path.read_text()
    old, new = edit
    assert old in text
    path = tmp_path / "table5.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=message) as info:
        load_paper_table(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_table_whose_detectors_are_missing_is_refused_in_one_line_and_writes_nothing(tmp_path, capsys):
    from study.cli import main
    from study.reproduce import BUDGETS, _detector_plan

    path = tmp_path / "table7.yaml"
    path.write_text(load_paper_table(7).path.read_text().replace("fcos_resnet50_fpn", "fcos_resnet101_fpn"))
    with pytest.raises(ConfigError, match=r"table 7 needs detectors? fcos_resnet101_fpn, not available yet") as info:
        _detector_plan(load_paper_table(path), BUDGETS["smoke"], None)
    assert "\n" not in str(info.value)
    workdir = tmp_path / "runs"
    assert main(["reproduce", "4", "--workdir", str(workdir)]) == 2
    assert "no paper table 4" in capsys.readouterr().err and not workdir.exists()


def test_tables_3_and_7_train_every_family_small_on_a_cpu_budget_and_at_size_on_a_gpu():
    from study.reproduce import BUDGETS, _base_config, _detector_plan

    assert _detector_plan(load_paper_table(7), BUDGETS["cpu"], None) == [
        ("yolov5n", "yolov5s"), ("yolox_nano", "yolox_s"), ("fcos_tiny", "fcos_resnet50_fpn"),
        ("retinanet_tiny", "retinanet_resnet50_fpn"), ("fasterrcnn_tiny", "fasterrcnn_resnet50_fpn"),
        ("cascadercnn_tiny", "cascadercnn_resnet50_fpn")]
    assert [d for d, _ in _detector_plan(load_paper_table(3), BUDGETS["gpu"], None)] == [
        "yolox_s", "fcos_resnet50_fpn"]
    # The smoke budget's 64 px rounds up to each family's stride multiple; each family keeps its own recipe.
    sizes = {d: _base_config(BUDGETS["smoke"], d, [], "runs").data.img_size
             for d in ("yolov5n", "fcos_tiny", "fasterrcnn_tiny")}
    assert sizes == {"yolov5n": 64, "fcos_tiny": 128, "fasterrcnn_tiny": 64}
    assert _base_config(BUDGETS["cpu"], "retinanet_tiny", [], "runs").data.img_size == 256


def test_budgets_pick_the_detector_and_the_papers_rows_to_compare_with():
    from study.reproduce import BUDGETS, _detector_plan

    assert _detector_plan(load_paper_table(2), BUDGETS["cpu"], None) == [("yolov5n", "yolov5n")]
    assert _detector_plan(load_paper_table(5), BUDGETS["smoke"], None) == [("yolov5n", "yolov5s")]
    assert _detector_plan(load_paper_table(2), BUDGETS["gpu"], None) == [("yolov5s", "yolov5s")]
    assert _detector_plan(load_paper_table(2), BUDGETS["gpu"], "yolov5m") == [("yolov5m", "yolov5m")]
    assert _detector_plan(load_paper_table(6), BUDGETS["paper"], "yolov5x") == [("yolov5x", "yolov5s")]


@pytest.mark.parametrize("budget", ["smoke", "cpu", "gpu", "paper"])
def test_each_family_trains_with_its_own_recipe_config(tmp_path, budget):
    from study.reproduce import BUDGETS, _base_config

    yolox = _base_config(BUDGETS[budget], "yolox_s", [], str(tmp_path))
    yolov5 = _base_config(BUDGETS[budget], "yolov5s", [], str(tmp_path))
    assert yolox.detector.name == "yolox_s" and yolov5.detector.name == "yolov5s"
    # YOLOX's recipe (SGD momentum 0.9, its own schedule), not YOLOv5's 0.937 and cosine.
    assert (yolox.train.momentum, yolox.train.schedule) == (0.9, "yolox_cosine")
    assert yolov5.train.momentum == 0.937 and yolov5.train.schedule == "cosine"


def record(trial_id: str, status: str = "completed", **metrics: float) -> TrialRecord:
    return TrialRecord(run_id=trial_id, trial_id=trial_id, name="", status=status, params={}, metrics=metrics,
                       searched=[], artifact_uri="")


def test_rows_are_read_back_with_means_stds_and_deltas_beside_the_papers(tmp_path):
    table = load_paper_table(6)
    ids = ["baseline", "mad-sigma2-0.5", "mad-sigma2-1", "mad-sigma2-2", "mad-sigma2-4", "mad-sigma2-8"]
    records = [record(f"yolov5n-{ids[0]}-seed0", map=0.10), record(f"yolov5n-{ids[0]}-seed1", map=0.20),
               record(f"yolov5n-{ids[3]}-seed0", map=0.30), record(f"yolov5n-{ids[3]}-seed1", status="nonfinite"),
               record(f"yolov5n-{ids[1]}-seed0", map=math.nan)]
    rows = summarise(table, [("yolov5n", "yolov5s")], records, [0, 1])
    assert [r.row.name for r in rows][:2] == ["baseline", "+MAD sigma2=0.5"]
    base, sigma2 = rows[0], rows[3]
    assert base.metrics["map"] == (pytest.approx(15.0), pytest.approx(math.sqrt(50)))
    assert (sigma2.runs, sigma2.failed, sigma2.metrics["map"]) == (1, 1, (pytest.approx(30.0), 0.0))
    assert math.isnan(rows[1].metrics["map"][0]) and rows[5].runs == 0
    text = format_markdown(table, rows, ["Ours: test", "Paper: test"])
    assert "| yolov5n | baseline | 2 | 15.00 ± 7.07 | baseline | 36.6 | +0.0 |" in text
    # sigma2=2 finished on seed 0 only: paired with the baseline's seed 0 (10 %), not its mean over both seeds.
    assert "| yolov5n | +MAD sigma2=2 | 1 (1 failed) | 30.00 (n = 1) | +20.00 (n = 1) | 37.6 | +1.0 |" in text
    assert "| yolov5n | +MAD sigma2=8 | 0 (2 failed) | n/a | n/a | 36.7 | +0.1 |" in text
    md, csv_path, png = write_outputs(table, rows, tmp_path / "reproduce", ["Ours: test", "Paper: test"], "smoke")
    assert md.name == "table6.md" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(csv_path) as f:
        table_rows = list(csv.DictReader(f))
    assert float(table_rows[3]["map_paper"]) == 37.6 and float(table_rows[0]["map_mean"]) == 15.0
    assert (table_rows[3]["map_delta_n"], float(table_rows[3]["map_delta_mean"])) == ("1", 20.0)


def test_rows_get_paired_deltas_with_95_percent_cis_and_a_mark_beyond_seed_noise():
    table = load_paper_table(2)
    ids = {r.name: r for r in table.rows_for("yolov5n")}
    from study.reproduce_table import trial_id

    def runs(row: str, values: list[float]) -> list[TrialRecord]:
        return [record(trial_id("yolov5n", row, s), **{m: v for m in table.metrics}) for s, v in enumerate(values)]

    names = list(ids)
    records = [*runs(names[0], [0.30, 0.32, 0.34]), *runs(names[1], [0.35, 0.38, 0.38]),
               *runs(names[2], [0.29, 0.35, 0.33])]
    rows = summarise(table, [("yolov5n", "yolov5n")], records, [0, 1, 2])
    text = format_markdown(table, rows, ["Ours: test"])
    # +5, +6, +4 points: mean 5, 95 % CI 5 -+ 4.302653 / sqrt(3), excludes 0.
    assert f"| yolov5n | {names[1]} | 3 | 37.00 ± 1.73 | +5.00 [+2.52, +7.48] * |" in text
    # -1, +3, -1 points: mean 0.33, sd 2.31, 0.33 -+ 4.302653 * 2.31 / sqrt(3): contains 0, no mark.
    assert f"| yolov5n | {names[2]} | 3 | 32.33 ± 3.06 | +0.33 [-5.40, +6.07] |" in text
    assert "`*`: the 95 % CI of the paired delta excludes 0" in text
    assert f"| yolov5n | {names[1]} | mAP | 3 | +5.00 | [+2.52, +7.48] | 0.013 | * |" in text


def test_the_heading_states_each_detectors_input_size_and_counts_in_words(tmp_path):
    from study.reproduce import BUDGETS, _base_config, _context, _detector_plan

    table, budget = load_paper_table(3), BUDGETS["smoke"]
    plan = _detector_plan(table, budget, None)
    bases = {trained: _base_config(budget, trained, [], str(tmp_path)) for trained, _ in plan}
    heading = _context(table, budget, plan, bases, [0], "abc")[0]
    # FCOS rounds the budget's 64 px up to its stride multiple, 128: the heading must not say 64 for it.
    assert "yolox_nano at 64 px, batch 4, 1 epoch of at most 1 step" in heading
    assert "fcos_tiny at 128 px, batch 4, 1 epoch of at most 1 step" in heading
    assert "1 epochs" not in heading and "1 steps" not in heading and "; seed 0;" in heading


def test_the_fidelity_search_space_covers_every_switch():
    space = load_search_space(SPACES / "fidelity.yaml")
    assert {"losses.scale", "losses.mssd.detach", "losses.mssd.channel_matching", "losses.mssd.normalise",
            "losses.mad.target", "losses.mad.coordinates", "losses.mad.mask_stride",
            "losses.warmup.zero_epochs"} <= set(space.keys)


@pytest.mark.slow
@pytest.mark.parametrize(("number", "rows"), [(2, 4), (5, 6), (6, 6)])
def test_reproduce_runs_the_table_at_the_smoke_budget_and_writes_it_beside_the_papers(tmp_path, capsys, number, rows):
    from study import tracking
    from study.cli import main

    workdir = tmp_path / "runs"
    assert main(["reproduce", str(number), "--budget", "smoke", "--workdir", str(workdir), "--name", "r"]) == 0
    table = load_paper_table(number)
    md = (workdir / "r" / "reproduce" / f"table{number}.md").read_text()
    assert md.startswith(f"# Paper Table {number} reproduced")
    assert "budget `smoke`" in md and "commit " in md and "yolov5n" in md
    # Table 2 has YOLOv5n rows; Tables 5 and 6 only YOLOv5s ones, and the table says so.
    compared = "yolov5n" if number == 2 else "yolov5s"
    assert ("Note: the paper's numbers are for yolov5s" in md) == (compared == "yolov5s")
    main_table = md.split("Our paired deltas")[0]  # the long delta table below repeats the row names
    lines = [line for line in main_table.splitlines() if line.startswith("| yolov5n |")]
    assert len(lines) == rows
    for line, row in zip(lines, table.rows_for(compared), strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1].startswith(row.name) and cells[2] == "1"
        assert cells[5] == f"{row.paper[table.metrics[0]]:.1f}"  # the paper's value beside ours
        assert cells[3] != "n/a"  # our run finished and was evaluated
    uri = tracking.default_tracking_uri(workdir)
    trials = tracking.study_trials(uri, "r")
    assert len(trials) == rows and {t.status for t in trials} == {"completed"}
    artifacts = tracking.download_artifact(uri, tracking.parent_run_id(uri, "r"), "reproduce", tmp_path / "dl")
    assert {p.name for p in artifacts.iterdir()} == {f"table{number}.{e}" for e in ("md", "csv", "png")} | {
        f"table{number}.yaml"}
    assert "wrote " in capsys.readouterr().out
