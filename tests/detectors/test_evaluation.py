import math

import numpy as np
import pytest

from detectors.data.sample import Sample
from detectors.engine.evaluation import METRIC_KEYS, Detections, evaluate, format_metrics

CLASSES = ["Car", "Pedestrian"]


def _sample(image_id, boxes, classes, ignore=(), size=(1000, 600)):
    return Sample(image_id=image_id, name=f"{image_id:06d}", image_path=f"/none/{image_id:06d}.png",
                  width=size[0], height=size[1], boxes=np.array(boxes, np.float32).reshape(-1, 4),
                  classes=classes, ignore=np.array(ignore, np.float32).reshape(-1, 4))


def _perfect(samples):
    return {s.image_id: Detections(s.boxes, np.linspace(1, 0.5, len(s.boxes)), s.classes) for s in samples}


def test_predictions_equal_to_ground_truth_score_one_in_every_populated_bucket():
    samples = [
        _sample(0, [[0, 0, 20, 20], [100, 100, 150, 150], [300, 100, 500, 300]], [0, 0, 1]),  # small, med, large
        _sample(1, [[10, 10, 30, 40]], [1], ignore=[[500, 500, 600, 600]]),
        _sample(2, [], []),  # background image
    ]
    metrics = evaluate(samples, _perfect(samples), CLASSES)
    assert all(metrics[k] == pytest.approx(1.0) for k in METRIC_KEYS)
    assert metrics["per_class"] == {"Car": pytest.approx(1.0), "Pedestrian": pytest.approx(1.0)}


def test_a_bucket_or_class_without_ground_truth_is_nan():
    samples = [_sample(0, [[0, 0, 20, 20]], [0])]  # one small Car only
    metrics = evaluate(samples, _perfect(samples), CLASSES)
    assert metrics["map"] == pytest.approx(1.0) and metrics["aps"] == pytest.approx(1.0)
    assert math.isnan(metrics["apm"]) and math.isnan(metrics["apl"])
    assert math.isnan(metrics["per_class"]["Pedestrian"])


def test_no_predictions_score_zero():
    samples = [_sample(0, [[0, 0, 50, 50]], [0])]
    metrics = evaluate(samples, {}, CLASSES)
    assert metrics["map"] == 0.0 and metrics["ap50"] == 0.0


def test_hand_worked_false_positive_then_a_loose_hit():
    # One ground-truth car (20x20 at 10,10). Detections by score: a false positive, then a hit of
    # IoU 400 / (20 * 27.78) = 0.72. For IoU thresholds .50-.70 (5 of 10) the ranked list is FP, TP:
    # precision at recall 1 is 1/2, and COCO's interpolated precision is 0.5 at every recall point,
    # so AP = 0.5. For thresholds .75-.95 the hit misses: AP = 0. Mean over thresholds: 0.25.
    samples = [_sample(0, [[10, 10, 30, 30]], [0])]
    predictions = {0: Detections([[60, 60, 80, 80], [10, 10, 37.78, 30]], [0.9, 0.8], [0, 0])}
    metrics = evaluate(samples, predictions, CLASSES)
    assert metrics["ap50"] == pytest.approx(0.5)
    assert metrics["ap75"] == pytest.approx(0.0)
    assert metrics["map"] == pytest.approx(0.25)
    assert metrics["aps"] == pytest.approx(0.25)  # 20x20 is small


def test_hand_worked_two_objects_with_recall_steps():
    # Two ground-truth cars; ranked detections: exact hit (IoU 1), false positive, hit of IoU 0.615.
    # At thresholds .50/.55/.60: TP FP TP -> recall .5 .5 1, precision 1 .5 .667; interpolated
    #   precision is 1 for the 51 recall points 0..0.50 and 2/3 for the 50 points 0.51..1:
    #   AP = (51 + 50 * 2/3) / 101.
    # At .65...95 (7 thresholds): TP FP FP -> precision 1 up to recall .5, nothing beyond: AP = 51/101.
    samples = [_sample(0, [[0, 0, 100, 100], [200, 0, 300, 100]], [0, 0])]
    predictions = {0: Detections([[0, 0, 100, 100], [500, 500, 600, 600], [200, 0, 362.5, 100]],
                                 [0.9, 0.8, 0.7], [0, 0, 0])}  # IoU 100 / 162.5
    loose = (51 + 50 * 2 / 3) / 101
    tight = 51 / 101
    metrics = evaluate(samples, predictions, CLASSES)
    assert metrics["ap50"] == pytest.approx(loose)
    assert metrics["ap75"] == pytest.approx(tight)
    assert metrics["map"] == pytest.approx((3 * loose + 7 * tight) / 10)


def test_detection_inside_an_ignore_region_is_not_a_false_positive():
    samples = [_sample(0, [[10, 10, 60, 60]], [0], ignore=[[200, 200, 300, 300]])]
    # The top-scored detection lies in the DontCare region: without the region it would halve AP.
    predictions = {0: Detections([[210, 210, 260, 260], [10, 10, 60, 60]], [0.9, 0.8], [1, 0])}
    assert evaluate(samples, predictions, CLASSES)["map"] == pytest.approx(1.0)
    predictions = {0: Detections([[210, 210, 260, 260], [10, 10, 60, 60]], [0.9, 0.8], [0, 0])}
    assert evaluate(samples, predictions, CLASSES)["map"] == pytest.approx(1.0)
    without_region = [_sample(0, [[10, 10, 60, 60]], [0])]
    assert evaluate(without_region, predictions, CLASSES)["map"] == pytest.approx(0.5)


def test_ignore_region_without_detection_is_not_a_miss():
    samples = [_sample(0, [[10, 10, 60, 60]], [0], ignore=[[200, 200, 300, 300], [400, 0, 420, 20]])]
    assert evaluate(samples, _perfect(samples), CLASSES)["map"] == pytest.approx(1.0)


def test_detection_only_grazing_an_ignore_region_still_counts_as_false_positive():
    samples = [_sample(0, [[10, 10, 60, 60]], [0], ignore=[[200, 200, 300, 300]])]
    # 10% of this detection's area is inside the region: far below every IoU threshold.
    predictions = {0: Detections([[290, 200, 390, 300], [10, 10, 60, 60]], [0.9, 0.8], [0, 0])}
    assert evaluate(samples, predictions, CLASSES)["map"] == pytest.approx(0.5)


def test_pycocotools_printing_is_captured(capsys):
    samples = [_sample(0, [[0, 0, 50, 50]], [0])]
    evaluate(samples, _perfect(samples), CLASSES)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_detection_class_out_of_range_is_an_error():
    samples = [_sample(0, [[0, 0, 50, 50]], [0])]
    with pytest.raises(ValueError, match="class 5"):
        evaluate(samples, {0: Detections([[0, 0, 5, 5]], [1.0], [5])}, CLASSES)


def test_format_metrics_prints_percentages_and_na():
    text = format_metrics({"map": 0.5, "ap50": 1.0, "ap75": 0.0, "aps": math.nan, "apm": 0.25, "apl": 0.5,
                           "per_class": {"Car": 0.5}})
    assert "map" in text and "50.00" in text and "n/a" in text and "ap/Car" in text
