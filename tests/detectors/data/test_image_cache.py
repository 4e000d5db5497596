"""data.cache: the decoded-image cache gives the pixels that decoding the files gives; a disk cache is
built once, reopened by later runs and workers, never read when the data or the input size changed,
and a corrupt one is refused with one line naming the file."""

from __future__ import annotations

import os
import pickle
import shutil

import cv2
import numpy as np
import pytest
import torch

from detectors.data.image_cache import ImageCache, build_image_cache, fingerprint, resized_for_input
from detectors.data.kitti import read_kitti
from detectors.data.transforms import letterbox
from detectors.errors import DataFormatError

CLASSES = ["Car", "Pedestrian", "Cyclist"]


@pytest.fixture
def samples(synthetic_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)  # the tests below modify files
    return read_kitti(root, "train", CLASSES)


def _decoded(sample, size):
    return resized_for_input(cv2.imread(str(sample.image_path)), size)


def test_the_resize_is_letterboxs_so_padding_a_cached_image_gives_the_letterbox(samples):
    for size in (64, 128, 320):
        image = cv2.imread(str(samples[0].image_path))
        boxed, meta = letterbox(image, size)
        resized = resized_for_input(image, size)
        assert resized.shape[:2] == (round(meta.orig_height * meta.scale_y), round(meta.orig_width * meta.scale_x))
        inner = boxed[meta.pad_y:meta.pad_y + resized.shape[0], meta.pad_x:meta.pad_x + resized.shape[1]]
        assert np.array_equal(inner, resized)


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_a_cache_holds_exactly_the_decoded_resized_images(samples, tmp_path, mode):
    cache = build_image_cache(mode, samples, 128, cache_dir=tmp_path / "cache")
    assert len(cache) == len(samples)
    for i, sample in enumerate(samples):
        assert np.array_equal(cache.image(i), _decoded(sample, 128))
    assert build_image_cache("none", samples, 128) is None


def test_a_disk_cache_is_built_once_and_reopened_by_later_runs_and_workers(samples, tmp_path):
    folder = tmp_path / "cache"
    first = ImageCache.open_disk(samples, 128, cache_dir=folder)
    data_file = first.path
    stamp = data_file.stat().st_mtime_ns
    again = ImageCache.open_disk(samples, 128, cache_dir=folder)
    assert again.path == data_file and data_file.stat().st_mtime_ns == stamp  # a hit: not rebuilt
    worker_copy = pickle.loads(pickle.dumps(again))  # what a DataLoader worker receives
    assert len(pickle.dumps(again)) < 10_000  # the path, not the pixels
    assert all(np.array_equal(worker_copy.image(i), again.image(i)) for i in range(len(samples)))
    assert not worker_copy.image(0).flags.writeable  # shared read-only


def test_changed_data_or_input_size_gives_a_new_cache(samples, tmp_path):
    folder = tmp_path / "cache"
    old = ImageCache.open_disk(samples, 128, cache_dir=folder)
    other_size = ImageCache.open_disk(samples, 96, cache_dir=folder)
    assert other_size.path != old.path and other_size.image(0).shape != old.image(0).shape

    key = fingerprint(samples, 128)
    path = samples[0].image_path
    image = cv2.imread(str(path))
    cv2.imwrite(str(path), 255 - image)  # the same file, new pixels
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert fingerprint(samples, 128) != key
    fresh = ImageCache.open_disk(samples, 128, cache_dir=folder)
    assert fresh.path != old.path
    assert np.array_equal(fresh.image(0), _decoded(samples[0], 128))
    assert not np.array_equal(fresh.image(0), old.image(0))
    assert fingerprint(samples[::-1], 128) != fingerprint(samples, 128)  # order matters: indices address it


