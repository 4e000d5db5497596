"""The PNGs a reader opens (`mssd reproduce`, `ablate`, `compare`, `train`, `report`) read without tripping:
tick labels apart, titles inside the figure, legends off the bars, whole-number epochs, tick labels
above the lines they label, and the deltas' error bars drawn at their 95 % CIs.

Each plot is read back from the matplotlib figure the code saved (captured at ``savefig``), through
the positions of its artists on the rendered canvas; no pixel comparison.
"""

from __future__ import annotations

import itertools

import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from study.paper_tables import load_paper_table
from study.tracking import TrialRecord


@pytest.fixture
def saved(monkeypatch) -> list[Figure]:
    """Every figure the code under test saves, in order (still drawable after it is closed)."""
    figures: list[Figure] = []
    original = Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def _renderer(fig: Figure):
    """Lay the figure out and draw it on an Agg canvas (closing a figure takes its canvas away)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    return fig.canvas.get_renderer()


def _boxes(fig: Figure, texts) -> list:
    renderer = _renderer(fig)
    return [t.get_window_extent(renderer) for t in texts if t.get_visible() and t.get_text()]


def _overlapping(boxes) -> list:
    return [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]


def _bars(fig: Figure) -> list:
    renderer = _renderer(fig)
    return [p.get_window_extent(renderer) for ax in fig.axes for p in ax.patches
            if isinstance(p, Rectangle) and p.get_width() != 0 and p.get_height() != 0]


def _legend_boxes(fig: Figure) -> list:
    renderer = _renderer(fig)
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    return [legend.get_window_extent(renderer) for legend in legends]


def _reproduce_rows(number: int, seeds=(0, 1, 2)):
    from study.reproduce import summarise
    from study.reproduce_table import trial_id

    table = load_paper_table(number)
    plan = [(d, d) for d in table.detectors]
    records = [TrialRecord(trial_id(d, row.name, s), trial_id(d, row.name, s), "", "completed", {},
                           {m: 0.1 + 0.02 * i + 0.01 * s + 0.001 * j for j, m in enumerate(table.metrics)}, [], "")
               for d, _ in plan for i, row in enumerate(table.rows_for(d)) for s in seeds]
    return table, summarise(table, plan, records, list(seeds))


def test_reproduce_table3_row_labels_never_overlap_and_its_legend_hides_no_bar(saved, tmp_path):
    from study.reproduce import write_outputs

    table, rows = _reproduce_rows(3)
    write_outputs(table, rows, tmp_path, ["Ours: test"], "smoke")
    fig = saved[-1]
    for ax in fig.axes:
        labels = [*ax.get_xticklabels(), *ax.get_yticklabels()]
        assert _overlapping(_boxes(fig, labels)) == [], ax.get_title()
    bars = _bars(fig)
    assert bars and all(not legend.overlaps(bar) for legend in _legend_boxes(fig) for bar in bars)


def test_reproduce_table7_title_naming_six_detectors_fits_inside_the_figure(saved, tmp_path):
    from study.reproduce import write_outputs

    table, rows = _reproduce_rows(7)
    write_outputs(table, rows, tmp_path, ["Ours: test"], "smoke")
    fig = saved[-1]
    figure_box = fig.bbox
    titles = [fig._suptitle] if fig._suptitle is not None else [ax.title for ax in fig.axes]
    for box in _boxes(fig, titles):
        assert box.x0 >= figure_box.x0 and box.x1 <= figure_box.x1 and box.y1 <= figure_box.y1
    assert "cascadercnn_resnet50_fpn" in fig._suptitle.get_text()


def test_reproduce_delta_panels_draw_each_rows_paired_95_percent_interval(saved, tmp_path):
    from study.reproduce import write_outputs

    table, rows = _reproduce_rows(7, seeds=(0, 1, 2))
    # Make the seeds disagree, so that the interval has a width to draw.
    rows[1].deltas["map"] = _summary([1.0, 2.0, 4.0])
    write_outputs(table, rows, tmp_path, ["Ours: test"], "smoke")
    fig = saved[-1]
    delta_axes = [ax for ax in fig.axes if ax.get_title().startswith("ΔmAP")]
    assert len(delta_axes) == 1
    s = rows[1].deltas["map"]
    spans = [sorted(segment[:, 0]) for c in delta_axes[0].collections for segment in c.get_segments()]
    assert [pytest.approx(s.ci_low), pytest.approx(s.ci_high)] in spans


def _summary(deltas):
    from study.paired_stats import paired_summary

    return paired_summary(deltas)


def _ablation_rows():
    from study.ablation import METRICS, VARIANTS, summarise

    records = [TrialRecord(f"r{i}{s}", f"t{i}{s}", "", "completed",
                           {"losses.mssd.enabled": str(v.mssd), "losses.mad.enabled": str(v.mad), "seed": str(s)},
                           {k: 0.2 + 0.05 * i + 0.01 * s * i + 0.002 * j for j, (k, _) in enumerate(METRICS)}, [], "")
               for i, v in enumerate(VARIANTS) for s in (0, 1, 2)]
    return summarise(records)


def test_ablation_plot_keeps_its_legend_off_the_bars_and_draws_the_deltas_with_their_intervals(saved, tmp_path):
    from study.ablation import write_outputs

    rows = _ablation_rows()
    write_outputs(rows, tmp_path, title="Ablation tiny: yolov5n, synthetic data, 64 px, 1 epoch, seeds 0..2")
    fig = saved[-1]
    bars = _bars(fig)
    assert bars and all(not legend.overlaps(bar) for legend in _legend_boxes(fig) for bar in bars)
    s = rows[3].deltas["map"]
    spans = [sorted(segment[:, 1]) for ax in fig.axes for c in ax.collections for segment in c.get_segments()]
    assert [pytest.approx(100 * s.ci_low), pytest.approx(100 * s.ci_high)] in spans


def test_compare_plot_keeps_its_legend_off_the_bars_and_draws_the_deltas_with_their_intervals(saved, tmp_path):
    from study.compare import METHODS
    from study.compare_table import summarise, write_outputs

    pairs = [(m.name, m.value) for m in METHODS.values()]
    records = [TrialRecord(f"{v}{s}", "", "", "completed", {"losses.method": v, "detector.name": "yolov5n",
                                                             "seed": str(s)},
                           {"map": 0.2 + 0.01 * i * (s + 1), "ap50": 0.4, "time/train_steps": 1.0 + i}, [], "")
               for i, (_, v) in enumerate(pairs) for s in (0, 1, 2)]
    rows = summarise(records, pairs, [("cspdarknet", "yolov5n")])
    write_outputs(rows, tmp_path, ["**t**"], "compare-tiny: mAP and step time")
    fig = saved[-1]
    bars = _bars(fig)
    assert bars and all(not legend.overlaps(bar) for legend in _legend_boxes(fig) for bar in bars)
    s = next(r for r in rows if r.method == "mssd").deltas["map"]
    spans = [sorted(segment[:, 1]) for ax in fig.axes for c in ax.collections for segment in c.get_segments()]
    assert [pytest.approx(100 * s.ci_low), pytest.approx(100 * s.ci_high)] in spans


def _integer_ticks_around(ax, epoch: int) -> None:
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert epoch in ticks and hi - lo >= 1.0


def test_a_one_epoch_results_png_has_whole_number_epoch_ticks(saved, tmp_path):
    from study.run_results import write_results_png

    write_results_png(tmp_path / "results.png", [{"epoch": 1, "loss/total": 3.0, "loss/gt": 2.5, "map": 0.01,
                                                  "ap50": 0.03}])
    fig = saved[-1]
    for ax in fig.axes:
        if ax.get_visible() and ax.axison:
            _integer_ticks_around(ax, 1)


def test_a_one_epoch_learning_curve_has_whole_number_epoch_ticks(saved, tmp_path):
    from study.report_plots import learning_curves

    learning_curves(tmp_path / "curves.png", {"t01": [(1, 0.1)], "t02": [(1, 0.12)]}, "map")
    _integer_ticks_around(saved[-1].axes[0], 1)


def test_parallel_coordinates_tick_labels_sit_opaque_above_every_trial_line(saved, tmp_path):
    from study.report_plots import Axis, TrialPoint, parallel_coordinates

    axes = [Axis("losses.mssd.gamma", "log"), Axis("losses.method", "categorical", ("mssd", "none"))]
    points = [TrialPoint(f"t{i}", "completed" if i % 2 else "early_stopped", 3,
                         {"losses.mssd.gamma": 10 ** -i, "losses.method": ("mssd", "none")[i % 2]}, 0.1 * i)
              for i in range(1, 5)]
    parallel_coordinates(tmp_path / "pc.png", axes, points, "map")
    ax = saved[-1].axes[0]
    top_line = max(line.get_zorder() for line in ax.get_lines())
    labels = [t for t in ax.texts if t.get_text()]
    assert {t.get_text() for t in labels} >= {"mssd", "none"}
    for text in labels:
        patch = text.get_bbox_patch()
        assert text.get_zorder() > top_line, text.get_text()
        assert patch is not None and patch.get_facecolor()[3] == 1.0 and (patch.get_alpha() in (None, 1.0))



def test_an_ablation_where_nothing_was_learned_says_so_instead_of_drawing_empty_panels(saved, tmp_path):
    from study.ablation import METRICS, VARIANTS, summarise, write_outputs

    records = [TrialRecord(f"r{i}{s}", "", "", "completed",
                           {"losses.mssd.enabled": str(v.mssd), "losses.mad.enabled": str(v.mad), "seed": str(s)},
                           {k: 0.0 for k, _ in METRICS}, [], "") for i, v in enumerate(VARIANTS) for s in (0, 1)]
    write_outputs(summarise(records), tmp_path, title="smoke")
    notes = [t.get_text() for ax in saved[-1].axes for t in ax.texts]
    assert notes == ["every value is 0", "every paired delta is 0"]
