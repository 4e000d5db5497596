"""KD (Chen et al. 2017) as a comparator: the hint adapters and the wiring of ``losses.kd``'s terms.

The math is ``losses/kd.py``. Here: the hint reads the maps the heads read (``head_inputs``, the neck's
outputs) at each stride through a learned adapter (``losses.kd.adapter_kernel``, student -> teacher
channels); the soft loss reads both dense heads output by output (``common.dense_head_logits``; same
layout checked at build); the bounded regression reads the family's own regression loss (``losses.gt``
with its objectness and class gains set to 0), for the student with its graph and for the teacher
without, on the same targets.

Terms: ``kd`` (the sum added to L_gt), ``kd/soft``, ``kd/regression``, ``kd/hint`` (weighted).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from detectors.comparators import common
from detectors.comparators.base import Comparator, ComparatorContext
from detectors.errors import ConfigError
from losses.kd import bounded_regression_loss, hint_loss, kd_loss, soft_head_loss


class KDComparator(Comparator):
    name = "kd"
    term_names = ("kd", "kd/soft", "kd/regression", "kd/hint")
    needs_teacher = True

    def __init__(self, cfg: Any, *, student_channels: dict[int, int], teacher_channels: dict[int, int],
                 strides: tuple[int, ...], num_classes: int, regression_loss: Any = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.strides = tuple(int(s) for s in strides)
        self.outputs = common.distilled_outputs(num_classes)
        self.adapters = common.adapters(student_channels, teacher_channels, kernel_size=cfg.adapter_kernel)
        # A plain callable (the family's loss), not a module: nothing of it is trained or checkpointed.
        self.regression_loss = regression_loss

    def forward(self, output: Any, targets: Tensor, img_size: int | tuple[int, int], *,
                images: Tensor | None = None, teacher_output: Any = None) -> dict[str, Tensor]:
        cfg = self.cfg
        hint = hint_loss(common.adapt(self.adapters, output.head_inputs),
                         {s: teacher_output.head_inputs[s] for s in self.strides})
        student = common.dense_head_logits(output.head, self.strides)
        teacher = common.dense_head_logits(teacher_output.head, self.strides)
        soft = soft_head_loss({s: m[..., self.outputs] for s, m in student.items()},
                              {s: m[..., self.outputs] for s, m in teacher.items()},
                              temperature=cfg.temperature, background_weight=cfg.background_weight)
        regression = hint.new_zeros(())
        if self.regression_loss is not None:
            student_error, _ = self.regression_loss(output, targets)
            with torch.no_grad():
                teacher_error, _ = self.regression_loss(teacher_output, targets)
            regression = bounded_regression_loss(student_error.float(), teacher_error.float(), cfg.margin)
        parts = kd_loss(soft, regression, hint, mu=cfg.mu, regression_weight=cfg.regression_weight,
                        hint_weight=cfg.hint_weight)
        total = parts["soft"] + parts["regression"] + parts["hint"]
        return {"kd": total, **{f"kd/{k}": v for k, v in parts.items()}}


def build(losses_cfg: Any, context: ComparatorContext) -> KDComparator:
    cfg, model, teacher = losses_cfg.kd, context.model, context.teacher
    if teacher is None:
        raise ConfigError("losses.method: kd needs a teacher (distill.teacher)")
    common.check_dense_heads(model, teacher, "losses.method: kd",
                             "; with this detector, losses.method mssd distils its neck maps instead")
    regression_loss = None
    if cfg.regression_weight > 0:
        if context.build_loss is None:
            raise ConfigError("losses.kd.regression_weight: the bounded regression needs the run's detection loss")
        regression_loss = context.build_loss(model, obj=0.0, cls=0.0)
        _check_regression_only(regression_loss, model)
    return KDComparator(cfg, student_channels=dict(model.head_input_channels),
                        teacher_channels=teacher.head_input_channels, strides=tuple(model.strides),
                        num_classes=int(model.num_classes), regression_loss=regression_loss)


@torch.no_grad()
def _check_regression_only(loss: Any, model: Any) -> None:
    """With the objectness and class gains at 0, only one term may remain (the regression): a family
    whose loss ignores the gains cannot give KD its regression error."""
    size = 2 * max(model.strides)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        output = model(torch.zeros(1, 3, size, size, device=device))
    finally:
        model.train(was_training)
    _, items = loss(output, torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.3, 0.3]], device=device))
    nonzero = [k for k, v in items.items() if float(v) != 0.0]
    if len(nonzero) > 1:
        raise ConfigError(f"losses.kd.regression_weight: this detector's loss keeps {nonzero} with losses.gt.obj "
                          "and cls at 0, so KD cannot read its regression error; set losses.kd.regression_weight: 0")
