"""Box-level ``nms`` / ``batched_nms`` (torchvision.ops' semantics) on the project's vectorised NMS."""

from __future__ import annotations

import pytest
import torch

from detectors.ops.boxes import box_iou
from detectors.ops.nms import batched_nms, nms


def greedy_loop(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, thr: float) -> list[int]:
    """The specification: one box at a time, by descending score (stable), same class only."""
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    suppresses = ((box_iou(boxes, boxes) > thr) & (classes[:, None] == classes[None, :])).tolist()
    keep: list[int] = []
    for i in order:
        if not any(suppresses[k][i] for k in keep):
            keep.append(i)
    return keep


def test_nms_keeps_the_chain_ends_and_returns_indices_by_score():
    # A (0.7) overlaps B (0.9) only a little; B overlaps C (0.8) by IoU 1/3; A and C are disjoint.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [10.0, 0.0, 20.0, 10.0]])
    scores = torch.tensor([0.7, 0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2, 0]  # IoU 1/3 < 0.5: all kept, by score
    assert nms(boxes, scores, 0.3).tolist() == [1]  # B suppresses both
    assert nms(boxes[[0, 2]], scores[[0, 2]], 0.0).tolist() == [1, 0]  # disjoint: IoU 0 is not > 0


def test_nms_threshold_is_strict_and_equal_scores_keep_input_order():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]])  # IoU exactly 1/3
    assert nms(boxes, torch.tensor([0.5, 0.5]), 1 / 3).tolist() == [0, 1]
    assert nms(boxes, torch.tensor([0.5, 0.5]), 0.33).tolist() == [0]


def test_nms_of_nothing_is_empty():
    out = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert out.dtype == torch.long and out.numel() == 0
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0


def test_batched_nms_never_suppresses_across_categories():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 2]), 0.5).tolist() == [0, 1, 2]


@pytest.mark.parametrize("n", [60, 1001])  # offset trick (<= 1000 boxes on CPU) and the class-aware path
def test_batched_nms_agrees_with_the_greedy_loop(n):
    g = torch.Generator().manual_seed(n)
    xy = torch.rand(n, 2, generator=g) * 400
    boxes = torch.cat((xy, xy + torch.rand(n, 2, generator=g) * 40 + 1), 1)
    scores = torch.rand(n, generator=g)
    classes = torch.randint(0, 3, (n,), generator=g)
    assert batched_nms(boxes, scores, classes, 0.5).tolist() == greedy_loop(boxes, scores, classes, 0.5)


def test_nms_agrees_with_the_greedy_loop_on_crowded_random_boxes():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 60
    boxes = torch.cat((xy, xy + torch.rand(300, 2, generator=g) * 30 + 1), 1)
    scores = (torch.rand(300, generator=g) * 20).round() / 20  # many ties
    assert nms(boxes, scores, 0.45, block=32).tolist() == greedy_loop(boxes, scores, torch.zeros(300), 0.45)
