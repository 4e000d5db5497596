"""KD (losses/kd.py, Chen et al. 2017 on a one-stage head): soft, bounded regression and hint terms by hand."""

import math

import pytest
import torch

from losses.kd import (
    bounded_regression_loss,
    hint_loss,
    kd_loss,
    soft_class_loss,
    soft_head_loss,
    soft_objectness_loss,
)

LN2 = math.log(2)


def test_soft_objectness_is_chen_weighted_cross_entropy():
    # q = 0.75 (teacher logit ln 3), p = 0.5: -0.75 ln 0.5 - 1.5 * 0.25 ln 0.5
    loss = soft_objectness_loss(torch.tensor([0.0]), torch.tensor([math.log(3)]), background_weight=1.5)
    assert loss.item() == pytest.approx((0.75 + 1.5 * 0.25) * LN2)
    # temperature softens both sides: teacher ln 9 at T 2 is q = 0.75 again
    soft = soft_objectness_loss(torch.tensor([0.0]), torch.tensor([math.log(9)]), temperature=2.0,
                                background_weight=1.0)
    assert soft.item() == pytest.approx(LN2)


def test_soft_class_counts_where_the_teacher_sees_an_object():
    student, teacher = torch.zeros(2, 3), torch.zeros(2, 3)  # every class BCE is ln 2
    objectness = torch.tensor([math.log(3), -math.log(3)])  # 0.75 and 0.25
    # (0.75 ln2 + 0.25 ln2) / max(1, 1.0)
    assert soft_class_loss(student, teacher, objectness).item() == pytest.approx(LN2)
    # a single weak position: divided by 1, not by its weight 0.25
    assert soft_class_loss(student[:1], teacher[:1], objectness[1:]).item() == pytest.approx(0.25 * LN2)


def test_soft_head_adds_the_class_term_only_with_classes_and_averages_levels():
    obj_only = {8: torch.zeros(1, 1, 1, 1, 1)}  # (B, A, H, W, 1): objectness alone
    t = {8: torch.full((1, 1, 1, 1, 1), math.log(3))}
    assert soft_head_loss(obj_only, t, background_weight=1.5).item() == pytest.approx(1.125 * LN2)
    with_cls = {8: torch.zeros(1, 1, 1, 1, 3)}
    t_cls = {8: torch.tensor([math.log(3), 0.0, 0.0]).view(1, 1, 1, 1, 3)}
    assert soft_head_loss(with_cls, t_cls, background_weight=1.5).item() == pytest.approx(1.125 * LN2 + 0.75 * LN2)
    two = soft_head_loss({8: obj_only[8], 16: t[8]}, {8: t[8], 16: t[8]}, background_weight=1.5)
    zero_level = soft_objectness_loss(t[8], t[8], background_weight=1.5)  # student == teacher: the entropy floor
    assert two.item() == pytest.approx((1.125 * LN2 + zero_level.item()) / 2)


def test_bounded_regression_only_while_the_student_is_worse_than_teacher_minus_margin():
    e_s = torch.tensor(0.3, requires_grad=True)
    assert bounded_regression_loss(e_s, torch.tensor(0.2)).item() == pytest.approx(0.3)
    assert bounded_regression_loss(e_s, torch.tensor(0.4)).item() == 0.0
    assert bounded_regression_loss(e_s, torch.tensor(0.4), margin=0.15).item() == pytest.approx(0.3)
    bounded_regression_loss(e_s, torch.tensor(0.4)).backward()
    assert e_s.grad.item() == 0.0  # below the bound: no push


def test_hint_and_weights():
    adapted = {8: torch.tensor([[[[1.0, 3.0]]]])}
    assert hint_loss(adapted, {8: torch.zeros(1, 1, 1, 2)}).item() == pytest.approx(5.0)  # (1 + 9) / 2
    parts = kd_loss(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0), mu=0.25, regression_weight=0.5,
                    hint_weight=0.5)
    assert {k: v.item() for k, v in parts.items()} == {"soft": 3.0, "regression": 1.0, "hint": 2.0}
    with pytest.raises(ValueError, match="mu must be in"):
        kd_loss(torch.tensor(1.0), torch.tensor(0.0), torch.tensor(0.0), mu=0.0)
