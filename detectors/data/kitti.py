"""KITTI 2D object layout: reading labels into ``Sample``s and writing label lines.

Layout (the synthetic generator writes exactly this)::

    ROOT/training/image_2/000000.png
    ROOT/training/label_2/000000.txt   # one object per line, 15 fields (results add a 16th: score)
    ROOT/ImageSets/train.txt, val.txt  # one image id per line

A label line is ``type truncated occluded alpha left top right bottom h w l x y z rotation_y``.
Only ``type`` and the 2D box matter to 2D detection; the others are parsed for validity only.
``DontCare`` boxes become ignore regions; types not in the class list are dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detectors.data.sample import BoxSanitizer, Sample, class_index, image_size, parse_float
from detectors.errors import DataFormatError

LABEL_FIELDS = 15
DONT_CARE = "DontCare"
_FIELD_NAMES = ("type", "truncated", "occluded", "alpha", "left", "top", "right", "bottom",
                "height", "width", "length", "x", "y", "z", "rotation_y", "score")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def image_dir(root: Path) -> Path:
    return Path(root) / "training" / "image_2"


def label_dir(root: Path) -> Path:
    return Path(root) / "training" / "label_2"


def split_file(root: Path, split: str) -> Path:
    return Path(root) / "ImageSets" / f"{split}.txt"


def read_split_ids(root: Path, split: str | None) -> list[str]:
    """Image ids of a split (``ImageSets/<split>.txt``); ``None``/``"all"``: every label file."""
    if split in (None, "all"):
        labels = label_dir(root)
        if not labels.is_dir():
            raise DataFormatError(f"{labels}: no such folder (expected the KITTI layout training/label_2)")
        return sorted(p.stem for p in labels.glob("*.txt"))
    path = split_file(root, split)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: split file not found (expected ImageSets/{split}.txt)") from None
    ids = []
    for lineno, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        if len(text.split()) != 1:
            raise DataFormatError(f"{path}:{lineno}: expected one image id per line, got {line!r}")
        ids.append(text)
    return ids


def parse_label_line(line: str, where: str, *, fields: int = LABEL_FIELDS) -> tuple[str, np.ndarray, float]:
    """``(type, box xyxy, score)`` from one label line; ``score`` is 1.0 for 15-field lines.

    Every numeric field is validated so a shifted or truncated line fails here, naming the field.
    """
    parts = line.split()
    if len(parts) != fields:
        raise DataFormatError(f"{where}: expected {fields} fields, got {len(parts)}")
    values = [parse_float(text, where, name) for text, name in zip(parts[1:], _FIELD_NAMES[1:fields], strict=True)]
    box = np.asarray(values[3:7], np.float32)
    score = values[14] if fields > LABEL_FIELDS else 1.0
    return parts[0], box, score


def find_image(root: Path, name: str) -> Path:
    folder = image_dir(root)
    for ext in IMAGE_EXTENSIONS:
        path = folder / f"{name}{ext}"
        if path.is_file():
            return path
    raise DataFormatError(f"{folder / (name + '.png')}: image not found")


def read_kitti(root: str | Path, split: str | None, class_names: list[str]) -> list[Sample]:
    """The samples of one split of a KITTI-layout folder, in split-file order."""
    root = Path(root)
    ids = read_split_ids(root, split)
    index = class_index(class_names)
    sanitizer = BoxSanitizer(f"{root} ({split or 'all'})")
    samples = []
    for image_id, name in enumerate(ids):
        image_path = find_image(root, name)
        width, height = image_size(image_path)
        label_path = label_dir(root) / f"{name}.txt"
        try:
            text = label_path.read_text()
        except FileNotFoundError:
            raise DataFormatError(f"{label_path}: label file not found (image {image_path})") from None
        boxes, classes, ignore = [], [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            kind, box, _ = parse_label_line(line, f"{label_path}:{lineno}")
            if kind == DONT_CARE and kind not in index:
                ignore.append(box)
            elif kind in index:
                boxes.append(box)
                classes.append(index[kind])
        boxes_arr, keep = sanitizer.clean(np.array(boxes, np.float32), width, height)
        ignore_arr, _ = sanitizer.clean(np.array(ignore, np.float32), width, height)
        samples.append(Sample(
            image_id=image_id, name=name, image_path=image_path, width=width, height=height,
            boxes=boxes_arr, classes=np.asarray(classes, np.int64)[keep], ignore=ignore_arr,
        ))
    sanitizer.warn()
    return samples


def format_label_line(kind: str, box, *, truncated: float = 0.0, occluded: int = 0, alpha: float = -10.0,
                      dims=(-1.0, -1.0, -1.0), location=(-1000.0, -1000.0, -1000.0),
                      rotation_y: float = -10.0, score: float | None = None) -> str:
    """One KITTI label line (the 16th field ``score`` only for results). Defaults are KITTI's "unknown"."""
    x1, y1, x2, y2 = (float(v) for v in box)
    line = (f"{kind} {truncated:.2f} {int(occluded)} {alpha:.2f} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} "
            f"{dims[0]:.2f} {dims[1]:.2f} {dims[2]:.2f} {location[0]:.2f} {location[1]:.2f} {location[2]:.2f} "
            f"{rotation_y:.2f}")
    if score is not None:
        line += f" {float(score):.4f}"
    return line
