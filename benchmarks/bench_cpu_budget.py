"""The CPU budget's baseline curve per family: does each family's baseline learn within the budget?

    OMP_NUM_THREADS=1 flock /tmp/mssd-cpu.lock .venv/bin/python benchmarks/bench_cpu_budget.py \
        configs/yolov5n-cpu.yaml configs/yolox_nano-cpu.yaml

Each config is trained with the method off (``losses.method: none``, the baseline), with
one torch thread, through ``detectors.engine.trainer.fit`` (the whole loop: EMA, evaluation every
epoch, checkpoints) in a temporary folder. Prints one line per epoch (mAP, AP50, seconds so far) and a
markdown row per config: the final mAP, the first epoch at which mAP reached the budget's bar (20 %) and
the wall time. ``--set KEY=VALUE`` applies to every config (e.g. ``train.epochs=6`` for a quick look).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time

import torch

from detectors.engine.trainer import fit
from study.config import load_config

BAR = 0.20  # the cpu budget's promise: a baseline at >= 20 % mAP


class Curve:
    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.rows: list[tuple[int, float, float, float]] = []

    def after_epoch(self, trainer, epoch: int, metrics: dict) -> None:
        elapsed = time.perf_counter() - self.start
        row = (epoch, metrics.get("map", math.nan), metrics.get("ap50", math.nan), elapsed)
        self.rows.append(row)
        print(f"  epoch {epoch:3d}  map {row[1]:.3f}  ap50 {row[2]:.3f}  {elapsed:6.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"1 thread, load {os.getloadavg()[0]:.1f} at start, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    summary = []
    for path in args.configs:
        off = ["losses.method=none"]
        cfg = load_config(path, [*off, *args.overrides])
        print(f"{path}: {cfg.detector.name}, {cfg.train.epochs} epochs x {cfg.train.max_steps_per_epoch} steps "
              f"of {cfg.train.batch_size} at {cfg.data.img_size} px", flush=True)
        curve = Curve()
        with tempfile.TemporaryDirectory() as workdir:
            fit(cfg, workdir, callbacks=[curve])
        reached = next((e for e, m, _, _ in curve.rows if m >= BAR), None)
        final = curve.rows[-1]
        summary.append(f"| {path} | {cfg.detector.name} | {100 * final[1]:.1f} | {100 * final[2]:.1f} | "
                       f"{reached if reached is not None else 'never'} | {final[3] / 60:.1f} |")
        print(f"  load now {os.getloadavg()[0]:.1f}", flush=True)
    print("\n| config | detector | final mAP (%) | final AP50 (%) | first epoch at mAP >= 20 % | minutes |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
