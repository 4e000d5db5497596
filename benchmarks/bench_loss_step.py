"""Milliseconds per training step (forward, the family's L_gt, backward, SGD step) of a detector, and the
same step on another source tree, interleaved: what a change to a loss costs on the CPU.

    .venv/bin/python benchmarks/bench_loss_step.py --detectors yolox_nano fcos_tiny
    git archive <commit> detectors | tar -x -C /tmp/before       # the tree to compare with
    .venv/bin/python benchmarks/bench_loss_step.py --detectors yolox_nano fcos_tiny --baseline-src /tmp/before

Fixed random images and ``--boxes`` random boxes per image (3 classes), one thread; ``--loss-only`` times
the loss and its backward to the head maps alone. With ``--baseline-src``
the script runs itself ``--rounds`` times per tree, alternating (baseline, this tree, baseline, ...), each
run timing ``--steps`` steps after ``--warmup``; it prints each run's median and, per detector, the ratio of
this tree's median of medians to the baseline's. The ``detectors`` package of a run comes from the tree
put first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(name: str, *, img: int, batch: int, boxes: int, steps: int, warmup: int, loss_only: bool) -> float:
    """Median seconds per step of ``name`` in this process (its ``detectors`` package); ``loss_only``: the
    loss and its backward to the head maps alone (one forward's maps, kept)."""
    import torch

    from detectors.api import DetectorOutput
    from detectors.config import parse_config
    from detectors.zoo import build_detector, family_of

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_detector(name, num_classes=3).train()
    # a run's config with the family's own L_gt defaults (what build_loss reads: img_size, gains, SimOTA's prior)
    cfg = parse_config({"detector": {"name": name}, "data": {"img_size": img}})
    loss_fn = family_of(name).build_loss(model, cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, img, img, generator=gen)
    m = batch * boxes
    targets = torch.cat((torch.arange(batch).repeat_interleave(boxes)[:, None].float(),
                         torch.randint(0, 3, (m, 1), generator=gen).float(),
                         torch.rand(m, 2, generator=gen) * 0.8 + 0.1, torch.rand(m, 2, generator=gen) * 0.3 + 0.02), 1)
    if loss_only:
        maps = [m.detach().requires_grad_(True) for m in model(images).head]
        fixed = DetectorOutput(maps, {}, {}, {})
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        total, _ = loss_fn(fixed if loss_only else model(images), targets)
        total.backward()
        if not loss_only:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(tree: Path | None, args) -> dict[str, float]:
    """One run in a fresh process, ``tree`` first on PYTHONPATH (None: this repository)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(tree or ROOT), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, __file__, "--detectors", *args.detectors, "--img", str(args.img), "--batch",
               str(args.batch), "--boxes", str(args.boxes), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--json"] + (["--loss-only"] if args.loss_only else [])
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", nargs="+", default=["yolox_nano", "fcos_tiny"])
    parser.add_argument("--img", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--boxes", type=int, default=8, help="random boxes per image")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="runs per tree with --baseline-src")
    parser.add_argument("--loss-only", action="store_true", help="time the loss and its backward alone")
    parser.add_argument("--baseline-src", type=Path, help="a folder holding the detectors package to compare with")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one run's medians, for run()
    args = parser.parse_args(argv)
    if args.baseline_src is not None and not (args.baseline_src / "detectors").is_dir():
        parser.error(f"--baseline-src {args.baseline_src}: expected a folder holding a detectors package")
    if args.baseline_src is None:
        medians = {name: measure(name, img=args.img, batch=args.batch, boxes=args.boxes, steps=args.steps,
                                 warmup=args.warmup, loss_only=args.loss_only) for name in args.detectors}
        if args.json:
            print(json.dumps(medians))
        else:
            for name, seconds in medians.items():
                print(f"{name}: {seconds * 1e3:.1f} ms/{'loss' if args.loss_only else 'step'} ({args.img} px, "
                      f"batch {args.batch}, {args.boxes} boxes/image)")
        return
    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "this tree": []}
    for round_ in range(args.rounds):
        for label, tree in (("baseline", args.baseline_src), ("this tree", None)):
            runs[label].append(run(tree, args))
            print(f"round {round_ + 1} {label}: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in runs[label][-1].items()),
                  flush=True)
    for name in args.detectors:
        before = statistics.median(r[name] for r in runs["baseline"])
        after = statistics.median(r[name] for r in runs["this tree"])
        unit = "loss" if args.loss_only else "step"
        print(f"{name}: baseline {before * 1e3:.1f} ms/{unit}, this tree {after * 1e3:.1f} ms/{unit}, "
              f"ratio {after / before:.3f} ({args.img} px, batch {args.batch}, {args.boxes} boxes/image, 1 thread)")


if __name__ == "__main__":
    main()
