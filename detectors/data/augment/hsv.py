"""Colour jitter in HSV space, in the two forms the YOLO families use. Boxes are untouched.

- ``gain`` (YOLOv5, ``transforms.hsv_jitter``): each channel multiplied by ``1 + U(-g, g)``.
- ``shift`` (YOLOX's ``augment_hsv``): each channel, picked with probability 1/2, shifted by
  ``U(-d, d)`` in OpenCV's uint8 HSV units (hue 0..179 wraps, saturation and value clip to 0..255).
"""

from __future__ import annotations

import cv2
import numpy as np

from detectors.data.transforms import hsv_jitter


def hsv_shift(image: np.ndarray, rng: np.random.Generator, dh: float, ds: float, dv: float) -> np.ndarray:
    """YOLOX-style additive HSV jitter of a BGR uint8 image (a new array)."""
    shifts = rng.uniform(-1, 1, 3) * np.array([dh, ds, dv])
    shifts = (shifts * rng.integers(0, 2, 3)).astype(np.int16)  # truncation toward zero, as YOLOX's cast
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + shifts[0]) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + shifts[1], 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + shifts[2], 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)


def hsv_augment(image: np.ndarray, rng: np.random.Generator, mode: str, h: float, s: float, v: float) -> np.ndarray:
    """Dispatch on ``mode`` (``gain`` or ``shift``); all-zero ranges return ``image`` and draw nothing."""
    if not (h or s or v):
        return image
    if mode == "shift":
        return hsv_shift(image, rng, h, s, v)
    return hsv_jitter(image, rng, h, s, v)
