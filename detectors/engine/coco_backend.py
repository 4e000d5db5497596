"""Which COCOeval implementation scores detections: ``faster`` (default) or ``pycocotools`` (the oracle).

``faster``: ``faster-coco-eval``'s ``COCOeval_faster``, a maintained C++ reimplementation of
pycocotools' matching and accumulation. It fills the same ``eval["precision"]`` array (the same crowd /
ignore-region semantics, the same 101-point interpolation); on 400 KITTI-like images with 300
detections each it agreed with pycocotools to 2e-16 and was ~13x faster here (issue 13,
benchmarks/README.md). ``pycocotools`` stays the reference: tests score the same cases with both.
"""

from __future__ import annotations

from typing import Any

from detectors.errors import ConfigError

BACKENDS = ("faster", "pycocotools")


def coco_classes(backend: str) -> tuple[Any, Any]:
    """``(COCO, COCOeval)`` classes of ``backend``; both take ``COCO()`` + ``dataset`` + ``createIndex()``
    and ``COCOeval(gt, dt, iouType="bbox")``."""
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    raise ConfigError(f"eval.backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
