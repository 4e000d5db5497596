"""What the pre-flight image check costs: every image of a config's train and val splits decoded before a run.

    .venv/bin/python benchmarks/bench_preflight.py [CONFIG] [--rounds 3]

CONFIG defaults to configs/yolov5n-cpu.yaml (the CPU budget set: 400 generated images of 256x192); its
synthetic set is generated into a temporary folder first (not timed). Each round times, interleaved, the
label and header read every run always did (``load_samples``) and the decode check ``mssd train`` / ``tune``
/ ``ablate`` / ``compare`` now add (``check_images``, 1 thread and the process's CPUs).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from detectors.data import ensure_synthetic, load_samples
from detectors.data.image_file import check_images, default_threads
from study.config import load_config

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(REPO / "configs" / "yolov5n-cpu.yaml"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config)
        if cfg.data.format == "synthetic":  # generated here, one process, not timed
            cfg = load_config(args.config, [f"data.root={tmp}/set"])
            ensure_synthetic(cfg.data.root, cfg.data.synthetic, workers=1)
        threads = default_threads()
        print(f"{args.config}: load {os.getloadavg()[0]:.2f}, {threads} CPU(s) for this process")
        for _ in range(args.rounds):
            start = time.perf_counter()
            splits = [load_samples(cfg.data, s) for s in ("train", "val")]
            read = time.perf_counter() - start
            timings = []
            for n in (1, threads):
                start = time.perf_counter()
                for samples in splits:
                    check_images(samples, threads=n)
                timings.append(time.perf_counter() - start)
            print(f"{sum(map(len, splits))} images: labels + headers {read:.3f} s, decode check "
                  f"1 thread {timings[0]:.3f} s, {threads} threads {timings[1]:.3f} s")


if __name__ == "__main__":
    main()
