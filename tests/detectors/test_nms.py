"""Class-aware batched NMS: hand-built cases, and the vectorised version agrees with the plain loop."""

from __future__ import annotations

import pytest
import torch

from detectors.ops.nms import non_max_suppression, non_max_suppression_reference


def prediction(rows: list[list[float]], nc: int) -> torch.Tensor:
    """One image from rows [cx, cy, w, h, obj, class_id, class_score] -> (1, N, 5 + nc)."""
    out = torch.zeros(1, len(rows), 5 + nc)
    for i, (cx, cy, w, h, obj, c, score) in enumerate(rows):
        out[0, i, :5] = torch.tensor([cx, cy, w, h, obj])
        out[0, i, 5 + int(c)] = score
    return out


def random_prediction(seed: int, b: int = 3, n: int = 400, nc: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, n, 2, generator=g) * 120  # crowded: many overlaps
    wh = torch.rand(b, n, 2, generator=g) * 40 + 4
    obj = torch.rand(b, n, 1, generator=g)
    cls = torch.rand(b, n, nc, generator=g)
    return torch.cat((xy, wh, obj, cls), -1)


def test_overlapping_boxes_of_one_class_keep_the_higher_score():
    p = prediction([[50, 50, 20, 20, 0.9, 0, 1.0], [52, 50, 20, 20, 0.8, 0, 1.0]], nc=2)
    ((boxes, scores, classes),) = non_max_suppression(p, conf=0.1, iou=0.5)
    torch.testing.assert_close(boxes, torch.tensor([[40.0, 40.0, 60.0, 60.0]]))
    torch.testing.assert_close(scores, torch.tensor([0.9]))
    assert classes.tolist() == [0]


def test_overlapping_boxes_of_different_classes_are_both_kept():
    p = prediction([[50, 50, 20, 20, 0.9, 0, 1.0], [52, 50, 20, 20, 0.8, 1, 1.0]], nc=2)
    ((_, scores, classes),) = non_max_suppression(p, conf=0.1, iou=0.5)
    assert classes.tolist() == [0, 1]
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.8]))


def test_a_suppressed_box_does_not_suppress_others():
    # A overlaps B, B overlaps C, A does not overlap C: greedy keeps A and C.
    p = prediction(
        [[50, 50, 20, 20, 0.9, 0, 1.0], [60, 50, 20, 20, 0.8, 0, 1.0], [70, 50, 20, 20, 0.7, 0, 1.0]], nc=1
    )
    ((_, scores, _),) = non_max_suppression(p, conf=0.1, iou=0.3)
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.7]))


def test_score_is_objectness_times_class_score_and_conf_filters_both():
    p = prediction(
        [[10, 10, 4, 4, 0.5, 0, 0.5], [50, 50, 4, 4, 0.05, 0, 1.0], [90, 90, 4, 4, 0.9, 1, 0.1]], nc=2
    )
    ((_, scores, classes),) = non_max_suppression(p, conf=0.2, iou=0.5)
    torch.testing.assert_close(scores, torch.tensor([0.25]))  # 0.05 obj and 0.09 score are dropped
    assert classes.tolist() == [0]


def test_max_det_keeps_the_highest_scores():
    rows = [[20.0 * i + 10, 10, 8, 8, 0.1 + 0.05 * i, 0, 1.0] for i in range(10)]  # disjoint boxes
    ((_, scores, _),) = non_max_suppression(prediction(rows, nc=1), conf=0.01, iou=0.5, max_det=3)
    torch.testing.assert_close(scores, torch.tensor([0.55, 0.50, 0.45]))


def test_no_candidate_gives_empty_tensors_per_image():
    dets = non_max_suppression(torch.zeros(2, 10, 7), conf=0.25, iou=0.45)
    assert [tuple(t.shape) for d in dets for t in d] == [(0, 4), (0,), (0,)] * 2


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize(("block", "max_det"), [(128, 300), (37, 300), (16, 25)])
def test_vectorised_nms_agrees_with_the_reference_loop(seed, multi_label, block, max_det):
    p = random_prediction(seed)
    fast = non_max_suppression(p, conf=0.05, iou=0.45, max_det=max_det, multi_label=multi_label, block=block)
    slow = non_max_suppression_reference(p, conf=0.05, iou=0.45, max_det=max_det, multi_label=multi_label)
    assert any(len(s.boxes) > 1 for s in slow)
    for (fb, fs, fc), (sb, ss, sc) in zip(fast, slow, strict=True):
        torch.testing.assert_close(fb, sb, rtol=0, atol=0)
        torch.testing.assert_close(fs, ss, rtol=0, atol=0)
        assert torch.equal(fc, sc)


def test_bad_arguments_are_refused_with_the_value():
    with pytest.raises(ValueError, match=r"got \(10, 7\)"):
        non_max_suppression(torch.zeros(10, 7))
    with pytest.raises(ValueError, match="iou=1.5"):
        non_max_suppression(torch.zeros(1, 10, 7), iou=1.5)
