"""eval.rect: rectangular evaluation batches hold every image at the square letterbox's scale and pixels,
in the smallest stride-aligned shape, with exact maps back to the original image; the image cache gives
the same batches."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.data.image_cache import build_image_cache
from detectors.data.kitti import read_kitti
from detectors.data.rect_eval import build_rect_eval_loader, rect_batches, rect_shape
from detectors.data.sample import Sample
from detectors.data.transforms import letterbox

CLASSES = ["Car", "Pedestrian", "Cyclist"]


def test_the_shape_holds_the_squares_scale_plus_half_a_stride_per_side_as_ultralytics_val():
    assert rect_shape([(1242, 375)], 640) == (672, 224)  # 1242x375 -> 640x193 -> ceil(20.5), ceil(6.53) strides
    assert rect_shape([(1242, 375)], 320) == (352, 128)  # -> 320x97
    assert rect_shape([(1242, 384)], 320) == (352, 128)  # -> 320x99: 3.09 + 0.5 strides -> 4
    assert rect_shape([(640, 192)], 320) == (352, 128)  # -> 320x96: exactly 3 strides still gets padding
    assert rect_shape([(375, 1242)], 640) == (224, 672)  # portrait
    assert rect_shape([(500, 500)], 640) == (672, 672)
    assert rect_shape([(1242, 375), (1000, 600)], 640) == (672, 416)  # the tallest of the batch: 640x384
    assert rect_shape([(1242, 375)], 640, pad=0.0) == (640, 224)  # the minimal shape


def test_batches_sort_by_aspect_ratio_and_cover_every_sample_once():
    sizes = [(1242, 375), (375, 1242), (800, 600), (1242, 375), (600, 800), (1000, 1000)]
    samples = [Sample(image_id=i, name=str(i), image_path=f"{i}.png", width=w, height=h)
               for i, (w, h) in enumerate(sizes)]
    batches = rect_batches(samples, 2, 640)
    assert [i for indices, _ in batches for i in indices] == [0, 3, 2, 5, 4, 1]
    assert [shape for _, shape in batches] == [(672, 224), (672, 672), (512, 672)]
    assert all(w % 32 == 0 and h % 32 == 0 for _, (w, h) in batches)


@pytest.fixture
def samples(synthetic_root):
    return read_kitti(synthetic_root, "train", CLASSES)


def _all(loader):
    return [batch for batch in loader]


@pytest.mark.parametrize("img_size", [96, 128])
def test_rect_batches_hold_the_square_letterboxs_pixels_and_map_back_exactly(samples, img_size):
    import cv2

    batches = _all(build_rect_eval_loader(samples, img_size=img_size, batch_size=3, workers=0))
    seen = []
    for batch in batches:
        b, _, height, width = batch.images.shape
        assert height % 32 == 0 and width % 32 == 0 and height * width < img_size * img_size
        for k, (meta, image_id) in enumerate(zip(batch.metas, batch.image_ids, strict=True)):
            sample = samples[image_id]
            square, square_meta = letterbox(cv2.imread(str(sample.image_path)), img_size)
            assert (meta.scale_x, meta.scale_y) == (square_meta.scale_x, square_meta.scale_y)
            new_h, new_w = round(sample.height * meta.scale_y), round(sample.width * meta.scale_x)
            inner = batch.images[k, :, meta.pad_y:meta.pad_y + new_h, meta.pad_x:meta.pad_x + new_w]
            expected = square[square_meta.pad_y:square_meta.pad_y + new_h, square_meta.pad_x:square_meta.pad_x + new_w]
            expected = np.ascontiguousarray(expected[:, :, ::-1].transpose(2, 0, 1)) / 255.0
            assert np.allclose(inner.numpy(), expected, atol=1e-7)
            rows = batch.targets[batch.targets[:, 0] == k]
            cx, cy, w, h = (rows[:, 2:] * torch_size(width, height)).T.numpy()
            boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
            assert np.allclose(meta.to_original(boxes), sample.boxes, atol=1e-3)
            seen.append(image_id)
    assert sorted(seen) == [s.image_id for s in samples]


def torch_size(width, height):
    import torch

    return torch.tensor([width, height, width, height], dtype=torch.float32)


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_the_image_cache_gives_identical_rect_batches(samples, tmp_path, mode):
    plain = _all(build_rect_eval_loader(samples, img_size=128, batch_size=4, workers=0))
    cache = build_image_cache(mode, samples, 128, cache_dir=tmp_path)
    cached = _all(build_rect_eval_loader(samples, img_size=128, batch_size=4, workers=0, cache=cache))
    assert len(plain) == len(cached)
    for a, b in zip(plain, cached, strict=True):
        assert np.array_equal(a.images.numpy(), b.images.numpy()) and np.array_equal(a.targets, b.targets)
        assert a.metas == b.metas and a.image_ids == b.image_ids
