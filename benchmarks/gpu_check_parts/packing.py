"""Part e: one, two and three trainings packed on the one device, as separate processes (no Ray).

Each process (``gpu_check.py --pack-worker``) builds its own trainer (part c's model, MSSD + MAD on), trains
a few warm-up steps, writes ``ready`` and waits until the parent writes ``go``, so that every process times
the same stretch: the next ``pack_steps`` steps, with one device sync at the end. Its figure is images per
second over that stretch; the parent adds them. The goal: the most processes give >= 1.8x one trial.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gpu_check_parts.common import Sizes, run_config, sync

PACK_GOAL = 1.8
WARMUP_STEPS = 3
READY_TIMEOUT_S = 300


class Barrier:
    """``after_step`` callback of a worker: waits for ``go`` after the warm-up steps, stamps the timed ones."""

    def __init__(self, ready: Path, go: Path, warmup: int) -> None:
        self.ready, self.go, self.warmup = ready, go, warmup
        self.started: float | None = None
        self.stamp: float | None = None
        self.steps = 0

    def after_step(self, trainer, step, items) -> None:
        if step == self.warmup:
            sync(trainer.device)
            self.ready.write_text("ready")
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not self.go.exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.go}: no go signal within {READY_TIMEOUT_S} s")
                time.sleep(0.005)
            self.started = time.perf_counter()
        elif self.started is not None:
            self.steps += 1
            if self.steps % 10 == 0 or step == trainer.steps_per_epoch:
                sync(trainer.device)
                self.stamp = time.perf_counter()


def worker(options: dict[str, Any]) -> None:
    """One packed training (run in its own process); writes its images/s to ``options['result']``."""
    from detectors.engine.trainer import Trainer

    sizes = Sizes(**options["sizes"])
    cfg = run_config(sizes, Path(options["data_root"]), sizes.pack_model, workers=options["workers"],
                     steps=WARMUP_STEPS + sizes.pack_steps)
    barrier = Barrier(Path(options["ready"]), Path(options["go"]), WARMUP_STEPS)
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(cfg, workdir, callbacks=[barrier])
        trainer.run_epoch(1)
    images = barrier.steps * cfg.train.batch_size
    result = {"images": images, "seconds": barrier.stamp - barrier.started, "pid": os.getpid()}
    result["images_per_s"] = images / result["seconds"]
    Path(options["result"]).write_text(json.dumps(result))


def run_packed(sizes: Sizes, data_root: Path, count: int, script: Path) -> dict[str, Any]:
    """``count`` worker processes timed over the same stretch."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-pack-") as folder:
        folder = Path(folder)
        go = folder / "go"
        workers = max(1, sizes.pack_cpus // count) if sizes.pack_cpus else 0  # the cores shared out
        processes = []
        for i in range(count):
            options = {"sizes": dataclasses.asdict(sizes), "data_root": str(data_root), "workers": workers,
                       "ready": str(folder / f"ready{i}"), "go": str(go), "result": str(folder / f"result{i}.json")}
            command = [sys.executable, str(script), "--pack-worker", json.dumps(options)]
            processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all((folder / f"ready{i}").exists() for i in range(count)):
            failed = [p for p in processes if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                for p in processes:
                    p.kill()
                output = failed[0].communicate()[0][-2000:] if failed else "timed out waiting for the workers"
                raise RuntimeError(f"packed run of {count}: a worker did not get ready: {output}")
            time.sleep(0.01)
        go.write_text("go")
        outputs = [p.communicate(timeout=READY_TIMEOUT_S)[0] for p in processes]
        for p, output in zip(processes, outputs, strict=True):
            if p.returncode != 0:
                raise RuntimeError(f"packed run of {count}: a worker exited {p.returncode}: {output[-2000:]}")
        results = [json.loads((folder / f"result{i}.json").read_text()) for i in range(count)]
    each = [r["images_per_s"] for r in results]
    return {"trials": count, "images_per_s": each, "total_images_per_s": sum(each), "loader_workers_each": workers}


def check_packing(sizes: Sizes, data_root: Path, log, script: Path) -> dict[str, Any]:
    rows, errors = [], []
    for count in sizes.pack_counts:
        try:
            rows.append(run_packed(sizes, data_root, count, script))
            r = rows[-1]
            log(f"  e {count} packed: " + ", ".join(f"{v:.1f}" for v in r["images_per_s"])
                + f" images/s each, {r['total_images_per_s']:.1f} in total")
        except Exception as error:
            errors.append(f"{count} packed: {type(error).__name__}: {error}")
            log("  e " + errors[-1])
    single = next((r["total_images_per_s"] for r in rows if r["trials"] == 1), None)
    most = max(rows, key=lambda r: r["trials"], default=None)
    speedup = most["total_images_per_s"] / single if single and most and most["trials"] > 1 else None
    return {"rows": rows, "errors": errors, "goal": PACK_GOAL, "speedup": speedup,
            "passed": not errors and speedup is not None and speedup >= PACK_GOAL}

