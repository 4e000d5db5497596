"""``mssd train`` (one run, logged to MLflow) and ``mssd eval`` (metrics of a checkpoint).

``mssd train CONFIG [--set K=V] [--workdir DIR] [--resume RUN_DIR] [--weights FILE]`` trains in
``<workdir>/train/<config-stem>-<time>/`` (or continues ``RUN_DIR`` from its ``checkpoints/last.pt``),
writes the resolved ``config.yaml`` there, ``results.csv`` (a row per epoch) and ``results.png``
(``study.run_results``), and logs params, per-epoch metrics (step = epoch), the best checkpoint, the
config and both results files to MLflow (``sqlite:///<workdir>/mlflow.db`` unless ``tracking.uri`` or
``MLFLOW_TRACKING_URI`` say otherwise). A progress bar on a terminal, one line per epoch otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from study.cli.common import add_config_arguments

_SHOWN = ("loss/total", "loss/gt", "loss/distill", "loss/mask", "map", "ap50", "time/epoch")


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="train one model from a config (logged to MLflow)")
    add_config_arguments(train)
    train.add_argument("--workdir", default="runs", help="root of run folders and the default MLflow store")
    train.add_argument("--resume", metavar="PATH",
                       help="continue a run: its checkpoint file, the folder holding last.pt, or the run folder")
    train.add_argument("--weights", metavar="FILE", help="initial weights (a checkpoint or Ultralytics .pt)")
    train.set_defaults(handler=_train)

    ev = subparsers.add_parser("eval", help="evaluate a checkpoint on the config's val split")
    add_config_arguments(ev)
    ev.add_argument("--weights", metavar="FILE", required=True, help="checkpoint or weights file")
    ev.set_defaults(handler=_eval)


class _Progress:
    """Per-step bar on a terminal (tqdm), one plain line per epoch otherwise."""

    def __init__(self, epochs: int, steps: int, tty: bool) -> None:
        self.epochs, self.steps, self.tty = epochs, steps, tty
        self.bar: Any = None

    def _bar(self, trainer: Any) -> Any:
        if self.bar is None and self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=trainer.steps_per_epoch, desc=f"epoch {trainer.epoch + 1}/{self.epochs}",
                            leave=False, dynamic_ncols=True)
        return self.bar

    def after_step(self, trainer: Any, step: int, items: dict) -> None:
        bar = self._bar(trainer)
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:  # reading items waits for the GPU: not every step (issue 13)
                loss = items.get("total", items.get("loss/total"))
                if isinstance(loss, float):
                    bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def after_epoch(self, trainer: Any, epoch: int, metrics: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        shown = "  ".join(f"{k} {metrics[k]:.4g}" for k in _SHOWN if isinstance(metrics.get(k), float))
        print(f"epoch {epoch}/{self.epochs}  {shown}", flush=True)


def done_line(metrics: dict[str, Any], best: Path | str | None, last: Path | str | None = None) -> str:
    """The last line of ``mssd train``: 4 significant digits, so an early mAP of 0.00012 does not read 0.0000.

    ``best`` None: no epoch improved the fitness (every mAP was NaN), so no ``best.pt`` was written: say so
    and name ``last``, rather than a path that does not exist."""
    shown = "  ".join(f"{k} {metrics[k]:.4g}" for k in ("map", "ap50", "ap75") if isinstance(metrics.get(k), float))
    if best is None:
        return f"done: {shown}  no best checkpoint (no epoch had a finite mAP); last checkpoint {last}"
    return f"done: {shown}  best checkpoint {best}"


def _train(args) -> int:
    from detectors.config import flatten_config
    from detectors.engine.trainer import fit
    from study import tracking
    from study.config import config_to_yaml, save_config
    from study.run_results import RunResults
    from study.train_plan import RUN_META, plan_training

    # Every check first: a refused command changes nothing on disk or in MLflow (study.train_plan).
    plan = plan_training(args.config, args.overrides, args.workdir, resume=args.resume, weights=args.weights)
    cfg, run_dir = plan.cfg, plan.run_dir
    uri = tracking.resolve_tracking_uri(cfg.tracking.uri, args.workdir)
    print(tracking.check_tracking(uri), flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml", [f"resolved from {args.config} by `mssd train`"])
    from detectors.engine.threads import resolve_threads

    # train.threads as the run uses it (null: this process's reserved CPUs), as a tune trial logs its own
    params = {**flatten_config(cfg), "train.threads": resolve_threads(cfg.train.threads)}
    logger = tracking.RunLogger(uri, cfg.tracking.experiment, run_name=run_dir.name, params=params,
                                artifact_root=Path(args.workdir).resolve() / "mlartifacts",
                                config_text=config_to_yaml(cfg), resume_run_id=plan.run_id,
                                tags={"mssd.config": str(args.config)})
    logger.backfill(plan.history)  # epochs the checkpoint holds but MLflow never got (e.g. after SIGKILL)
    (run_dir / RUN_META).write_text(json.dumps({"run_id": logger.run_id, "tracking_uri": tracking.redact_uri(uri)}) + "\n")
    print(f"run folder {run_dir}  MLflow run {logger.run_id}", flush=True)
    progress = _Progress(cfg.train.epochs, 0, sys.stdout.isatty())
    # results.csv / results.png in the run folder (Ultralytics' habit), logged to the run when training ends
    results = RunResults(run_dir, on_written=lambda paths: [logger.log_file(p) for p in paths])
    resume = plan.resume
    try:
        metrics = fit(cfg, run_dir, callbacks=[progress, logger, results], resume=resume, weights=args.weights)
    except KeyboardInterrupt:
        logger.close("KILLED", "interrupted", timeout=30)
        raise
    except BaseException as exc:
        logger.close("FAILED", f"{type(exc).__name__}: {exc}", timeout=60)
        raise
    logger.log_file(run_dir / "config.yaml")
    left = logger.close("FINISHED")
    if left:
        print(f"mssd: {left} MLflow writes could not be made (store unreachable)", file=sys.stderr)
    best = run_dir / "checkpoints" / "best.pt"
    print(done_line(metrics, best if best.is_file() else None, run_dir / "checkpoints" / "last.pt"))
    return 0


def _eval(args) -> int:
    from detectors.engine.validate import evaluate_checkpoint
    from detectors.errors import ConfigError
    from study.config import load_config

    cfg = load_config(args.config, args.overrides)
    if not Path(args.weights).is_file():
        raise ConfigError(f"--weights {args.weights}: no such file")
    metrics = evaluate_checkpoint(cfg, args.weights)
    width = max(map(len, metrics), default=6)
    print(f"{'metric':<{width}}  value")
    for key, value in metrics.items():
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    return 0
