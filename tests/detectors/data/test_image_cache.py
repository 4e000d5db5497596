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
