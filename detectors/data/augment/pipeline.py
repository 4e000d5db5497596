"""``augment_sample``: the YOLO training recipe for one dataset item, in YOLOv5's order.

1. With probability ``mosaic`` (and only while ``mosaic_allowed``: ``close_mosaic`` turns it off for the
   last epochs): a mosaic of the item and three random others, warped by the random affine to
   ``S x S``; then with probability ``mixup`` blended with a second such mosaic (style ``yolox``: with
   one other image that has boxes, YOLOX's way, and only when the mosaic kept a box).
   Otherwise: the item letterboxed to ``S x S``, then the random affine (if ``affine_without_mosaic``
   and any affine range is non-zero).
2. HSV jitter, up-down flip, left-right flip.
3. Style ``yolox`` only: boxes 1 px or thinner are dropped (YOLOX's filter; ``yolov5`` filters in the affine).

Everything random comes from ``rng`` (one generator per item, seeded by the sampler), so the result
depends on the seed only, not on the worker that computes it. Ranges that are zero draw nothing, so
with mosaic 0 and every affine range 0 the draws are exactly those of the old flip+HSV loader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from detectors.data.augment.affine import drop_thin_boxes, random_affine
from detectors.data.augment.flip import flip_lr, flip_ud
from detectors.data.augment.hsv import hsv_augment
from detectors.data.augment.labelled import LabelledImage
from detectors.data.augment.mixup import mixup, mixup_yolox
from detectors.data.augment.mosaic import draw_mosaic_centre, fit_tile, place_mosaic
from detectors.data.augment.params import AugmentParams
from detectors.data.transforms import LetterboxMeta, letterbox

Loader = Callable[[int], LabelledImage]  # dataset index -> the image with its labels in original pixels
MIXUP_PICKS = 32  # YOLOX draws until an image has boxes; a set without any must not loop forever


def letterboxed(item: LabelledImage, size: int) -> tuple[LabelledImage, LetterboxMeta]:
    """``item`` letterboxed to ``size x size`` (as for evaluation), with the exact map back."""
    image, meta = letterbox(item.image, size)
    return LabelledImage(image, meta.to_input(item.boxes), item.classes, meta.to_input(item.ignore)), meta


def build_mosaic(index: int, rng: np.random.Generator, load: Loader, count: int, size: int,
                 params: AugmentParams) -> LabelledImage:
    """Item ``index`` and three items drawn from ``range(count)`` (with replacement), in random tile
    order, placed around a random centre, then warped to ``size x size``."""
    indices = rng.permutation(np.concatenate([[index], rng.integers(0, count, 3)]))
    centre = draw_mosaic_centre(rng, size)
    canvas = place_mosaic([fit_tile(load(int(i)), size) for i in indices], centre, size)
    return random_affine(canvas, rng, params, (size, size))


def _pick_with_boxes(rng: np.random.Generator, count: int, has_boxes: Callable[[int], bool]) -> int | None:
    for _ in range(MIXUP_PICKS):
        index = int(rng.integers(0, count))
        if has_boxes(index):
            return index
    return None


def augment_sample(index: int, rng: np.random.Generator, *, load: Loader, count: int, size: int,
                   params: AugmentParams, mosaic_allowed: bool = True,
                   has_boxes: Callable[[int], bool] | None = None) -> tuple[LabelledImage, LetterboxMeta | None]:
    """The augmented ``size x size`` image of item ``index`` with its labels in input pixels.

    The meta is the exact map back to the source image when there is one (letterbox and left-right
    flip only), else ``None`` (mosaic, affine, up-down flip). ``has_boxes(i)`` (style ``yolox``'s mixup)
    says whether item ``i`` has boxes without decoding it; by default the item is loaded to see.
    """
    meta: LetterboxMeta | None
    if mosaic_allowed and params.mosaic > 0 and rng.random() < params.mosaic:
        item, meta = build_mosaic(index, rng, load, count, size, params), None
        if params.mixup > 0 and rng.random() < params.mixup:
            if params.style == "yolox":
                picked = _pick_with_boxes(rng, count, has_boxes or (lambda i: len(load(i).boxes) > 0))
                if len(item.boxes) and picked is not None:
                    item = mixup_yolox(item, load(picked), rng)
            else:
                other = build_mosaic(int(rng.integers(0, count)), rng, load, count, size, params)
                item = mixup(item, other, rng)
    else:
        item, meta = letterboxed(load(index), size)
        if params.affine_without_mosaic and not params.affine_is_identity:
            item, meta = random_affine(item, rng, params, (size, size)), None
    item = replace(item, image=hsv_augment(item.image, rng, params.hsv_mode, params.hsv_h, params.hsv_s,
                                           params.hsv_v))
    if params.flipud > 0 and rng.random() < params.flipud:
        item, meta = flip_ud(item), None
    if rng.random() < params.fliplr:
        item = flip_lr(item)
        meta = replace(meta, flipped=not meta.flipped) if meta is not None else None
    if params.style == "yolox":
        item = drop_thin_boxes(item)
    return item, meta
