"""``mssd demo`` (what ``make demo`` runs): a small real study on the embedded default, end to end.

No services: local Ray, MLflow in ``<workdir>/mlflow.db``, the synthetic KITTI-like set generated
into ``data/demo`` when missing. Steps: an Optuna/ASHA sweep of ``search_spaces/mssd.yaml`` over
YOLOv5n at 192 px (8 trials, 5 epochs each, 2 at a time on 2 CPUs), export of the best config (with
``train.epochs = 200``, ready for a full run), the report, and where to look next.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TextIO

REPO = Path(__file__).resolve().parents[1]

# Sized for 2 CPU cores: most of each trial is training steps, not start-up or evaluation.
# 192 px, not less: the 416-px-wide source images shrink by half, so the small objects keep a few
# pixels (at 96 px they vanish and every trial's mAP stays ~0).
DEMO_IMG_SIZE = 192
DEMO_OVERRIDES = [
    "data.root=data/demo",
    f"data.img_size={DEMO_IMG_SIZE}",
    "data.synthetic.images=800",
    # Smaller source images than smoke.yaml's (same KITTI-like aspect): decoding them is the largest
    # cost outside the training steps on a CPU.
    "data.synthetic.width=416",
    "data.synthetic.height=128",
    "data.synthetic.val_fraction=0.05",
    "train.batch_size=8",
    "train.max_steps_per_epoch=90",
    "train.warmup_epochs=0.5",
    "eval.max_det=50",
    "tracking.experiment=demo",
]


def demo_options(workdir: str | Path, *, samples: int, epochs: int, name: str | None = None):
    from study.ray_backend import StudyOptions

    return StudyOptions(
        config=str(REPO / "configs" / "smoke.yaml"), space=str(REPO / "search_spaces" / "mssd.yaml"),
        overrides=[*DEMO_OVERRIDES, f"train.epochs={epochs}"], name=name or f"demo-{time.strftime('%Y%m%d-%H%M%S')}",
        workdir=str(workdir), samples=samples, max_concurrent=2, cpus_per_trial=1.0, grace_period=1,
        reduction_factor=2.0)


def run_demo(workdir: str | Path, *, samples: int = 8, epochs: int = 5, out: TextIO) -> None:
    from study.export import ExportError, export_best_configs
    from study.ray_backend import run_study
    from study.report import write_report

    options = demo_options(workdir, samples=samples, epochs=epochs)
    print(f"mssd demo: {samples} trials of YOLOv5n at {DEMO_IMG_SIZE} px, {epochs} epochs, ASHA, on the synthetic set",
          file=out)
    summary = run_study(options)
    print(summary.describe(workdir), file=out)
    best = Path(workdir) / summary.name / "best.yaml"
    try:
        exported = export_best_configs(workdir, summary.name, best, epochs=200)
        print(f"best config: {exported[0].path} (trial {exported[0].trial_id}); full run: mssd train {best}", file=out)
    except ExportError as exc:  # e.g. every trial failed: still write the report
        print(f"no config exported: {exc}", file=out)
    report = write_report(workdir, summary.name)
    print(report.table, file=out)
    print(f"plots: {report.folder}", file=out)
    print(f"browse every trial: mssd ui --workdir {workdir}   (then open http://127.0.0.1:5000)", file=out)
