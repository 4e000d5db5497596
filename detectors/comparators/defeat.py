"""DeFeat (Guo et al. 2021) as a comparator: the adapters, the object masks and the wiring of ``losses.defeat``.

The math is ``losses/defeat.py``. Features: the maps the heads read (``head_inputs``: the neck's outputs,
DeFeat's "neck" imitation) at the student's strides, the student's through ``neck_adapt`` (3x3 conv, no
ReLU by default) onto the teacher's channels. Classification KD: both dense heads output by output
(objectness, then the classes; ``common.dense_head_logits``, same layout checked at build), split into
object and background positions by the same box masks at the head's levels. With both classification
weights at 0 the heads are not read (and need not match).

Terms: ``defeat`` (the sum added to L_gt), ``defeat/feature_object``, ``defeat/feature_background``,
``defeat/cls_object``, ``defeat/cls_background`` (weighted).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from detectors.comparators import common
from detectors.comparators.base import Comparator, ComparatorContext
from detectors.errors import ConfigError
from losses.defeat import box_mask, defeat_loss

PARTS = ("feature_object", "feature_background", "cls_object", "cls_background")


class DeFeatComparator(Comparator):
    name = "defeat"
    term_names = ("defeat", *(f"defeat/{p}" for p in PARTS))
    needs_teacher = True

    def __init__(self, cfg: Any, *, student_channels: dict[int, int], teacher_channels: dict[int, int],
                 strides: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.strides = tuple(sorted(int(s) for s in strides))
        self.outputs = common.distilled_outputs(num_classes)
        self.head_kd = cfg.cls_object_weight > 0 or cfg.cls_background_weight > 0
        self.adapters = common.adapters(student_channels, teacher_channels, kernel_size=cfg.adapter_kernel,
                                        relu=cfg.adapter_relu)

    def forward(self, output: Any, targets: Tensor, img_size: int | tuple[int, int], *,
                images: Tensor | None = None, teacher_output: Any = None) -> dict[str, Tensor]:
        cfg = self.cfg
        features = {s: output.head_inputs[s] for s in self.strides}
        reference = features[self.strides[0]]
        boxes, batch_index = common.student_boxes(targets, img_size, reference.device)
        batch = reference.shape[0]

        def masks(maps: dict[int, Tensor]) -> dict[int, Tensor]:
            return {s: box_mask(boxes, batch_index, batch, s, size) for s, size in common.map_sizes(maps).items()}

        feature_masks = masks(features)
        student_logits = teacher_logits = head_masks = None
        if self.head_kd:
            student = common.dense_head_logits(output.head, self.strides)
            teacher = common.dense_head_logits(teacher_output.head, self.strides)
            student_logits = {s: m[..., self.outputs] for s, m in student.items()}
            teacher_logits = {s: m[..., self.outputs] for s, m in teacher.items()}
            head_sizes = {s: m[:, 0, :, :, 0] for s, m in student.items()}  # (B, H, W) per level
            head_masks = feature_masks if common.map_sizes(head_sizes) == common.map_sizes(features) else masks(head_sizes)
        parts = defeat_loss(common.adapt(self.adapters, features), {s: teacher_output.head_inputs[s] for s in self.strides},
                            feature_masks, student_logits, teacher_logits, head_masks,
                            feature_object_weight=cfg.feature_object_weight,
                            feature_background_weight=cfg.feature_background_weight,
                            cls_object_weight=cfg.cls_object_weight, cls_background_weight=cfg.cls_background_weight,
                            temperature=cfg.temperature)
        total = parts["feature_object"] + parts["feature_background"] + parts["cls_object"] + parts["cls_background"]
        return {"defeat": total, **{f"defeat/{k}": parts[k] for k in PARTS}}


def build(losses_cfg: Any, context: ComparatorContext) -> DeFeatComparator:
    cfg, model, teacher = losses_cfg.defeat, context.model, context.teacher
    if teacher is None:
        raise ConfigError("losses.method: defeat needs a teacher (distill.teacher)")
    if cfg.cls_object_weight > 0 or cfg.cls_background_weight > 0:
        common.check_dense_heads(model, teacher, "losses.defeat.cls_object_weight / cls_background_weight",
                                 "; set both to 0 for DeFeat's feature distillation alone")
    return DeFeatComparator(cfg, student_channels=dict(model.head_input_channels),
                            teacher_channels=teacher.head_input_channels, strides=tuple(model.strides),
                            num_classes=int(model.num_classes))
