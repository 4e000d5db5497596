"""The YOLO training augmentations: mosaic, random affine, mixup, HSV and flips (see README, ``data.augment``).

Pure numpy/OpenCV functions over ``LabelledImage`` (an image with its boxes, classes and ignore
regions in its own pixels) and an explicit ``numpy.random.Generator``; ``augment_sample`` composes
them into the recipe and the loader calls it once per item. ``resolve_augment`` turns the config and
the family's recipe into ``AugmentParams``.
"""

from detectors.data.augment.affine import (
    AffineDraw,
    affine_matrix,
    apply_affine,
    box_candidates,
    draw_affine,
    drop_thin_boxes,
    random_affine,
    warp_boxes,
)
from detectors.data.augment.flip import flip_lr, flip_ud
from detectors.data.augment.hsv import hsv_augment, hsv_shift
from detectors.data.augment.labelled import LabelledImage
from detectors.data.augment.mixup import blend, mixup, mixup_yolox
from detectors.data.augment.mosaic import draw_mosaic_centre, fit_tile, place_mosaic
from detectors.data.augment.params import AugmentParams, resolve_augment
from detectors.data.augment.pipeline import augment_sample, build_mosaic, letterboxed

__all__ = ["AffineDraw", "AugmentParams", "LabelledImage", "affine_matrix", "apply_affine", "augment_sample",
           "blend", "box_candidates", "build_mosaic", "draw_affine", "draw_mosaic_centre", "drop_thin_boxes",
           "fit_tile", "flip_lr", "flip_ud", "hsv_augment", "hsv_shift", "letterboxed", "mixup", "mixup_yolox",
           "place_mosaic", "random_affine", "resolve_augment", "warp_boxes"]
