"""Part a: every detector family of the zoo trains through the real trainer path.

For each family in ``detectors.zoo.FAMILIES`` (iterated, never listed here): its smallest size and the
paper's size train ``family_steps`` steps with MSSD + MAD on (AMP and channels_last on CUDA, as the trainer
sets them), then, at the smallest size, once with each comparator of ``detectors.comparators.BUILDERS``
(a teacher of the same size, random weights). Each row: loss finite, host syncs per step (steps after the
first), the loss log's planned reads, peak memory. A method the family refuses (a config error at build
time) is a row saying so, not a failure.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from gpu_check_parts.common import (
    PAPER_SIZES,
    Sizes,
    StepClock,
    SyncCounter,
    count_trainer_syncs,
    loaders_released,
    median,
    peak_memory_mib,
    reset_peak_memory,
    run_config,
)


def family_sizes(family, sizes: Sizes) -> list[str]:
    """The smallest size, then the paper's (when the run asks for it and it differs)."""
    names = [family.smallest]
    paper = PAPER_SIZES.get(family.name)
    if sizes.paper_sizes and paper is not None and paper != names[0]:
        names.append(paper)
    return names


def train_steps(sizes: Sizes, data_root: Path, name: str, *, method: str = "mssd",
                teacher: Path | None = None) -> dict[str, Any]:
    """``family_steps`` steps of one run through ``Trainer.run_epoch``; the row of the table."""
    from detectors.engine.trainer import Trainer
    from detectors.errors import ConfigError, MSSDError, NonFiniteLossError

    row: dict[str, Any] = {"detector": name, "method": method}
    started = time.perf_counter()
    workers = min(4, max(sizes.loader_workers))  # the loader is not what part a measures
    try:
        from detectors.zoo import family_of

        # A comparator's run covers its code path in a quarter of the steps at half the size (the time budget).
        comparator = method != "mssd"
        stride = family_of(name).recipe.stride_multiple  # the ResNet-FPN families need multiples of 128
        wanted = max(sizes.family_img // 2, 64) if comparator else sizes.family_img
        img = -(-wanted // stride) * stride
        steps = max(2, sizes.family_steps // 4) if comparator else sizes.family_steps
        cfg = run_config(sizes, data_root, name, img=img, batch=sizes.family_batch, workers=workers,
                         method=method, teacher=teacher, steps=steps)
        with tempfile.TemporaryDirectory() as workdir, loaders_released(Trainer(cfg, workdir)) as trainer:
            counter = SyncCounter(trainer.device)
            count_trainer_syncs(trainer, counter)
            reads = SyncCounter(trainer.device)
            trainer.loss_log.read = reads.wrap(trainer.loss_log.read)
            clock = StepClock(counter)
            trainer.callbacks.append(clock)
            reset_peak_memory(trainer.device)
            with _no_checkpoint():
                metrics = trainer.run_epoch(1)
            per_step = clock.syncs_per_step(1)
            memory, memory_kind = peak_memory_mib(trainer.device)
            loss = float(metrics["loss/total"])
            row.update(status="ok" if math.isfinite(loss) else "fail", loss=loss, steps=len(clock.stamps),
                       syncs_first_step=clock.syncs_per_step()[0] if clock.syncs else None,
                       syncs_per_step=median(per_step), syncs_max=max(per_step, default=0),
                       loss_read_syncs=reads.count, img=img,
                       sync_sites=dict(counter.sites.most_common(5)), peak_mib=memory, memory_kind=memory_kind,
                       amp=trainer.amp, channels_last=trainer.channels_last, sync_method=counter.method)
    except NonFiniteLossError as error:
        row.update(status="fail", error=str(error))
    except (ConfigError, MSSDError) as error:
        # A comparator the family does not support refuses at build time with a config error.
        row.update(status="refused" if method != "mssd" else "fail", error=str(error))
    except Exception as error:  # a crash is this part's finding: record it, go on with the next family
        row.update(status="fail", error=f"{type(error).__name__}: {error}")
    row["seconds"] = time.perf_counter() - started
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


@contextlib.contextmanager
def _no_checkpoint():
    """``run_epoch`` without writing ``last.pt``: part a times steps, and a paper-size checkpoint (weights,
    EMA and optimizer state of up to 61 M parameters) would cost more than its 20 steps."""
    from detectors.engine import trainer as trainer_module

    saved = trainer_module.save_checkpoint
    trainer_module.save_checkpoint = lambda state, path: Path(path)
    try:
        yield
    finally:
        trainer_module.save_checkpoint = saved


def check_families(sizes: Sizes, data_root: Path, log) -> dict[str, Any]:
    """Most important first, so that a time budget cut leaves the coverage that matters: every family's
    smallest size with MSSD + MAD, then the paper's sizes, then the comparators (smaller: ``comparator_*``)."""
    from detectors.comparators import BUILDERS
    from detectors.zoo import FAMILIES

    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    notes = [f"{f.name}: no paper size known to the check, smallest size only"
             for f in FAMILIES.values() if sizes.paper_sizes and f.name not in PAPER_SIZES]
    plan = [(f.smallest, "mssd") for f in FAMILIES.values()]
    plan += [(name, "mssd") for f in FAMILIES.values() for name in family_sizes(f, sizes)[1:]]
    with_comparators = list(FAMILIES.values()) if sizes.comparators_everywhere else list(FAMILIES.values())[:1]
    plan += [(f.smallest, method) for f in with_comparators for method in BUILDERS]
    with tempfile.TemporaryDirectory() as folder:
        for name, method in plan:
            if time.perf_counter() - started > sizes.family_budget_s:
                rows.append({"detector": name, "method": method, "status": "skipped", "seconds": 0.0,
                             "error": f"part a's time budget ({sizes.family_budget_s:.0f} s) spent"})
                continue
            teacher = _teacher(name, Path(folder)) if method != "mssd" else None
            rows.append(train_steps(sizes, data_root, name, method=method, teacher=teacher))
            log(_line(rows[-1]))
    failed = [r for r in rows if r["status"] == "fail"]
    skipped = [r for r in rows if r["status"] == "skipped"]
    syncing = [r for r in rows if r["status"] == "ok" and r["syncs_max"] > 0]
    return {"rows": rows, "notes": notes, "families": list(FAMILIES),
            "passed": not failed and not skipped, "syncs_free": not syncing,
            "summary": f"{len(rows) - len(failed) - len(skipped)}/{len(rows)} runs ok or refused, {len(failed)} failed, "
                       f"{len(skipped)} skipped (time budget); {len(syncing)} with host syncs inside a step"}


def _teacher(name: str, folder: Path) -> Path:
    """A random-weight teacher of the student's size, saved once per size (the comparators' input)."""
    from detectors.zoo import build_detector

    path = folder / f"{name}.pt"
    if not path.exists():
        torch.manual_seed(1)
        torch.save(build_detector(name, num_classes=3).state_dict(), path)
    return path


def _line(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"  a {row['detector']:<28} {row['method']:<7} {row['status']}: {row.get('error', '')[:160]}"
    return (f"  a {row['detector']:<28} {row['method']:<7} loss {row['loss']:.4g}, syncs/step {row['syncs_per_step']}"
            f" (max {row['syncs_max']}), peak {row['peak_mib']:.0f} MiB, {row['seconds']:.1f} s")
