"""Eqs 1-4: multi-scale self-distillation, the pure function and the module with projectors."""

import pytest
import torch
from torch import nn

from losses.mssd import MSSDLoss, mssd_level_losses, mssd_loss, scale_of_stride, scale_weights


def hand_worked_maps():
    # stride 8: S - T = 2 everywhere                     -> mean square 4
    # stride 16: S - T = [1, 2] over two channels       -> (1 + 4) / 2 = 2.5
    # stride 32: S - T = [1, -1, 0, 2] over a 2x2 map   -> (1 + 1 + 0 + 4) / 4 = 1.5
    students = {
        8: torch.full((1, 1, 2, 2), 3.0),
        16: torch.tensor([1.0, 2.0]).reshape(1, 2, 1, 1),
        32: torch.tensor([1.0, -1.0, 0.0, 2.0]).reshape(1, 1, 2, 2),
    }
    teachers = {8: torch.ones(1, 1, 2, 2), 16: torch.zeros(1, 2, 1, 1), 32: torch.zeros(1, 1, 2, 2)}
    return students, teachers


def test_mssd_loss_matches_hand_worked_value():
    students, teachers = hand_worked_maps()
    loss = mssd_loss(students, teachers, {8: 0.5, 16: 1.0, 32: 2.0})
    # (1/3) * (0.5 * 4 + 1 * 2.5 + 2 * 1.5) = 7.5 / 3
    assert loss.item() == pytest.approx(2.5)


def test_mssd_loss_averages_over_the_batch_too():
    students = {8: torch.cat([torch.full((1, 1, 2, 2), 1.0), torch.full((1, 1, 2, 2), 3.0)])}
    teachers = {8: torch.zeros(2, 1, 2, 2)}
    # One level, weight 1: (1 + 9) / 2.
    assert mssd_loss(students, teachers, {8: 1.0}).item() == pytest.approx(5.0)


def test_level_losses_are_the_weighted_terms_of_eqs_1_to_3():
    students, teachers = hand_worked_maps()
    levels = mssd_level_losses(students, teachers, {8: 0.05, 16: 1.0, 32: 1.0})
    assert {k: round(v.item(), 6) for k, v in levels.items()} == {8: 0.2, 16: 2.5, 32: 1.5}


def test_mssd_loss_rejects_mismatched_inputs():
    students, teachers = hand_worked_maps()
    with pytest.raises(ValueError, match="same strides"):
        mssd_loss(students, {8: teachers[8]}, {8: 1.0, 16: 1.0, 32: 1.0})
    with pytest.raises(ValueError, match="stride 16"):
        mssd_loss(students, {**teachers, 16: torch.zeros(1, 3, 1, 1)}, {8: 1.0, 16: 1.0, 32: 1.0})
    with pytest.raises(ValueError, match="no weight"):
        mssd_loss(students, teachers, {8: 1.0})


def test_scale_weights_put_gamma_on_stride_8():
    assert scale_weights((8, 16, 32), gamma=0.05, w_m=0.7, w_l=2.0) == {8: 0.05, 16: 0.7, 32: 2.0}
    assert [scale_of_stride(s) for s in (4, 8, 16, 32, 64, 128)] == ["s", "s", "m", "l", "l", "l"]


def make_maps(tap_channels, batch=2, size=64, requires_grad=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    teachers, students = {}, {}
    for s, (ct, cs) in tap_channels.items():
        hw = size // s
        teachers[s] = torch.randn(batch, ct, hw, hw, generator=g).requires_grad_(requires_grad)
        students[s] = torch.randn(batch, cs, hw, hw, generator=g).requires_grad_(requires_grad)
    return students, teachers


TAPS = {8: (4, 4), 16: (6, 6), 32: (5, 10)}  # stride 32 mismatches, like YOLOv5's 256 vs 512


def test_projector_is_identity_when_channels_match_and_a_1x1_conv_otherwise():
    module = MSSDLoss(TAPS)
    assert isinstance(module.projectors["8"], nn.Identity)
    assert isinstance(module.projectors["16"], nn.Identity)
    conv = module.projectors["32"]
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
    assert (conv.in_channels, conv.out_channels) == (10, 5)


def test_module_equals_pure_function_on_projected_students():
    module = MSSDLoss(TAPS, gamma=0.1, w_m=0.5, w_l=2.0)
    students, teachers = make_maps(TAPS)
    terms = module(students, teachers)
    projected = {s: module.projectors[str(s)](students[s]) for s in TAPS}
    expected = mssd_loss(projected, teachers, {8: 0.1, 16: 0.5, 32: 2.0})
    torch.testing.assert_close(terms["distill"], expected)
    per_scale = (terms["distill_s"] + terms["distill_m"] + terms["distill_l"]) / 3
    torch.testing.assert_close(terms["distill"], per_scale)
    levels = mssd_level_losses(projected, teachers, {8: 0.1, 16: 0.5, 32: 2.0})
    torch.testing.assert_close(terms["distill_s"], levels[8])


def test_detached_teacher_gets_no_gradient():
    module = MSSDLoss(TAPS)
    students, teachers = make_maps(TAPS)
    module(students, teachers)["distill"].backward()
    assert all(t.grad is None for t in teachers.values())
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in students.values())
    assert module.projectors["32"].weight.grad.abs().sum() > 0
    assert module.projectors["32"].bias.grad.abs().sum() > 0


def test_undetached_teacher_gets_the_opposite_gradient():
    module = MSSDLoss({8: (3, 3)}, gamma=1.0, detach_teacher=False)
    students, teachers = make_maps({8: (3, 3)})
    module(students, teachers)["distill"].backward()
    torch.testing.assert_close(teachers[8].grad, -students[8].grad)


def test_gamma_scales_only_the_small_object_term():
    students, teachers = make_maps(TAPS, requires_grad=False)
    torch.manual_seed(0)
    base = MSSDLoss(TAPS, gamma=1.0)(students, teachers)
    torch.manual_seed(0)
    tenth = MSSDLoss(TAPS, gamma=0.1)(students, teachers)
    torch.testing.assert_close(tenth["distill_s"], 0.1 * base["distill_s"])
    torch.testing.assert_close(tenth["distill_m"], base["distill_m"])
    torch.testing.assert_close(tenth["distill_l"], base["distill_l"])


def test_extra_levels_add_up_in_their_scale():
    taps = {8: (2, 2), 16: (2, 2), 32: (2, 2), 64: (2, 2)}
    module = MSSDLoss(taps, gamma=1.0)
    students, teachers = make_maps(taps, size=128, requires_grad=False)
    terms = module(students, teachers)
    levels = mssd_level_losses(students, teachers, dict.fromkeys(taps, 1.0))
    torch.testing.assert_close(terms["distill_l"], levels[32] + levels[64])
    torch.testing.assert_close(terms["distill"], sum(levels.values()) / 4)


def test_half_precision_maps_give_a_float32_loss():
    students = {8: torch.full((1, 1, 2, 2), 300.0, dtype=torch.float16)}
    teachers = {8: torch.zeros(1, 1, 2, 2, dtype=torch.float16)}
    loss = mssd_loss(students, teachers, {8: 1.0})
    # 300^2 = 90000 overflows float16 (max 65504); the loss must not.
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(90000.0)
