"""MixUp (Zhang et al. 2018) for detection: two images blended, the labels of both kept.

``mixup`` is YOLOv5's (a second mosaic, ratio from Beta(32, 32), close to 0.5); ``mixup_yolox`` is
YOLOX's (one other image, zoomed, mirrored and cropped at random, blended 50/50)."""

from __future__ import annotations

import cv2
import numpy as np

from detectors.data.augment.labelled import LabelledImage, clip_boxes, concat_labels, non_empty

BETA_ALPHA = 32.0  # YOLOv5's alpha = beta: ratios concentrate around 0.5 (std ~0.06)


def blend(first: LabelledImage, second: LabelledImage, ratio: float) -> LabelledImage:
    """``first * ratio + second * (1 - ratio)`` (truncated to uint8 as YOLOv5 does), labels of both."""
    if first.image.shape != second.image.shape:
        raise ValueError(f"mixup: images differ in shape, {first.image.shape} and {second.image.shape}")
    # A float32 sum truncated to uint8: YOLOv5's float64 expression up to 1 grey level on ~0.05% of
    # the pixels (float rounding just below an integer), ~10x faster.
    image = cv2.addWeighted(first.image, ratio, second.image, 1 - ratio, 0.0, dtype=cv2.CV_32F).astype(np.uint8)
    return concat_labels(image, [first, second])


def mixup(first: LabelledImage, second: LabelledImage, rng: np.random.Generator) -> LabelledImage:
    """``blend`` with a ratio drawn from Beta(32, 32)."""
    return blend(first, second, float(rng.beta(BETA_ALPHA, BETA_ALPHA)))


YOLOX_JITTER = (0.5, 1.5)  # YOLOX's mixup_scale; no exp of theirs changes it


def mixup_yolox(first: LabelledImage, other: LabelledImage, rng: np.random.Generator) -> LabelledImage:
    """YOLOX's mixup: ``other`` fitted into ``first``'s square size (top-left, on grey), zoomed by
    ``U(0.5, 1.5)``, mirrored with probability 1/2, placed at the top-left of a black canvas at least
    that size, cropped at a random offset, and blended 50/50. Its labels are clipped, not filtered.
    """
    size = first.height
    if first.width != size:
        raise ValueError(f"mixup_yolox: expected a square image, got {first.width}x{first.height}")
    jitter = float(rng.uniform(*YOLOX_JITTER))
    mirror = rng.uniform(0, 1) > 0.5
    ratio = min(size / other.height, size / other.width)
    fitted_w, fitted_h = int(other.width * ratio), int(other.height * ratio)
    canvas = np.full((size, size, 3), 114, np.uint8)
    canvas[:fitted_h, :fitted_w] = cv2.resize(other.image, (fitted_w, fitted_h), interpolation=cv2.INTER_LINEAR)
    canvas = cv2.resize(canvas, (int(size * jitter), int(size * jitter)))
    ratio *= jitter
    if mirror:
        canvas = canvas[:, ::-1]
    zoomed_h, zoomed_w = canvas.shape[:2]
    padded = np.zeros((max(zoomed_h, size), max(zoomed_w, size), 3), np.uint8)
    padded[:zoomed_h, :zoomed_w] = canvas
    y_offset = int(rng.integers(0, padded.shape[0] - size)) if padded.shape[0] > size else 0
    x_offset = int(rng.integers(0, padded.shape[1] - size)) if padded.shape[1] > size else 0
    crop = padded[y_offset:y_offset + size, x_offset:x_offset + size]

    def place(boxes: np.ndarray) -> np.ndarray:
        b = clip_boxes(boxes.astype(np.float64) * ratio, zoomed_w, zoomed_h).astype(np.float64)
        if mirror:
            b[:, [0, 2]] = zoomed_w - b[:, [2, 0]]
        b -= [x_offset, y_offset, x_offset, y_offset]
        return clip_boxes(b, size, size)

    ignore = place(other.ignore)
    moved = LabelledImage(crop, place(other.boxes), other.classes, ignore[non_empty(ignore)])
    image = (0.5 * first.image.astype(np.float32) + 0.5 * crop.astype(np.float32)).astype(np.uint8)
    return concat_labels(image, [first, moved])
