"""`mssd report`'s table and plots, from trial records as MLflow returns them (no Ray, no store).

Not pixel tests: each plot function says what it drew (series and their sizes, each axis' tick
labels, the colour bar), and the files must exist at a readable size.
"""

from __future__ import annotations

import struct

import pytest
from study_helpers import write_space

SPACE = """params:
  losses.mssd.gamma: {distribution: loguniform, low: 1.0e-3, high: 1.0}
  losses.mad.sigma2: {distribution: uniform, low: 0.5, high: 8.0}
"""


def _record(i: int, status: str, value: float | None, gamma: float, sigma2: float, epochs: int):
    from study.tracking import TrialRecord

    metrics = {"epoch": float(epochs)}
    if value is not None:
        metrics["map"] = value
    return TrialRecord(run_id=f"run{i}", trial_id=f"t{i:02d}", name=f"t{i:02d} gamma={gamma:g}", status=status,
                       params={"losses.mssd.gamma": repr(gamma), "losses.mad.sigma2": repr(sigma2)},
                       metrics=metrics, searched=["losses.mssd.gamma", "losses.mad.sigma2"], artifact_uri="")


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.fixture
def space(tmp_path):
    from study.search_space import load_search_space

    return load_search_space(write_space(tmp_path, SPACE))


def _history(run_id: str) -> list[tuple[int, float]]:
    return [(1, 0.1), (2, 0.2), (3, 0.25)]


def test_the_table_lists_every_trial_with_its_status_ranked_ones_first(space):
    from study.report import trials_table

    records = [_record(0, "completed", 0.30, 0.01, 2.0, 3), _record(1, "early_stopped", 0.05, 0.5, 1.0, 1),
               _record(2, "error", None, 0.002, 4.0, 0), _record(3, "completed", 0.40, 0.1, 6.0, 3),
               _record(4, "nonfinite", float("nan"), 0.9, 7.0, 1), _record(5, "running", 0.01, 0.2, 3.0, 1)]
    lines = trials_table(records, "map", "max", space.keys).splitlines()
    body = [line.split() for line in lines[2:]]
    assert len(body) == 6  # every trial, not only the ranked ones
    assert [row[0] for row in body] == ["1", "2", "-", "-", "-", "-"]
    assert body[0][1:5] == ["t03", "completed", "0.4000", "3"] and body[0][5:] == ["0.1", "6"]
    statuses = [row[2] for row in body]
    assert sorted(statuses[2:]) == ["early_stopped", "error", "nonfinite", "running"]
    error_row = next(row for row in body if row[2] == "error")
    assert error_row[3] == "-"  # no metric: a dash, not an empty cell
    limited = trials_table(records, "map", "max", space.keys, top=2)
    assert "4 more trials: --top 6 lists them all" in limited


def test_a_study_without_a_completed_trial_says_so_and_draws_nothing(space, tmp_path):
    from study.report import write_plots

    records = [_record(0, "error", None, 0.01, 2.0, 0), _record(1, "nonfinite", float("nan"), 0.5, 1.0, 1),
               _record(2, "early_stopped", 0.01, 0.1, 3.0, 1)]
    (tmp_path / "parallel_coordinates.png").write_bytes(b"stale")  # from an earlier report
    drawn, notes = write_plots(tmp_path, records, space, "map", "max", _history)
    assert drawn == [] and not list(tmp_path.glob("*.png"))
    assert notes == ["no trial completed (1 early_stopped, 1 error, 1 nonfinite), so there is nothing to plot"]


def test_metric_vs_parameter_keeps_completed_and_early_stopped_trials_apart(space, tmp_path):
    from study.report import write_plots

    records = [_record(0, "completed", 0.30, 0.01, 2.0, 3), _record(1, "early_stopped", 0.05, 0.5, 1.0, 1),
               _record(2, "early_stopped", 0.08, 0.05, 5.0, 2), _record(3, "completed", 0.40, 0.1, 6.0, 3),
               _record(4, "error", None, 0.3, 3.0, 0)]
    drawn, notes = write_plots(tmp_path, records, space, "map", "max", _history)
    by_name = {p.path.name: p for p in drawn}
    gamma = by_name["metric_vs_losses_mssd_gamma.png"]
    assert gamma.series == {"completed (2, epoch 3)": 2, "early-stopped (2, epochs 1-2)": 2}
    width, height = _png_size(gamma.path)
    assert width >= 800 and height >= 500  # readable without zooming
    curves = by_name["learning_curves.png"]
    assert list(curves.series) == ["t03 gamma=0.1", "t00 gamma=0.01"]  # the ranked trials, best first


def test_parallel_coordinates_label_each_axis_with_real_values_and_have_a_colour_bar(space, tmp_path):
    from study.report import write_plots

    records = [_record(0, "completed", 0.30, 0.001, 2.0, 3), _record(1, "completed", 0.10, 1.0, 8.0, 3),
               _record(2, "early_stopped", 0.05, 0.01, 0.5, 1)]
    drawn, _ = write_plots(tmp_path, records, space, "map", "max", _history)
    plot = next(p for p in drawn if p.path.name == "parallel_coordinates.png")
    assert plot.colorbar == "map"
    # log axis: real values 0.001 .. 1 (evenly spaced in log10), not the scaled 0 .. 1
    assert plot.axes["losses.mssd.gamma"] == ["0.001", "0.005623", "0.03162", "0.1778", "1"]
    assert plot.axes["losses.mad.sigma2"][0] == "0.5" and plot.axes["losses.mad.sigma2"][-1] == "8"
    assert plot.axes["map"][0] == "0.05" and plot.axes["map"][-1] == "0.3"
    assert plot.series == {"completed": 2, "early-stopped (grey, dashed)": 1}
    assert _png_size(plot.path)[0] >= 800


@pytest.mark.slow  # fANOVA's forest: ~20 s on the shared 2-core box
def test_importance_needs_enough_completed_trials_and_otherwise_says_so(space, tmp_path):
    from study.report import importance_minimum, write_plots

    assert importance_minimum(space) == 4
    few = [_record(i, "completed", 0.1 + 0.05 * i, 10 ** -i, 1.0 + i, 3) for i in range(3)]
    few += [_record(9, "early_stopped", 0.01, 0.3, 2.0, 1)]  # early-stopped trials do not count
    drawn, notes = write_plots(tmp_path, few, space, "map", "max", _history)
    assert "param_importance.png" not in {p.path.name for p in drawn}
    assert notes == ["parameter importance skipped: 3 trials completed; fANOVA needs at least 4 "
                     "(2 per searched parameter, at least 4) to rank 2 parameters"]

    enough = [_record(i, "completed", 0.1 * i, [0.001, 0.01, 0.1, 1.0, 0.3, 0.03][i], [1, 7, 2, 6, 3, 5][i], 3)
              for i in range(6)]
    drawn, notes = write_plots(tmp_path, enough, space, "map", "max", _history)
    plot = next(p for p in drawn if p.path.name == "param_importance.png")
    assert set(plot.series) == {"losses.mssd.gamma", "losses.mad.sigma2"} and notes == []
