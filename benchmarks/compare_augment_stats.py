"""Whole-pipeline check: our training loader and Ultralytics YOLOv5's ``LoadImagesAndLabels`` (7.0.14), both
with hyp.scratch-low augmentation, on the same generated set, compared by the statistics of what they emit.

    .venv/bin/python benchmarks/compare_augment_stats.py --site /tmp/y5site [--images 200] [--draws 400] [--size 320] [--no-hsv]

``verify_augment_parity.py`` shows that, given the same random draws, our mosaic/affine/mixup produce the
same pixels and boxes as theirs. This script checks the rest of the pipeline without sharing draws: how
often each step fires, the sampling of the mosaic partners, the tile resizing, HSV and flips. It generates
a KITTI-like set (1242x375 PNG), writes the YOLO-format copy their loader reads (same images, labels
``class cx cy w h`` normalised; KITTI ``DontCare`` regions are not labels on either side), draws ``--draws``
augmented images from each loader (each draw seeded, the item picked at random), and prints per-image
statistics with their standard errors. "grey" is the share of pixels still exactly the 114 fill (the mosaic
canvas and affine border not covered by an image); HSV jitter moves that value, so it is meaningful with
``--no-hsv`` (both sides' hsv gains 0). Nothing here trains; it costs a few minutes of CPU.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

from detectors.data import read_kitti
from detectors.data.augment import resolve_augment
from detectors.data.loader import DetectionDataset, ItemRequest
from detectors.data.synthetic import CLASSES, generate_synthetic_kitti

sys.path.insert(0, str(Path(__file__).parent))
from verify_augment_parity import import_theirs  # noqa: E402

HYP_SCRATCH_LOW = {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1, "scale": 0.5,
                   "shear": 0.0, "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0,
                   "copy_paste": 0.0}


def write_yolo_copy(samples, out: Path) -> Path:
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    for s in samples:
        (out / "images" / s.image_path.name).symlink_to(s.image_path.resolve())
        b = s.boxes
        rows = [f"{c} {(x1 + x2) / 2 / s.width:.6f} {(y1 + y2) / 2 / s.height:.6f} {(x2 - x1) / s.width:.6f} "
                f"{(y2 - y1) / s.height:.6f}" for c, (x1, y1, x2, y2) in zip(s.classes, b, strict=True)]
        (out / "labels" / f"{s.image_path.stem}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
    return out / "images"


def image_stats(image_hwc: np.ndarray, boxes_xywh_px: np.ndarray) -> dict[str, float]:
    grey = np.all(image_hwc == 114, axis=2).mean()
    return {"boxes": len(boxes_xywh_px), "grey": float(grey), "brightness": float(image_hwc.mean()),
            "w": list(boxes_xywh_px[:, 2]), "h": list(boxes_xywh_px[:, 3])}


def summarise(rows: list[dict]) -> dict[str, tuple[float, float]]:
    out = {}
    for key in ("boxes", "grey", "brightness"):
        values = np.array([r[key] for r in rows], float)
        out[f"mean {key} per image"] = (values.mean(), values.std(ddof=1) / np.sqrt(len(values)))
    out["images with no box"] = (np.mean([r["boxes"] == 0 for r in rows]), np.nan)
    for key in ("w", "h"):
        pooled = np.concatenate([np.asarray(r[key], float) for r in rows])
        for q in (10, 50, 90):
            out[f"box {key} px, {q}th percentile"] = (float(np.percentile(pooled, q)), np.nan)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, required=True)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--no-hsv", action="store_true", help="hsv gains 0 on both sides")
    args = parser.parse_args()
    hyp = {**HYP_SCRATCH_LOW, **({"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0} if args.no_hsv else {})}
    _, dataloaders = import_theirs(args.site)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_synthetic_kitti(Path(tmp) / "kitti", images=args.images, seed=0, width=1242, height=375,
                                        val_fraction=0.2, workers=1)
        samples = read_kitti(root, "train", list(CLASSES))
        theirs = dataloaders.LoadImagesAndLabels(str(write_yolo_copy(samples, Path(tmp) / "yolo")),
                                                 img_size=args.size, batch_size=16, augment=True,
                                                 hyp=hyp, workers=1)
        assert len(theirs) == len(samples)
        ours = DetectionDataset(samples, args.size, resolve_augment(None, {k: hyp[k] for k in ("hsv_h", "hsv_s", "hsv_v")}))
        picks = np.random.default_rng(0).integers(0, len(samples), args.draws)
        rows = {"ours": [], "Ultralytics": []}
        for k, index in enumerate(picks.tolist()):
            chw, targets, _, _, _ = ours[ItemRequest(index, 1_000_003 * k + 7, True)]
            rows["ours"].append(image_stats(chw.numpy().transpose(1, 2, 0), targets[:, 1:].numpy() * args.size))
            random.seed(k)
            np.random.seed(k)
            chw, labels, _, _ = theirs[index]
            rows["Ultralytics"].append(image_stats(chw.numpy().transpose(1, 2, 0), labels[:, 2:].numpy() * args.size))
    summaries = {name: summarise(r) for name, r in rows.items()}
    print(f"{len(samples)} training images 1242x375, {args.draws} augmented draws each at {args.size} px, "
          f"hyp.scratch-low{' without HSV' if args.no_hsv else ''}")
    print("| statistic | ours | Ultralytics 7.0.14 |")
    print("| --- | --- | --- |")
    for key in summaries["ours"]:
        cells = []
        for name in ("ours", "Ultralytics"):
            value, se = summaries[name][key]
            cells.append(f"{value:.3f}" + ("" if np.isnan(se) else f" +- {se:.3f}"))
        print(f"| {key} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
