"""The interface every comparison method implements (KD, FGFI, DeFeat, LGD; README "Comparators (Table 4)").

A method is a ``Comparator``: an ``nn.Module`` owning its training-only parameters (adapters, LGD's label
encoder), never a submodule of the detector, so exported weights never hold them. Its math is a pure
function in ``losses/<method>.py``; the module only adapts, masks and calls it.

Built by ``detectors.comparators.build_comparator(method, losses_cfg, context)`` from the method's
builder ``build(losses_cfg, context) -> Comparator`` (the one table is ``detectors.comparators.BUILDERS``).
``detectors.distillation.MethodDistillation`` wraps it with the frozen teacher, eq 7's batch convention and
the warm-up, and is what the trainer sees (the same API as MSSD's ``Distillation``).

Per training step the wrapper calls::

    terms = comparator(output, targets, img_size, images=images, teacher_output=teacher_output)

- ``output``: the student's ``DetectorOutput`` (``head``, ``teachers``, ``students``, ``head_inputs``);
- ``targets``: the loader's ``(M, 6)`` rows ``[image_index, class, cx, cy, w, h]`` normalised to the input
  (``detectors.distillation.targets_to_boxes`` turns them into xyxy input pixels);
- ``img_size``: the input size ``S`` or ``(H, W)``;
- ``images``: the augmented batch ``(B, 3, H, W)`` the student saw;
- ``teacher_output``: the frozen teacher's ``DetectorOutput`` on the same images (no graph), or ``None``
  for a teacher-free method.

It returns ``{term: 0-dim tensor}`` with exactly the keys of ``term_names``: first ``name`` itself (the
method's whole loss L_method, already weighted by its own coefficients, what is added to L_gt per image),
then its parts ``"<name>/<part>"`` (weighted, summing to L_method). The trainer logs them as
``loss/<term>`` and its non-finite check names the first bad one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn


@dataclass(frozen=True)
class ComparatorContext:
    """What a method's builder may read to size its parameters.

    ``model``: the student detector (``detectors.api.Detector``: ``strides``, ``head_input_channels``,
    ``tap_channels``, ``num_classes``); ``teacher``: the ``FrozenTeacher`` (its ``head_input_channels``,
    ``strides``) or ``None`` for a teacher-free method; ``img_size``: ``data.img_size`` when known;
    ``build_loss``: ``build_loss(model, **gains) -> loss``, the student family's detection loss for
    ``model`` with the run's ``losses.gt`` gains (``gains`` override some, e.g. ``obj=0.0``), where
    ``loss(output, targets) -> (L per image, carrying the graph; items)``; ``None`` when the builder is
    called without a run config.
    """

    model: nn.Module
    teacher: Any = None
    img_size: int | None = None
    build_loss: Any = None


class Comparator(nn.Module):
    """Base class of a comparison method's training-only module (see the module docstring).

    Subclasses set ``name`` and ``term_names`` and implement ``forward``; ``needs_teacher`` says whether
    ``teacher_output`` must be given.
    """

    name: str = ""
    term_names: tuple[str, ...] = ()
    needs_teacher: bool = False

    def forward(self, output: Any, targets: Tensor, img_size: int | tuple[int, int], *,
                images: Tensor | None = None, teacher_output: Any = None) -> dict[str, Tensor]:
        raise NotImplementedError

    def check_terms(self, terms: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``terms`` in ``term_names`` order; a ``ValueError`` when a key is missing or extra (a method bug)."""
        if set(terms) != set(self.term_names):
            raise ValueError(f"{type(self).__name__}: returned terms {sorted(terms)}, declared {list(self.term_names)}")
        return {k: terms[k] for k in self.term_names}
