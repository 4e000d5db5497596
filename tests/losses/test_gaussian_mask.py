"""Eq 5: the Gaussian box mask at cell centres, hand-worked values and properties."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from losses.gaussian_mask import gaussian_mask

STRIDE = 8
H, W = 6, 7  # a 48 x 56 px input at stride 8


def mask_of(boxes, sigma2, batch_index=None, batch_size=1, size=(H, W), stride=STRIDE, **kwargs):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if batch_index is None:
        batch_index = torch.zeros(len(boxes), dtype=torch.long)
    else:
        batch_index = torch.tensor(batch_index, dtype=torch.long)
    return gaussian_mask(boxes, batch_index, batch_size, size, stride, sigma2, **kwargs)


def reference_mask(boxes, batch_index, batch_size, size, stride, sigma2):
    """Eq 5 written cell by cell and box by box, straight from the definition."""
    height, width = size
    out = [[[0.0] * width for _ in range(height)] for _ in range(batch_size)]
    for (x1, y1, x2, y2), b in zip(boxes, batch_index, strict=True):
        xc, yc, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        for i in range(height):
            for j in range(width):
                x, y = (j + 0.5) * stride, (i + 0.5) * stride
                if x1 <= x <= x2 and y1 <= y <= y2:
                    u = (x - xc) / hw if hw > 0 else 0.0
                    v = (y - yc) / hh if hh > 0 else 0.0
                    out[b][i][j] = max(out[b][i][j], math.exp(-(u * u + v * v) / sigma2))
    return torch.tensor(out, dtype=torch.float32)[:, None]


def inside_any(boxes, size, stride):
    height, width = size
    xs = (torch.arange(width) + 0.5) * stride
    ys = (torch.arange(height) + 0.5) * stride
    inside = torch.zeros(height, width, dtype=torch.bool)
    for x1, y1, x2, y2 in boxes:
        inside |= ((ys >= y1) & (ys <= y2))[:, None] & ((xs >= x1) & (xs <= x2))[None, :]
    return inside


def test_gaussian_mask_matches_hand_worked_values():
    # Box 0..32 x 0..16: centre (16, 8), half extents 16 and 8. Cell centres x = 4, 12, 20, 28 (36 is
    # outside), y = 4, 12 (20 is outside): u = -0.75, -0.25, 0.25, 0.75 and v = -0.5, 0.5.
    mask = mask_of([0, 0, 32, 16], sigma2=1.0, size=(3, 5))
    assert mask.shape == (1, 1, 3, 5)
    u = [-0.75, -0.25, 0.25, 0.75]
    expected = torch.zeros(3, 5)
    for i, v in enumerate([-0.5, 0.5]):
        for j, uj in enumerate(u):
            expected[i, j] = math.exp(-(uj**2 + v**2))
    torch.testing.assert_close(mask[0, 0], expected)
    assert mask[0, 0, 0, 1].item() == pytest.approx(math.exp(-(0.0625 + 0.25)))


def test_gaussian_mask_sigma2_scales_the_exponent():
    # Same box, sigma2 = 2: cell (0, 0) has u^2 + v^2 = 0.5625 + 0.25.
    mask = mask_of([0, 0, 32, 16], sigma2=2.0, size=(3, 5))
    assert mask[0, 0, 0, 0].item() == pytest.approx(math.exp(-0.8125 / 2))


def test_gaussian_mask_inside_test_includes_the_box_edges():
    # Cell centres 4 and 12 lie exactly on the box edges: inside, with u, v = +-1.
    mask = mask_of([4, 4, 12, 12], sigma2=2.0, size=(3, 3))
    corner = math.exp(-2 / 2)
    torch.testing.assert_close(mask[0, 0, :2, :2], torch.full((2, 2), corner))
    assert mask[0, 0, 2].abs().sum() == 0 and mask[0, 0, :, 2].abs().sum() == 0
    # Moving the right edge a hair left puts the x = 12 column outside.
    mask = mask_of([4, 4, 11.999, 12], sigma2=2.0, size=(3, 3))
    assert mask[0, 0, 0, 1].item() == 0.0 and mask[0, 0, 0, 0].item() > 0


def test_gaussian_mask_takes_the_max_where_boxes_overlap():
    wide = [0, 0, 56, 48]  # covers the whole map: centre (28, 24), half extents 28 and 24
    small = [0, 0, 16, 16]  # cells at 4 and 12: u, v = +-0.5
    both = mask_of([wide, small], sigma2=1.0)
    # Cell (0, 0): wide gives exp(-((24/28)^2 + (20/24)^2)) = 0.24, small exp(-0.5) = 0.61.
    assert both[0, 0, 0, 0].item() == pytest.approx(math.exp(-0.5))
    # Cell (2, 3) is outside the small box: the wide box's value, exp(-(0 + (4/24)^2)).
    assert both[0, 0, 2, 3].item() == pytest.approx(math.exp(-((4 / 24) ** 2)))
    torch.testing.assert_close(both, torch.maximum(mask_of(wide, 1.0), mask_of(small, 1.0)), rtol=0, atol=0)


def test_gaussian_mask_routes_boxes_to_their_image_and_leaves_empty_images_zero():
    mask = mask_of([[0, 0, 16, 16], [24, 24, 40, 40]], sigma2=2.0, batch_index=[2, 0], batch_size=3)
    assert mask.shape == (3, 1, H, W)
    torch.testing.assert_close(mask[2], mask_of([0, 0, 16, 16], 2.0)[0])
    torch.testing.assert_close(mask[0], mask_of([24, 24, 40, 40], 2.0)[0])
    assert mask[1].abs().sum() == 0


def test_gaussian_mask_with_no_boxes_is_all_zero():
    mask = mask_of([], sigma2=2.0, batch_size=2)
    assert mask.shape == (2, 1, H, W) and mask.abs().sum() == 0


def test_infinite_sigma2_gives_the_binary_box_mask():
    boxes = [[3, 5, 30, 17], [20, 20, 50, 45]]
    mask = mask_of(boxes, sigma2=math.inf)
    expected = inside_any(torch.tensor(boxes, dtype=torch.float32), (H, W), STRIDE).float()
    torch.testing.assert_close(mask[0, 0], expected, rtol=0, atol=0)
    # ... and the Gaussian tends to it as sigma2 grows.
    torch.testing.assert_close(mask_of(boxes, sigma2=1e9)[0, 0], expected)


def test_zero_width_box_on_a_cell_centre_is_one_there_and_never_nan():
    # x1 = x2 = 12: only the x = 12 column is inside, with u = 0 (no 0 / 0). y = 4, 12, 20 give v = -1, 0, 1.
    mask = mask_of([[12, 4, 12, 20]], sigma2=0.5)
    assert torch.isfinite(mask).all()
    assert mask[0, 0, 1, 1].item() == 1.0
    assert mask[0, 0, 0, 1].item() == pytest.approx(math.exp(-1 / 0.5))
    assert mask[0, 0, :, [0, 2]].abs().sum() == 0


def test_chunking_over_boxes_does_not_change_the_mask():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(40, 2, generator=g) * 50
    wh = torch.rand(40, 2, generator=g) * 30
    boxes = torch.cat([xy, xy + wh], 1)
    index = torch.randint(0, 3, (40,), generator=g)
    whole = gaussian_mask(boxes, index, 3, (H, W), STRIDE, 2.0)
    chunked = gaussian_mask(boxes, index, 3, (H, W), STRIDE, 2.0, chunk_elements=1)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)


def test_gaussian_mask_matches_the_cell_by_cell_definition():
    boxes = [[3.0, 5.0, 30.0, 17.0], [20.0, 20.0, 50.0, 45.0], [0.0, 0.0, 12.0, 44.0]]
    mask = mask_of(boxes, sigma2=0.7, batch_index=[0, 1, 1], batch_size=2)
    torch.testing.assert_close(mask, reference_mask(boxes, [0, 1, 1], 2, (H, W), STRIDE, 0.7))


def test_gaussian_mask_keeps_dtype_and_device_and_rejects_bad_input():
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0]], dtype=torch.float64)
    index = torch.zeros(1, dtype=torch.long)
    assert gaussian_mask(boxes, index, 1, (2, 2), 8, 2.0).dtype == torch.float64
    with pytest.raises(ValueError, match="sigma2"):
        gaussian_mask(boxes, index, 1, (2, 2), 8, 0.0)
    with pytest.raises(ValueError, match="sigma2"):
        gaussian_mask(boxes, index, 1, (2, 2), 8, math.nan)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        gaussian_mask(boxes[:, :3], index, 1, (2, 2), 8, 2.0)
    with pytest.raises(ValueError, match="batch_index"):
        gaussian_mask(boxes, torch.zeros(2, dtype=torch.long), 1, (2, 2), 8, 2.0)


# --- properties -----------------------------------------------------------------------------------

coordinate = st.floats(-10.0, 70.0, allow_nan=False, width=32)
extent = st.floats(0.0, 60.0, allow_nan=False, width=32)


@st.composite
def box_lists(draw, max_boxes=6):
    n = draw(st.integers(0, max_boxes))
    boxes = []
    for _ in range(n):
        x1, y1, w, h = draw(coordinate), draw(coordinate), draw(extent), draw(extent)
        boxes.append([x1, y1, x1 + w, y1 + h])
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


sigma2s = st.floats(0.05, 1e4, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(boxes=box_lists(), sigma2=sigma2s)
def test_mask_is_in_unit_interval_and_zero_outside_every_box(boxes, sigma2):
    mask = gaussian_mask(boxes, torch.zeros(len(boxes), dtype=torch.long), 1, (H, W), STRIDE, sigma2)
    assert torch.isfinite(mask).all()
    assert (mask >= 0).all() and (mask <= 1).all()
    inside = inside_any(boxes, (H, W), STRIDE)
    assert (mask[0, 0][~inside] == 0).all()
    # u^2 + v^2 <= 2 inside a box, so with sigma2 >= 0.05 nothing inside underflows to 0.
    assert (mask[0, 0][inside] > 0).all()


@settings(max_examples=60, deadline=None)
@given(
    row=st.integers(0, H - 1),
    col=st.integers(0, W - 1),
    half_w=st.floats(0.0, 40.0, allow_nan=False),
    half_h=st.floats(0.0, 40.0, allow_nan=False),
    others=box_lists(max_boxes=3),
    sigma2=sigma2s,
)
def test_mask_is_one_at_a_box_centre_cell(row, col, half_w, half_h, others, sigma2):
    cx, cy = (col + 0.5) * STRIDE, (row + 0.5) * STRIDE
    centred = torch.tensor([[cx - half_w, cy - half_h, cx + half_w, cy + half_h]], dtype=torch.float32)
    boxes = torch.cat([others, centred])
    mask = gaussian_mask(boxes, torch.zeros(len(boxes), dtype=torch.long), 1, (H, W), STRIDE, sigma2)
    assert mask[0, 0, row, col].item() == pytest.approx(1.0, abs=1e-5)


@settings(max_examples=60, deadline=None)
@given(boxes=box_lists(), low=sigma2s, factor=st.floats(1.0, 100.0))
def test_mask_is_monotone_in_sigma2(boxes, low, factor):
    index = torch.zeros(len(boxes), dtype=torch.long)
    narrow = gaussian_mask(boxes, index, 1, (H, W), STRIDE, low)
    wide = gaussian_mask(boxes, index, 1, (H, W), STRIDE, low * factor)
    binary = gaussian_mask(boxes, index, 1, (H, W), STRIDE, math.inf)
    assert (narrow <= wide + 1e-6).all()
    assert (wide <= binary + 1e-6).all()


@settings(max_examples=30, deadline=None)
@given(boxes=box_lists(max_boxes=4), sigma2=sigma2s, images=st.integers(1, 3), data=st.data())
def test_mask_matches_the_definition_on_random_boxes(boxes, sigma2, images, data):
    index = data.draw(st.lists(st.integers(0, images - 1), min_size=len(boxes), max_size=len(boxes)))
    mask = gaussian_mask(boxes, torch.tensor(index, dtype=torch.long), images, (H, W), STRIDE, sigma2)
    expected = reference_mask(boxes.tolist(), index, images, (H, W), STRIDE, sigma2)
    torch.testing.assert_close(mask, expected, rtol=1e-5, atol=1e-6)
