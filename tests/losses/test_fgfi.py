"""FGFI (losses/fgfi.py): the anchor-IoU imitation mask and the masked imitation loss, worked by hand."""

import pytest
import torch

from losses.fgfi import cell_anchors, fgfi_level_loss, fgfi_loss, imitation_mask, pairwise_iou


def test_pairwise_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 8.0, 8.0]])
    b = torch.tensor([[2.0, 0.0, 10.0, 8.0], [8.0, 0.0, 16.0, 8.0], [0.0, 0.0, 8.0, 8.0]])
    # overlap 6x8 = 48 of union 64 + 64 - 48 = 80; touching edges; identical
    assert pairwise_iou(a, b).flatten().tolist() == pytest.approx([0.6, 0.0, 1.0])


def test_anchors_sit_on_cell_centres():
    anchors = cell_anchors(torch.tensor([[8.0, 8.0]]), 8, (2, 3))  # (H, W, A, 4)
    assert anchors.shape == (2, 3, 1, 4)
    assert anchors[0, 0, 0].tolist() == [0.0, 0.0, 8.0, 8.0]
    assert anchors[1, 2, 0].tolist() == [16.0, 8.0, 24.0, 16.0]  # row 1, column 2


def test_mask_keeps_cells_above_psi_times_the_best_iou():
    one = torch.tensor([[8.0, 8.0]])
    box = torch.tensor([[2.0, 0.0, 10.0, 8.0]])  # IoU 0.6 with cell (0, 0)'s anchor, 16/112 with (0, 1)'s
    index = torch.tensor([0])
    assert imitation_mask(box, index, 1, one, 8, (2, 2), psi=0.5).tolist() == [[[1.0, 0.0], [0.0, 0.0]]]
    # psi 0.2: threshold 0.12 < 0.1428: cell (0, 1) joins
    assert imitation_mask(box, index, 1, one, 8, (2, 2), psi=0.2).tolist() == [[[1.0, 1.0], [0.0, 0.0]]]
    # a wide box: best IoU 0.5 at both top cells -> both, for the box's own image only
    wide = torch.tensor([[0.0, 0.0, 16.0, 8.0], [8.0, 8.0, 16.0, 16.0]])
    mask = imitation_mask(wide, torch.tensor([1, 0]), 2, one, 8, (2, 2), psi=0.5)
    assert mask.tolist() == [[[0.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]]]
    assert imitation_mask(torch.zeros(0, 4), torch.zeros(0), 2, one, 8, (2, 2)).sum() == 0


def test_any_anchor_of_a_cell_can_put_it_in_the_mask():
    # cell (0, 1)'s second anchor (16 x 8 centred at x 12) covers the box [8, 0, 20, 8] best (IoU 12*8/128)
    anchors = torch.tensor([[8.0, 8.0], [16.0, 8.0]])
    mask = imitation_mask(torch.tensor([[8.0, 0.0, 20.0, 8.0]]), torch.tensor([0]), 1, anchors, 8, (1, 3), psi=0.9)
    assert mask.tolist() == [[[0.0, 1.0, 0.0]]]


def test_imitation_loss_by_hand():
    adapted = torch.tensor([[[[1.0, 2.0]], [[0.0, 0.0]]]])  # (1, C=2, 1, 2)
    teacher = torch.zeros_like(adapted)
    mask = torch.tensor([[[1.0, 0.0]]])
    # sum I (A - T)^2 = 1^2 + 0^2 at the one masked cell; N_p = 1 position -> 1 / 2; x C = 2 elements -> 1 / 4
    assert fgfi_level_loss(adapted, teacher, mask).item() == pytest.approx(0.5)
    assert fgfi_level_loss(adapted, teacher, mask, normalise="elements").item() == pytest.approx(0.25)
    assert fgfi_level_loss(adapted, teacher, torch.zeros_like(mask)).item() == 0.0  # no positives: 0, not nan
    # lambda times the mean over levels: (0.5 + 0) / 2 * 0.01
    total = fgfi_loss({8: adapted, 16: adapted}, {8: teacher, 16: teacher}, {8: mask, 16: torch.zeros_like(mask)},
                      weight=0.01)
    assert total.item() == pytest.approx(0.0025)


def test_gradient_reaches_the_student_inside_the_mask_only():
    adapted = torch.ones(1, 1, 1, 2, requires_grad=True)
    fgfi_level_loss(adapted, torch.zeros(1, 1, 1, 2), torch.tensor([[[1.0, 0.0]]])).backward()
    assert adapted.grad.flatten().tolist() == [1.0, 0.0]  # d/dA (A^2 / 2) = A at the masked cell
