"""YOLO txt labels (Ultralytics layout) into ``Sample``s.

A split is an image-list file (one path per line, relative to the root) or an image folder. Each
image ``.../images/x.jpg`` has its labels in ``.../labels/x.txt``: one ``class cx cy w h`` line per
object, normalised to [0, 1]; class ids index ``data.classes``. No label file, or an empty one,
is a background image. YOLO has no ignore regions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detectors.data.sample import BoxSanitizer, Sample, image_size, parse_float
from detectors.errors import DataFormatError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def _image_paths(root: Path, split: str) -> list[Path]:
    source = Path(split) if Path(split).is_absolute() else root / split
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    try:
        lines = source.read_text().splitlines()
    except FileNotFoundError:
        raise DataFormatError(f"{source}: split not found (expected an image folder or an image-list file)") \
            from None
    paths = []
    for line in lines:
        text = line.strip()
        if text:
            p = Path(text)
            paths.append(p if p.is_absolute() else root / p)
    return paths


def label_path(image_path: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder in the path becomes ``labels``, suffix ``.txt``."""
    parts = list(image_path.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def read_yolo(root: Path, split: str, class_names: list[str]) -> list[Sample]:
    root = Path(root)
    sanitizer = BoxSanitizer(f"{root} ({split})")
    samples = []
    for image_id, image_path in enumerate(_image_paths(root, split)):
        width, height = image_size(image_path)  # also fails, naming the path, when the image is missing
        labels = label_path(image_path)
        rows = []
        if labels.is_file():
            for lineno, line in enumerate(labels.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                where = f"{labels}:{lineno}"
                parts = line.split()
                if len(parts) != 5:
                    raise DataFormatError(f"{where}: expected 5 fields (class cx cy w h), got {len(parts)}")
                try:
                    cls = int(parts[0])
                except ValueError:
                    raise DataFormatError(f"{where}: class: expected an integer id, got {parts[0]!r}") from None
                if not 0 <= cls < len(class_names):
                    raise DataFormatError(f"{where}: class: expected an id in 0..{len(class_names) - 1}, got {cls}")
                cx, cy, w, h = (parse_float(v, where, n) for v, n in zip(parts[1:], ("cx", "cy", "w", "h"), strict=True))
                rows.append((cls, cx, cy, w, h))
        arr = np.array(rows, np.float64).reshape(-1, 5)
        boxes = np.stack([(arr[:, 1] - arr[:, 3] / 2) * width, (arr[:, 2] - arr[:, 4] / 2) * height,
                          (arr[:, 1] + arr[:, 3] / 2) * width, (arr[:, 2] + arr[:, 4] / 2) * height], 1)
        boxes_arr, keep = sanitizer.clean(boxes, width, height)
        samples.append(Sample(image_id=image_id, name=image_path.stem, image_path=image_path, width=width,
                              height=height, boxes=boxes_arr, classes=arr[keep, 0].astype(np.int64)))
    sanitizer.warn()
    return samples
