"""Does it learn, and how fast: YOLOv5n trained from scratch on the synthetic set at 320 px on this CPU.

    flock /tmp/mssd-bench.lock .venv/bin/python benchmarks/bench_learn.py            # 15 min, 2 threads
    .venv/bin/python benchmarks/bench_learn.py --minutes 3 --epochs 10 --images 60      # a quick look

The run is ``detectors.engine.trainer.fit`` itself (checkpoints, EMA evaluation every epoch, the whole loop),
with a callback that stops it once the next epoch would pass the time budget. The target is AP50 on the
val split (EMA weights); the script prints one line per epoch and a summary with the first time the
target was reached, and writes ``result.json`` into the work folder. MSSD and MAD are on (the product's
defaults); ``--no-distillation`` trains L_gt alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from detectors.config import parse_config
from detectors.engine.trainer import fit


class Budget:
    """Prints progress, remembers when the target was first met, stops before the time runs out."""

    def __init__(self, seconds: float, target: float) -> None:
        self.seconds = seconds
        self.target = target
        self.start = time.perf_counter()
        self.reached_at: float | None = None
        self.best_ap50 = 0.0
        self.rows: list[dict] = []

    def after_epoch(self, trainer, epoch: int, metrics: dict) -> None:
        elapsed = time.perf_counter() - self.start
        ap50 = metrics.get("ap50", math.nan)
        if ap50 == ap50:  # not NaN
            self.best_ap50 = max(self.best_ap50, ap50)
            if ap50 >= self.target and self.reached_at is None:
                self.reached_at = elapsed
        self.rows.append({"epoch": epoch, "elapsed_s": round(elapsed, 1), "loss": metrics["loss/total"],
                          "ap50": ap50, "map": metrics.get("map", math.nan)})
        print(f"{elapsed:7.1f}s epoch {epoch:3d}  loss {metrics['loss/total']:.4f} (box {metrics['loss/gt/box']:.4f} "
              f"obj {metrics['loss/gt/obj']:.4f} cls {metrics['loss/gt/cls']:.4f})  ap50 {ap50:.3f}  "
              f"map {metrics.get('map', math.nan):.3f}  train {metrics['time/train_steps']:.0f}s "
              f"eval {metrics['time/eval']:.0f}s", flush=True)
        per_epoch = elapsed / epoch if epoch else elapsed
        if elapsed + per_epoch > self.seconds:
            trainer.stop_requested = True


def build_config(args: argparse.Namespace):
    return parse_config({
        "seed": 0,
        "detector": {"name": "yolov5n"},
        "data": {"format": "synthetic", "root": args.data, "img_size": args.img, "workers": args.workers,
                 "synthetic": {"images": args.images, "seed": 0}},
        "losses": {"mssd": {"enabled": args.distillation}, "mad": {"enabled": args.distillation}},
        "train": {"epochs": args.epochs, "batch_size": args.batch, "lr0": args.lr0, "warmup_epochs": args.warmup,
                  "device": "cpu", "eval_interval": 1},
        "eval": {"max_det": 100},
    })


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--target", type=float, default=0.5, help="AP50 to reach")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--img", type=int, default=320)
    parser.add_argument("--images", type=int, default=200, help="synthetic images (80%% train, 20%% val)")
    parser.add_argument("--epochs", type=int, default=110, help="length of the cosine schedule (110 x ~7 s fits 15 min)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr0", type=float, default=0.01)
    parser.add_argument("--warmup", type=float, default=2.0, help="warmup epochs")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-distillation", dest="distillation", action="store_false")
    parser.add_argument("--data", default="data/bench-learn")
    parser.add_argument("--workdir", default="runs/bench-learn")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    cfg = build_config(args)
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores visible, threads "
          f"{args.threads}, load {os.getloadavg()[0]:.1f}; yolov5n {args.img} px, batch {args.batch}, "
          f"lr0 {args.lr0}, {args.epochs}-epoch schedule, budget {args.minutes} min, target AP50 {args.target}",
          flush=True)
    budget = Budget(args.minutes * 60, args.target)
    final = fit(cfg, args.workdir, callbacks=[budget])
    elapsed = time.perf_counter() - budget.start
    reached = f"{budget.reached_at:.0f}s" if budget.reached_at is not None else "not reached"
    print(f"done in {elapsed:.0f}s after {final['epoch']} epochs: best AP50 {budget.best_ap50:.3f}, "
          f"final AP50 {final['ap50']:.3f}, mAP {final['map']:.3f}; AP50 >= {args.target}: {reached}; "
          f"load {os.getloadavg()[0]:.1f}")
    summary = {"args": vars(args), "elapsed_s": elapsed, "best_ap50": budget.best_ap50, "final": final,
               "target_reached_s": budget.reached_at, "epochs": budget.rows}
    Path(args.workdir, "result.json").write_text(json.dumps(summary, indent=2, default=float))


if __name__ == "__main__":
    main()