def test_a_corrupt_disk_cache_is_refused_in_one_line_naming_the_file(samples, tmp_path):
    folder = tmp_path / "cache"
    cache = ImageCache.open_disk(samples, 128, cache_dir=folder)
    with open(cache.path, "r+b") as f:
        f.truncate(cache.path.stat().st_size // 2)
    with pytest.raises(DataFormatError) as err:
        ImageCache.open_disk(samples, 128, cache_dir=folder)
    message = str(err.value)
    assert "\n" not in message and str(cache.path) in message and "corrupt" in message
    cache.path.with_suffix(".json").write_text("{not json")
    with pytest.raises(DataFormatError, match=r"\.json: image cache index is corrupt"):
        ImageCache.open_disk(samples, 128, cache_dir=folder)


def test_a_build_that_died_before_its_index_is_rebuilt(samples, tmp_path):
    folder = tmp_path / "cache"
    cache = ImageCache.open_disk(samples, 128, cache_dir=folder)
    cache.path.with_suffix(".json").unlink()  # the index is written last
    cache.path.write_bytes(b"half")
    rebuilt = ImageCache.open_disk(samples, 128, cache_dir=folder)
    assert np.array_equal(rebuilt.image(1), _decoded(samples[1], 128))


def test_an_unknown_mode_or_a_missing_image_says_so(samples, tmp_path):
    with pytest.raises(DataFormatError, match="data.cache: expected one of none, ram, disk"):
        build_image_cache("gpu", samples, 128)
    samples[2].image_path.unlink()
    with pytest.raises(DataFormatError, match="image not found"):
        build_image_cache("ram", samples, 128)


# ------------------------------------------------------------------------------------------------
# through the loader (data.cache)


def _batches(samples, mode, cache_dir, *, augment, workers=0, **augment_keys):
    from detectors.config import AugmentConfig, DataConfig
    from detectors.data import build_dataloader

    cfg = DataConfig(format="kitti", root=str(samples[0].image_path.parents[2]), img_size=128, workers=workers,
                     cache=mode, augment=AugmentConfig(**augment_keys))
    os.environ["MSSD_CACHE_DIR"] = str(cache_dir)
    try:
        loader = build_dataloader(cfg, samples, batch_size=3, augment=augment, shuffle=augment, seed=5, epochs=3)
        return [b for _ in range(2) for b in loader]  # two epochs
    finally:
        del os.environ["MSSD_CACHE_DIR"]


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_evaluation_batches_from_the_cache_are_identical(samples, tmp_path, mode):
    plain = _batches(samples, "none", tmp_path, augment=False)
    cached = _batches(samples, mode, tmp_path, augment=False)
    for a, b in zip(plain, cached, strict=True):
        assert torch_equal(a.images, b.images) and torch_equal(a.targets, b.targets)
        assert a.metas == b.metas and a.image_ids == b.image_ids and torch_equal(a.ignore, b.ignore)


@pytest.mark.parametrize("augment_keys", [{"mosaic": 0.0, "translate": 0.0, "scale": 0.0}, {}],
                         ids=["flip+hsv", "recipe (mosaic, affine, ...)"])
def test_augmented_batches_from_a_disk_cache_hit_match_decoding(samples, tmp_path, augment_keys):
    plain = _batches(samples, "none", tmp_path, augment=True, **augment_keys)
    built = _batches(samples, "disk", tmp_path, augment=True, **augment_keys)
    hit = _batches(samples, "disk", tmp_path, augment=True, workers=2, **augment_keys)  # reopened by workers
    assert len(list(tmp_path.glob("*.bin"))) == 1
    for a, b, c in zip(plain, built, hit, strict=True):
        assert torch_equal(b.images, c.images) and torch_equal(b.targets, c.targets)  # a hit: bit-identical
        assert torch_equal(a.images, b.images)  # the same pixels as decoding the files
        # labels scaled before the letterbox instead of inside it: float32 rounding only
        assert a.targets.shape == b.targets.shape and torch.allclose(a.targets, b.targets, atol=1e-5)
        assert [m is None for m in a.metas] == [m is None for m in b.metas]
        for ma, mb in zip(a.metas, b.metas, strict=True):
            if ma is not None:
                assert (ma.orig_width, ma.scale_x, ma.pad_x, ma.pad_y, ma.flipped) == \
                    (mb.orig_width, pytest.approx(mb.scale_x), mb.pad_x, mb.pad_y, mb.flipped)


def torch_equal(a, b) -> bool:
    return bool(torch.equal(a, b))
