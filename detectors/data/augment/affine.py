"""Random affine/perspective warp of an image with its boxes and ignore regions (YOLOv5's
``random_perspective`` and YOLOX's ``random_affine``, written from their descriptions).

YOLOv5 (style ``yolov5``): ``M = T @ S @ R @ P @ C`` (applied right to left): ``C`` moves the input's
centre to the origin, ``P`` is the perspective, ``R`` rotates by ``angle`` degrees counter-clockwise
(OpenCV's sign, y axis down) and zooms by ``scale``, ``S`` shears, and ``T`` puts the centre at
``(centre_x * out_w, centre_y * out_h)``. A box maps to the bounding box of its four warped corners,
clipped to the output; ``box_candidates`` then drops boxes that became slivers or were mostly cut off.

YOLOX (style ``yolox``): no ``C`` and no ``P``: the pivot is the input's top-left corner, and ``T``
shifts by ``(centre_x - 0.5) * out_w`` (YOLOX draws that shift as ``U(-t, t)`` of the output size), so
a 2S mosaic at zoom 1 shows its top-left quarter. Boxes are only clipped here; YOLOX drops boxes at the
end of its pipeline (``drop_thin_boxes``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from detectors.data.augment.labelled import LabelledImage, clip_boxes, non_empty
from detectors.data.augment.params import AugmentParams
from detectors.data.transforms import PAD_VALUE


@dataclass(frozen=True)
class AffineDraw:
    """One draw of the random affine's parameters (what ``draw_affine`` picks from the ranges)."""

    angle: float = 0.0  # degrees, counter-clockwise on screen
    scale: float = 1.0
    shear_x: float = 0.0  # degrees
    shear_y: float = 0.0
    centre_x: float = 0.5  # where the input centre lands, as a fraction of the output width
    centre_y: float = 0.5
    perspective_x: float = 0.0
    perspective_y: float = 0.0


def draw_affine(rng: np.random.Generator, params: AugmentParams) -> AffineDraw:
    """Draw from the ranges of ``params``, in YOLOv5's order (perspective, rotation, scale, shear, translation)."""
    px, py = rng.uniform(-params.perspective, params.perspective, 2)
    angle = rng.uniform(-params.degrees, params.degrees)
    scale = rng.uniform(*params.scale)
    shear_x, shear_y = rng.uniform(-params.shear, params.shear, 2)
    cx, cy = rng.uniform(0.5 - params.translate, 0.5 + params.translate, 2)
    return AffineDraw(float(angle), float(scale), float(shear_x), float(shear_y), float(cx), float(cy),
                      float(px), float(py))


def affine_matrix(draw: AffineDraw, in_size: tuple[int, int], out_size: tuple[int, int], *,
                  style: str = "yolov5") -> np.ndarray:
    """The 3x3 map from input pixels (``in_size = (W, H)``) to output pixels (``out_size``)."""
    perspective = np.eye(3)
    perspective[2, 0], perspective[2, 1] = draw.perspective_x, draw.perspective_y
    rotate = np.eye(3)
    rotate[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=draw.angle, scale=draw.scale)
    shear = np.eye(3)
    shear[0, 1] = math.tan(math.radians(draw.shear_x))
    shear[1, 0] = math.tan(math.radians(draw.shear_y))
    translate = np.eye(3)
    if style == "yolox":  # pivot at the input's top-left corner, shifted by the draw's offset from 0.5
        translate[0, 2], translate[1, 2] = (draw.centre_x - 0.5) * out_size[0], (draw.centre_y - 0.5) * out_size[1]
        return translate @ shear @ rotate @ perspective
    centre = np.eye(3)
    centre[0, 2], centre[1, 2] = -in_size[0] / 2, -in_size[1] / 2
    translate[0, 2], translate[1, 2] = draw.centre_x * out_size[0], draw.centre_y * out_size[1]
    return translate @ shear @ rotate @ perspective @ centre


def warp_image(image: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Resample ``image`` under ``matrix`` into ``out_size`` (W, H); uncovered pixels get the pad grey."""
    border = (PAD_VALUE,) * 3
    if matrix[2, 0] or matrix[2, 1]:
        return cv2.warpPerspective(image, matrix, dsize=out_size, borderValue=border)
    return cv2.warpAffine(image, matrix[:2], dsize=out_size, borderValue=border)


def warp_boxes(boxes: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """xyxy boxes -> the bounding boxes of their four warped corners, clipped to the output."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(boxes)
    if n == 0:
        return np.zeros((0, 4), np.float32)
    corners = np.ones((n * 4, 3))
    corners[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)  # x1y1, x2y2, x1y2, x2y1
    warped = corners @ matrix.T
    xy = (warped[:, :2] / warped[:, 2:3]).reshape(n, 4, 2)  # the divide is by 1 for an affine map
    out = np.concatenate([xy.min(1), xy.max(1)], 1)
    return clip_boxes(out, *out_size)


def box_candidates(before: np.ndarray, after: np.ndarray, *, wh_thr: float = 2.0, area_thr: float = 0.1,
                   ar_thr: float = 100.0, eps: float = 1e-16) -> np.ndarray:
    """YOLOv5's rule for keeping a box after augmentation: wider and taller than ``wh_thr`` px, at least
    ``area_thr`` of its area before (``before`` already multiplied by the zoom), aspect ratio below ``ar_thr``.
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (aspect < ar_thr)


def drop_thin_boxes(item: LabelledImage, min_side: float = 1.0) -> LabelledImage:
    """YOLOX's final filter: keep boxes wider and taller than ``min_side`` px."""
    keep = np.minimum(item.boxes[:, 2] - item.boxes[:, 0], item.boxes[:, 3] - item.boxes[:, 1]) > min_side
    return LabelledImage(item.image, item.boxes[keep], item.classes[keep], item.ignore)


def apply_affine(item: LabelledImage, draw: AffineDraw, out_size: tuple[int, int], *,
                 style: str = "yolov5") -> LabelledImage:
    """Warp ``item`` by ``draw`` into ``out_size`` (W, H): boxes follow (and, style ``yolov5``, are
    filtered by ``box_candidates``); ignore regions follow and are kept while anything of them is left
    (ignoring too much is harmless, too little is not).
    """
    matrix = affine_matrix(draw, (item.width, item.height), out_size, style=style)
    image = warp_image(item.image, matrix, out_size)
    boxes = warp_boxes(item.boxes, matrix, out_size)
    if style == "yolox":
        keep = np.ones(len(boxes), bool)
    else:
        keep = box_candidates(item.boxes.astype(np.float64) * draw.scale, boxes.astype(np.float64))
    ignore = warp_boxes(item.ignore, matrix, out_size)
    return LabelledImage(image, boxes[keep], item.classes[keep], ignore[non_empty(ignore)])


def random_affine(item: LabelledImage, rng: np.random.Generator, params: AugmentParams,
                  out_size: tuple[int, int]) -> LabelledImage:
    """``apply_affine`` with a fresh draw from ``params``, in ``params.style``."""
    return apply_affine(item, draw_affine(rng, params), out_size, style=params.style)
