"""Left-right and up-down flips of an image with its boxes and ignore regions."""

from __future__ import annotations

import numpy as np

from detectors.data.augment.labelled import LabelledImage


def _mirror(boxes: np.ndarray, extent: int, lo: int, hi: int) -> np.ndarray:
    out = boxes.copy()
    out[:, lo], out[:, hi] = extent - boxes[:, hi], extent - boxes[:, lo]
    return out


def flip_lr(item: LabelledImage) -> LabelledImage:
    """Mirror horizontally: x -> W - x (so x1 and x2 swap roles)."""
    return LabelledImage(np.ascontiguousarray(item.image[:, ::-1]), _mirror(item.boxes, item.width, 0, 2),
                         item.classes, _mirror(item.ignore, item.width, 0, 2))


def flip_ud(item: LabelledImage) -> LabelledImage:
    """Mirror vertically: y -> H - y."""
    return LabelledImage(np.ascontiguousarray(item.image[::-1]), _mirror(item.boxes, item.height, 1, 3),
                         item.classes, _mirror(item.ignore, item.height, 1, 3))
