"""`mssd compare` (paper Table 4): planning and validation, the table from MLflow records."""

from __future__ import annotations

import csv
import math

import pytest
from study_helpers import REPO

from detectors.errors import ConfigError
from study.compare import (
    METHODS,
    CompareOptions,
    backbone_detectors,
    compare_space,
    plan_compare,
    split_names,
)
from study.compare_table import MethodCost, format_markdown, summarise, write_outputs
from study.search_space import load_search_space
from study.tracking import TrialRecord

PAIRS = [(m.name, m.value) for m in METHODS.values()]


def record(method: str, detector: str, seed: int, status: str = "completed", mAP: float = 0.3,
           step: float = 2.0) -> TrialRecord:
    params = {"losses.method": method, "detector.name": detector, "seed": str(seed)}
    return TrialRecord(run_id=f"{method}{detector}{seed}", trial_id="", name="", status=status, params=params,
                       metrics={"map": mAP, "ap50": 2 * mAP, "time/train_steps": step}, searched=[], artifact_uri="")


@pytest.mark.parametrize(("text", "message"), [
    ("baseline,foo", r"^--methods: unknown name 'foo', expected some of baseline, kd"),
    ("baseline,,kd", r"^--methods: expected a comma-separated list"),
    ("kd,baseline,kd", r"^--methods: 'kd' is named twice$"),
])
def test_bad_method_lists_are_one_line_naming_the_flag(text, message):
    with pytest.raises(ConfigError, match=message) as info:
        split_names(text, "--methods", tuple(METHODS))
    assert "\n" not in str(info.value)


def test_names_keep_the_order_given():
    assert split_names(" mssd, baseline ", "--methods", tuple(METHODS)) == ["mssd", "baseline"]


def test_backbones_map_to_detectors_and_a_missing_one_is_refused_in_one_line(monkeypatch):
    from detectors import zoo

    monkeypatch.setitem(zoo.DETECTORS, "yolov5s_convnext", zoo.DETECTORS["yolov5s"])
    assert backbone_detectors(["cspdarknet", "convnext"], "yolov5n") == [
        ("cspdarknet", "yolov5n"), ("convnext", "yolov5s_convnext")]
    with pytest.raises(ConfigError, match=r"^--backbones cspdarknet: the config's detector.name is 'yolox_s'"):
        backbone_detectors(["cspdarknet"], "yolox_s")
    monkeypatch.delitem(zoo.DETECTORS, "yolov5s_convnext")
    with pytest.raises(ConfigError, match=r"^--backbones convnext: detector yolov5s_convnext is not available"):
        backbone_detectors(["convnext"], "yolov5s")


