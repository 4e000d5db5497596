"""MixUp (Zhang et al. 2018) as YOLOv5 applies it to detection: blend two images of the same size with
a ratio drawn from Beta(32, 32) (close to 0.5) and keep the labels of both."""

from __future__ import annotations

import cv2
import numpy as np

from detectors.data.augment.labelled import LabelledImage, concat_labels

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
