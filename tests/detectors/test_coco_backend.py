"""faster-coco-eval (the default COCOeval backend) against pycocotools (the oracle): the same six
numbers and per-class APs on the hand-worked cases of test_evaluation.py and on a large random case."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors.data.sample import Sample
from detectors.engine.coco_backend import coco_classes
from detectors.engine.evaluation import METRIC_KEYS, Detections, evaluate
from detectors.errors import ConfigError

CLASSES = ["Car", "Pedestrian", "Cyclist"]


def _sample(image_id, boxes, classes, ignore=(), size=(1000, 600)):
    return Sample(image_id=image_id, name=f"{image_id:06d}", image_path=f"/none/{image_id:06d}.png",
                  width=size[0], height=size[1], boxes=np.array(boxes, np.float32).reshape(-1, 4),
                  classes=classes, ignore=np.array(ignore, np.float32).reshape(-1, 4))


def _same(a: dict, b: dict) -> None:
    for key in METRIC_KEYS:
        assert (math.isnan(a[key]) and math.isnan(b[key])) or abs(a[key] - b[key]) <= 1e-12, (key, a[key], b[key])
    for name in a["per_class"]:
        x, y = a["per_class"][name], b["per_class"][name]
        assert (math.isnan(x) and math.isnan(y)) or abs(x - y) <= 1e-12, (name, x, y)


HAND_CASES = {
    "perfect in every bucket": (
        [_sample(0, [[0, 0, 20, 20], [100, 100, 150, 150], [300, 100, 500, 300]], [0, 0, 1]),
         _sample(1, [[10, 10, 30, 40]], [1], ignore=[[500, 500, 600, 600]]), _sample(2, [], [])],
        {0: Detections([[0, 0, 20, 20], [100, 100, 150, 150], [300, 100, 500, 300]], [1, 0.9, 0.8], [0, 0, 1]),
         1: Detections([[10, 10, 30, 40]], [0.7], [1])}),
    "false positive then a loose hit": (
        [_sample(0, [[10, 10, 30, 30]], [0])],
        {0: Detections([[60, 60, 80, 80], [10, 10, 37.78, 30]], [0.9, 0.8], [0, 0])}),
    "recall steps": (
        [_sample(0, [[0, 0, 100, 100], [200, 0, 300, 100]], [0, 0])],
        {0: Detections([[0, 0, 100, 100], [500, 500, 600, 600], [200, 0, 362.5, 100]], [0.9, 0.8, 0.7], [0, 0, 0])}),
    "detection inside an ignore region": (
        [_sample(0, [[10, 10, 60, 60]], [0], ignore=[[200, 200, 300, 300]])],
        {0: Detections([[210, 210, 290, 290], [10, 10, 60, 60]], [0.95, 0.9], [0, 0])}),
    "grazing an ignore region": (
        [_sample(0, [[10, 10, 60, 60]], [0], ignore=[[200, 200, 300, 300]])],
        {0: Detections([[150, 150, 250, 250], [10, 10, 60, 60]], [0.95, 0.9], [0, 0])}),
    "no predictions": ([_sample(0, [[0, 0, 50, 50]], [0])], {}),
}


@pytest.mark.parametrize("case", list(HAND_CASES))
def test_both_backends_agree_on_the_hand_worked_cases(case):
    samples, predictions = HAND_CASES[case]
    _same(evaluate(samples, predictions, CLASSES, backend="faster"),
          evaluate(samples, predictions, CLASSES, backend="pycocotools"))


def test_both_backends_agree_on_a_large_random_case():
    # 60 images, up to 12 objects and 2 ignore regions each, 150 detections per image (above COCO's
    # 100 per image and class cap for some classes), noisy hits plus false positives, tied scores.
    rng = np.random.default_rng(7)
    samples, predictions = [], {}
    for i in range(60):
        n = int(rng.integers(0, 13))
        xy = rng.uniform(0, 900, (n, 2))
        wh = np.exp(rng.uniform(np.log(4), np.log(300), (n, 2)))
        boxes = np.concatenate([xy, xy + wh], 1)
        ignore = np.concatenate([rng.uniform(0, 800, (2, 2)), rng.uniform(0, 800, (2, 2)) + 150], 1)[: int(rng.integers(0, 3))]
        samples.append(_sample(i, boxes, rng.integers(0, 3, n).tolist(), ignore=ignore))
        noisy = boxes + rng.normal(0, 0.1, boxes.shape) * np.tile(wh, 2)
        fp_xy = rng.uniform(0, 1000, (150 - n, 2))
        fp = np.concatenate([fp_xy, fp_xy + np.exp(rng.uniform(np.log(2), np.log(400), (150 - n, 2)))], 1)
        scores = np.round(np.concatenate([rng.uniform(0.4, 1, n), rng.uniform(0, 0.8, 150 - n)]), 2)  # ties
        classes = np.concatenate([samples[-1].classes, rng.integers(0, 3, 150 - n)])
        predictions[i] = Detections(np.concatenate([noisy, fp]), scores, classes)
    fast = evaluate(samples, predictions, CLASSES, backend="faster")
    oracle = evaluate(samples, predictions, CLASSES, backend="pycocotools")
    assert 0.05 < oracle["map"] < 0.95  # a case where the numbers carry information
    _same(fast, oracle)


def test_an_unknown_backend_names_the_key():
    with pytest.raises(ConfigError, match="eval.backend: expected one of faster, pycocotools"):
        coco_classes("cocoapi")
