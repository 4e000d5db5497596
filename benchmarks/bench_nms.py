"""Batched vectorised NMS (``detectors.ops.nms.non_max_suppression``) against the plain greedy loop.

    .venv/bin/python benchmarks/bench_nms.py [--batch 8] [--img 640] [--classes 3] [--repeats 5] [--threads 1]

Input: a decoded YOLOv5 output shape, (B, 3 * (80^2 + 40^2 + 20^2) = 25200 at 640 px, 5 + nc), with
boxes clustered around a few dozen "objects" per image (so NMS has real overlaps to resolve) and
objectness skewed low, like a trained detector. Settings: eval (conf 0.001, iou 0.6, max_det 300, the
mAP setting) and predict (conf 0.25, iou 0.45). Prints the median time per batch of each and checks the
two agree.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from detectors.ops.nms import non_max_suppression, non_max_suppression_reference


def synthetic_prediction(batch: int, img: int, nc: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = 3 * sum((img // s) ** 2 for s in (8, 16, 32))
    objects = 40
    centres = torch.rand(batch, objects, 2, generator=g) * img
    sizes = torch.rand(batch, objects, 2, generator=g) * img / 4 + 8
    owner = torch.randint(0, objects, (batch, n), generator=g)
    idx = owner[..., None].expand(-1, -1, 2)
    xy = torch.gather(centres, 1, idx) + torch.randn(batch, n, 2, generator=g) * 6
    wh = torch.gather(sizes, 1, idx) * (1 + 0.2 * torch.randn(batch, n, 2, generator=g)).clamp(min=0.2)
    obj = torch.rand(batch, n, 1, generator=g) ** 6  # mostly low, a few confident
    cls = torch.softmax(torch.randn(batch, n, nc, generator=g) * 3, -1)
    return torch.cat((xy, wh, obj, cls), -1)


def _time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--img", type=int, default=640)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    # One intra-op thread by default: NMS runs per batch inside the eval loop, and on a shared 2-core
    # machine a second thread mostly waits for the other processes' threads.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pred = synthetic_prediction(args.batch, args.img, args.classes)
    print(f"input {tuple(pred.shape)}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for label, conf, iou, max_det in (("eval", 0.001, 0.6, 300), ("predict", 0.25, 0.45, 300)):
        fast = non_max_suppression(pred, conf, iou, max_det)
        slow = non_max_suppression_reference(pred, conf, iou, max_det)
        agree = all(
            torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]) for a, b in zip(fast, slow, strict=True)
        )
        t_fast = _time(lambda c=conf, i=iou, m=max_det: non_max_suppression(pred, c, i, m), args.repeats)
        t_slow = _time(lambda c=conf, i=iou, m=max_det: non_max_suppression_reference(pred, c, i, m), args.repeats)
        kept = sum(len(d[0]) for d in fast) / len(fast)
        print(
            f"{label:8s} conf={conf} iou={iou}: vectorised {t_fast * 1000:8.1f} ms/batch, "
            f"reference loop {t_slow * 1000:8.1f} ms/batch, speed-up x{t_slow / t_fast:.1f}, "
            f"{kept:.0f} boxes/image, agree={agree}"
        )


if __name__ == "__main__":
    main()
