"""The random affine: hand-worked maps, pixels and boxes moving together, YOLOv5's box filter."""

import numpy as np
import pytest

from detectors.data.augment import (
    AffineDraw,
    AugmentParams,
    LabelledImage,
    apply_affine,
    box_candidates,
    draw_affine,
)
from detectors.data.augment.affine import affine_matrix, warp_boxes


def _painted(width, height, boxes, value=255):
    image = np.zeros((height, width, 3), np.uint8)
    for x1, y1, x2, y2 in boxes:
        image[y1:y2, x1:x2] = value
    return image


def _extent(image, channel=0, threshold=127):
    ys, xs = np.nonzero(image[:, :, channel] > threshold)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_zoom_about_the_centre_doubles_a_centred_box():
    m = affine_matrix(AffineDraw(scale=2.0), (100, 100), (100, 100))
    np.testing.assert_allclose(warp_boxes(np.array([[40, 40, 60, 60]]), m, (100, 100)), [[30, 30, 70, 70]])


def test_translation_moves_the_centre_to_the_drawn_fraction_of_the_output():
    # Input 100x100 centred at (50, 50) -> output 200x100 with the centre at (0.6 * 200, 0.4 * 100) = (120, 40).
    m = affine_matrix(AffineDraw(centre_x=0.6, centre_y=0.4), (100, 100), (200, 100))
    np.testing.assert_allclose(warp_boxes(np.array([[10, 20, 30, 60]]), m, (200, 100)), [[80, 10, 100, 50]])


def test_a_quarter_turn_lands_where_computed_and_the_pixels_follow():
    # OpenCV's angle is counter-clockwise on screen (y down): (dx, dy) from the centre -> (dy, -dx).
    # Box corners relative to (50, 50): x in [-40, -20], y in [-30, 10] -> x in [-30, 10], y in [20, 40].
    item = LabelledImage(_painted(100, 100, [(10, 20, 30, 60)]), [[10, 20, 30, 60]], [0])
    out = apply_affine(item, AffineDraw(angle=90.0), (100, 100))
    np.testing.assert_allclose(out.boxes, [[20, 70, 60, 90]], atol=1e-4)
    np.testing.assert_allclose(_extent(out.image), out.boxes[0], atol=1.0)


def test_shear_and_zoom_keep_the_box_around_the_warped_object():
    item = LabelledImage(_painted(120, 80, [(30, 20, 70, 50)]), [[30, 20, 70, 50]], [1])
    out = apply_affine(item, AffineDraw(scale=1.3, shear_x=8.0, shear_y=-5.0, centre_x=0.45), (120, 80))
    assert out.classes.tolist() == [1]
    np.testing.assert_allclose(_extent(out.image), out.boxes[0], atol=1.5)


def test_perspective_moves_boxes_with_the_pixels():
    item = LabelledImage(_painted(200, 200, [(60, 70, 140, 130)]), [[60, 70, 140, 130]], [0])
    out = apply_affine(item, AffineDraw(perspective_x=0.0008, perspective_y=-0.0005), (200, 200))
    assert not np.allclose(out.boxes, item.boxes)
    np.testing.assert_allclose(_extent(out.image), out.boxes[0], atol=1.5)


def test_boxes_cut_by_the_border_are_clipped_and_mostly_cut_ones_dropped():
    # Shifted right by 40 px on a 100 px output (x -> x + 40, then clipped to 100):
    # A 50..90 -> 90..100: 10 of 40 px wide, 25% of its area: clipped and kept;
    # B 62..98 -> 102..138: nothing left: dropped;
    # C 55..95 -> 95..100: 5 px wide, 12.5% of its area: clipped and kept;
    # D 58..98 -> 98..100: 2 px wide (the rule wants more than 2) and 5% of its area: dropped.
    boxes = np.array([[50, 10, 90, 50], [62, 10, 98, 50], [55, 60, 95, 80], [58, 85, 98, 98]], np.float32)
    item = LabelledImage(np.zeros((100, 100, 3), np.uint8), boxes, [0, 1, 2, 3])
    out = apply_affine(item, AffineDraw(centre_x=0.9), (100, 100))
    assert out.classes.tolist() == [0, 2]
    np.testing.assert_allclose(out.boxes, [[90, 10, 100, 50], [95, 60, 100, 80]])


def test_box_candidates_follow_yolov5s_thresholds():
    before = np.array([[0, 0, 100, 100]] * 5, np.float64)
    after = np.array([
        [0, 0, 40, 40],  # 16% of the area: kept
        [0, 0, 30, 30],  # 9%: dropped (area ratio must exceed 0.1)
        [0, 0, 2, 100],  # 2 px wide: dropped (must exceed 2 px)
        [0, 0, 300, 2.5],  # aspect 120: dropped (must be below 100)
        [0, 0, 3, 3],  # wide enough (3 px) but 0.09% of the area: dropped
    ])
    assert box_candidates(before, after).tolist() == [True, False, False, False, False]


def test_the_area_ratio_is_taken_after_the_zoom():
    # Zoomed by 0.5, a fully visible box keeps 100% of its zoomed area even though it has 25% of its pixels.
    item = LabelledImage(np.zeros((100, 100, 3), np.uint8), [[30, 30, 70, 70]], [0])
    out = apply_affine(item, AffineDraw(scale=0.5), (100, 100))
    np.testing.assert_allclose(out.boxes, [[40, 40, 60, 60]])


def test_ignore_regions_move_with_the_image_and_are_kept_while_any_part_is_visible():
    ignore = np.array([[10, 10, 30, 30], [60, 60, 99, 99]], np.float32)
    image = _painted(100, 100, [(10, 10, 30, 30)])
    item = LabelledImage(image, np.zeros((0, 4)), [], ignore)
    out = apply_affine(item, AffineDraw(centre_x=0.95, centre_y=0.3), (100, 100))  # right 45 px, up 20 px
    # Shifted by (+45, -20): the first region -> 55..75 x -10..10, clipped to y >= 0 (half of it is left:
    # kept; regions are kept while any part is visible); the second -> x 105..144, outside: gone.
    np.testing.assert_allclose(out.ignore, [[55, 0, 75, 10]])
    np.testing.assert_allclose(_extent(out.image), out.ignore[0], atol=1.0)


def test_identity_draw_returns_the_same_pixels():
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    out = apply_affine(LabelledImage(image, [[5, 5, 20, 20]], [0]), AffineDraw(), (60, 40))
    np.testing.assert_array_equal(out.image, image)
    np.testing.assert_allclose(out.boxes, [[5, 5, 20, 20]])


@pytest.mark.parametrize("seed", range(5))
def test_draws_stay_inside_the_configured_ranges(seed):
    params = AugmentParams(degrees=10, translate=0.2, scale=(0.1, 2.0), shear=2, perspective=0.001)
    draw = draw_affine(np.random.default_rng(seed), params)
    assert abs(draw.angle) <= 10 and 0.1 <= draw.scale <= 2.0 and abs(draw.shear_x) <= 2
    assert 0.3 <= draw.centre_x <= 0.7 and abs(draw.perspective_y) <= 0.001
