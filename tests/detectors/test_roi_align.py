"""RoIAlign against hand-worked values and a scalar transcription of torchvision's C++ kernel.

The map ``10 * y + x`` makes hand-working easy: bilinear interpolation of a linear function is exact, so a
sample inside the map reads ``10 y + x``; the kernel's border rules (zero outside [-1, H] x [-1, W],
clamping at 0 and at H - 1 / W - 1) show as departures from that plane.
"""

from __future__ import annotations

import math

import pytest
import torch

from detectors.ops.multiscale_roi_align import MultiScaleRoIAlign, fpn_levels
from detectors.ops.roi_align import roi_align


def plane(h: int = 4, w: int = 4, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    return (10 * ys + xs)[None, None]


def one(box: list[float], **kw) -> float:
    out = roi_align(plane(), torch.tensor([[0.0, *box]], dtype=torch.float64), **kw)
    assert out.shape[:2] == (1, 1)
    return out[0, 0].tolist()


def kernel_reference(x, rois, ph, pw, scale, sampling_ratio, aligned):
    """torchvision's roi_align_kernel.cpp, one sample at a time in Python floats (float64)."""
    n, c, h, w = x.shape
    data = x.tolist()
    out = torch.zeros(len(rois), c, ph, pw, dtype=torch.float64)
    for r, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        off = 0.5 if aligned else 0.0
        sw, sh, ew, eh = x1 * scale - off, y1 * scale - off, x2 * scale - off, y2 * scale - off
        rw, rh = ew - sw, eh - sh
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph, rw / pw
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / ph)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pw)
        count = max(gh * gw, 1)
        for ch in range(c):
            img = data[int(b)][ch]
            for i in range(ph):
                for j in range(pw):
                    acc = 0.0
                    for iy in range(gh):
                        yy = sh + i * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            xx = sw + j * bw + (ix + 0.5) * bw / gw
                            if not (-1.0 <= yy <= h and -1.0 <= xx <= w):
                                continue
                            y, xv = max(yy, 0.0), max(xx, 0.0)
                            yl, xl = int(y), int(xv)
                            if yl >= h - 1:
                                yl = yh = h - 1
                                y = float(yl)
                            else:
                                yh = yl + 1
                            if xl >= w - 1:
                                xl = xh = w - 1
                                xv = float(xl)
                            else:
                                xh = xl + 1
                            ly, lx = y - yl, xv - xl
                            hy, hx = 1.0 - ly, 1.0 - lx
                            acc += (
                                hy * hx * img[yl][xl]
                                + hy * lx * img[yl][xh]
                                + ly * hx * img[yh][xl]
                                + ly * lx * img[yh][xh]
                            )
                    out[r, ch, i, j] = acc / count
    return out


def test_box_inside_averages_the_plane_at_its_samples():
    # bin 2 x 2, samples at 0.5 and 1.5 on each axis: mean of 10 y + x is 10 * 1 + 1
    assert one([0, 0, 2, 2], output_size=1, sampling_ratio=2) == [[11.0]]


def test_aligned_shifts_the_box_by_half_a_pixel():
    # corners -0.5 .. 1.5: samples at 0 and 1 -> 10 * 0.5 + 0.5
    assert one([0, 0, 2, 2], output_size=1, sampling_ratio=2, aligned=True) == [[5.5]]


def test_samples_left_of_the_map_down_to_minus_one_read_column_zero():
    # x samples at -1 (kept, clamped to 0) and 1; y at 0.5, 1.5 -> 10 + (0 + 1) / 2
    assert one([-2, 0, 2, 2], output_size=1, sampling_ratio=2) == [[10.5]]


def test_samples_beyond_minus_one_count_as_zero_but_still_divide():
    # bin 5 x 2: x samples at -1.75 (zero) and 0.75; y at 0.5, 1.5 -> (5.75 + 15.75) / 4
    assert one([-3, 0, 2, 2], output_size=1, sampling_ratio=2) == [[5.375]]


def test_samples_past_the_last_column_read_it_without_extrapolating():
    # x = 3.5 lies in (W - 1, W]: reads column 3 only (the plane would say 13.5)
    assert one([3, 0, 4, 2], output_size=1, sampling_ratio=1) == [[13.0]]


def test_samples_beyond_the_right_edge_count_as_zero():
    # x samples at 3 (column 3) and 5 (> W = 4, zero); y at 0.5, 1.5 -> (8 + 18) / 4
    assert one([2, 0, 6, 2], output_size=1, sampling_ratio=2) == [[6.5]]


def test_box_outside_the_map_pools_zeros():
    assert one([10, 10, 12, 12], output_size=2, sampling_ratio=-1) == [[0.0, 0.0], [0.0, 0.0]]


def test_adaptive_sampling_uses_ceil_of_the_bin_size():
    # bin 4 x 1 -> grid 4 x 1: x at 0.5, 1.5, 2.5, 3.5 (-> 3); y at 0.5 -> 5 + 7.5 / 4
    assert one([0, 0, 4, 1], output_size=1, sampling_ratio=-1) == [[6.875]]
    assert one([0, 0, 4, 1], output_size=1, sampling_ratio=1) == [[7.0]]  # x = 2


def test_adaptive_grid_per_bin_of_a_two_by_two_output():
    # 2 x 2 samples per bin; the second column's samples 2.5 and 3.5 (-> 3) average 2.75
    assert one([0, 0, 4, 4], output_size=2, sampling_ratio=0) == [[11.0, 12.75], [28.5, 30.25]]


