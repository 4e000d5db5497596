"""Decoded-image cache (``data.cache: none | ram | disk``): each image decoded and resized once.

What is cached: every sample's image decoded (BGR uint8) and resized exactly as ``letterbox`` resizes
it for input size S (longer side S, same rounding, area averaging when shrinking), before padding. That
is also what mosaic's tiles start from, so a loader reading the cache produces the same pixels as one
decoding the files (tested), for KITTI's 1242x375 at S=640 in ~27 % of the decoded bytes.

- ``ram``: built in the loading process before the DataLoader forks its workers, which share it
  copy-on-write; rebuilt by every run.
- ``disk``: one memory-mapped file per (data, input size) on the node, built once and opened read-only
  by every trial and worker of a study (the page cache holds one copy). Its name carries a fingerprint
  of every image file (path, size, mtime) and S, so changed data or a new input size is a different
  file: a stale cache is never read. Builders on the same node take a file lock; the index (JSON) is
  written last, so a build that died midway is rebuilt, and an index whose data file does not match
  raises one ``DataFormatError`` line naming the file.

The folder is ``$MSSD_CACHE_DIR`` or ``~/.cache/mssd/images`` (``cache_dir`` overrides it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from detectors.data.image_file import check_images, check_size, read_image
from detectors.data.sample import Sample
from detectors.data.transforms import letterbox_meta
from detectors.errors import DataFormatError

CACHE_MODES = ("none", "ram", "disk")
# Bump when what is stored changes (resize rule, layout). 2: images are decode-checked (a truncated JPEG
# used to be cached with its grey rows); caches written before are rebuilt.
CACHE_VERSION = 2


def default_cache_dir() -> Path:
    return Path(os.environ.get("MSSD_CACHE_DIR") or Path.home() / ".cache" / "mssd" / "images")


def resized_for_input(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` resized as ``letterbox(image, size)`` resizes it, without the padding."""
    height, width = image.shape[:2]
    meta = letterbox_meta(width, height, size)
    new_w, new_h = round(width * meta.scale_x), round(height * meta.scale_y)
    if (new_w, new_h) == (width, height):
        return image
    interp = cv2.INTER_AREA if meta.scale_x < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (new_w, new_h), interpolation=interp)


def _decode(sample: Sample, size: int) -> np.ndarray:
    image = read_image(sample.image_path)  # names the file and what is wrong (missing, truncated, corrupt)
    check_size(sample, image)
    return np.ascontiguousarray(resized_for_input(image, size))


def fingerprint(samples: Sequence[Sample], size: int) -> str:
    """Changes when any image file (path, size, mtime), the sample order or the input size changes."""
    digest = hashlib.sha256(f"mssd-image-cache v{CACHE_VERSION} size {size}\n".encode())
    for s in samples:
        path = Path(s.image_path)
        try:
            st = path.stat()
            stamp = f"{st.st_size} {st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{path.resolve()} {stamp} {s.width} {s.height}\n".encode())
    return digest.hexdigest()[:20]


