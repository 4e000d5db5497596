"""COCO-style detection metrics through COCOeval, on boxes in original image pixels.

The COCOeval implementation is ``backend``'s (``detectors.engine.coco_backend``): faster-coco-eval by
default, pycocotools as the oracle; both give the same numbers (tests).

``evaluate(samples, predictions, class_names)`` returns ``map`` (AP@[.5:.95]), ``ap50``, ``ap75``,
``aps``, ``apm``, ``apl`` as fractions, NaN where a size bucket has no ground truth, and ``per_class``
AP@[.5:.95] (NaN for a class with no ground truth). The numbers are read from ``COCOeval``'s
precision array exactly as ``COCOeval.summarize`` computes them (maxDets 100, areas split at 32^2 and
96^2 px of box area), without its printing; pycocotools' own prints are captured too.

Ignore regions (KITTI ``DontCare``) use COCO's crowd rule: each region becomes an ``iscrowd=1``
ground truth of every class. pycocotools first matches a detection to real objects; only a
detection that matched none and lies inside a region (intersection over the *detection's* area
>= the IoU threshold) is marked ignored: it is neither a true nor a false positive, and the region
itself is never a miss. This is standard COCO semantics rather than a hand-written filter, so it is
applied per IoU threshold and per area range the same way as for COCO crowds.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np

from detectors.api import Detections
from detectors.data.sample import Sample

METRIC_KEYS = ("map", "ap50", "ap75", "aps", "apm", "apl")
MAX_DETS = 100  # COCO's AP is computed at 100 detections per image and class

__all__ = ["METRIC_KEYS", "Detections", "evaluate", "format_metrics"]


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _ground_truth(samples: list[Sample], num_classes: int) -> dict:
    images, annotations = [], []
    for s in samples:
        images.append({"id": s.image_id, "width": s.width, "height": s.height, "file_name": s.image_path.name})
        for box, cls in zip(s.boxes, s.classes, strict=True):
            xywh = _xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": s.image_id, "category_id": int(cls),
                                "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 0})
        for box in s.ignore:
            xywh = _xywh(box)
            for cls in range(num_classes):  # a region ignores detections of every class
                annotations.append({"id": len(annotations) + 1, "image_id": s.image_id, "category_id": cls,
                                    "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 1})
    categories = [{"id": i, "name": str(i)} for i in range(num_classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _detections(samples: list[Sample], predictions: dict[int, Detections], num_classes: int) -> list[dict]:
    results = []
    for s in samples:
        det = predictions.get(s.image_id)
        if det is None or len(det.boxes) == 0:
            continue
        boxes = det.boxes.astype(np.float64).copy()
        # Clip to the image, as the ground truth is; a box wholly outside has zero area and never matches.
        np.clip(boxes[:, 0::2], 0, s.width, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, s.height, out=boxes[:, 1::2])
        for box, score, cls in zip(boxes, det.scores, det.classes, strict=True):
            if not 0 <= cls < num_classes:
                raise ValueError(f"image {s.image_id}: detection class {cls} outside 0..{num_classes - 1}")
            xywh = _xywh(box)
            results.append({"id": len(results) + 1, "image_id": s.image_id, "category_id": int(cls),
                            "bbox": xywh, "area": xywh[2] * xywh[3], "score": float(score), "iscrowd": 0})
    return results


def _mean_valid(values: np.ndarray) -> float:
    """Mean over entries pycocotools filled in (it marks "no ground truth here" with -1)."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else math.nan


def evaluate(samples: list[Sample], predictions: dict, class_names: list[str] | tuple[str, ...], *,
             backend: str = "faster") -> dict:
    """COCO metrics of ``predictions`` (``{image_id: Detections}``) against ``samples``' ground truth,
    scored by ``backend``: ``faster`` (faster-coco-eval) or ``pycocotools``."""
    from detectors.engine.coco_backend import coco_classes

    COCO, COCOeval = coco_classes(backend)  # noqa: N806 - the classes, named as their libraries do
    num_classes = len(class_names)
    nan_result = {key: math.nan for key in METRIC_KEYS} | {"per_class": dict.fromkeys(class_names, math.nan)}
    if not samples:
        return nan_result
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        gt = COCO()
        gt.dataset = _ground_truth(samples, num_classes)
        gt.createIndex()
        dt = COCO()
        # Built directly rather than through loadRes, which rejects an empty result list.
        dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                      "annotations": _detections(samples, predictions, num_classes)}
        dt.createIndex()
        coco_eval = COCOeval(gt, dt, iouType="bbox")
        coco_eval.params.imgIds = [s.image_id for s in samples]
        coco_eval.params.catIds = list(range(num_classes))
        coco_eval.params.maxDets = [1, 10, MAX_DETS]
        coco_eval.evaluate()
        coco_eval.accumulate()
    # precision: [T iou thresholds, R recall points, K classes, A area ranges (all, s, m, l), M maxDets]
    precision = coco_eval.eval["precision"][..., -1]
    iou_thrs = coco_eval.params.iouThrs
    t50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
    t75 = int(np.argmin(np.abs(iou_thrs - 0.75)))
    result = {
        "map": _mean_valid(precision[:, :, :, 0]),
        "ap50": _mean_valid(precision[t50, :, :, 0]),
        "ap75": _mean_valid(precision[t75, :, :, 0]),
        "aps": _mean_valid(precision[:, :, :, 1]),
        "apm": _mean_valid(precision[:, :, :, 2]),
        "apl": _mean_valid(precision[:, :, :, 3]),
        "per_class": {name: _mean_valid(precision[:, :, k, 0]) for k, name in enumerate(class_names)},
    }
    return result


def format_metrics(metrics: dict) -> str:
    """A two-column table of the six COCO numbers and the per-class APs (in percent)."""
    rows = [(key, metrics[key]) for key in METRIC_KEYS]
    rows += [(f"ap/{name}", value) for name, value in metrics["per_class"].items()]
    width = max(len(k) for k, _ in rows)
    lines = [f"{'metric':<{width}}  {'AP (%)':>7}"]
    for key, value in rows:
        text = "n/a" if math.isnan(value) else f"{100 * value:.2f}"
        lines.append(f"{key:<{width}}  {text:>7}")
    return "\n".join(lines)
