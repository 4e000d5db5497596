"""LGD's tensor math (losses/lgd.py), on hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch

from losses.lgd import (
    inside_box_masks,
    label_descriptors,
    lgd_distill_loss,
    mask_pool,
    render,
    same_image_attention_mask,
)


def test_label_descriptors_scale_boxes_and_one_hot_classes_to_minus_one_one_grouped_by_image():
    # Input 64 wide, 32 high; three classes. Objects given as: image 1, image 0, image 1.
    boxes = torch.tensor([[16.0, 8.0, 48.0, 24.0], [0.0, 0.0, 32.0, 16.0], [-8.0, 4.0, 80.0, 40.0]])
    classes = torch.tensor([2, 1, 0])
    batch_index = torch.tensor([1, 0, 1])
    d, index, context, clamped = label_descriptors(boxes, classes, batch_index, 3, (32, 64), 3, context_box=True)
    expected = torch.tensor([
        [-1.0, -1.0, 0.0, 0.0, -1.0, 1.0, -1.0],  # image 0: [0, 0, 32, 16] / [64, 32, 64, 32], class 1
        [-1.0, -1.0, 1.0, 1.0, -1.0, -1.0, -1.0],  # image 0's context box: the whole image, no class
        [-0.5, -0.5, 0.5, 0.5, -1.0, -1.0, 1.0],  # image 1: [16, 8, 48, 24], class 2
        [-1.0, -0.75, 1.0, 1.0, 1.0, -1.0, -1.0],  # image 1: clamped to [0, 4, 64, 32], class 0
        [-1.0, -1.0, 1.0, 1.0, -1.0, -1.0, -1.0],  # image 1's context box
        [-1.0, -1.0, 1.0, 1.0, -1.0, -1.0, -1.0],  # image 2 has no object: its context box alone
    ])
    torch.testing.assert_close(d, expected)
    assert index.tolist() == [0, 0, 1, 1, 1, 2]
    assert context.tolist() == [False, True, False, False, True, True]
    torch.testing.assert_close(clamped[3], torch.tensor([0.0, 4.0, 64.0, 32.0]))
    plain, index, context, _ = label_descriptors(boxes, classes, batch_index, 3, (32, 64), 3)
    torch.testing.assert_close(plain, expected[[0, 2, 3]])
    assert index.tolist() == [0, 1, 1] and not context.any()
    with pytest.raises(ValueError, match=r"classes must lie in \[0, 3\)"):
        label_descriptors(boxes, torch.tensor([0, 3, 1]), batch_index, 2, (32, 64), 3)


def test_inside_box_masks_take_the_cells_whose_centres_are_in_the_box():
    # Stride 8, a 2 x 3 grid: cell centres x = 4, 12, 20 and y = 4, 12.
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [5.0, 0.0, 20.0, 16.0], [1.0, 1.0, 3.0, 3.0]])
    masks = inside_box_masks(boxes, 8, (2, 3))
    assert masks.tolist() == [
        [1, 0, 0, 0, 0, 0],  # only the centre (4, 4)
        [0, 1, 1, 0, 1, 1],  # x in [5, 20]: 12 and 20 (border included), both rows
        [0, 0, 0, 0, 0, 0],  # smaller than a cell, no centre inside
    ]


def test_mask_pool_averages_each_objects_own_image_over_its_cells():
    features = torch.arange(24.0).view(2, 2, 2, 3)  # image 0 channel 0: 0..5, channel 1: 6..11; image 1: 12..23
    masks = torch.tensor([[1.0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], [1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]])
    batch_index = torch.tensor([0, 0, 1, 1])
    pooled = mask_pool(features, masks, batch_index)
    torch.testing.assert_close(pooled, torch.tensor([
        [0.5, 6.5],  # image 0, cells 0 and 1
        [5.0, 11.0],  # image 0, cell 5
        [14.5, 20.5],  # image 1, cells 0 and 5: (12 + 17) / 2, (18 + 23) / 2
        [0.0, 0.0],  # no cell: zero, not a division by zero
    ]))


def test_render_paints_each_vector_on_its_cells_and_sums_overlaps_per_image():
    embeddings = torch.tensor([[1.0, 10.0], [2.0, 20.0], [5.0, 50.0]])
    masks = torch.tensor([[1.0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]])
    out = render(embeddings, masks, torch.tensor([0, 0, 2]), 3, (2, 2))
    assert out.shape == (3, 2, 2, 2)
    assert out[0, 0].flatten().tolist() == [1.0, 3.0, 2.0, 0.0]
    assert out[0, 1].flatten().tolist() == [10.0, 30.0, 20.0, 0.0]
    assert out[1].abs().sum() == 0  # image 1 has no object
    assert out[2, 1].flatten().tolist() == [0.0, 0.0, 0.0, 50.0]


def test_attention_is_blocked_across_images_only():
    mask = same_image_attention_mask(torch.tensor([0, 0, 1]))
    assert mask.tolist() == [[False, False, True], [False, False, True], [True, True, False]]


def test_distill_loss_is_the_mse_of_instance_normalised_maps_over_all_levels():
    # Level 1: one channel, two cells. Student [0, 2] normalises to [-1, 1] / sqrt(1 + eps) (variance 1),
    # teacher [3, 1] to [1, -1] / sqrt(1 + eps): squared differences 4 / (1 + eps) each.
    # Level 2: equal maps, contributing 0 over its 2 elements. Mean over the 4 elements: 2 / (1 + eps).
    student = [torch.tensor([[[[0.0, 2.0]]]], requires_grad=True), torch.tensor([[[[5.0, 7.0]]]])]
    teacher = [torch.tensor([[[[3.0, 1.0]]]], requires_grad=True), torch.tensor([[[[5.0, 7.0]]]])]
    loss = lgd_distill_loss(student, teacher)
    assert loss.item() == pytest.approx(2 / (1 + 1e-5), rel=1e-6)
    loss.backward()
    assert student[0].grad is not None and teacher[0].grad is None  # the teacher map is a target only
    # Instance normalisation removes per-channel scale and shift: an affine copy of the teacher costs ~0.
    s = torch.randn(2, 3, 4, 5)
    t = 3.0 * s + torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1)
    assert lgd_distill_loss([s], [t]).item() == pytest.approx(0.0, abs=1e-6)
    # Per channel of each image: another image's statistics do not leak in.
    u = torch.randn(1, 1, 3, 3)
    both = lgd_distill_loss([torch.cat([u, 100 * u])], [torch.cat([u, u])])
    assert both.item() == pytest.approx(0.0, abs=1e-6)
    assert not math.isnan(lgd_distill_loss([torch.zeros(1, 1, 2, 2)], [torch.ones(1, 1, 2, 2)]).item())
    with pytest.raises(ValueError, match="differ"):
        lgd_distill_loss([torch.zeros(1, 2, 2, 2)], [torch.zeros(1, 3, 2, 2)])