class ImageCache:
    """Resized images of ``samples`` (in their order) at input size ``size``; ``image(i)`` is read-only."""

    def __init__(self, buffer: np.ndarray, entries: list[tuple[int, int, int]], size: int,
                 path: Path | None = None) -> None:
        self._buffer = buffer  # uint8, flat
        self.entries = entries  # (offset, height, width) per sample
        self.size = size
        self.path = path  # the data file of a disk cache (reopened by each worker), None in RAM

    def __len__(self) -> int:
        return len(self.entries)

    def image(self, index: int) -> np.ndarray:
        offset, height, width = self.entries[index]
        return self._buffer[offset:offset + height * width * 3].reshape(height, width, 3)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.path is not None:  # a worker maps the file itself rather than receiving its bytes
            state["_buffer"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self._buffer is None:
            self._buffer = np.memmap(self.path, dtype=np.uint8, mode="r")

    @classmethod
    def build_ram(cls, samples: Sequence[Sample], size: int, *, threads: int | None = None) -> ImageCache:
        images = _decode_all(samples, size, threads)
        entries, total = _layout(images)
        buffer = np.empty(total, np.uint8)
        for (offset, _, _), image in zip(entries, images, strict=True):
            buffer[offset:offset + image.size] = image.reshape(-1)
        return cls(buffer, entries, size)

    @classmethod
    def open_disk(cls, samples: Sequence[Sample], size: int, *, cache_dir: str | os.PathLike | None = None,
                  threads: int | None = None) -> ImageCache:
        """The node's cache file for (``samples``, ``size``), built first if there is none."""
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        key = f"images-{fingerprint(samples, size)}-{size}"
        data_path, index_path = folder / f"{key}.bin", folder / f"{key}.json"
        if not index_path.exists():
            with open(folder / f"{key}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per node; the others wait, then read
                if not index_path.exists():
                    _write_disk_cache(samples, size, data_path, index_path, threads)
        return cls._read_disk(data_path, index_path, len(samples), size)

    @classmethod
    def _read_disk(cls, data_path: Path, index_path: Path, count: int, size: int) -> ImageCache:
        try:
            index = json.loads(index_path.read_text())
            entries = [tuple(map(int, e)) for e in index["entries"]]
            expected = int(index["bytes"])
            ok = index["version"] == CACHE_VERSION and index["size"] == size and len(entries) == count
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataFormatError(f"{index_path}: image cache index is corrupt ({exc}); delete it and its "
                                  f".bin to rebuild, or set data.cache: none") from None
        actual = data_path.stat().st_size if data_path.exists() else -1
        if not ok or actual != expected:
            raise DataFormatError(f"{data_path}: image cache is corrupt (expected {expected} bytes for {count} "
                                  f"images at {size} px, found {actual}); delete it and its .json to rebuild, "
                                  f"or set data.cache: none")
        buffer = np.memmap(data_path, dtype=np.uint8, mode="r") if expected else np.zeros(0, np.uint8)
        return cls(buffer, entries, size, data_path)


def _decode_all(samples: Sequence[Sample], size: int, threads: int | None) -> list[np.ndarray]:
    # OpenCV decodes and resizes without the GIL: threads scale with the cores.
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda s: _decode(s, size), samples))


def _layout(images: Sequence[np.ndarray]) -> tuple[list[tuple[int, int, int]], int]:
    entries, offset = [], 0
    for image in images:
        entries.append((offset, image.shape[0], image.shape[1]))
        offset += image.size
    return entries, offset


def _write_disk_cache(samples: Sequence[Sample], size: int, data_path: Path, index_path: Path,
                      threads: int | None, chunk: int = 256) -> None:
    """Decode in chunks and append (memory stays bounded for large sets), then publish atomically."""
    entries: list[tuple[int, int, int]] = []
    total = 0
    partial = data_path.with_suffix(".bin.partial")
    with open(partial, "wb") as f:
        for start in range(0, len(samples), chunk):
            for image in _decode_all(samples[start:start + chunk], size, threads):
                entries.append((total, image.shape[0], image.shape[1]))
                total += image.size
                f.write(image.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, data_path)
    index = {"version": CACHE_VERSION, "size": size, "count": len(samples), "bytes": total, "entries": entries}
    partial_index = index_path.with_suffix(".json.partial")
    partial_index.write_text(json.dumps(index))
    os.replace(partial_index, index_path)  # written last: its presence means the data file is complete


def build_image_cache(mode: str, samples: Sequence[Sample], size: int, *,
                      cache_dir: str | os.PathLike | None = None) -> ImageCache | None:
    """``data.cache``'s cache for ``samples`` at ``size`` (None for ``none``)."""
    if mode == "none":
        return None
    if mode == "ram":
        return ImageCache.build_ram(samples, size)
    if mode == "disk":
        return ImageCache.open_disk(samples, size, cache_dir=cache_dir)
    raise DataFormatError(f"data.cache: expected one of {', '.join(CACHE_MODES)}, got {mode!r}")


def check_split_images(mode: str, samples: Sequence[Sample], size: int, *, threads: int | None = None) -> None:
    """The pre-flight decode of every image (``image_file.check_images``), one line naming the first bad file.

    ``data.cache: disk``: build (or reuse) the node's cache file for ``samples`` at ``size`` instead; it
    decodes each image through the same ``read_image``, and the run then reads it without decoding again.
    """
    if mode == "disk":
        ImageCache.open_disk(samples, size, threads=threads)
    else:
        check_images(samples, threads=threads)
