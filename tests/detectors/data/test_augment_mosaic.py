"""Mosaic: four known tiles land in their quadrants with their boxes; the whole recipe keeps boxes on objects."""

import numpy as np

from detectors.data.augment import AugmentParams, LabelledImage, augment_sample, fit_tile, place_mosaic
from detectors.data.augment.mosaic import tile_origin
from detectors.data.transforms import PAD_VALUE

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def _tile(width, height, colour, boxes=(), classes=(), ignore=()):
    return LabelledImage(np.full((height, width, 3), colour, np.uint8), np.array(boxes, np.float32).reshape(-1, 4),
                         classes, np.array(ignore, np.float32).reshape(-1, 4))


def test_tiles_meet_at_the_centre_one_per_quadrant():
    assert tile_origin(0, (60, 50), 40, 20) == (20, 30)  # bottom-right corner at the centre
    assert tile_origin(1, (60, 50), 50, 30) == (60, 20)  # bottom-left corner at the centre
    assert tile_origin(2, (60, 50), 64, 40) == (-4, 50)  # top-right corner at the centre
    assert tile_origin(3, (60, 50), 64, 64) == (60, 50)  # top-left corner at the centre


def test_four_known_tiles_and_their_boxes_land_in_their_quadrants():
    size, centre = 64, (60, 50)  # canvas 128 x 128
    tiles = [
        _tile(40, 20, COLOURS[0], [[5, 5, 15, 15]], [0]),  # at x 20..60, y 30..50
        _tile(50, 30, COLOURS[1], [[10, 0, 30, 30]], [1]),  # at x 60..110, y 20..50
        _tile(64, 40, COLOURS[2], [[0, 0, 10, 10]], [2], ignore=[[50, 30, 64, 40]]),  # x -4..60 (cut), y 50..90
        _tile(64, 64, COLOURS[3], [[60, 60, 70, 70]], [0]),  # x 60..124, y 50..114; its box sticks out
    ]
    out = place_mosaic(tiles, centre, size)
    assert out.image.shape == (128, 128, 3)
    for colour, (x, y) in zip(COLOURS, [(40, 40), (85, 35), (30, 70), (90, 80)], strict=True):
        assert tuple(out.image[y, x]) == colour
    assert (out.image[:30, :60] == PAD_VALUE).all() and (out.image[115:, :] == PAD_VALUE).all()
    np.testing.assert_allclose(out.boxes, [[25, 35, 35, 45], [70, 20, 90, 50], [0, 50, 6, 60], [120, 110, 128, 120]])
    assert out.classes.tolist() == [0, 1, 2, 0]
    np.testing.assert_allclose(out.ignore, [[46, 80, 60, 90]])


def test_fit_tile_scales_the_longer_side_to_the_input_size_with_its_labels():
    tile = fit_tile(_tile(400, 100, COLOURS[0], [[40, 10, 80, 50]], [0], ignore=[[0, 0, 400, 100]]), 200)
    assert tile.image.shape == (50, 200, 3)
    np.testing.assert_allclose(tile.boxes, [[20, 5, 40, 25]])
    np.testing.assert_allclose(tile.ignore, [[0, 0, 200, 50]])


def _scene(index):
    """Image ``index``: white rectangles (the boxes) and a blue ignore region on black, 160 x 96."""
    rng = np.random.default_rng(index)
    image = np.zeros((96, 160, 3), np.uint8)
    boxes = []
    for k in range(3):  # side by side, never overlapping
        x1 = 10 + 50 * k + int(rng.integers(0, 10))
        y1 = int(rng.integers(5, 40))
        box = [x1, y1, x1 + int(rng.integers(12, 30)), y1 + int(rng.integers(12, 45))]
        image[box[1]:box[3], box[0]:box[2]] = 255
        boxes.append(box)
    image[80:92, 10:40] = (255, 0, 0)  # BGR blue
    return LabelledImage(image, boxes, [index % 3] * 3, [[10, 80, 40, 92]])


def test_the_mosaic_recipe_keeps_every_box_on_its_object():
    # YOLOv5's recipe (mosaic, translate 0.1, zoom 0.5..1.5; no rotation, so boxes stay tight): every box
    # that survives covers white pixels only, and every ignore region blue ones.
    params = AugmentParams(mosaic=1.0, fliplr=0.5, flipud=0.5, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)
    kept = 0
    for seed in range(20):
        item, meta = augment_sample(seed % 5, np.random.default_rng(seed), load=_scene, count=5, size=96,
                                    params=params)
        assert meta is None and item.image.shape == (96, 96, 3)
        for x1, y1, x2, y2 in np.round(item.boxes).astype(int):
            inner = item.image[y1 + 1:y2 - 1, x1 + 1:x2 - 1].astype(int)  # 1 px margin for the resampling
            if inner.size:  # a box 3 px tall has no inner rows
                assert (inner.min(axis=2) > 200).mean() > 0.95
                kept += 1
        for x1, y1, x2, y2 in np.round(item.ignore).astype(int):
            inner = item.image[y1 + 1:y2 - 1, x1 + 1:x2 - 1].astype(int)
            assert inner.size == 0 or ((inner[..., 0] > 200) & (inner[..., 2] < 50)).mean() > 0.95
    assert kept > 40  # the check saw many boxes, not an empty output
