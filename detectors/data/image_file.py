"""Reading an image file, and checking every image of a split before a run starts.

OpenCV's ``imread`` says nothing useful about a damaged file: a truncated PNG reads as ``None`` (which
we used to report as "not found or not readable" although the file exists), and a truncated JPEG
decodes with grey rows while libjpeg prints "Premature end of JPEG file" naming no file, so a run
trained on it silently. ``read_image`` reads the bytes once, checks that a PNG/JPEG ends with its end
marker (what truncation loses), decodes with ``imdecode`` (which returns ``None`` where ``imread`` warns),
and raises one ``DataFormatError`` naming the file and what is wrong.

``check_images`` runs that decode over every sample before the run folder exists (``mssd train``,
``tune``, ``ablate`` and ``compare`` pre-flight, through ``image_cache.check_split_images``: with
``data.cache: disk`` the check *is* the cache build, and the run opens the file it wrote).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from detectors.data.sample import Sample
from detectors.errors import DataFormatError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of a complete PNG
_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_TAIL = 4096  # bytes searched for the end marker: some writers append padding or metadata after it


def read_image(path) -> np.ndarray:
    """BGR uint8 (H, W, 3) of ``path``; a missing, truncated or undecodable file is one line naming it."""
    try:
        data = np.fromfile(str(path), np.uint8)
    except FileNotFoundError:
        raise DataFormatError(f"{path}: image not found") from None
    except (IsADirectoryError, PermissionError, OSError) as exc:
        raise DataFormatError(f"{path}: cannot read image ({exc.strerror or exc})") from None
    problem = _truncation(data.tobytes()[:8], data[-_TAIL:].tobytes(), data.size)
    if problem:
        raise DataFormatError(f"{path}: {problem}")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        what = "empty file" if data.size == 0 else "not a decodable image (corrupt data or an unknown format)"
        raise DataFormatError(f"{path}: {what}")
    return image


def _truncation(head: bytes, tail: bytes, size: int) -> str | None:
    if head.startswith(_PNG_SIGNATURE) and _PNG_END not in tail:
        return f"truncated PNG (no IEND chunk at the end of its {size} bytes)"
    if head.startswith(_JPEG_START) and _JPEG_END not in tail:
        return f"truncated JPEG (no end-of-image marker in its {size} bytes)"
    return None


def check_image(sample: Sample) -> None:
    """Decode ``sample``'s image and compare its size with the one its labels were read for."""
    image = read_image(sample.image_path)
    check_size(sample, image)


def check_size(sample: Sample, image: np.ndarray) -> None:
    if image.shape[0] != sample.height or image.shape[1] != sample.width:
        raise DataFormatError(f"{sample.image_path}: image is {image.shape[1]}x{image.shape[0]}, "
                              f"labels were read for {sample.width}x{sample.height}")


def default_threads() -> int:
    """The CPUs this process may run on (a Ray trial's or a container's share, not the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_images(samples: Sequence[Sample], *, threads: int | None = None) -> None:
    """Decode every image of ``samples``; the first bad one (in split order) is one ``DataFormatError``.
    (``image_cache.check_split_images`` picks this or the disk cache build, which decodes the same way.)"""
    with ThreadPoolExecutor(max_workers=threads or default_threads()) as pool:
        # map keeps the split order, so the error names the first bad file, as a serial check would
        for _ in pool.map(check_image, samples):
            pass
