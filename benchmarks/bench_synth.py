"""Synthetic KITTI-like generation speed: wall time for N images (default 1000 at 1242x375).

    .venv/bin/python benchmarks/bench_synth.py [--images 1000] [--size 1242x375] [--workers N]

Writes into a temporary folder (deleted afterwards) and prints images/s and the set's size on disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from detectors.data.synthetic import generate_synthetic_kitti


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", default="1242x375")
    parser.add_argument("--workers", type=int, default=None, help="default: one process per core")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    out = Path(tempfile.mkdtemp(prefix="bench-synth-"))
    try:
        start = time.perf_counter()
        generate_synthetic_kitti(out, images=args.images, seed=args.seed, width=width, height=height,
                                 workers=args.workers)
        elapsed = time.perf_counter() - start
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    workers = args.workers or min(os.cpu_count() or 1, 8)
    print(f"synth: {args.images} images {width}x{height}, {workers} worker(s): {elapsed:.1f} s "
          f"({args.images / elapsed:.1f} images/s), {size / 2**20:.0f} MiB on disk")


if __name__ == "__main__":
    main()
