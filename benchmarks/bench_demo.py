"""Where the demo sweep's wall time goes: inside trial training steps versus everything else.

    .venv/bin/python benchmarks/bench_demo.py [--samples N] [--epochs E] [--workdir /tmp/bench-demo]

Runs the same study as ``mssd demo`` (study.demo.demo_options) and reads every trial's Tune results
(``result.json``). The share is ``sum(time/train_steps) / (wall * slots)`` where ``slots`` is the number
of trials that can run at once (``max_concurrent`` = 2 on 2 cores): the fraction of the machine's
trial capacity spent inside training steps. The rest is broken down into Ray start-up, the driver's
own set-up and tear-down (config, data generation, MLflow checks and final flush), per-trial start-up
(worker process, imports, model and data building), evaluation, the rest of each epoch (checkpoint
writes, data loading outside the timed steps), Tune reporting, and idle slots (e.g. the tail when
fewer trials than slots remain).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def vars_of(cfg):
    from detectors.config import config_to_dict

    return config_to_dict(cfg)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, help="default: the demo's (4 on a CPU)")
    parser.add_argument("--epochs", type=int, help="default: the demo's (24 on a CPU)")
    parser.add_argument("--workdir", default="/tmp/bench-demo")
    args = parser.parse_args()

    from dataclasses import replace

    from study.demo import demo_options, demo_settings
    from study.tune import run_study, start_local_ray

    shutil.rmtree(args.workdir, ignore_errors=True)
    # The synthetic set is generated once (data/demo) and reused by later demos: not part of the sweep.
    from detectors.config import parse_config
    from detectors.data import load_samples
    from study.config import load_config

    t_data = time.monotonic()
    settings = demo_settings()
    settings = replace(settings, samples=args.samples or settings.samples, epochs=args.epochs or settings.epochs)
    opts = demo_options(args.workdir, settings)
    load_samples(parse_config(vars_of(load_config(opts.config, opts.overrides))).data, "train")
    data_s = time.monotonic() - t_data
    load_before = os.getloadavg()
    t0 = time.monotonic()
    start_local_ray(num_cpus=os.cpu_count() or 2)
    ray_start = time.monotonic() - t0
    options = demo_options(args.workdir, settings, name="bench")
    options.verbose = 0
    t1 = time.monotonic()
    summary = run_study(options)
    sweep_wall = time.monotonic() - t1
    wall = time.monotonic() - t0
    slots = options.max_concurrent or 1

    totals = {"train_steps": 0.0, "eval": 0.0, "epoch_rest": 0.0, "trial_startup_and_report": 0.0}
    epochs = 0
    for result in sorted((Path(args.workdir) / "bench").glob("trial_*/result.json")):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if "time/epoch" in r]
        if not rows:
            continue
        epochs += len(rows)
        train = sum(r["time/train_steps"] for r in rows)
        ev = sum(r.get("time/eval", 0.0) for r in rows)
        ep = sum(r["time/epoch"] for r in rows)
        totals["train_steps"] += train
        totals["eval"] += ev
        totals["epoch_rest"] += ep - train - ev
        totals["trial_startup_and_report"] += rows[-1]["time_total_s"] - ep
    capacity = wall * slots
    busy = sum(totals.values())
    lines = [
        f"command: .venv/bin/python benchmarks/bench_demo.py --samples {settings.samples} --epochs {settings.epochs}",
        f"machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), shared; "
        f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}",
        f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"trials: {summary.statuses}, epochs trained: {epochs}, slots: {slots}",
        f"data set generation (once, before timing; 0 when cached): {data_s:.1f} s",
        f"wall: {wall:.1f} s (Ray start {ray_start:.1f} s, sweep incl. driver set-up/flush {sweep_wall:.1f} s)",
        f"share inside training steps: {totals['train_steps'] / capacity:.3f}  (= {totals['train_steps']:.1f} s / "
        f"({wall:.1f} s x {slots} slots))",
        "breakdown of slot time (s, share):",
    ]
    parts = {**totals, "ray_start (all slots)": ray_start * slots,
             "idle slots, scheduling, driver": capacity - busy - ray_start * slots}
    for key, value in parts.items():
        lines.append(f"  {key:<32} {value:8.1f}  {value / capacity:.3f}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
