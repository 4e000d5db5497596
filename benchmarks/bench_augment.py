"""Cost per image of each augmentation and of whole recipes, at 640 px on KITTI-size (1242x375) images.

    .venv/bin/python benchmarks/bench_augment.py [--size 640] [--images 16] [--rounds 5]

Images: a generated KITTI-like set (PNG, 1242x375, ~5 objects each) in a temporary folder. OpenCV
runs single-threaded (``cv2.setNumThreads(0)``), as in a DataLoader worker. Every operation is timed
over all images in each round, the operations interleaved round by round, and the median round is
reported in ms per image (ms per output image for the recipes). "decode" is the PNG read that every
recipe pays once per source image (four times per mosaic, eight with mixup).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import cv2
import numpy as np

from detectors.data import read_kitti
from detectors.data.augment import (
    AffineDraw,
    LabelledImage,
    apply_affine,
    augment_sample,
    blend,
    fit_tile,
    flip_lr,
    hsv_shift,
    letterboxed,
    place_mosaic,
    resolve_augment,
)
from detectors.data.loader import read_image
from detectors.data.synthetic import CLASSES, generate_synthetic_kitti
from detectors.data.transforms import hsv_jitter

YOLOX_EXP = {"mosaic": 1.0, "mixup": 1.0, "degrees": 10.0, "translate": 0.1, "scale": [0.1, 2.0], "shear": 2.0,
             "hsv_mode": "shift", "hsv_h": 5.0, "hsv_s": 30.0, "hsv_v": 30.0, "fliplr": 0.5, "close_mosaic": 15,
             "affine_without_mosaic": False, "style": "yolox"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cv2.setNumThreads(0)
    size = args.size
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_synthetic_kitti(tmp, images=args.images, seed=0, width=1242, height=375, val_fraction=0.5,
                                        workers=1)
        samples = read_kitti(root, None, list(CLASSES))
        decoded = [LabelledImage(read_image(s.image_path), s.boxes, s.classes, s.ignore) for s in samples]
        n = len(samples)

        def load(i: int) -> LabelledImage:  # what the loader does: decode from disk every time
            s = samples[i]
            return LabelledImage(read_image(s.image_path), s.boxes, s.classes, s.ignore)

        letterboxed_items = [letterboxed(item, size)[0] for item in decoded]
        tiles = [fit_tile(item, size) for item in decoded]
        canvases = [place_mosaic([tiles[(i + k) % n] for k in range(4)], (size, size), size) for i in range(n)]
        zoom = AffineDraw(angle=3.0, scale=1.2, shear_x=1.0, centre_x=0.55, centre_y=0.45)
        recipes = {
            "flip+HSV (before mosaic)": resolve_augment(None, {"mosaic": 0.0, "translate": 0.0, "scale": 0.0}),
            "YOLOv5 hyp.scratch-low": resolve_augment(),
            "YOLOv5 + mixup 1.0": resolve_augment(None, {"mixup": 1.0}),
            "YOLOX exp": resolve_augment(None, YOLOX_EXP),
        }
        ops = {
            "decode PNG 1242x375": lambda i: read_image(samples[i].image_path),
            "letterbox to 640": lambda i: letterboxed(decoded[i], size),
            "fit tile (x1; a mosaic needs 4)": lambda i: fit_tile(decoded[i], size),
            "place mosaic (4 fitted tiles)": lambda i: place_mosaic([tiles[(i + k) % n] for k in range(4)],
                                                                    (size, size), size),
            "affine 1280 canvas -> 640": lambda i: apply_affine(canvases[i], zoom, (size, size)),
            "affine 640 -> 640": lambda i: apply_affine(letterboxed_items[i], zoom, (size, size)),
            "mixup blend 640": lambda i: blend(letterboxed_items[i], letterboxed_items[(i + 1) % n], 0.5),
            "HSV gain 640": lambda i: hsv_jitter(letterboxed_items[i].image, np.random.default_rng(i), 0.015, 0.7, 0.4),
            "HSV shift 640": lambda i: hsv_shift(letterboxed_items[i].image, np.random.default_rng(i), 5, 30, 30),
            "flip left-right 640": lambda i: flip_lr(letterboxed_items[i]),
        }
        for name, params in recipes.items():
            ops[f"recipe: {name}"] = (lambda p: lambda i: augment_sample(
                i, np.random.default_rng(i), load=load, count=n, size=size, params=p))(params)
        times: dict[str, list[float]] = {name: [] for name in ops}
        for _ in range(args.rounds):
            for name, op in ops.items():
                t0 = time.perf_counter()
                for i in range(n):
                    op(i)
                times[name].append((time.perf_counter() - t0) / n * 1e3)
    print(f"{n} images 1242x375 -> {size} px, {args.rounds} rounds, OpenCV {cv2.__version__} single-threaded, "
          f"load {os.getloadavg()[0]:.2f}")
    print("| operation | ms / image (median round) | min round |")
    print("| --- | --- | --- |")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} |")


if __name__ == "__main__":
    main()
