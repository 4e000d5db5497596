"""``results.csv`` and ``results.png`` in a run folder, as Ultralytics users expect: a ``fit`` callback.

- ``results.csv``: one row per epoch, every metric the trainer reported (CONTRIBUTING.md's names),
  columns ``epoch`` then the others in the order they first appear; rewritten after every epoch
  from ``trainer.history``, so a resumed run (history restored from its checkpoint) keeps its
  earlier epochs and a killed run still has every finished epoch.
- ``results.png``: the losses (one panel each) and the mAPs (``map``, ``ap50``, ``ap75``) per
  epoch, drawn when training ends, on whole-number epoch ticks.

``after_train`` then hands both paths to ``on_written`` (``mssd train`` logs them to its MLflow run).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

CSV_NAME = "results.csv"
PNG_NAME = "results.png"
MAP_KEYS = ("map", "ap50", "ap75")


def results_columns(history: Sequence[dict[str, Any]]) -> list[str]:
    columns = ["epoch"]
    for row in history:
        for key, value in row.items():
            if key not in columns and isinstance(value, (int, float)) and not isinstance(value, bool):
                columns.append(key)
    return columns


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else (str(int(value)) if value.is_integer() and abs(value) < 1e15
                                                  else f"{value:.6g}")
    return str(value)


def write_results_csv(path: Path, history: Sequence[dict[str, Any]]) -> Path:
    columns = results_columns(history)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in history:
            writer.writerow([_cell(row.get(c)) for c in columns])
    tmp.replace(path)  # a reader never sees half a file
    return path


def write_results_png(path: Path, history: Sequence[dict[str, Any]]) -> Any:
    """Draw ``results.png``; returns the (closed) figure, whose axes tests can read back."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from study.report_plots import integer_epochs

    columns = results_columns(history)
    losses = [c for c in columns if c.startswith("loss/")]
    maps = [c for c in MAP_KEYS if c in columns]
    panels = [[c] for c in losses] + ([maps] if maps else [])
    cols = min(4, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    for ax, keys in zip(axes.flat, panels, strict=False):
        for key in keys:
            values = [row.get(key, math.nan) for row in history]
            ax.plot(epochs, [math.nan if v is None else v for v in values], marker="o", markersize=3, label=key)
        ax.set_title(keys[0] if len(keys) == 1 else "mAP", fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        integer_epochs(ax, epochs)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return fig


class RunResults:
    """The ``fit`` callback: ``results.csv`` after every epoch, ``results.png`` at the end."""

    def __init__(self, run_dir: str | Path, on_written: Callable[[list[Path]], None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.on_written = on_written

    def after_epoch(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        write_results_csv(self.run_dir / CSV_NAME, trainer.history)

    def after_train(self, trainer: Any, metrics: dict[str, Any]) -> None:
        if not trainer.history:
            return
        paths = [write_results_csv(self.run_dir / CSV_NAME, trainer.history),
                 self.run_dir / PNG_NAME]
        write_results_png(paths[1], trainer.history)
        if self.on_written is not None:
            self.on_written(paths)
