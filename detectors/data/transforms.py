"""Letterbox, horizontal flip and HSV jitter, each keeping boxes consistent with the pixels.

Geometry is tracked in ``LetterboxMeta``: the exact affine map from original pixels to network-input
pixels (a per-axis scale, an integer pad, an optional mirror), so predictions made on the input map
back to original pixels with ``to_original``, the inverse of ``to_input`` up to float rounding.
The per-axis scale is the one the resized pixels really have (``new_w / w``), not the nominal ratio,
so the inverse is exact for the image too, not only for the boxes.

Photometric transforms (HSV) never touch boxes. Mosaic, when it comes, is a loader stage before
``letterbox`` that assembles one image and its boxes from four samples; nothing here needs to change.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

PAD_VALUE = 114  # YOLOv5's grey: the network has seen it as "nothing here"


@dataclass(frozen=True)
class LetterboxMeta:
    orig_width: int
    orig_height: int
    input_width: int
    input_height: int
    scale_x: float  # input px per original px, horizontally
    scale_y: float
    pad_x: int  # left pad in input px
    pad_y: int  # top pad in input px
    flipped: bool = False  # mirrored horizontally in input space after the resize

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """``(N, 4)`` xyxy original px -> xyxy input px."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        out = np.empty_like(b)
        out[:, 0::2] = b[:, 0::2] * self.scale_x + self.pad_x
        out[:, 1::2] = b[:, 1::2] * self.scale_y + self.pad_y
        if self.flipped:
            out[:, [0, 2]] = self.input_width - out[:, [2, 0]]
        return out.astype(np.float32)

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """``(N, 4)`` xyxy input px -> xyxy original px: the inverse of ``to_input``.

        Boxes are not clipped: a prediction reaching into the padding maps outside the image, which is
        what the model said; clipping is the caller's choice (evaluation clips to the image).
        """
        b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
        if self.flipped:
            b[:, [0, 2]] = self.input_width - b[:, [2, 0]]
        out = np.empty_like(b)
        out[:, 0::2] = (b[:, 0::2] - self.pad_x) / self.scale_x
        out[:, 1::2] = (b[:, 1::2] - self.pad_y) / self.scale_y
        return out.astype(np.float32)


def _as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    width, height = size
    return int(width), int(height)


def letterbox_meta(width: int, height: int, size: int | tuple[int, int], fit: int | None = None) -> LetterboxMeta:
    """The geometry of letterboxing a ``width x height`` image into ``size`` (S or (W, H)), centred.

    ``fit``: scale the image as a square ``fit`` letterbox would (rectangular evaluation pads to a shape
    larger than the resized image); None: the largest scale that fits ``size``.
    """
    in_w, in_h = _as_size(size)
    ratio = min(in_w / width, in_h / height) if fit is None else min(fit / width, fit / height)
    new_w = min(max(1, round(width * ratio)), in_w)
    new_h = min(max(1, round(height * ratio)), in_h)
    return LetterboxMeta(width, height, in_w, in_h, new_w / width, new_h / height,
                         (in_w - new_w) // 2, (in_h - new_h) // 2)


def letterbox(image: np.ndarray, size: int | tuple[int, int], fit: int | None = None
              ) -> tuple[np.ndarray, LetterboxMeta]:
    """Resize keeping the aspect ratio and pad to ``size`` (S for a square, or (W, H)) with grey
    (``fit``: as ``letterbox_meta``)."""
    height, width = image.shape[:2]
    meta = letterbox_meta(width, height, size, fit)
    new_w = round(width * meta.scale_x)
    new_h = round(height * meta.scale_y)
    # INTER_AREA when shrinking: averaging keeps small objects visible instead of aliasing them away.
    interp = cv2.INTER_AREA if meta.scale_x < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interp) if (new_w, new_h) != (width, height) \
        else image
    out = np.full((meta.input_height, meta.input_width) + image.shape[2:], PAD_VALUE, image.dtype)
    out[meta.pad_y:meta.pad_y + new_h, meta.pad_x:meta.pad_x + new_w] = resized
    return out, meta


def hflip(image: np.ndarray, boxes: np.ndarray, meta: LetterboxMeta) -> tuple[np.ndarray, np.ndarray,
                                                                              LetterboxMeta]:
    """Mirror an input-space image and its xyxy input-px boxes; the meta records it for the inverse."""
    width = image.shape[1]
    flipped = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    flipped[:, [0, 2]] = width - flipped[:, [2, 0]]
    return np.ascontiguousarray(image[:, ::-1]), flipped, replace(meta, flipped=not meta.flipped)


def hsv_jitter(image: np.ndarray, rng: np.random.Generator, hgain: float, sgain: float, vgain: float) -> np.ndarray:
    """YOLOv5's HSV augmentation on a BGR uint8 image: random gains applied through lookup tables."""
    if not (hgain or sgain or vgain):
        return image
    gains = rng.uniform(-1, 1, 3) * np.array([hgain, sgain, vgain]) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float64)
    lut_hue = ((x * gains[0]) % 180).astype(np.uint8)  # OpenCV hue is 0..179
    lut_sat = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def boxes_to_targets(boxes: np.ndarray, classes: np.ndarray, width: int, height: int) -> np.ndarray:
    """xyxy input px -> ``(N, 5)`` ``[class, cx, cy, w, h]`` normalised by the input size (YOLO targets)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    out = np.empty((len(b), 5), np.float32)
    out[:, 0] = classes
    out[:, 1] = (b[:, 0] + b[:, 2]) / (2 * width)
    out[:, 2] = (b[:, 1] + b[:, 3]) / (2 * height)
    out[:, 3] = (b[:, 2] - b[:, 0]) / width
    out[:, 4] = (b[:, 3] - b[:, 1]) / height
    return out
