"""What the comparators share: adaptation layers, the dense-head reading and its check, the student's boxes.

Dense heads: the families with objectness (YOLOv5, YOLOX) output per level either ``(B, na, H, W, 5 + nc)``
(YOLOv5) or ``(B, 5 + nc, H, W)`` (YOLOX), channels ``x, y, w, h, objectness, classes`` (the layout
``detectors.distillation.head_maps_by_stride`` also relies on). ``dense_head_logits`` reads both as
``{stride: (B, A, H, W, 5 + nc)}``, so prediction-level distillation (KD's soft loss, DeFeat's
classification KD) compares student and teacher output by output. ``check_dense_heads`` runs both
networks once on a small image and refuses a pair whose heads differ in layout (another family, anchor
count or class count) with one ``ConfigError`` line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from detectors.errors import ConfigError

OBJECTNESS = 4  # channel of the objectness logit in a dense head's outputs; classes follow it


def adapters(student_channels: Mapping[int, int], teacher_channels: Mapping[int, int], *, kernel_size: int = 1,
             relu: bool = False) -> nn.ModuleDict:
    """One adaptation layer per stride, student channels -> teacher channels (``"same"`` padding keeps H x W).

    Present even when the channels match: the methods learn one (Chen et al.'s and FGFI's adaptation
    layers, DeFeat's ``neck_adapt``), which also maps a feature space onto the teacher's.
    """
    layers = {}
    for s in sorted(student_channels):
        conv = nn.Conv2d(int(student_channels[s]), int(teacher_channels[s]), kernel_size, padding="same")
        layers[str(s)] = nn.Sequential(conv, nn.ReLU(inplace=False)) if relu else conv
    return nn.ModuleDict(layers)


def adapt(layers: nn.ModuleDict, maps: Mapping[int, Tensor]) -> dict[int, Tensor]:
    return {int(s): layer(maps[int(s)]) for s, layer in layers.items()}


def dense_head_logits(head: Any, strides: tuple[int, ...]) -> dict[int, Tensor]:
    """``{stride: (B, A, H, W, 5 + nc)}`` from a dense head's per-level list (either layout, module docstring)."""
    if not isinstance(head, (list, tuple)) or len(head) != len(strides):
        raise ValueError(f"expected a dense head: one map per stride {list(strides)}, got {type(head).__name__}")
    maps = {}
    for s, level in zip(strides, head, strict=True):
        if not isinstance(level, Tensor):  # e.g. a two-stage detector's per-stage outputs
            raise ValueError(f"the head's output at stride {s} is a {type(level).__name__}, not a dense map")
        if level.dim() == 5:
            maps[int(s)] = level
        elif level.dim() == 4:
            maps[int(s)] = level.permute(0, 2, 3, 1).unsqueeze(1)
        else:
            raise ValueError(f"dense head map at stride {s} has shape {tuple(level.shape)}")
    return maps


def distilled_outputs(num_classes: int) -> slice:
    """The outputs prediction KD compares: objectness and the classes, or objectness alone for one class
    (a one-class YOLO never trains its class output)."""
    return slice(OBJECTNESS, None) if num_classes > 1 else slice(OBJECTNESS, OBJECTNESS + 1)


@torch.no_grad()
def check_dense_heads(model: nn.Module, teacher: Any, what: str, instead: str = "") -> None:
    """``ConfigError`` unless the student and the teacher have dense heads of the same layout (``what``
    names the config key whose setting needs it, ``instead`` what the user can set otherwise)."""
    size = 2 * max(model.strides)
    shapes = []
    for name, net in (("student", model), ("teacher", teacher.model)):
        parameter = next(net.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        was_training = net.training
        net.eval()
        try:
            head = net(torch.zeros(1, 3, size, size, device=device)).head
        finally:
            net.train(was_training)
        try:
            maps = dense_head_logits(head, tuple(net.strides))
        except ValueError as exc:
            # e.g. a two-stage detector: its head is the RPN's output and proposals, classified per RoI
            raise ConfigError(f"{what}: needs dense heads with objectness, one map per stride (YOLOv5, YOLOX); "
                              f"the {name} ({type(net).__name__}) has another head ({exc}){instead}") from None
        shapes.append({s: tuple(m.shape[1:]) for s, m in maps.items()})
    if shapes[0] != shapes[1]:
        raise ConfigError(f"{what}: the teacher's head ({teacher.name}: {shapes[1]}) differs from the student's "
                          f"({shapes[0]}): prediction distillation needs the same family, anchors and classes")


def student_boxes(targets: Tensor, img_size: int | tuple[int, int], device: torch.device) -> tuple[Tensor, Tensor]:
    """Targets as ``(boxes (M, 4) xyxy input px, batch_index (M,))`` on ``device``."""
    from detectors.distillation import targets_to_boxes

    return targets_to_boxes(targets.to(device), img_size)


def map_sizes(maps: Mapping[int, Tensor]) -> dict[int, tuple[int, int]]:
    return {int(s): (int(m.shape[-2]), int(m.shape[-1])) for s, m in maps.items()}
