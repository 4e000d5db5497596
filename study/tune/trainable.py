"""The trainable: one trial, run in a Ray worker.

``_train_trial`` runs ``detectors.engine.trainer.fit`` on the trial's config (the study's typed base
config with the sampled values set) and, after every epoch, ``tune.report``s the metrics with a
checkpoint (``last.pt`` + ``best.pt``); on start it resumes from ``tune.get_checkpoint()``, skipping a
truncated checkpoint for the previous complete one.

A non-finite loss (``NonFiniteLossError``) is caught here, reported as one terminal result
``{"nonfinite": 1, <metric>: worst}``, and the trial returns: it ends at once and is never retried
(retrying would diverge again). Any other ``MSSDError`` (bad data, a config the schema refuses) is
deterministic too: reported as ``{"failed": 1, "error": <one line>}``, never retried. Any other
exception (a lost node, an injected fault) propagates to Tune, which retries up to ``max_failures``
times from the last reported checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from detectors.config import RunConfig, flatten_config
from detectors.data.workers import loader_workers
from detectors.errors import MSSDError, NonFiniteLossError
from study import faults
from study.search_space import with_params
from study.tune.console import quiet_trial


class _TuneReporter:
    """``fit`` callback: after each epoch, report metrics and the epoch's checkpoint to Tune."""

    def __init__(self, workdir: Path, epochs: int, metric: str) -> None:
        self.workdir, self.epochs, self.metric = workdir, epochs, metric
        self.last_epoch = 0
        self.last_value: float | None = None

    def after_epoch(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        result: dict[str, Any] = {k: float(v) for k, v in metrics.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        result["epoch"] = epoch
        result["final"] = float(epoch >= self.epochs)
        # Epochs without evaluation (train.eval_interval > 1) carry the last value for Tune and ASHA,
        # flagged so MLflow logs only real evaluations.
        result["evaluated"] = float(self.metric in result)
        if self.metric in result:
            self.last_value = result[self.metric]
        elif self.last_value is not None:
            result[self.metric] = self.last_value
        else:
            result[self.metric] = 0.0
        source = Path(trainer.last_checkpoint)
        staging = Path(tempfile.mkdtemp(prefix=".report-", dir=self.workdir))
        try:
            for name in ("last.pt", "best.pt"):
                path = source if name == "last.pt" else source.with_name("best.pt")
                if path.is_file():
                    _link_or_copy(path, staging / name)
            (staging / "epoch.json").write_text(json.dumps({"epoch": epoch}))
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(staging)))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.last_epoch = epoch


def _checkpoint_candidates(latest: Any) -> list[Any]:
    """The latest reported checkpoint, then the older ones Tune kept beside it, newest first."""
    import pyarrow.fs as pafs

    candidates = [latest]
    try:
        parent, _, name = latest.path.rstrip("/").rpartition("/")
        infos = latest.filesystem.get_file_info(pafs.FileSelector(parent))
        older = sorted((i.base_name for i in infos if i.type == pafs.FileType.Directory
                        and i.base_name.startswith("checkpoint_") and i.base_name < name), reverse=True)
        candidates += [tune.Checkpoint(f"{parent}/{n}", filesystem=latest.filesystem) for n in older]
    except (OSError, AttributeError):
        pass
    return candidates


