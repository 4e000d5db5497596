"""Box-level ``batched_nms`` (ours: pure torch, vectorised) against torchvision's compiled kernel.

    PYTHONPATH=. flock /tmp/bench.lock /tmp/y5venv/bin/python benchmarks/bench_box_nms.py [--threads 1]

Runs in a peer venv where torchvision works (see verify_resnet_fpn_parity.py). Input: what FCOS /
RetinaNet post-processing hands to ``batched_nms`` for one image: up to 1,000 top-scoring candidates per
level over 5 levels (``--candidates`` in all), clustered around 30 objects so that suppression has real
work, 3 or 80 classes, IoU 0.6 (FCOS) / 0.5 (RetinaNet). With more than 1,000 boxes both take torchvision's
per-class path. Timings are interleaved (ours, theirs, ours, ...) and the median of ``--repeats`` is
printed with the ratio; results are checked equal.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torchvision

from detectors.ops.nms import batched_nms


def candidates(n: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    objects = 30
    centres = torch.rand(objects, 2, generator=g) * 640
    sizes = torch.rand(objects, 2, generator=g) * 160 + 16
    owner = torch.randint(0, objects, (n,), generator=g)
    xy = centres[owner] + torch.randn(n, 2, generator=g) * 8
    wh = sizes[owner] * (1 + 0.2 * torch.randn(n, 2, generator=g)).clamp(min=0.3)
    boxes = torch.cat((xy - wh / 2, xy + wh / 2), 1)
    scores = torch.rand(n, generator=g) ** 3
    labels = torch.where(torch.rand(n, generator=g) < 0.7, owner % classes, torch.randint(0, classes, (n,), generator=g))
    return boxes, scores, labels


def _load() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.threads} thread(s), "
          f"load {_load()}")
    print("| candidates | classes | IoU | kept | ours ms | torchvision ms | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n, classes, iou in ((1000, 3, 0.6), (5000, 3, 0.6), (5000, 80, 0.5), (2000, 80, 0.5)):
        boxes, scores, labels = candidates(n, classes, seed=n + classes)
        ours_t, theirs_t = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ours = batched_nms(boxes, scores, labels, iou)
            t1 = time.perf_counter()
            theirs = torchvision.ops.batched_nms(boxes, scores, labels, iou)
            t2 = time.perf_counter()
            ours_t.append(t1 - t0)
            theirs_t.append(t2 - t1)
        if not torch.equal(ours, theirs):
            raise SystemExit(f"results differ at n={n}, classes={classes}")
        a, b = statistics.median(ours_t) * 1e3, statistics.median(theirs_t) * 1e3
        print(f"| {n} | {classes} | {iou} | {len(ours)} | {a:.1f} | {b:.1f} | x{a / b:.1f} |")
    print(f"load after: {_load()}")


if __name__ == "__main__":
    main()
