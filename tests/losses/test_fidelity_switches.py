"""The readings of eqs 1-7 the paper leaves open, as pure-function and module switches (issue 15).

Each switch must change exactly the term it names: these tests check the switched value against a
hand computation and that the default is today's behaviour.
"""

import math

import pytest
import torch

from losses.combine import combine_losses
from losses.gaussian_mask import downsample_mask, gaussian_mask
from losses.mask_loss import MaskAssistedLoss
from losses.mssd import MSSDLoss, mssd_level_losses, standardise_channels
from losses.warmup import warmup_factor

TAPS = {8: (4, 4), 16: (6, 6), 32: (5, 8)}


def maps(tap_channels=TAPS, batch=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    teachers = {s: torch.randn(batch, ct, size // s, size // s, generator=g).requires_grad_()
                for s, (ct, _) in tap_channels.items()}
    students = {s: torch.randn(batch, cs, size // s, size // s, generator=g).requires_grad_()
                for s, (_, cs) in tap_channels.items()}
    return students, teachers


# ---- eq 7: loss scale --------------------------------------------------------------------------

def test_unscaled_terms_add_the_distillation_terms_without_the_batch_factor():
    gt, distill, mask = torch.tensor(1.5), torch.tensor(0.4), torch.tensor(0.2)
    batch = combine_losses(gt, distill, mask, lambda_distill=2.0, lambda_mask=3.0, batch_size=8)
    unscaled = combine_losses(gt, distill, mask, lambda_distill=2.0, lambda_mask=3.0, batch_size=8,
                              scale="unscaled_terms")
    assert batch.item() == pytest.approx(8 * (1.5 + 0.8 + 0.6))
    assert unscaled.item() == pytest.approx(8 * 1.5 + 0.8 + 0.6)
    with pytest.raises(ValueError, match="scale"):
        combine_losses(gt, distill, mask, scale="per_image")


# ---- eqs 1-3: detach, channel matching, normalisation ---------------------------------------------

@pytest.mark.parametrize("detach", ["teacher", "student", "none"])
def test_detach_stops_the_gradient_into_exactly_the_named_map(detach):
    module = MSSDLoss(TAPS, gamma=1.0, detach=detach)
    students, teachers = maps()
    module(students, teachers)["distill"].backward()
    for s in TAPS:
        assert (teachers[s].grad is None) == (detach == "teacher")
        assert (students[s].grad is None) == (detach == "student")
    # The projector (student side by default) learns whichever map is detached.
    assert module.projectors["32"].weight.grad.abs().sum() > 0


def test_detach_changes_gradients_not_values():
    students, teachers = maps()
    torch.manual_seed(0)
    a = MSSDLoss(TAPS, detach="teacher")(students, teachers)
    torch.manual_seed(0)
    b = MSSDLoss(TAPS, detach="student")(students, teachers)
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_detach_none_is_the_old_detach_teacher_false():
    assert MSSDLoss(TAPS, detach_teacher=False).detach == "none"
    assert MSSDLoss(TAPS).detach == "teacher" and MSSDLoss(TAPS).detach_teacher
    # An explicit detach wins over the legacy flag.
    assert MSSDLoss(TAPS, detach_teacher=True, detach="student").detach == "student"
    with pytest.raises(ValueError, match="detach"):
        MSSDLoss(TAPS, detach="both")


def test_project_teacher_maps_the_teacher_to_the_students_channels():
    module = MSSDLoss(TAPS, gamma=1.0, channel_matching="project_teacher")
    conv = module.projectors["32"]
    assert (conv.in_channels, conv.out_channels) == (5, 8)  # teacher 5 -> student 8
    assert isinstance(module.projectors["8"], torch.nn.Identity)
    students, teachers = maps()
    terms = module(students, teachers)
    expected = {s: torch.mean((students[s] - (conv(teachers[s]) if s == 32 else teachers[s])) ** 2) for s in TAPS}
    torch.testing.assert_close(terms["distill_l"], expected[32])
    torch.testing.assert_close(terms["distill"], sum(expected.values()) / 3)
    terms["distill"].backward()
    assert conv.weight.grad.abs().sum() > 0  # the teacher's raw map is detached, its projector learns
    assert all(t.grad is None for t in teachers.values())


def test_shared_adapter_compares_both_sides_after_one_1x1_conv_per_stride():
    module = MSSDLoss(TAPS, gamma=1.0, channel_matching="shared_adapter")
    assert set(module.shared) == {"8", "16", "32"}
    assert module.shared["32"].in_channels == module.shared["32"].out_channels == 5  # the teacher's width
    students, teachers = maps()
    terms = module(students, teachers)
    levels = []
    for s in TAPS:
        shared, proj = module.shared[str(s)], module.projectors[str(s)]
        levels.append(torch.mean((shared(proj(students[s])) - shared(teachers[s])) ** 2))
    torch.testing.assert_close(terms["distill"], sum(levels) / 3)
    terms["distill"].backward()
    # Teacher detached (default), yet the shared conv learns from both sides' paths.
    assert module.shared["8"].weight.grad.abs().sum() > 0 and all(t.grad is None for t in teachers.values())


def test_channel_standardise_matches_patterns_not_scale():
    x = torch.randn(2, 3, 5, 4) * 7 + 3
    z = standardise_channels(x)
    torch.testing.assert_close(z.mean(dim=(-2, -1)), torch.zeros(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(dim=(-2, -1), unbiased=False), torch.ones(2, 3), atol=1e-3, rtol=0)

    students, teachers = maps({8: (3, 3)})
    module = MSSDLoss({8: (3, 3)}, gamma=1.0, normalise="channel_standardise")
    loss = module(students, teachers)["distill"]
    expected = torch.mean((standardise_channels(students[8]) - standardise_channels(teachers[8])) ** 2)
    torch.testing.assert_close(loss, expected)
    # A positive per-channel affine change of the student leaves the standardised loss unchanged ...
    scaled = {8: students[8] * torch.tensor([2.0, 5.0, 0.5]).view(1, 3, 1, 1) + 4.0}
    torch.testing.assert_close(module(scaled, teachers)["distill"], loss, atol=1e-4, rtol=1e-4)
    # ... while the default compares raw values.
    plain = MSSDLoss({8: (3, 3)}, gamma=1.0)
    assert not math.isclose(plain(scaled, teachers)["distill"].item(), plain(students, teachers)["distill"].item())


def test_default_module_is_todays_reading():
    torch.manual_seed(0)
    module = MSSDLoss(TAPS, gamma=0.05)
    assert (module.detach, module.channel_matching, module.normalise) == ("teacher", "project_student", "none")
    assert module.shared is None and module.projectors["32"].in_channels == 8
    students, teachers = maps()
    projected = {s: module.projectors[str(s)](students[s]) for s in TAPS}
    levels = mssd_level_losses(projected, teachers, {8: 0.05, 16: 1.0, 32: 1.0})
    torch.testing.assert_close(module(students, teachers)["distill"], sum(levels.values()) / 3)


# ---- eq 5: the mask's coordinates and stride --------------------------------------------------------

def test_pixel_coordinates_are_the_papers_literal_formula():
    # A 40 x 24 px box centred at (28, 20), cells of stride 4 on a 64 x 48 input.
    box = torch.tensor([[8.0, 8.0, 48.0, 32.0]])
    sigma2 = 50.0
    mask = gaussian_mask(box, torch.tensor([0]), 1, (12, 16), 4, sigma2, coordinates="pixels")[0, 0]
    for i in range(12):
        for j in range(16):
            x, y = (j + 0.5) * 4, (i + 0.5) * 4
            inside = 8 <= x <= 48 and 8 <= y <= 32
            expected = math.exp(-((x - 28) ** 2 + (y - 20) ** 2) / sigma2) if inside else 0.0
            assert mask[i, j].item() == pytest.approx(expected, abs=1e-6)
    # Box-normalised offsets give a different mask for the same sigma2 (the reading matters).
    normalised = gaussian_mask(box, torch.tensor([0]), 1, (12, 16), 4, sigma2)[0, 0]
    assert not torch.allclose(mask, normalised)
    with pytest.raises(ValueError, match="coordinates"):
        gaussian_mask(box, torch.tensor([0]), 1, (12, 16), 4, sigma2, coordinates="cells")


def test_mask_built_at_a_fixed_stride_is_averaged_down_to_each_level():
    boxes = torch.tensor([[3.0, 5.0, 27.0, 21.0], [16.0, 0.0, 30.0, 10.0]])
    index = torch.tensor([0, 1])
    fine = gaussian_mask(boxes, index, 2, (32, 32), 1, 2.0)
    module = MaskAssistedLoss({8: 1, 16: 1}, mask_stride=1)
    features = {8: torch.zeros(2, 1, 4, 4), 16: torch.zeros(2, 1, 2, 2)}
    masks = module.masks(features, boxes, index)
    for s in (8, 16):
        hand = fine.reshape(2, 1, 32 // s, s, 32 // s, s).mean(dim=(3, 5))
        torch.testing.assert_close(masks[s], hand)
        torch.testing.assert_close(downsample_mask(fine, s), hand)
    # Default: each level's own stride, sampled at its cell centres (not averaged).
    own = MaskAssistedLoss({8: 1, 16: 1}).masks(features, boxes, index)
    torch.testing.assert_close(own[8], gaussian_mask(boxes, index, 2, (4, 4), 8, 2.0))
    with pytest.raises(ValueError, match="mask_stride"):
        MaskAssistedLoss({8: 1, 16: 1}, mask_stride=3)


def test_adapter_without_relu_and_its_kernel():
    with_relu = MaskAssistedLoss({8: 4}, kernel_size=1)
    without = MaskAssistedLoss({8: 4}, kernel_size=5, relu=False)
    assert isinstance(with_relu.adapters["8"][-1], torch.nn.ReLU)
    assert len(without.adapters["8"]) == 1 and without.adapters["8"][0].kernel_size == (5, 5)
    with torch.no_grad():
        without.adapters["8"][0].weight.fill_(-1.0)
    mask = torch.ones(1, 1, 4, 4)
    assert (without.adapters["8"](mask) < 0).all()  # no ReLU: the adapted mask may go negative


# ---- warm-up -------------------------------------------------------------------------------------

def test_warmup_is_zero_then_a_linear_ramp():
    assert [warmup_factor(e, 2, 4) for e in range(1, 9)] == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [warmup_factor(e, 1, 0) for e in (1, 2, 3)] == [0.0, 1.0, 1.0]
    assert all(warmup_factor(e) == 1.0 for e in (1, 2, 100))  # the default: no warm-up
    with pytest.raises(ValueError):
        warmup_factor(0)