def restore_checkpoint(latest: Any, local: Path) -> int | None:
    """Copy the newest complete checkpoint into ``local``; return its epoch (None: start afresh).

    A truncated or missing ``last.pt`` (e.g. a node lost mid-upload) must not fail every retry: such a
    checkpoint is skipped for the previous complete one."""
    from detectors.engine.checkpoint import load_checkpoint

    local.mkdir(parents=True, exist_ok=True)
    for candidate in _checkpoint_candidates(latest):
        try:
            with candidate.as_directory() as folder:
                epoch = int(json.loads((Path(folder) / "epoch.json").read_text())["epoch"])
                load_checkpoint(Path(folder) / "last.pt")  # reads it fully: a truncated file fails here
                for name in ("last.pt", "best.pt"):
                    if (Path(folder) / name).is_file():
                        shutil.copyfile(Path(folder) / name, local / name)
            return epoch
        except (OSError, ValueError, KeyError, MSSDError) as exc:
            print(f"mssd: checkpoint {candidate.path} is unusable ({exc}); trying the previous one",
                  file=sys.stderr)
    return None


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def trial_config(base: RunConfig, params: dict[str, Any], cpus: float) -> RunConfig:
    """The config a trial runs, and the MLflow callback logs: the sampled values set, ``train.threads`` null
    made the trial's CPUs (what ``mssd train`` of the exported config gets on a machine of that many CPUs),
    and loader processes from those CPUs, not the config's whole-machine figure: trials packed on one GPU
    node (--gpus-per-trial 0.5, 0.25) would otherwise oversubscribe its cores."""
    cfg = with_params(base, params)
    train = cfg.train if cfg.train.threads is not None else dataclasses.replace(cfg.train, threads=max(1, int(cpus)))
    data = dataclasses.replace(cfg.data, workers=loader_workers(cpus, cfg.data.workers))
    return dataclasses.replace(cfg, train=train, data=data)


def _train_trial(params: dict[str, Any], *, base: RunConfig, metric: str, mode: str, fault: str | None,
                 marker_dir: str, verbose: int | None = None) -> None:
    quiet_trial(verbose)

    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    try:
        cfg = trial_config(base, params, cpus)  # fit sets torch's threads from it
    except MSSDError as exc:  # a sampled value the schema refuses: deterministic, never retried
        _report_terminal({"failed": 1.0, "error": str(exc)}, 1, metric, mode)
        return
    # Local scratch for the trainer's own files; what must survive is reported to Tune as checkpoints.
    # (Not the cwd: with reused actors several trials run in one process, one after the other.)
    workdir = Path(tempfile.gettempdir()) / "mssd-trials" / tune.get_context().get_trial_id()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    try:
        _fit_trial(cfg, workdir, metric=metric, mode=mode, fault=fault, marker_dir=marker_dir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _fit_trial(cfg: RunConfig, workdir: Path, *, metric: str, mode: str, fault: str | None, marker_dir: str) -> None:
    from detectors.engine.trainer import fit

    resume, start_epoch = None, 1
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        restored = restore_checkpoint(checkpoint, workdir / "checkpoints")
        if restored is not None:
            resume, start_epoch = workdir / "checkpoints" / "last.pt", restored + 1
    reporter = _TuneReporter(workdir, cfg.train.epochs, metric)
    reporter.last_epoch = start_epoch - 1
    callbacks: list[Any] = [reporter]
    specs = faults.parse_faults(fault)
    if specs:
        callbacks.append(faults.FaultInjector(specs, trial_id=tune.get_context().get_trial_id(),
                                              flat_config=flatten_config(cfg), marker_dir=marker_dir,
                                              start_epoch=start_epoch))
    try:
        fit(cfg, workdir, callbacks=callbacks, resume=resume)
    except NonFiniteLossError as exc:
        _report_terminal({"nonfinite": 1.0, "error": str(exc)}, reporter.last_epoch + 1, metric, mode)
    except MSSDError as exc:  # bad data or config: a retry would fail the same way (str(): one line)
        _report_terminal({"failed": 1.0, "error": str(exc)}, reporter.last_epoch + 1, metric, mode)


def _report_terminal(flags: dict[str, Any], epoch: int, metric: str, mode: str) -> None:
    """End the trial with one result carrying the worst value: Tune sees it finish (no retry), ASHA ranks it
    last, and the searcher and MLflow callback read ``nonfinite`` / ``failed`` (``study.tune.results``)."""
    worst = -math.inf if mode == "max" else math.inf
    tune.report({**flags, "epoch": epoch, metric: worst, "final": 0.0, "evaluated": 0.0})


def build_trainable(base: RunConfig, *, metric: str, mode: str, cpus: float, gpus: float, fault: str | None,
                    marker_dir: Path, verbose: int | None = None) -> Any:
    """The Tune trainable with the study's base config bound and its resources per trial."""
    fn = tune.with_parameters(_train_trial, base=base, metric=metric, mode=mode, fault=fault,
                              marker_dir=str(marker_dir), verbose=verbose)
    resources = {"cpu": cpus}
    if gpus:
        resources["gpu"] = gpus
    return tune.with_resources(fn, resources)
