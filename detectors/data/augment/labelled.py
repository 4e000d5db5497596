"""``LabelledImage``: one image and its labels in the same pixel frame, the unit every augmentation maps.

Boxes and ignore regions (KITTI ``DontCare``, COCO ``iscrowd``) are both xyxy in the image's own
pixels; each geometric step moves them with the pixels, so they stay consistent by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _no_boxes() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


@dataclass(eq=False)  # eq=False: field-wise == on numpy arrays is ambiguous
class LabelledImage:
    image: np.ndarray  # (H, W, 3) uint8 BGR
    boxes: np.ndarray = field(default_factory=_no_boxes)  # (N, 4) float32 xyxy px
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,) int64
    ignore: np.ndarray = field(default_factory=_no_boxes)  # (M, 4) float32 xyxy px

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.classes = np.asarray(self.classes, np.int64).reshape(-1)
        self.ignore = np.asarray(self.ignore, np.float32).reshape(-1, 4)
        if len(self.boxes) != len(self.classes):
            raise ValueError(f"LabelledImage: {len(self.boxes)} boxes but {len(self.classes)} classes")

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


def concat_labels(image: np.ndarray, parts: list[LabelledImage]) -> LabelledImage:
    """``image`` with the labels of every part (already in ``image``'s pixel frame) concatenated."""
    return LabelledImage(
        image,
        np.concatenate([p.boxes for p in parts]) if parts else _no_boxes(),
        np.concatenate([p.classes for p in parts]) if parts else np.zeros(0, np.int64),
        np.concatenate([p.ignore for p in parts]) if parts else _no_boxes(),
    )


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """xyxy boxes clipped to ``[0, width] x [0, height]`` (a new array)."""
    out = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    np.clip(out[:, 0::2], 0, width, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, height, out=out[:, 1::2])
    return out


def non_empty(boxes: np.ndarray) -> np.ndarray:
    """Mask of boxes with positive width and height (what is left of an ignore region after a cut)."""
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
