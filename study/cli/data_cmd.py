"""``mssd data synth|stats|evaluate``: generate datasets, count their objects (every ``data.format``: a config
or a folder with ``--format``), score KITTI-format results."""

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
STATS_FORMATS = ("kitti", "coco", "yolo")  # a folder's layouts; synthetic is kitti on disk (or give its config)


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

    stats = actions.add_parser("stats", help="images, objects per class and per COCO size bucket, any data.format")
    stats.add_argument("root", metavar="SOURCE", type=Path,
                       help="a config YAML (its data section: any data.format, train and val splits) or a dataset "
                            "folder read as --format")
    stats.add_argument("--format", choices=STATS_FORMATS, default=None,
                       help="layout of a SOURCE folder (default kitti); ignored for a config, which names its own")
    stats.add_argument("--split", default=None,
                       help="split(s), comma-separated: kitti an ImageSets name, coco an annotation JSON, yolo an "
                            "image folder or list file, relative to SOURCE; a config: train and/or val (default: "
                            "kitti every ImageSets split then all labels, coco every *.json, yolo every "
                            "images/<split> folder, a config train,val)")
    stats.add_argument("--images", default=None, metavar="DIR",
                       help="coco: the folder the JSON's file_name entries are relative to (default SOURCE)")
    stats.add_argument("--classes", default=None,
                       help=f"class names (default: the config's data.classes, else {DEFAULT_CLASSES})")
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
    # train first, then val, then the rest: the order people read them in
    return _train_first(sorted(p.stem for p in sets.glob("*.txt")) if sets.is_dir() else [], lambda n: n)


def _stats(args) -> int:
    import warnings

    from detectors.data.loading import read_split
    from detectors.data.stats import dataset_stats, format_stats

    data_cfg, splits = _stats_source(args)
    classes = list(data_cfg.classes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        blocks = [format_stats(dataset_stats(read_split(data_cfg, s), classes), f"[{s}]") for s in splits]
    print("\n\n".join(blocks))
    for message in {str(w.message) for w in caught}:
        print(f"warning: {message}", file=sys.stderr)
    return 0


def _stats_source(args):
    """``(DataConfig, splits)`` for ``mssd data stats``: a config's data section, or a folder read as ``--format``."""
    from dataclasses import replace

    from detectors.config import DataConfig

    root: Path = args.root
    if root.is_file() and root.suffix in (".yaml", ".yml"):
        from study.config import load_config

        data_cfg = load_config(root, []).data
        if args.classes:
            data_cfg = replace(data_cfg, classes=_classes(args.classes))
        splits = _split_list(args.split) or ["train", "val"]
        bad = [s for s in splits if s not in ("train", "val")]
        if bad:
            raise MSSDError(f"--split {bad[0]}: a config names its splits train and val (data.train, data.val)")
        return data_cfg, splits
    if not root.is_dir():
        raise MSSDError(f"{root}: no such folder or config file (expected a dataset folder or a config .yaml)")
    fmt = args.format or "kitti"
    data_cfg = DataConfig(format=fmt, root=str(root), images=args.images,
                          classes=_classes(args.classes or DEFAULT_CLASSES))
    splits = _split_list(args.split) or _default_splits(root, fmt)
    if not splits:
        expected = {"coco": "an annotation *.json", "yolo": "images/<split> folders"}[fmt]
        raise MSSDError(f"{root}: no split found for --format {fmt} (expected {expected}); name one with --split")
    return data_cfg, splits


def _split_list(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def _default_splits(root: Path, fmt: str) -> list[str]:
    if fmt == "kitti":
        return _split_names(root) + ["all"]
    if fmt == "coco":
        return _train_first(sorted(p.name for p in root.glob("*.json")), lambda n: Path(n).stem)
    images = root / "images"
    return _train_first(sorted(f"images/{p.name}" for p in images.iterdir() if p.is_dir()) if images.is_dir() else [],
                        lambda n: Path(n).name)


def _train_first(names: list[str], key) -> list[str]:
    return sorted(names, key=lambda n: ({"train": 0, "val": 1}.get(key(n), 2), n))


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