def test_empty_box_is_one_pixel_unless_aligned():
    assert one([1, 1, 1, 1], output_size=1) == [[16.5]]  # 1 x 1 RoI, sample at (1.5, 1.5)
    assert one([1, 1, 1, 1], output_size=1, aligned=True) == [[0.0]]  # grid 0: zeros


def test_spatial_scale_maps_image_boxes_onto_the_feature_map():
    assert one([0, 0, 8, 8], output_size=1, sampling_ratio=2, spatial_scale=0.25) == [[11.0]]


def test_list_of_boxes_is_the_batch_indexed_form():
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    a, b = torch.tensor([[0.0, 1, 4, 5]]), torch.tensor([[1.0, 0, 3, 2], [-2.0, 2, 2, 9]])
    rois = torch.cat([torch.cat([torch.zeros(1, 1), a], 1), torch.cat([torch.ones(2, 1), b], 1)])
    assert torch.equal(roi_align(x, [a, b], (2, 3)), roi_align(x, rois, (2, 3)))
    assert torch.equal(roi_align(x, [a, b], 2)[1:], roi_align(x[1:], [b], 2))


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_random_boxes_equal_the_kernel_bit_for_bit(aligned, sampling_ratio):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 7, 9, dtype=torch.float64, generator=g)
    xy = torch.rand(40, 2, generator=g, dtype=torch.float64) * 24 - 6  # inside, crossing and outside
    wh = torch.rand(40, 2, generator=g, dtype=torch.float64) * 14 - 1  # incl. inverted boxes
    rois = torch.cat([torch.randint(0, 2, (40, 1), generator=g).double(), xy, xy + wh], 1)
    got = roi_align(x, rois, (2, 3), 0.5, sampling_ratio, aligned)
    assert torch.equal(got, kernel_reference(x, rois, 2, 3, 0.5, sampling_ratio, aligned))


def test_float32_follows_the_same_rules():
    x = plane(dtype=torch.float32)
    got = roi_align(x, torch.tensor([[0.0, -3, 0, 2, 2], [0.0, 0, 0, 4, 4]]), 2, sampling_ratio=2)
    want = roi_align(
        x.double(), torch.tensor([[0.0, -3, 0, 2, 2], [0.0, 0, 0, 4, 4]]).double(), 2, sampling_ratio=2
    )
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want)


def test_gradient_matches_finite_differences_and_skips_the_boxes():
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor(
        [[0.0, -1.5, 0.5, 3.2, 4.1], [0.0, 2.3, 1.1, 7.9, 5.5]], dtype=torch.float64, requires_grad=True
    )
    assert torch.autograd.gradcheck(lambda t: roi_align(t, boxes, (2, 2), 1.0, -1, False), (x,))
    assert torch.equal(roi_align(x, boxes, 2), roi_align(x.detach(), boxes, 2))  # graph path == buffered path
    roi_align(x, boxes, 2).sum().backward()
    assert boxes.grad is None  # the kernel has no gradient for the boxes either


def test_no_boxes_give_an_empty_result_connected_to_the_input():
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    out = roi_align(x, torch.zeros(0, 5), 7)
    assert out.shape == (0, 3, 7, 7)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_bad_shapes_and_batch_indices_are_refused():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"\(L, 5\)"):
        roi_align(x, torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        roi_align(x, [torch.zeros(3, 5)], 2)
    with pytest.raises(ValueError, match="batch indices"):
        roi_align(x, torch.tensor([[1.0, 0, 0, 2, 2]]), 2)


def test_fpn_level_follows_the_box_scale_and_clamps_to_the_pyramid():
    boxes = [
        torch.tensor([[0.0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 111, 112], [0, 0, 4, 4], [0, 0, 900, 900]])
    ]
    # k = floor(4 + log2(sqrt(area) / 224) + 1e-6): 4, 3, 2 (just under 112), then clamped to 2 and 5
    assert fpn_levels(boxes, k_min=2, k_max=5).tolist() == [2, 1, 0, 0, 3]


def test_multiscale_pools_each_box_from_its_level_at_that_stride():
    g = torch.Generator().manual_seed(0)
    feats = {
        s: torch.randn(1, 3, 512 // s, 512 // s, generator=g, dtype=torch.float64) for s in (4, 8, 16, 32)
    }
    # sqrt(area) 26.8, 150, 300, 500 -> k = 0 (clamped to 2), 3, 4, 5 -> strides 4, 8, 16, 32
    sides = [(10.0, 20, 40, 44), (0, 0, 150, 150), (100, 50, 400, 350), (-20, 0, 480, 500)]
    boxes = [torch.tensor(sides, dtype=torch.float64)]
    got = MultiScaleRoIAlign([4, 8, 16, 32], 5, 2)(feats, boxes)
    for i, stride in enumerate([4, 8, 16, 32]):
        want = roi_align(feats[stride], [boxes[0][i : i + 1]], 5, 1 / stride, 2)
        assert torch.equal(got[i : i + 1], want)


def test_multiscale_with_named_levels_infers_the_scales_from_the_image_size():
    feats = {"0": torch.randn(1, 2, 32, 32), "1": torch.randn(1, 2, 16, 16), "pool": torch.randn(1, 2, 8, 8)}
    boxes = [torch.tensor([[0.0, 0, 60, 60], [0, 0, 128, 128]])]
    pooler = MultiScaleRoIAlign(["0", "1"], 2, 2)
    got = pooler(feats, boxes, [(128, 128)])
    assert torch.equal(got[:1], roi_align(feats["0"], [boxes[0][:1]], 2, 1 / 4, 2))
    assert torch.equal(got[1:], roi_align(feats["1"], [boxes[0][1:]], 2, 1 / 8, 2))
    with pytest.raises(ValueError, match="image_shapes"):
        pooler(feats, boxes)
