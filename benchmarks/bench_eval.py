"""COCO-style evaluation time for N images (default 1000) through ``detectors.engine.evaluation.evaluate``.

    .venv/bin/python benchmarks/bench_eval.py [--images 1000] [--dets 20 100]

Ground truth: the objects and DontCare regions of the synthetic generator's scenes (geometry only,
no pixels are encoded). Predictions per image: every object found with box noise, plus false
positives, up to ``--dets`` detections (100 is COCO's per-image cap; a detector run at conf 0.001
reaches it). Prints the time of each setting and the resulting mAP as a sanity check.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from detectors.data.sample import Sample
from detectors.data.synthetic import CLASSES, render_scene
from detectors.engine.evaluation import Detections, evaluate


def _ground_truth(images: int, width: int, height: int) -> list[Sample]:
    samples = []
    for i in range(images):
        _, objects, dont_care = render_scene(0, i, width, height)
        samples.append(Sample(image_id=i, name=f"{i:06d}", image_path=f"{i:06d}.png", width=width, height=height,
                              boxes=np.array([o.box for o in objects], np.float32).reshape(-1, 4),
                              classes=[CLASSES.index(o.kind) for o in objects],
                              ignore=np.array(dont_care, np.float32).reshape(-1, 4)))
    return samples


def _predictions(samples: list[Sample], dets: int, rng: np.random.Generator) -> dict[int, Detections]:
    out = {}
    for s in samples:
        wh = np.maximum(s.boxes[:, 2:] - s.boxes[:, :2], 1)
        noisy = s.boxes + rng.normal(0, 0.08, s.boxes.shape) * np.tile(wh, 2)
        n_fp = max(dets - len(s.boxes), 0)
        xy = rng.uniform(0, 1, (n_fp, 2)) * [s.width, s.height]
        size = np.exp(rng.uniform(np.log(8), np.log(200), (n_fp, 2)))
        fp = np.concatenate([xy, xy + size], 1)
        boxes = np.concatenate([noisy, fp])[:dets]
        scores = np.concatenate([rng.uniform(0.3, 1, len(noisy)), rng.uniform(0, 0.6, n_fp)])[:dets]
        classes = np.concatenate([s.classes, rng.integers(0, 3, n_fp)])[:dets]
        out[s.image_id] = Detections(boxes, scores, classes)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--dets", type=int, nargs="+", default=[20, 100], help="detections per image")
    args = parser.parse_args()
    start = time.perf_counter()
    samples = _ground_truth(args.images, 1242, 375)
    objects = sum(len(s.boxes) for s in samples)
    print(f"ground truth: {args.images} images, {objects} objects "
          f"({time.perf_counter() - start:.1f} s to build, not timed below)")
    for dets in args.dets:
        predictions = _predictions(samples, dets, np.random.default_rng(0))
        start = time.perf_counter()
        metrics = evaluate(samples, predictions, CLASSES)
        elapsed = time.perf_counter() - start
        print(f"evaluate: {args.images} images, {dets} detections/image: {elapsed:.1f} s "
              f"(map {metrics['map']:.3f}, ap50 {metrics['ap50']:.3f})")


if __name__ == "__main__":
    main()
