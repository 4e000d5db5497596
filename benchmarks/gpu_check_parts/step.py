"""Part b: the training step of YOLOv5s and YOLOX-s at 640 px, batch 16, as trained, and where it goes.

For each model (and for the first one each ``train.compile`` mode): one epoch of ``step_steps`` steps through
``Trainer.run_epoch`` (loader at the most workers of part c, EMA, the loss log; MSSD + MAD on), whose step
time is the median wall interval between consecutive ``after_step`` calls after ``step_skip`` steps (the
GPU's pace once its queue is full). Then, on batches already on the device: the mean step without any
per-step sync, and ``profile_steps`` steps under torch.profiler: GPU-busy time (the kernels' summed
durations), kernel launches and host syncs (``cudaStreamSynchronize`` / ``cudaDeviceSynchronize`` calls)
per step. On the CPU there are no kernels: operator calls per step stand in for launches.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from gpu_check_parts.common import (
    Sizes,
    StepClock,
    SyncCounter,
    count_trainer_syncs,
    loaders_released,
    median,
    run_config,
    sync,
)

STEP_GOAL_S = 0.030  # YOLOv5s 640 px batch 16 AMP with MSSD + MAD (the goal)
LAUNCH_NAMES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch")
SYNC_NAMES = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def measure_step(sizes: Sizes, data_root: Path, name: str, compile_mode: str) -> dict[str, Any]:
    from detectors.engine import trainer as trainer_module
    from detectors.engine.trainer import Trainer

    row: dict[str, Any] = {"detector": name, "compile": compile_mode}
    started = time.perf_counter()
    previous_backend = trainer_module.COMPILE_BACKEND
    trainer_module.COMPILE_BACKEND = sizes.compile_backend  # smoke: "eager", the wiring without a C compiler
    try:
        cfg = run_config(sizes, data_root, name, workers=max(sizes.loader_workers), steps=sizes.step_steps,
                         train__compile=compile_mode)
        with tempfile.TemporaryDirectory() as workdir, loaders_released(Trainer(cfg, workdir)) as trainer:
            counter = SyncCounter(trainer.device)
            count_trainer_syncs(trainer, counter)
            clock = StepClock(counter)
            trainer.callbacks.append(clock)
            metrics = trainer.run_epoch(1)
            intervals = clock.intervals(sizes.step_skip)
            row.update(step_s=median(intervals), steps_timed=len(intervals),
                       step_timer_s=metrics["time/train_steps"] / max(len(clock.stamps), 1),
                       syncs_per_step=median(clock.syncs_per_step(sizes.step_skip)), sync_method=counter.method,
                       loss=float(metrics["loss/total"]), epoch_s=metrics["time/epoch"])
            batches = _device_batches(trainer, 2)
            row["step_on_device_s"] = _step_on_device(trainer, batches, max(sizes.step_steps // 2, 2))
            row.update(_profile(trainer, batches, sizes.profile_steps))
            row["status"] = "ok"
            del batches
    except Exception as error:  # recorded, the next configuration still runs
        row.update(status="fail", error=f"{type(error).__name__}: {error}")
    finally:
        trainer_module.COMPILE_BACKEND = previous_backend
    row["seconds"] = time.perf_counter() - started
    return row


def _device_batches(trainer, n: int) -> list:
    batches = []
    for batch in trainer.train_loader:
        batches.append(batch.to(trainer.device))
        if len(batches) == n:
            break
    return batches


def _one_step(trainer, batch, step: int) -> None:
    trainer.train_step(batch, 1, step)
    trainer.optimizer_step()


def _step_on_device(trainer, batches, steps: int) -> float:
    """Mean seconds of train_step + optimizer_step with no sync between steps (one at the end)."""
    _one_step(trainer, batches[0], 1)
    trainer.flush_losses()
    sync(trainer.device)
    start = time.perf_counter()
    for i in range(steps):
        _one_step(trainer, batches[i % len(batches)], i + 1)
    trainer.flush_losses()
    sync(trainer.device)
    return (time.perf_counter() - start) / steps


def _profile(trainer, batches, steps: int) -> dict[str, float]:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = trainer.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync(trainer.device)
    with profile(activities=activities) as prof:
        for i in range(steps):
            _one_step(trainer, batches[i % len(batches)], i + 1)
        sync(trainer.device)
    busy_us = launches = syncs = ops = 0
    for event in prof.events():
        if event.device_type == DeviceType.CUDA:
            busy_us += event.time_range.elapsed_us()
        elif event.name in LAUNCH_NAMES:
            launches += 1
        elif event.name in SYNC_NAMES:
            syncs += 1
        elif event.name.startswith("aten::") and event.cpu_parent is None:
            ops += 1  # called from Python, not from inside another operator
    out = {"top_level_ops_per_step": ops / steps}
    if cuda:
        out.update(gpu_busy_s=busy_us / 1e6 / steps, launches_per_step=launches / steps,
                   profiler_syncs_per_step=max(syncs - 1, 0) / steps)  # minus the sync that ends it
    return out


def check_steps(sizes: Sizes, data_root: Path, log) -> dict[str, Any]:
    rows = []
    for i, name in enumerate(sizes.step_models):
        for mode in sizes.compile_modes if i == 0 else ("none",):
            rows.append(measure_step(sizes, data_root, name, mode))
            log(_line(rows[-1]))
    first = next((r for r in rows if r["detector"] == sizes.step_models[0] and r["compile"] == "none"), None)
    step = first.get("step_s") if first else None
    best = min((r["step_s"] for r in rows if r["detector"] == sizes.step_models[0] and r.get("step_s")), default=None)
    return {"rows": rows, "goal_s": STEP_GOAL_S, "step_s": step, "best_step_s": best,
            "passed": best is not None and best <= STEP_GOAL_S and all(r["status"] == "ok" for r in rows)}


def _line(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"  b {row['detector']} compile={row['compile']}: {row['status']}: {row.get('error', '')[:200]}"
    gpu = (f", GPU busy {1000 * row['gpu_busy_s']:.1f} ms, {row['launches_per_step']:.0f} launches"
           if "gpu_busy_s" in row else f", {row['top_level_ops_per_step']:.0f} top-level ops")
    return (f"  b {row['detector']} compile={row['compile']}: step {1000 * row['step_s']:.1f} ms as trained, "
            f"{1000 * row['step_on_device_s']:.1f} ms on-device{gpu}, syncs/step {row['syncs_per_step']}")
