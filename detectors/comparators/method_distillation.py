"""A comparison method (or none) as the trainer uses it: ``MethodDistillation``, built by
``detectors.distillation.build_distillation`` for ``losses.method`` none, kd, fgfi, defeat or lgd.

The same API as MSSD's ``detectors.distillation.Distillation`` (``forward`` -> per-image terms,
``total_loss``, ``count_parameters``, ``start_epoch``, ``term_names``), around the method's
``Comparator`` and, for a teacher method, the ``FrozenTeacher``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from detectors.model_info import count_params
from losses.combine import combine_losses
from losses.warmup import warmup_factor


class MethodDistillation(nn.Module):
    """A comparison method (or none) as the trainer uses it: the same API as ``Distillation``.

    ``comparator``: the method's ``Comparator`` (registered under the method's name, so ``mssd model
    info`` lists its parameters as that part), or ``None`` for ``losses.method: none``. ``teacher``: the
    ``FrozenTeacher`` or ``None``; kept outside the module tree (see the module docstring) but moved and
    converted with this module (``_apply``). ``total_loss`` adds the method's whole loss (its first term)
    to L_gt in eq 7's batch convention (``losses.scale``) times the warm-up factor (``losses.warmup``).
    """

    def __init__(self, method: str, comparator: nn.Module | None = None, teacher: nn.Module | None = None, *,
                 scale: str = "batch", warmup_zero_epochs: int = 0, warmup_ramp_epochs: int = 0) -> None:
        super().__init__()
        self.method = method
        if comparator is not None:
            self.add_module(method, comparator)
        self.term_names: tuple[str, ...] = tuple(comparator.term_names) if comparator is not None else ()
        # A plain attribute, not a submodule: no parameters(), state_dict() or optimizer slot for the teacher.
        object.__setattr__(self, "_teacher", teacher)
        self.scale = scale
        self.warmup_zero_epochs = int(warmup_zero_epochs)
        self.warmup_ramp_epochs = int(warmup_ramp_epochs)
        self.epoch: int | None = None

    @property
    def comparator(self) -> nn.Module | None:
        return self._modules.get(self.method)

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher

    def _apply(self, fn: Any, recurse: bool = True) -> MethodDistillation:
        # .to(device), .half(), .to(memory_format=...) reach the teacher too: same device as the student.
        super()._apply(fn, recurse)
        if self._teacher is not None:
            self._teacher._apply(fn, recurse)
        return self

    def start_epoch(self, epoch: int, epochs: int | None = None) -> None:
        self.epoch = int(epoch)
        # The comparator's own epoch hook (LGD's pre-distillation epochs: losses.lgd.pre_distill_fraction).
        hook = getattr(self.comparator, "start_epoch", None)
        if hook is not None:
            hook(epoch, epochs)

    def weight_factor(self) -> float:
        if self.epoch is None:
            return 1.0
        return warmup_factor(self.epoch, self.warmup_zero_epochs, self.warmup_ramp_epochs)

    def forward(self, output: Any, targets: Tensor, img_size: int | tuple[int, int], *,
                images: Tensor | None = None) -> dict[str, Tensor]:
        """The method's per-image terms (``term_names``); the teacher (if any) runs here on ``images``."""
        comparator = self.comparator
        if comparator is None:
            return {}
        teacher_output = None
        if self._teacher is not None:
            if images is None:
                raise ValueError(f"{self.method}: the teacher needs the batch: call distillation(..., images=images)")
            teacher_output = self._teacher(images)  # eval mode, no_grad (FrozenTeacher)
        terms = comparator(output, targets, img_size, images=images, teacher_output=teacher_output)
        return comparator.check_terms(terms)

    def total_loss(self, gt_total: Tensor, terms: Mapping[str, Tensor], batch_size: int) -> Tensor:
        """``gt_total + f * batch_size * L_method`` (``scale`` batch) or ``gt_total + f * L_method``."""
        if self.comparator is None:
            return gt_total
        # The first term is the method's whole loss L_method (detectors/comparators/base.py).
        return gt_total + combine_losses(gt_total.new_zeros(()), terms[self.term_names[0]], 0.0,
                                         lambda_distill=self.weight_factor(), lambda_mask=0.0,
                                         batch_size=batch_size, scale=self.scale)

    def count_parameters(self) -> dict[str, int]:
        """Training-only (learned) parameters: ``{method: n, "total": n}``; the frozen teacher is not counted."""
        if self.comparator is None:
            return {"total": 0}
        n = count_params(self.comparator)
        return {self.method: n, "total": n}