def test_generated_space_is_methods_times_detectors_times_seeds(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(compare_space([METHODS["baseline"], METHODS["mssd"], METHODS["kd"]], ["yolov5n", "yolov5s"], [3, 4]))
    space = load_search_space(path)
    assert space.is_grid and space.grid_size() == 3 * 2 * 2
    values = {p.key: list(p.values) for p in space.params}
    assert values == {"losses.method": ["none", "mssd", "kd"], "detector.name": ["yolov5n", "yolov5s"], "seed": [3, 4]}


def test_summary_groups_by_backbone_and_method_with_step_time_ratios_against_the_baseline():
    records = [
        record("none", "yolov5n", 0, mAP=0.30, step=2.0), record("none", "yolov5n", 1, mAP=0.40, step=2.0),
        record("kd", "yolov5n", 0, mAP=0.50, step=3.0), record("kd", "yolov5n", 1, status="nonfinite", mAP=0.9),
        record("none", "yolov5s_convnext", 0, mAP=0.6, step=4.0), record("mssd", "yolov5s_convnext", 0, step=5.0),
    ]
    costs = {("cspdarknet", "kd"): MethodCost(1000, 0.5, "yolov5s", 7_000_000, 2.0)}
    rows = summarise(records, [PAIRS[0], PAIRS[1], PAIRS[5]], [("cspdarknet", "yolov5n"), ("convnext", "yolov5s_convnext")],
                     costs)
    by = {(r.backbone, r.method): r for r in rows}
    assert [(r.backbone, r.method) for r in rows] == [
        ("cspdarknet", "baseline"), ("cspdarknet", "kd"), ("cspdarknet", "mssd"),
        ("convnext", "baseline"), ("convnext", "kd"), ("convnext", "mssd")]
    base = by[("cspdarknet", "baseline")]
    assert base.metrics["map"] == (pytest.approx(0.35), pytest.approx(math.sqrt(0.005)))  # sample std
    kd = by[("cspdarknet", "kd")]
    assert (kd.runs, kd.failed) == (1, 1) and kd.metrics["map"] == (pytest.approx(0.5), 0.0)
    assert kd.step_time_ratio == pytest.approx(1.5) and base.step_time_ratio == pytest.approx(1.0)
    assert kd.extra_gflops == pytest.approx(2.5) and kd.cost.training_params == 1000
    assert by[("convnext", "mssd")].step_time_ratio == pytest.approx(1.25)  # its own backbone's baseline
    assert by[("convnext", "kd")].runs == 0 and math.isnan(by[("convnext", "kd")].metrics["map"][0])
    # Without a baseline there is nothing to take a ratio against.
    alone = summarise(records, [PAIRS[1]], [("cspdarknet", "yolov5n")])
    assert math.isnan(alone[0].step_time_ratio)


def test_outputs_are_markdown_csv_and_a_png(tmp_path):
    records = [record(v, "yolov5n", s, mAP=0.1 * (i + 1) + 0.01 * s, step=1.0 + i) for i, (_, v) in
               enumerate(PAIRS[:2]) for s in (0, 1)]
    costs = {("cspdarknet", "kd"): MethodCost(2_500, 0.004, "yolov5s", 7_000_000, 1.25)}
    rows = summarise(records, PAIRS[:2], [("cspdarknet", "yolov5n")], costs)
    md, csv_path, png = write_outputs(rows, tmp_path / "out", ["**title**"])
    text = md.read_text()
    assert text.startswith("**title**\n")
    assert "| cspdarknet | yolov5n | baseline | N/A | 2 | 10.50 ± 0.71 | 21.00 ± 1.41 | baseline | 0.000 | 0.0000 | 1.00 |" in text
    # kd is 10 points above the baseline on both seeds: a zero-width interval at +10, beyond seed noise.
    assert ("| cspdarknet | yolov5n | kd | yolov5s | 2 | 20.50 ± 0.71 | 41.00 ± 1.41 | +10.00 [+10.00, +10.00] * | "
            "0.003 | 1.2540 (teacher 1.2500) | 2.00 |") in text
    assert "| cspdarknet | kd | mAP | 2 | +10.00 | [+10.00, +10.00] | <0.001 | * |" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["baseline", "kd"]
    assert float(table[1]["map_mean"]) == pytest.approx(0.205) and int(table[1]["training_params"]) == 2500
    assert table[1]["teacher"] == "yolov5s" and float(table[1]["step_time_ratio"]) == pytest.approx(2.0)
    assert float(table[0]["teacher_gflops"]) == 0.0
    assert table[1]["map_delta_n"] == "2" and float(table[1]["map_delta_mean"]) == pytest.approx(0.1)


def test_a_method_without_runs_reads_not_available():
    rows = summarise([record("none", "yolov5n", 0)], PAIRS[:2], [("cspdarknet", "yolov5n")])
    assert "| cspdarknet | yolov5n | kd | N/A | 0 | n/a | n/a | n/a |" in format_markdown(rows)


def test_deltas_pair_each_method_with_its_own_backbones_baseline_on_the_same_seed():
    records = [record("none", "yolov5n", 0, mAP=0.30), record("none", "yolov5n", 1, mAP=0.40),
               record("kd", "yolov5n", 0, mAP=0.31), record("kd", "yolov5n", 1, mAP=0.43),
               record("kd", "yolov5n", 2, mAP=0.99),  # no baseline run on seed 2: not paired
               record("none", "yolov5s_convnext", 0, mAP=0.50), record("kd", "yolov5s_convnext", 0, mAP=0.45)]
    rows = {(r.backbone, r.method): r for r in summarise(
        records, PAIRS[:2], [("cspdarknet", "yolov5n"), ("convnext", "yolov5s_convnext")])}
    kd = rows[("cspdarknet", "kd")].deltas["map"]
    assert (kd.n, kd.mean) == (2, pytest.approx(0.02))  # seeds 0 and 1: +1 and +3 points
    convnext = rows[("convnext", "kd")].deltas["map"]
    assert (convnext.n, convnext.mean, convnext.ci_low) == (1, pytest.approx(-0.05), None)
    table = format_markdown(list(rows.values()))
    assert "| -5.00 (n = 1) |" in table  # one pair: no interval, said in words
    # Without a baseline in the table there is nothing to pair with.
    alone = summarise(records, [PAIRS[1]], [("cspdarknet", "yolov5n")])
    assert alone[0].deltas["map"].n == 0 and "n/a (no baseline)" in format_markdown(alone)


def _options(tmp_path, config, **kwargs) -> CompareOptions:
    return CompareOptions(config=str(config), workdir=str(tmp_path / "runs"), **kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"seeds": 0}, r"^--seeds: expected at least 1, got 0$"),
    ({"methods": "baseline,mssd", "teacher_weights": "t.pt"}, r"^--teacher-weights: none of the methods baseline, mssd"),
    ({"methods": "baseline,kd", "teacher_weights": "missing.pt"}, r"^--teacher-weights missing.pt: no such file$"),
    ({"name": "a b"}, r"^--name 'a b': expected letters"),
    ({"overrides": ["losses.method=kdd"]}, r"losses.method"),
])
def test_a_refused_comparison_writes_nothing(tmp_path, kwargs, message):
    config = REPO / "configs" / "smoke.yaml"
    with pytest.raises(ConfigError, match=message) as info:
        plan_compare(_options(tmp_path, config, **kwargs))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "runs").exists()


def test_an_existing_comparison_folder_is_refused(tmp_path):
    (tmp_path / "runs" / "cmp").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"^--name: .*cmp already exists; pass another --name$"):
        plan_compare(_options(tmp_path, REPO / "configs" / "smoke.yaml", name="cmp"))
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["cmp"]


def test_tiny_maps_of_a_cpu_budget_print_every_cell_with_four_decimals():
    records = [record("none", "yolov5n", 0, mAP=0.000019), record("kd", "yolov5n", 0, mAP=0.000027)]
    table = format_markdown(summarise(records, PAIRS[:2], [("cspdarknet", "yolov5n")]))
    assert "| baseline | N/A | 1 | 0.0019 (n = 1) | 0.0038 (n = 1) | baseline |" in table
    assert "| kd | N/A | 1 | 0.0027 (n = 1) | 0.0054 (n = 1) | +0.0008 (n = 1) |" in table


def test_one_table_prints_its_deltas_with_one_number_of_decimals():
    records = [record("none", "yolov5n", 0, mAP=0.30), record("kd", "yolov5n", 0, mAP=0.300008),
               record("lgd", "yolov5n", 0, mAP=0.35)]
    table = format_markdown(summarise(records, [PAIRS[0], PAIRS[1], PAIRS[4]], [("cspdarknet", "yolov5n")]))
    assert "| +0.00 (n = 1) |" in table and "| +5.00 (n = 1) |" in table  # not +0.0008 beside +5.00
    assert "0.0008" not in table

