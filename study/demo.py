"""``mssd demo`` (what ``make demo`` runs): a small real study on the embedded default, end to end.

No services: local Ray, MLflow in ``<workdir>/mlflow.db``, a synthetic KITTI-like set generated into
``data/demo`` (``data/demo-gpu`` on a GPU) when missing. Steps: an Optuna/ASHA sweep of
``search_spaces/demo.yaml`` over YOLOv5n, export of the best config (``train.epochs = 200``, ready for
a full run), the report, the best trial's AP50, and where to look next.

Two settings (``demo_settings``):

- **CPU** (no CUDA): sized so that a 2-core machine shows a detector that learns within about 10 minutes
  including data generation: 4 trials of 24 epochs x 40 steps of 8 images at 192 px, 2 at a time,
  one SGD step per batch (no accumulation to YOLOv5's nominal 64 images: 8x more steps) at lr0 0.03,
  on 4:3 source images (256 x 192), so the letterboxed input is all picture and the objects keep their
  size (at KITTI's 3.3:1 two thirds of a square input is padding). What was measured is in
  benchmarks/README.md ("Demo").
- **GPU** (CUDA available): the paper's input size, 640 px, on KITTI-sized images (1242 x 375), 8 trials
  of 30 epochs at batch 16 with YOLOv5's nominal batch, two trials sharing the GPU.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

REPO = Path(__file__).resolve().parents[1]
DEMO_SPACE = REPO / "search_spaces" / "demo.yaml"


@dataclass(frozen=True)
class DemoSettings:
    device: str  # cpu | cuda
    img_size: int
    data_root: str
    source_width: int
    source_height: int
    images: int
    val_fraction: float
    batch_size: int
    steps_per_epoch: int | None  # None: whole epochs
    nominal_batch: int | None  # None: one optimizer step per batch
    lr0: float
    epochs: int
    samples: int
    max_concurrent: int
    cpus_per_trial: float
    gpus_per_trial: float
    grace_period: int

    def overrides(self) -> list[str]:
        steps = "null" if self.steps_per_epoch is None else str(self.steps_per_epoch)
        nominal = "null" if self.nominal_batch is None else str(self.nominal_batch)
        return [
            f"data.root={self.data_root}", f"data.img_size={self.img_size}",
            f"data.synthetic.images={self.images}", f"data.synthetic.width={self.source_width}",
            f"data.synthetic.height={self.source_height}", f"data.synthetic.val_fraction={self.val_fraction}",
            f"train.batch_size={self.batch_size}", f"train.max_steps_per_epoch={steps}",
            f"train.nominal_batch={nominal}", f"train.lr0={self.lr0}", "train.warmup_epochs=1",
            f"train.epochs={self.epochs}", f"train.device={self.device}", "eval.max_det=50",
            "tracking.experiment=demo",
        ]

    def describe(self) -> str:
        where = "the GPU" if self.device == "cuda" else f"the CPU, {self.max_concurrent} at a time"
        return (f"{self.samples} trials of YOLOv5n at {self.img_size} px, {self.epochs} epochs each, ASHA, "
                f"on {where}, synthetic {self.source_width}x{self.source_height} images")


CPU_DEMO = DemoSettings(
    device="cpu", img_size=192, data_root="data/demo", source_width=256, source_height=192, images=400,
    val_fraction=0.15, batch_size=8, steps_per_epoch=40, nominal_batch=None, lr0=0.03, epochs=24, samples=4,
    max_concurrent=2, cpus_per_trial=1.0, gpus_per_trial=0.0, grace_period=6)
GPU_DEMO = DemoSettings(
    device="cuda", img_size=640, data_root="data/demo-gpu", source_width=1242, source_height=375, images=2000,
    val_fraction=0.2, batch_size=16, steps_per_epoch=None, nominal_batch=64, lr0=0.01, epochs=30, samples=8,
    max_concurrent=2, cpus_per_trial=1.0, gpus_per_trial=0.5, grace_period=5)


def demo_settings(cuda_available: bool | None = None, cpu_count: int | None = None) -> DemoSettings:
    """The GPU demo where CUDA is available, else the CPU one (``cuda_available`` None: ask torch)."""
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        return CPU_DEMO
    cpus = cpu_count if cpu_count is not None else os.cpu_count() or 2
    # Two trials share the GPU; each gets half the cores for its loader workers.
    return replace(GPU_DEMO, cpus_per_trial=float(max(1, cpus // GPU_DEMO.max_concurrent)))


def demo_options(workdir: str | Path, settings: DemoSettings, *, name: str | None = None):
    from study.tune import StudyOptions

    return StudyOptions(
        config=str(REPO / "configs" / "smoke.yaml"), space=str(DEMO_SPACE), overrides=settings.overrides(),
        name=name or f"demo-{time.strftime('%Y%m%d-%H%M%S')}", workdir=str(workdir), samples=settings.samples,
        max_concurrent=settings.max_concurrent, cpus_per_trial=settings.cpus_per_trial,
        gpus_per_trial=settings.gpus_per_trial, grace_period=min(settings.grace_period, settings.epochs),
        reduction_factor=2.0)


def run_demo(workdir: str | Path, *, samples: int | None = None, epochs: int | None = None, out: TextIO,
             settings: DemoSettings | None = None) -> DemoSettings:
    """Sweep, export, report; ``samples``/``epochs`` override the settings' (a longer or shorter demo)."""
    from study import tracking
    from study.export import ExportError, export_best_configs, rank_trials
    from study.report import write_report
    from study.study_files import load_study_meta, study_tracking_uri
    from study.tune import run_study

    settings = settings or demo_settings()
    settings = replace(settings, samples=samples or settings.samples, epochs=epochs or settings.epochs)
    options = demo_options(workdir, settings)
    print(f"mssd demo: {settings.describe()}", file=out, flush=True)
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
    for note in report.notes:
        print(f"note: {note}", file=out)
    uri = study_tracking_uri(workdir, load_study_meta(workdir, summary.name))
    ranked = rank_trials(tracking.study_trials(uri, summary.name), "map", "max")
    if ranked:
        top = ranked[0]
        print(f"best trial {top.name}: AP50 {top.metrics.get('ap50', float('nan')):.3f}, "
              f"mAP {top.metrics.get('map', float('nan')):.3f} after {int(top.metrics.get('epoch', 0))} epochs",
              file=out)
    print(f"plots: {report.folder}", file=out)
    print(f"browse every trial: mssd ui {summary.name} --workdir {workdir}   (it prints the study's page)", file=out)
    return settings
