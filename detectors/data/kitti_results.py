"""KITTI-format detection results: one ``NNNNNN.txt`` per image, label lines plus a 16th score field.

A missing file means the image has no detections (KITTI's convention); types that are not in the
class list (``DontCare``, ``Van``...) are skipped, as the evaluation could not score them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detectors.api import Detections
from detectors.data.kitti import LABEL_FIELDS, parse_label_line
from detectors.data.sample import Sample, class_index
from detectors.errors import DataFormatError


def read_kitti_detections(pred_dir: str | Path, samples: list[Sample],
                          class_names: list[str] | tuple[str, ...]) -> dict[int, Detections]:
    """``{image_id: Detections}`` for ``samples`` from ``pred_dir/<name>.txt`` files."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataFormatError(f"{pred_dir}: no such prediction folder")
    index = class_index(class_names)
    predictions = {}
    for s in samples:
        path = pred_dir / f"{s.name}.txt"
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        boxes, scores, classes = [], [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            kind, box, score = parse_label_line(line, f"{path}:{lineno}", fields=LABEL_FIELDS + 1)
            if kind in index:
                boxes.append(box)
                scores.append(score)
                classes.append(index[kind])
        predictions[s.image_id] = Detections(np.array(boxes, np.float32), scores, classes)
    return predictions
