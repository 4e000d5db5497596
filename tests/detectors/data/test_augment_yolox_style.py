"""Style ``yolox``: YOLOX's affine pivot, its final box filter and its one-image mixup, hand-worked."""

import numpy as np

from detectors.data.augment import (
    AffineDraw,
    AugmentParams,
    LabelledImage,
    apply_affine,
    drop_thin_boxes,
    mixup_yolox,
)
from detectors.data.augment.affine import affine_matrix, warp_boxes


class QueuedRng:
    """A stand-in generator returning the values a test chose, in order."""

    def __init__(self, uniforms, integers=()):
        self.uniforms, self.ints = list(uniforms), list(integers)

    def uniform(self, low=0.0, high=1.0):
        return self.uniforms.pop(0)

    def integers(self, low, high=None):
        return self.ints.pop(0)


def test_the_yolox_affine_pivots_on_the_top_left_corner():
    # Zoom 0.5 about (0, 0): a 200 px canvas fits a 100 px output; the draw's centre 0.6 shifts by +10 px.
    m = affine_matrix(AffineDraw(scale=0.5, centre_x=0.6), (200, 200), (100, 100), style="yolox")
    np.testing.assert_allclose(warp_boxes(np.array([[40, 40, 120, 80]]), m, (100, 100)), [[30, 20, 70, 40]])
    # At zoom 1 the output is the canvas's top-left quarter (YOLOv5's pivot would show its centre).
    m = affine_matrix(AffineDraw(), (200, 200), (100, 100), style="yolox")
    np.testing.assert_allclose(m, np.eye(3))


def test_the_yolox_affine_clips_but_does_not_filter():
    item = LabelledImage(np.zeros((200, 200, 3), np.uint8), [[95, 10, 150, 50], [10, 10, 50, 50]], [0, 1])
    out = apply_affine(item, AffineDraw(), (100, 100), style="yolox")
    np.testing.assert_allclose(out.boxes, [[95, 10, 100, 50], [10, 10, 50, 50]])  # 9% left: YOLOv5 would drop it
    assert out.classes.tolist() == [0, 1]


def test_yolox_drops_boxes_one_pixel_or_thinner_at_the_end():
    item = LabelledImage(np.zeros((10, 10, 3), np.uint8), [[0, 0, 1, 5], [0, 0, 1.5, 5], [2, 2, 9, 3]], [0, 1, 2])
    assert drop_thin_boxes(item).classes.tolist() == [1]


def test_yolox_mixup_fits_zooms_mirrors_crops_and_blends_half_and_half():
    first = LabelledImage(np.full((100, 100, 3), 100, np.uint8), [[1, 2, 3, 4]], [2])
    other = LabelledImage(np.full((100, 200, 3), 200, np.uint8), [[20, 10, 60, 50]], [1], [[0, 0, 200, 100]])
    # Zoom 1, no mirror: fitted at ratio 0.5 to 100x50 at the top left of a grey square.
    out = mixup_yolox(first, other, QueuedRng([1.0, 0.2]))
    np.testing.assert_allclose(out.boxes, [[1, 2, 3, 4], [10, 5, 30, 25]])
    assert out.classes.tolist() == [2, 1]
    assert out.image[10, 10, 0] == 150 and out.image[80, 10, 0] == 107  # (100 + 200) / 2, (100 + 114) / 2
    np.testing.assert_allclose(out.ignore, [[0, 0, 100, 50]])
    # Mirrored: x -> 100 - x.
    out = mixup_yolox(first, other, QueuedRng([1.0, 0.7]))
    np.testing.assert_allclose(out.boxes[1], [70, 5, 90, 25])
    # Zoom 1.5 (a 150 px square, ratio 0.75), cropped at (x 20, y 10): [15, 7.5, 45, 37.5] - (20, 10), clipped.
    out = mixup_yolox(first, other, QueuedRng([1.5, 0.2], [10, 20]))
    np.testing.assert_allclose(out.boxes[1], [0, 0, 25, 27.5])


def test_the_yolox_recipe_keeps_boxes_on_their_objects():
    from detectors.data.augment import augment_sample
    from tests.detectors.data.test_augment_mosaic import _scene  # white boxes, blue ignore regions

    params = AugmentParams(style="yolox", mosaic=1.0, mixup=0.0, scale=(0.5, 1.5), translate=0.1,
                           affine_without_mosaic=False, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)
    kept = 0
    for seed in range(20):
        item, _ = augment_sample(seed % 5, np.random.default_rng(seed), load=_scene, count=5, size=96, params=params)
        for x1, y1, x2, y2 in np.round(item.boxes).astype(int):
            inner = item.image[y1 + 1:y2 - 1, x1 + 1:x2 - 1].astype(int)
            if inner.size:  # zoomed out to a few px, an object's inside is blurred: mostly white, not all
                assert (inner.min(axis=2) > 127).mean() > 0.9
                kept += 1
    assert kept > 30
