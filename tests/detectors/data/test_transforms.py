import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.data.transforms import (
    PAD_VALUE,
    boxes_to_targets,
    hflip,
    hsv_jitter,
    letterbox,
    letterbox_meta,
)

sizes = st.integers(16, 2000)
input_sizes = st.one_of(st.integers(32, 1280).map(lambda s: s), st.tuples(st.integers(32, 1280),
                                                                          st.integers(32, 1280)))


@st.composite
def boxes_in_image(draw, width, height):
    n = draw(st.integers(0, 6))
    xs = draw(st.lists(st.tuples(st.floats(0, width), st.floats(0, width)), min_size=n, max_size=n))
    ys = draw(st.lists(st.tuples(st.floats(0, height), st.floats(0, height)), min_size=n, max_size=n))
    return np.array([[min(x), min(y), max(x), max(y)] for x, y in zip(xs, ys, strict=True)],
                    np.float32).reshape(-1, 4)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), width=sizes, height=sizes, size=input_sizes, flip=st.booleans())
def test_letterbox_inverse_map_is_exact(data, width, height, size, flip):
    meta = letterbox_meta(width, height, size)
    boxes = data.draw(boxes_in_image(width, height))
    if flip:
        _, _, meta = hflip(np.zeros((meta.input_height, meta.input_width, 3), np.uint8), boxes, meta)
    back = meta.to_original(meta.to_input(boxes))
    np.testing.assert_allclose(back, boxes, atol=2e-3 * max(width, height) / 1000 + 1e-3)


@settings(max_examples=50, deadline=None)
@given(width=sizes, height=sizes, size=input_sizes)
def test_letterbox_fits_the_image_inside_the_input_keeping_its_aspect(width, height, size):
    meta = letterbox_meta(width, height, size)
    corners = meta.to_input(np.array([[0, 0, width, height]], np.float32))[0]
    assert corners[0] >= 0 and corners[1] >= 0
    assert corners[2] <= meta.input_width + 1e-3 and corners[3] <= meta.input_height + 1e-3
    assert abs(meta.scale_x - meta.scale_y) <= 1.0 / min(width, height) + 1e-9  # only rounding apart
    # touches two opposite sides: no needless padding
    assert corners[2] - corners[0] >= meta.input_width - 1 or corners[3] - corners[1] >= meta.input_height - 1


def _painted(width, height, box):
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


def _extent(image) -> np.ndarray:
    ys, xs = np.nonzero(image[:, :, 0] > 127)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_letterboxed_pixels_land_where_the_boxes_map():
    box = (300, 60, 700, 200)
    out, meta = letterbox(_painted(1242, 375, box), 320)
    assert out.shape == (320, 320, 3)
    assert (out[: meta.pad_y] == PAD_VALUE).all() and (out[-meta.pad_y:] == PAD_VALUE).all()
    np.testing.assert_allclose(_extent(out), meta.to_input(np.array([box]))[0], atol=1.0)


def test_rectangular_letterbox():
    out, meta = letterbox(_painted(1242, 375, (0, 0, 10, 10)), (640, 256))
    assert out.shape == (256, 640, 3) and meta.pad_x == 0 and meta.pad_y > 0


def test_hflip_moves_pixels_and_boxes_together_and_records_it():
    box = np.array([[20, 30, 70, 90]], np.float32)
    image, meta = letterbox(_painted(200, 200, (20, 30, 70, 90)), 200)
    flipped, fboxes, fmeta = hflip(image, meta.to_input(box), meta)
    np.testing.assert_allclose(_extent(flipped), fboxes[0], atol=0.5)
    np.testing.assert_allclose(fboxes, [[130, 30, 180, 90]])
    assert fmeta.flipped and fmeta.to_input(box).tolist() == fboxes.tolist()


def test_hsv_jitter_keeps_shape_and_is_identity_with_zero_gains():
    image = cv2.cvtColor(np.full((8, 8, 3), (30, 200, 200), np.uint8), cv2.COLOR_HSV2BGR)
    rng = np.random.default_rng(0)
    assert hsv_jitter(image, rng, 0, 0, 0) is image
    out = hsv_jitter(image, rng, 0.015, 0.7, 0.4)
    assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)


def test_boxes_to_targets_are_normalised_centre_size():
    targets = boxes_to_targets(np.array([[10, 20, 30, 60]]), np.array([2]), 100, 200)
    np.testing.assert_allclose(targets, [[2, 0.2, 0.2, 0.2, 0.2]])
