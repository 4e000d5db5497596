"""Part c: the first and the second epoch of the generated training set, and the loader alone.

Epochs: ``Trainer.run_epoch`` twice over every training image (1600 in the full run; no evaluation, which
part d times), at the most workers, without and with ``data.cache: ram``: ``time/epoch`` each. The first
epoch pays worker start, cuDNN autotuning and (with the cache) decoding; the goal is first <= 1.3x second.
Loader: the augmented train loader alone (no model) at each worker count, each cache: seconds to the first
batch and per batch after it; the goal is a batch faster than part b's step at the most workers.
The trainer of the uncached run is handed to part d (a briefly trained model to evaluate).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from gpu_check_parts.common import Sizes, release_loaders, run_config

EPOCH_RATIO_GOAL = 1.3


def two_epochs(sizes: Sizes, data_root: Path, cache: str, workdir: Path) -> tuple[dict[str, Any], Any]:
    from detectors.engine.trainer import Trainer

    cfg = run_config(sizes, data_root, sizes.eval_model, workers=max(sizes.loader_workers), epochs=3,
                     data__cache=cache)
    trainer = Trainer(cfg, workdir / f"epochs-{cache}")
    times = [trainer.run_epoch(epoch)["time/epoch"] for epoch in (1, 2)]
    return {"cache": cache, "first_s": times[0], "second_s": times[1], "ratio": times[0] / times[1],
            "steps": trainer.steps_per_epoch}, trainer


def loader_speed(sizes: Sizes, data_root: Path, workers: int, cache: str) -> dict[str, Any]:
    from detectors.data import build_dataloader, load_samples
    from detectors.zoo import family_of

    cfg = run_config(sizes, data_root, sizes.eval_model, workers=workers, data__cache=cache)
    samples = load_samples(cfg.data, "train")
    started = time.perf_counter()
    loader = build_dataloader(cfg.data, samples, batch_size=cfg.train.batch_size, augment=True, shuffle=True,
                              seed=0, pin_memory=cfg.train.device == "cuda", epochs=cfg.train.epochs,
                              augment_defaults=family_of(cfg.detector.name).recipe.augment)
    stamps = [time.perf_counter() for _ in loader]
    per_batch = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)
    return {"workers": workers, "cache": cache, "first_batch_s": stamps[0] - started, "per_batch_s": per_batch,
            "batches": len(stamps)}


def check_epochs(sizes: Sizes, data_root: Path, log, keep_dir: Path) -> tuple[dict[str, Any], Any]:
    """Part c's figures, and the trained trainer (uncached run) for part d, or None if that run failed."""
    epochs, loaders, errors = [], [], []
    kept = None
    for cache in sizes.caches:
        try:
            row, trainer = two_epochs(sizes, data_root, cache, keep_dir)
            epochs.append(row)
            log(f"  c epochs cache={cache}: first {row['first_s']:.2f} s, second {row['second_s']:.2f} s "
                f"(x{row['ratio']:.2f}), {row['steps']} steps")
            if kept is None:
                kept = trainer
            else:
                release_loaders(trainer)
        except Exception as error:
            errors.append(f"epochs cache={cache}: {type(error).__name__}: {error}")
            log("  c " + errors[-1])
    for workers in sizes.loader_workers:
        for cache in sizes.caches:
            try:
                loaders.append(loader_speed(sizes, data_root, workers, cache))
                r = loaders[-1]
                log(f"  c loader workers={workers} cache={cache}: first batch {r['first_batch_s']:.2f} s, "
                    f"{1000 * r['per_batch_s']:.1f} ms/batch")
            except Exception as error:
                errors.append(f"loader workers={workers} cache={cache}: {type(error).__name__}: {error}")
                log("  c " + errors[-1])
    ratio = min((r["ratio"] for r in epochs), default=None)
    return {"epochs": epochs, "loaders": loaders, "errors": errors, "ratio_goal": EPOCH_RATIO_GOAL,
            "best_ratio": ratio, "passed": not errors and ratio is not None and ratio <= EPOCH_RATIO_GOAL}, kept


def loader_against_step(part_c: dict[str, Any], step_s: float | None) -> dict[str, Any]:
    """The goal that joins parts b and c: a batch at the most workers is ready faster than a step."""
    most = max((r["workers"] for r in part_c["loaders"]), default=None)
    fastest = min((r["per_batch_s"] for r in part_c["loaders"] if r["workers"] == most), default=None)
    passed = fastest is not None and step_s is not None and fastest < step_s
    return {"workers": most, "per_batch_s": fastest, "step_s": step_s, "passed": passed}


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="gpu-check-")
