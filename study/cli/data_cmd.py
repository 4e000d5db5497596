"""``mssd data synth|stats|evaluate``: generate, inspect and score KITTI-layout datasets."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

from detectors.errors import MSSDError

DEFAULT_CLASSES = "Car,Pedestrian,Cyclist"


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="generate, inspect and evaluate datasets")
    actions = data.add_subparsers(dest="action", metavar="ACTION", required=True)

    synth = actions.add_parser("synth", help="generate the synthetic KITTI-like set (KITTI layout, PNG)")
    synth.add_argument("--out", required=True, type=Path, help="output folder (the KITTI root)")
    synth.add_argument("--images", type=int, default=200, help="number of images (default 200)")
    synth.add_argument("--seed", type=int, default=0, help="the set is identical for a seed (default 0)")
    synth.add_argument("--size", type=_size, default=(1242, 375), metavar="WxH",
                       help="image size (default 1242x375, KITTI's)")
    synth.add_argument("--val-fraction", type=float, default=0.2, help="share of images in val (default 0.2)")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    synth.set_defaults(handler=_synth)

    stats = actions.add_parser("stats", help="images, objects per class and per COCO size bucket")
    stats.add_argument("root", metavar="DIR", type=Path, help="a KITTI-layout folder")
    stats.add_argument("--split", default=None,
                       help="ImageSets split name (default: every split listed in ImageSets, then all labels)")
    stats.add_argument("--classes", default=DEFAULT_CLASSES, help=f"class names (default {DEFAULT_CLASSES})")
    stats.set_defaults(handler=_stats)

    evaluate = actions.add_parser("evaluate", help="COCO-style AP of KITTI-format result files")
    evaluate.add_argument("--gt", required=True, type=Path, metavar="KITTI_ROOT", help="ground-truth KITTI root")
    evaluate.add_argument("--split", default="val", help="ImageSets split to evaluate (default val)")
    evaluate.add_argument("--pred", required=True, type=Path, metavar="PRED_DIR",
                          help="one NNNNNN.txt per image: 15 label fields + score; missing file = no detections")
    evaluate.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the metrics as JSON")
    evaluate.add_argument("--classes", default=DEFAULT_CLASSES, help=f"class names (default {DEFAULT_CLASSES})")
    evaluate.set_defaults(handler=_evaluate)


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or int(match[1]) < 32 or int(match[2]) < 32:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT with both >= 32, e.g. 1242x375, got {text!r}")
    return int(match[1]), int(match[2])


def _classes(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or len(set(names)) != len(names):
        raise MSSDError(f"--classes: expected unique comma-separated names, got {text!r}")
    return names


def _synth(args) -> int:
    from detectors.config import SyntheticConfig
    from detectors.data.loading import ensure_synthetic

    if args.images < 2:
        raise MSSDError(f"--images: expected at least 2 (one train and one val image), got {args.images}")
    if not 0 < args.val_fraction < 1:
        raise MSSDError(f"--val-fraction: expected a value > 0 and < 1, got {args.val_fraction}")
    width, height = args.size
    settings = SyntheticConfig(images=args.images, seed=args.seed, width=width, height=height,
                               val_fraction=args.val_fraction)
    start = time.perf_counter()
    ensure_synthetic(args.out, settings, workers=args.workers)
    print(f"{args.out}: {args.images} images {width}x{height}, seed {args.seed} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


def _split_names(root: Path) -> list[str]:
    sets = root / "ImageSets"
    names = sorted(p.stem for p in sets.glob("*.txt")) if sets.is_dir() else []
    # train first, then val, then the rest: the order people read them in
    return sorted(names, key=lambda n: ({"train": 0, "val": 1}.get(n, 2), n))


def _stats(args) -> int:
    import warnings

    from detectors.data.kitti import read_kitti
    from detectors.data.stats import dataset_stats, format_stats

    classes = _classes(args.classes)
    splits = [args.split] if args.split else _split_names(args.root) + ["all"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        blocks = [format_stats(dataset_stats(read_kitti(args.root, s, classes), classes), f"[{s}]") for s in splits]
    print("\n\n".join(blocks))
    for message in {str(w.message) for w in caught}:
        print(f"warning: {message}", file=sys.stderr)
    return 0


def _evaluate(args) -> int:
    from detectors.data.kitti import read_kitti
    from detectors.data.kitti_results import read_kitti_detections
    from detectors.engine.evaluation import evaluate, format_metrics

    classes = _classes(args.classes)
    samples = read_kitti(args.gt, args.split, classes)
    predictions = read_kitti_detections(args.pred, samples, classes)
    start = time.perf_counter()
    metrics = evaluate(samples, predictions, classes)
    elapsed = time.perf_counter() - start
    print(f"{args.gt} [{args.split}]: {len(samples)} images, {len(predictions)} result files "
          f"({elapsed:.1f} s)")
    print(format_metrics(metrics))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        # JSON has no NaN: a bucket without ground truth is written as null.
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()
                 if k != "per_class"}
        clean["per_class"] = {k: (None if math.isnan(v) else v) for k, v in metrics["per_class"].items()}
        args.json.write_text(json.dumps(clean, indent=2) + "\n")
    return 0
