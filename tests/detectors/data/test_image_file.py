"""Every image is decoded before a run starts; a damaged one is named with what is wrong."""

import cv2
import numpy as np
import pytest

from detectors.config import DataConfig
from detectors.data import load_samples
from detectors.data.image_cache import ImageCache, check_split_images
from detectors.data.image_file import check_images, read_image
from detectors.errors import DataFormatError


def _write(path, suffix=".jpg", size=(96, 64)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path.with_suffix(suffix)), rng.integers(0, 255, (size[1], size[0], 3), np.uint8))
    return path.with_suffix(suffix)


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _yolo_split(tmp_path, names=("a", "b", "c")):
    for name in names:
        _write(tmp_path / "images" / "val" / name)
        (tmp_path / "labels" / "val").mkdir(parents=True, exist_ok=True)
        (tmp_path / "labels" / "val" / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    return DataConfig(format="yolo", root=str(tmp_path), val="images/val", classes=["Car"])


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_truncated_image_is_named_as_truncated_not_as_missing(tmp_path, suffix):
    path = _write(tmp_path / "x", suffix)
    assert read_image(path).shape == (64, 96, 3)
    _truncate(path)
    with pytest.raises(DataFormatError, match=rf"x\{suffix}: truncated {'PNG' if suffix == '.png' else 'JPEG'}"):
        read_image(path)


def test_a_missing_image_and_a_file_of_noise_are_told_apart(tmp_path):
    with pytest.raises(DataFormatError, match=r"nope\.png: image not found"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "noise.bmp").write_bytes(b"\x01" * 300)
    with pytest.raises(DataFormatError, match=r"noise\.bmp: not a decodable image"):
        read_image(tmp_path / "noise.bmp")


def test_a_truncated_jpeg_in_a_yolo_split_is_found_by_the_pre_flight_decode(tmp_path):
    cfg = _yolo_split(tmp_path)
    samples = load_samples(cfg, "val")  # headers only: a truncated JPEG still has its size
    _truncate(samples[1].image_path)
    samples = load_samples(cfg, "val")
    with pytest.raises(DataFormatError, match=r"images/val/b\.jpg: truncated JPEG"):
        check_images(samples, threads=2)
    _truncate(samples[2].image_path)  # two bad files: the first in split order is named, whatever the threads
    with pytest.raises(DataFormatError, match=r"b\.jpg"):
        check_images(samples, threads=2)


def test_an_image_whose_size_differs_from_its_header_read_is_refused(tmp_path):
    cfg = _yolo_split(tmp_path, names=("a",))
    (sample,) = load_samples(cfg, "val")
    _write(tmp_path / "images" / "val" / "a", ".jpg", size=(50, 40))
    with pytest.raises(DataFormatError, match=r"a\.jpg: image is 50x40, labels were read for 96x64"):
        check_images([sample])


def test_with_a_disk_cache_the_check_builds_the_cache_the_run_then_opens(tmp_path, monkeypatch):
    monkeypatch.setenv("MSSD_CACHE_DIR", str(tmp_path / "cache"))
    samples = load_samples(_yolo_split(tmp_path), "val")
    check_split_images("disk", samples, 64, threads=1)
    (built,) = (tmp_path / "cache").glob("*.bin")
    stamp = built.stat().st_mtime_ns
    cache = ImageCache.open_disk(samples, 64)  # what the run's loader does: reads the file, decodes nothing
    assert len(cache) == 3 and built.stat().st_mtime_ns == stamp


def test_a_damaged_image_is_refused_by_the_disk_cache_build_too(tmp_path, monkeypatch):
    monkeypatch.setenv("MSSD_CACHE_DIR", str(tmp_path / "cache"))
    samples = load_samples(_yolo_split(tmp_path), "val")
    _truncate(samples[0].image_path)
    with pytest.raises(DataFormatError, match=r"a\.jpg: truncated JPEG"):
        check_split_images("disk", samples, 64, threads=1)
    assert not list((tmp_path / "cache").glob("*.json"))  # no index: nothing half-built is ever read
