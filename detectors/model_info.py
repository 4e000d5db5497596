"""Parameters and GFLOPs of a detector, and of its training-only distillation parts, counted by the project.

Training-only parts are the children of the distillation module, each counted apart: MSSD's projectors
(``mssd``) and MAD's adapters (``mad``), or a comparator's own parameters (``kd``, ``fgfi``, ``defeat``,
``lgd``: adapters, LGD's label encoder). A teacher method's frozen teacher is listed on its own line
(``ModelInfo.teacher``): it costs memory and a forward per step but learns nothing, so it is not in
``training_params``.

Convention (the one Ultralytics prints as "GFLOPs"): 2 x multiply-accumulates of the convolution and
linear layers for one image of ``img_size`` x ``img_size``, / 1e9. Counted with
``torch.utils.flop_counter.FlopCounterMode`` (which counts 2 FLOPs per MAC for conv/matmul and nothing
for BatchNorm, activations, pooling, upsampling or elementwise ops); Ultralytics uses thop MACs x 2 on
the fused model, so the two agree (YOLOv5s, 80 classes, 640: 16.4).

Parameter counts: ``params`` is ``sum(p.numel())`` of the model as built (Ultralytics' build summary,
e.g. YOLOv5s 7,235,389); ``params_fused`` is the count after folding BatchNorm into the preceding conv
(each BN's weight and bias become one conv bias per channel), the figure Ultralytics prints after
"Fusing layers..." and rounds in its README (YOLOv5s 7,225,885); for a detector with its own ``fuse()``
(re-parameterisation, e.g. YOLOv7's RepConv and implicit terms) it is the count of the fused copy
(YOLOv7, 3 classes: 37,207,344 trained, 36,490,696 deployed, the paper's 36.49 M).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class PartInfo:
    params: int
    gflops: float


@dataclass
class ModelInfo:
    name: str
    num_classes: int
    img_size: int
    params: int
    params_fused: int
    gflops: float
    # Training-only modules (MSSD projectors, MAD adapters, a comparator) by name; None: not counted.
    training_parts: dict[str, PartInfo] | None = field(default=None)
    # The frozen teacher of kd / fgfi / defeat (its name, params and GFLOPs); None: the method has none.
    teacher: PartInfo | None = None
    teacher_name: str | None = None

    @property
    def training_params(self) -> int:
        return sum(p.params for p in (self.training_parts or {}).values())

    @property
    def training_gflops(self) -> float:
        return sum(p.gflops for p in (self.training_parts or {}).values())


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_params_fused(module: nn.Module) -> int:
    """Parameters of the deployment form. A detector with a ``fuse()`` method (its re-parameterisation:
    RepVGG / RepConv branches, implicit terms, Conv+BN, in place, outputs unchanged) is counted on a fused
    copy; otherwise after Conv+BN fusion: each BatchNorm2d's 2C parameters become C conv biases."""
    fuse = getattr(module, "fuse", None)
    if callable(fuse):
        import copy

        deployed = copy.deepcopy(module)
        with torch.no_grad():
            deployed.fuse()
        return count_params(deployed)
    bn_channels = sum(m.num_features for m in module.modules() if isinstance(m, nn.BatchNorm2d))
    return count_params(module) - bn_channels


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def count_gflops(model: nn.Module, img_size: int) -> float:
    """GFLOPs (2 x MACs / 1e9) of one eval-mode forward of a (1, 3, img_size, img_size) input."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, img_size, img_size, device=_device_of(model)))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


@torch.no_grad()
def count_distillation(model: nn.Module, distillation: nn.Module, img_size: int) -> dict[str, PartInfo]:
    """Params and GFLOPs of each child of the distillation module (e.g. ``mssd``, ``mad``, ``kd``), one image.

    The detector's own forward runs outside the counter; one ground-truth box feeds the mask branch
    (its adapter convs cost the same whatever the boxes). A frozen teacher is not a child: its forward
    runs inside the call but is not attributed to any part (``teacher_info`` counts it).
    """
    was_training = model.training
    model.eval()
    images = torch.zeros(1, 3, img_size, img_size, device=_device_of(model))
    try:
        output = model(images)
    finally:
        model.train(was_training)
    targets = torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.25, 0.25]], device=_device_of(model))
    with FlopCounterMode(display=False) as counter:
        distillation(output, targets, img_size, images=images)
    by_module = counter.get_flop_counts()
    root = type(distillation).__name__
    parts = {}
    for name, child in distillation.named_children():
        flops = sum(by_module.get(f"{root}.{name}", {}).values())
        parts[name] = PartInfo(count_params(child), flops / 1e9)
    return parts


def model_info(
    model: nn.Module, *, name: str, num_classes: int, img_size: int = 640, distillation: nn.Module | None = None
) -> ModelInfo:
    multiple = max(model.strides)  # the contract's strides: the input must tile the coarsest level
    if img_size < multiple or img_size % multiple:
        raise ValueError(f"img_size: expected a positive multiple of {multiple}, got {img_size}")
    parts = count_distillation(model, distillation, img_size) if distillation is not None else None
    teacher = getattr(distillation, "teacher", None)
    return ModelInfo(
        name=name,
        num_classes=num_classes,
        img_size=img_size,
        params=count_params(model),
        params_fused=count_params_fused(model),
        gflops=count_gflops(model, img_size),
        training_parts=parts,
        teacher=PartInfo(count_params(teacher), count_gflops(teacher.model, img_size)) if teacher is not None else None,
        teacher_name=getattr(teacher, "name", None),
    )


def format_model_info(info: ModelInfo) -> str:
    rows = [
        ("part", "params", "GFLOPs"),
        ("inference model", f"{info.params:,} ({info.params_fused:,} fused)", f"{info.gflops:.2f}"),
    ]
    if info.training_parts is None:
        rows.append(("training-only parts", "not counted (no distillation module)", "-"))
    else:
        labels = {"mssd": "MSSD projectors", "mad": "MAD adapters", "kd": "KD adapters", "fgfi": "FGFI adapters",
                  "defeat": "DeFeat adapters", "lgd": "LGD label encoder and adapters"}
        for part, p in info.training_parts.items():
            rows.append((f"  {labels.get(part, part)} (training only)", f"{p.params:,}", f"{p.gflops:.3f}"))
        rows.append(
            (
                "training total",
                f"{info.params + info.training_params:,}",
                f"{info.gflops + info.training_gflops:.2f}",
            )
        )
    if info.teacher is not None:  # learns nothing, so not in the training total; its forward runs every step
        rows.append((f"frozen teacher {info.teacher_name} (training only, not learned)", f"{info.teacher.params:,}",
                     f"{info.teacher.gflops:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        f"{info.name}: {info.num_classes} classes, {info.img_size}x{info.img_size} input, batch 1",
        *(f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows),
        "GFLOPs = 2 x multiply-accumulates of conv/linear layers / 1e9 (Ultralytics' convention; "
        "BN, activations and pooling not counted)",
    ]
    return "\n".join(lines)
