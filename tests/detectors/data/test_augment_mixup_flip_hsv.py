"""Mixup, flips and HSV: pixels and labels stay together; colour never moves a box."""

import cv2
import numpy as np

from detectors.data.augment import LabelledImage, blend, flip_lr, flip_ud, hsv_augment, hsv_shift, mixup


def _item(value, boxes, classes, ignore=()):
    return LabelledImage(np.full((20, 30, 3), value, np.uint8), boxes, classes, np.array(ignore, np.float32).reshape(-1, 4))


def test_mixup_blends_the_pixels_and_concatenates_the_labels():
    a = _item(200, [[0, 0, 10, 10]], [0], ignore=[[1, 1, 2, 2]])
    b = _item(100, [[5, 5, 20, 15], [1, 2, 3, 4]], [2, 1])
    out = blend(a, b, 0.25)
    assert (out.image == 125).all()  # 200 * 0.25 + 100 * 0.75
    np.testing.assert_array_equal(out.boxes, [[0, 0, 10, 10], [5, 5, 20, 15], [1, 2, 3, 4]])
    assert out.classes.tolist() == [0, 2, 1]
    np.testing.assert_array_equal(out.ignore, [[1, 1, 2, 2]])


def test_mixup_ratio_is_drawn_near_one_half():
    ratios = []
    for seed in range(50):
        out = mixup(_item(255, [], []), _item(0, [], []), np.random.default_rng(seed))
        ratios.append(out.image[0, 0, 0] / 255)
    assert 0.4 < np.mean(ratios) < 0.6 and min(ratios) > 0.3 and max(ratios) < 0.7


def test_flips_move_pixels_boxes_and_ignore_regions_together():
    image = np.zeros((40, 60, 3), np.uint8)
    image[5:15, 10:30] = 255
    item = LabelledImage(image, [[10, 5, 30, 15]], [1], [[10, 5, 30, 15]])
    lr, ud = flip_lr(item), flip_ud(item)
    np.testing.assert_array_equal(lr.boxes, [[30, 5, 50, 15]])
    np.testing.assert_array_equal(ud.boxes, [[10, 25, 30, 35]])
    for out in (lr, ud):
        ys, xs = np.nonzero(out.image[:, :, 0])
        np.testing.assert_array_equal([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], out.boxes[0])
        np.testing.assert_array_equal(out.ignore, out.boxes)
    np.testing.assert_array_equal(flip_lr(lr).image, image)


def test_zero_hsv_ranges_leave_the_image_and_draw_nothing():
    image = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    rng = np.random.default_rng(1)
    assert hsv_augment(image, rng, "shift", 0, 0, 0) is image
    assert rng.random() == np.random.default_rng(1).random()


def test_hsv_shift_adds_opencv_units_to_the_picked_channels():
    image = cv2.cvtColor(np.full((4, 4, 3), (60, 100, 150), np.uint8), cv2.COLOR_HSV2BGR)
    before = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(int)
    seen = set()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        expected = (np.random.default_rng(seed).uniform(-1, 1, 3) * [5, 30, 30]).astype(np.int16)
        after = cv2.cvtColor(hsv_shift(image, rng, 5, 30, 30), cv2.COLOR_BGR2HSV).astype(int)
        delta = (after - before)[0, 0]
        for channel in range(3):  # each channel is either untouched or shifted by its draw (+-1 for rounding)
            ok = abs(delta[channel]) <= 1 or abs(delta[channel] - expected[channel]) <= 2
            assert ok, (seed, channel, delta, expected)
            seen.add((channel, abs(delta[channel]) > 1))
    assert (2, True) in seen and (2, False) in seen  # channels were picked and left out across seeds
