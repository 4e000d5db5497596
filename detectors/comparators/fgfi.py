"""FGFI (Wang et al. 2019) as a comparator: the adapters and the imitation masks of ``losses.fgfi``.

The math is ``losses/fgfi.py``. The imitated maps are the ones the heads read (``head_inputs``: the
neck's outputs at the student's strides; the paper imitates the map its RPN reads), the student's
through an adaptation layer (FGFI's code: 3x3 conv + ReLU, ``losses.fgfi.adapter_kernel|adapter_relu``)
onto the teacher's channels. The masks come from ``losses.fgfi.anchors`` (one list of w, h pixel pairs
per level, strides ascending; default YOLOv5's anchors, which our YOLOv5 uses), built per batch from the
targets at each level's size.

Terms: ``fgfi`` (the weighted imitation loss, added to L_gt) and its one part ``fgfi/imitation`` (the
same value: every method lists its parts).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from detectors.comparators import common
from detectors.comparators.base import Comparator, ComparatorContext
from detectors.errors import ConfigError
from losses.fgfi import fgfi_loss, imitation_mask


class FGFIComparator(Comparator):
    name = "fgfi"
    term_names = ("fgfi", "fgfi/imitation")
    needs_teacher = True

    def __init__(self, cfg: Any, *, student_channels: dict[int, int], teacher_channels: dict[int, int],
                 strides: tuple[int, ...]) -> None:
        super().__init__()
        self.cfg = cfg
        self.strides = tuple(sorted(int(s) for s in strides))
        self.adapters = common.adapters(student_channels, teacher_channels, kernel_size=cfg.adapter_kernel,
                                        relu=cfg.adapter_relu)
        for s, level in zip(self.strides, cfg.anchors, strict=True):
            # a buffer: follows .to(device); persistent=False keeps it out of checkpoints (it is config)
            self.register_buffer(f"anchors_{s}", torch.tensor(level, dtype=torch.float32).view(-1, 2),
                                 persistent=False)

    def masks(self, maps: dict[int, Tensor], targets: Tensor, img_size: int | tuple[int, int]) -> dict[int, Tensor]:
        """``{stride: (B, H, W)}`` FGFI masks at the sizes of ``maps``."""
        reference = maps[self.strides[0]]
        boxes, batch_index = common.student_boxes(targets, img_size, reference.device)
        return {s: imitation_mask(boxes, batch_index, reference.shape[0], getattr(self, f"anchors_{s}"), s,
                                  size, self.cfg.psi)
                for s, size in common.map_sizes({s: maps[s] for s in self.strides}).items()}

    def forward(self, output: Any, targets: Tensor, img_size: int | tuple[int, int], *,
                images: Tensor | None = None, teacher_output: Any = None) -> dict[str, Tensor]:
        masks = self.masks(output.head_inputs, targets, img_size)
        loss = fgfi_loss(common.adapt(self.adapters, output.head_inputs),
                         {s: teacher_output.head_inputs[s] for s in self.strides}, masks,
                         weight=self.cfg.weight, normalise=self.cfg.normalise)
        return {"fgfi": loss, "fgfi/imitation": loss.detach()}


def build(losses_cfg: Any, context: ComparatorContext) -> FGFIComparator:
    cfg, model, teacher = losses_cfg.fgfi, context.model, context.teacher
    if teacher is None:
        raise ConfigError("losses.method: fgfi needs a teacher (distill.teacher)")
    strides = tuple(sorted(int(s) for s in model.strides))
    if len(cfg.anchors) != len(strides):
        raise ConfigError(f"losses.fgfi.anchors: expected one list of anchors per level of {strides} "
                          f"({len(strides)}), got {len(cfg.anchors)}")
    return FGFIComparator(cfg, student_channels=dict(model.head_input_channels),
                          teacher_channels=teacher.head_input_channels, strides=strides)
