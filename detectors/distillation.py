"""MSSD and mask-assisted detection wired to a detector: the one place ``cfg.losses`` becomes modules.

API (what the trainer and ``mssd model info`` use)::

    distillation = build_distillation_for(cfg, model)         # nn.Module, training-only parameters
    optimizer params += distillation.parameters()             # projectors and adapters learn too
    output = model(images)                                    # DetectorOutput(head, teachers, students, ...)
    gt_total, items = loss_fn(output, targets)                # (box + obj + cls) * B; items per image
    terms = distillation(output, targets, img_size, images=images)  # per image, keys distillation.term_names
    loss = distillation.total_loss(gt_total, terms, batch_size)   # eq 7 times B, YOLOv5's convention
    distillation.count_parameters()                           # {"mssd": n, "mad": n, "total": n}

``losses.method`` picks the module (``build_distillation(losses_cfg, model, teacher=...)`` dispatches):
``mssd`` is ``Distillation`` below (terms ``TERMS``); ``none`` (the baseline) and the comparators
``kd | fgfi | defeat | lgd`` are ``MethodDistillation`` (``detectors/comparators/method_distillation.py``), which wraps the method's ``Comparator``
(``detectors/comparators/``) and, for kd / fgfi / defeat, the frozen teacher (run under no_grad in eval
mode on the same batch and device, held outside the module tree: never in ``parameters()``,
``state_dict()`` or the optimizer). Their terms are ``"<method>"`` and ``"<method>/<part>"``; ``none`` has
none. ``build_distillation_for(cfg, model)`` builds the teacher too (``load_teacher=False``: the
architecture only, for ``mssd model info``).

``targets`` are the dataloader's ``(M, 6)`` rows ``[image_index, class, cx, cy, w, h]`` normalised to the
input size; they become xyxy input-pixel boxes for the Gaussian masks here.

Nothing here knows a layer index: MSSD reads ``model.tap_channels`` (``{stride: (teacher_channels,
student_channels)}``) and the forward's ``teachers``/``students`` dicts, so every detector that returns
them gets MSSD and MAD with no change on this side. MAD's feature map F at stride s is ``head_inputs[s]``,
the detect input.

The ablation switches of Table 2 act here and nowhere else: ``losses.mssd.enabled: false`` builds no
projectors and reports the distill terms as constant 0; ``losses.mad.enabled: false`` builds no adapters
and reports ``mask`` as 0. The other terms are untouched. Disabled terms are still reported, so every
run logs the same metric names.

The readings of the paper that ``losses`` makes switchable (docs/design-notes.md) are wired here too:
``losses.scale`` (eq 7 under YOLOv5's batch convention), ``losses.warmup`` (the trainer calls
``start_epoch``), ``losses.mssd.detach|channel_matching|normalise`` (``MSSDLoss``) and
``losses.mad.target|coordinates|mask_stride|adapter_relu`` (``MaskAssistedLoss``; ``target`` picks F of
eq 6: the detect input, or the head's output maps read per stride by ``head_maps_by_stride``).

The distillation module is deliberately *not* a submodule of the detector: the detector's
``state_dict`` (exported inference weights) never holds projectors or adapters. Checkpoint
``distillation.state_dict()`` beside the model's to resume training exactly.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from detectors.config import LossesConfig, RunConfig
from detectors.errors import ConfigError
from detectors.model_info import count_params
from losses.combine import combine_losses
from losses.mask_loss import MaskAssistedLoss
from losses.mssd import MSSDLoss
from losses.warmup import warmup_factor

# Every term this module reports, in logging order (metric names are ``loss/<term>``).
TERMS = ("distill", "distill_s", "distill_m", "distill_l", "mask")


class Distillation(nn.Module):
    """The training-only half of eq 7: L_distill (eqs 1-4) and L_mask (eqs 5-6), either switchable off.

    Build it with ``build_distillation``. ``mssd`` / ``mad`` are ``None`` when switched off.
    """

    method = "mssd"
    term_names = TERMS

    def __init__(
        self,
        mssd: MSSDLoss | None,
        mad: MaskAssistedLoss | None,
        *,
        lambda_distill: float = 1.0,
        lambda_mask: float = 1.0,
        scale: str = "batch",
        mad_target: str = "detect_input",
        head_strides: tuple[int, ...] = (),
        warmup_zero_epochs: int = 0,
        warmup_ramp_epochs: int = 0,
    ) -> None:
        super().__init__()
        self.mssd = mssd
        self.mad = mad
        self.lambda_distill = float(lambda_distill)
        self.lambda_mask = float(lambda_mask)
        self.scale = scale
        self.mad_target = mad_target
        self.head_strides = tuple(head_strides)  # the order of the head's per-level outputs
        self.warmup_zero_epochs = int(warmup_zero_epochs)
        self.warmup_ramp_epochs = int(warmup_ramp_epochs)
        self.epoch: int | None = None  # set by the trainer each epoch; None: no warm-up applies

    def start_epoch(self, epoch: int, epochs: int | None = None) -> None:
        """The trainer's epoch hook (``detectors.api``): the epoch (from 1) the next steps belong to sets
        the warm-up factor; ``epochs`` (the run's length) is not needed."""
        self.epoch = int(epoch)

    def weight_factor(self) -> float:
        """The warm-up factor on both lambdas this epoch (``losses.warmup_factor``; 1 before any epoch)."""
        if self.epoch is None:
            return 1.0
        return warmup_factor(self.epoch, self.warmup_zero_epochs, self.warmup_ramp_epochs)

    def forward(self, output: Any, targets: Tensor, img_size: int | tuple[int, int], *,
                images: Tensor | None = None) -> dict[str, Tensor]:
        """Per-image loss terms ``{"distill", "distill_s", "distill_m", "distill_l", "mask"}`` (scalars).

        Args:
            output: the detector's training output: an object (``DetectorOutput``) or mapping with
                ``teachers`` and ``students``, ``{stride: (B, C, H, W)}`` each.
            targets: ``(M, 6)`` ``[image_index, class, cx, cy, w, h]`` normalised to the input size.
            img_size: input size in pixels, ``S`` (square) or ``(height, width)``.
            images: the batch (unused by MSSD; the comparators' teacher reads it).
        """
        teachers, students = _taps(output)
        if not students:
            raise ValueError("Distillation: the detector output has no student feature maps")
        reference = next(iter(students.values()))
        zero = reference.new_zeros((), dtype=torch.float32)
        terms = dict.fromkeys(TERMS, zero)
        if self.mssd is not None:
            terms.update(self.mssd(students, teachers))
        if self.mad is not None:
            boxes, batch_index = targets_to_boxes(targets.to(reference.device), img_size)
            features = _head_inputs(output) if self.mad_target == "detect_input" else head_maps_by_stride(
                _head(output), self.head_strides, self.mad_target)
            terms.update(self.mad(features, boxes, batch_index))
        return terms

    def total_loss(self, gt_total: Tensor, terms: Mapping[str, Tensor], batch_size: int) -> Tensor:
        """Eq 7 to backpropagate, in YOLOv5's batch convention.

        ``gt_total`` is the detection loss as YOLOv5 backpropagates it, ``(box + obj + cls) * batch_size``
        (``YOLOv5Loss``'s first output; its items are detached). Returns
        ``batch_size * (L_gt + f * lambda_distill * L_distill + f * lambda_mask * L_mask)`` with ``scale``
        ``batch`` (the default), ``batch_size * L_gt + f * (lambda_distill * L_distill + lambda_mask *
        L_mask)`` with ``unscaled_terms``; f is the warm-up factor (1 without warm-up).
        """
        factor = self.weight_factor()
        return gt_total + combine_losses(
            gt_total.new_zeros(()),
            terms["distill"],
            terms["mask"],
            lambda_distill=factor * self.lambda_distill,
            lambda_mask=factor * self.lambda_mask,
            batch_size=batch_size,
            scale=self.scale,
        )

    def contributions(self, gt_total: Tensor, terms: Mapping[str, Tensor], batch_size: int) -> dict[str, Tensor]:
        """``total_loss`` split by term: ``{"gt", "distill_s", "distill_m", "distill_l", "mask"}``, each as
        it is backpropagated (lambdas, warm-up factor, batch scale, eq 4's 1/k), summing to ``total_loss``.
        What ``train.diagnose_every`` takes gradients of (``detectors/engine/term_gradients.py``)."""
        factor = self.weight_factor()
        scale = batch_size if self.scale == "batch" else 1
        levels = len(self.mssd.weights) if self.mssd is not None else 1
        parts = {"gt": gt_total}
        for name in ("distill_s", "distill_m", "distill_l"):
            parts[name] = terms[name] * (scale * factor * self.lambda_distill / levels)
        parts["mask"] = terms["mask"] * (scale * factor * self.lambda_mask)
        return parts

    def count_parameters(self) -> dict[str, int]:
        """Training-only parameters: ``{"mssd": projectors, "mad": adapters, "total": both}``."""
        mssd = count_params(self.mssd) if self.mssd is not None else 0
        mad = count_params(self.mad) if self.mad is not None else 0
        return {"mssd": mssd, "mad": mad, "total": mssd + mad}


def build_distillation_for(cfg: RunConfig, model: nn.Module, *, load_teacher: bool = True) -> nn.Module:
    """``build_distillation`` for a run: the teacher built (and loaded, unless ``load_teacher`` is false)
    from ``distill.teacher`` when ``losses.method`` needs one, and the family's loss for the comparators."""
    from detectors.comparators.teacher import build_teacher

    return build_distillation(cfg.losses, model, teacher=build_teacher(cfg, load_weights=load_teacher),
                              img_size=cfg.data.img_size, build_loss=functools.partial(per_image_loss, cfg))


def check_teacher(cfg: RunConfig) -> None:
    """Build and load the teacher once, and build a comparator against the run's detector (then drop both):
    the checks training would make, nothing written. So a method the detector cannot serve (KD's or
    DeFeat's prediction distillation on a two-stage detector, LGD on a detector without ``forward_head``,
    FGFI's anchors for another number of levels) is one ``ConfigError`` line before the run folder and its
    MLflow run exist. MSSD (the default) is built as before, at training time: every family has taps.

    It lives here, not in ``comparators/teacher.py``, because it builds the distillation wrapper, and the
    wrapper imports the teacher module: the other way round would be an import cycle."""
    from detectors.comparators import BUILDERS
    from detectors.comparators.teacher import build_teacher
    from detectors.zoo import build_detector_for

    teacher = build_teacher(cfg)
    if cfg.losses.method in BUILDERS:
        build_distillation(cfg.losses, build_detector_for(cfg), teacher=teacher, img_size=cfg.data.img_size,
                           build_loss=functools.partial(per_image_loss, cfg))


def per_image_loss(cfg: RunConfig, model: nn.Module, **gains: float) -> Any:
    """The family's detection loss for ``model`` as ``loss(output, targets) -> (L_gt per image, items)``:
    the backpropagated loss divided by the batch when the family scales it so, still carrying the graph.
    ``gains`` replace fields of ``losses.gt`` (e.g. ``obj=0.0, cls=0.0`` for the regression part alone); a
    gain the family's block does not have is not applied (the caller checks the loss it gets, as KD does)."""
    from detectors.zoo import family_of

    family = family_of(cfg.detector.name)
    fields = {f.name for f in dataclasses.fields(cfg.losses.gt)}
    gt = dataclasses.replace(cfg.losses.gt, **{k: v for k, v in gains.items() if k in fields})
    run = dataclasses.replace(cfg, losses=dataclasses.replace(cfg.losses, gt=gt))
    loss_fn = family.build_loss(model, run)

    def loss(output: Any, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        total, items = loss_fn(output, targets)
        batch = next(iter(_head_inputs(output).values())).shape[0] if family.recipe.loss_scaled_by_batch else 1
        return total / batch, items

    return loss


def build_distillation(losses_cfg: LossesConfig, model: nn.Module, *, teacher: nn.Module | None = None,
                       img_size: int | None = None, build_loss: Any = None) -> nn.Module:
    """The training-only module ``losses_cfg.method`` asks for: ``Distillation`` (mssd) or
    ``MethodDistillation`` (none and the comparators), sized from ``model``.

    ``teacher``: the ``FrozenTeacher`` of a teacher method (``detectors.comparators.teacher``);
    ``img_size`` and ``build_loss`` (the student family's ``build_loss(model)``) are passed on to the
    comparator's builder. Raises ``ConfigError`` when MSSD or MAD is enabled for a detector that exposes
    no taps, or when a method's needs are not met. Parameters start on the CPU in float32; move the
    module with the model (``.to(device)``).
    """
    method = getattr(losses_cfg, "method", "mssd")
    if method != "mssd":
        return _build_method(method, losses_cfg, model, teacher, img_size, build_loss)
    mssd_cfg, mad_cfg = losses_cfg.mssd, losses_cfg.mad
    tap_channels: Mapping[int, tuple[int, int]] | None = getattr(model, "tap_channels", None)
    if (mssd_cfg.enabled or mad_cfg.enabled) and not tap_channels:
        raise ConfigError(
            f"losses.mssd.enabled / losses.mad.enabled: detector {type(model).__name__} exposes no "
            "tap_channels (teacher/student neck maps); set both to false to train it without distillation"
        )
    mssd = None
    if mssd_cfg.enabled:
        mssd = MSSDLoss(
            tap_channels,
            gamma=mssd_cfg.gamma,
            w_m=mssd_cfg.w_m,
            w_l=mssd_cfg.w_l,
            detach_teacher=mssd_cfg.detach_teacher,
            detach=mssd_cfg.detach,
            channel_matching=mssd_cfg.channel_matching,
            normalise=mssd_cfg.normalise,
        )
    mad = None
    head_strides = tuple(int(s) for s in getattr(model, "strides", sorted(tap_channels or ())))
    if mad_cfg.enabled:
        if mad_cfg.target == "detect_input":
            # F of eq 6 is the detect input at each stride: the student tap under the default tap set,
            # but not under e.g. pan_to_fpn, so it is read from the contract's head inputs.
            channels = dict(getattr(model, "head_input_channels", None)
                            or {s: student for s, (_teacher, student) in tap_channels.items()})
        else:
            channels = head_channels(model, head_strides, mad_cfg.target)
        if mad_cfg.mask_stride is not None and any(s % mad_cfg.mask_stride for s in channels):
            raise ConfigError(f"losses.mad.mask_stride: expected a divisor of every level's stride "
                              f"{sorted(channels)}, got {mad_cfg.mask_stride}")
        mad = MaskAssistedLoss(
            channels,
            sigma2=mad_cfg.sigma2,
            kernel_size=mad_cfg.adapter_kernel,
            relu=mad_cfg.adapter_relu,
            coordinates=mad_cfg.coordinates,
            mask_stride=mad_cfg.mask_stride,
        )
    return Distillation(mssd, mad, lambda_distill=losses_cfg.lambda_distill, lambda_mask=losses_cfg.lambda_mask,
                        scale=losses_cfg.scale, mad_target=mad_cfg.target, head_strides=head_strides,
                        warmup_zero_epochs=losses_cfg.warmup.zero_epochs,
                        warmup_ramp_epochs=losses_cfg.warmup.ramp_epochs)


def _build_method(method: str, losses_cfg: LossesConfig, model: nn.Module, teacher: nn.Module | None,
                  img_size: int | None, build_loss: Any) -> nn.Module:
    from detectors.comparators.method_distillation import MethodDistillation

    warmup = {"warmup_zero_epochs": losses_cfg.warmup.zero_epochs, "warmup_ramp_epochs": losses_cfg.warmup.ramp_epochs}
    if method == "none":
        return MethodDistillation("none", scale=losses_cfg.scale, **warmup)
    from detectors.comparators import ComparatorContext, build_comparator
    from detectors.comparators.teacher import check_compatible

    if teacher is not None:
        check_compatible(teacher, model)
    comparator = build_comparator(method, losses_cfg,
                                  ComparatorContext(model, teacher, img_size=img_size, build_loss=build_loss))
    return MethodDistillation(method, comparator, teacher if comparator.needs_teacher else None,
                              scale=losses_cfg.scale, **warmup)


def head_maps_by_stride(head: Any, strides: tuple[int, ...], target: str) -> dict[int, Tensor]:
    """The head's output as ``{stride: (B, C, H, W)}`` maps for eq 6's F (``losses.mad.target``).

    ``head`` is the per-level list (in ``strides`` order) of raw head maps in either layout the families
    use: ``(B, na, H, W, 5 + nc)`` (YOLOv5) or ``(B, 5 + nc, H, W)`` (YOLOX); channel 4 of the last
    (resp. channel) axis is the objectness logit. ``head_objectness`` keeps those (na or 1 channels),
    ``head_all`` every output channel (``na * (5 + nc)`` or ``5 + nc``).
    """
    if not isinstance(head, (list, tuple)) or len(head) != len(strides):
        raise ConfigError(f"losses.mad.target: {target} needs the head output as one map per stride "
                          f"{list(strides)}, got {type(head).__name__}")
    maps = {}
    for s, level in zip(strides, head, strict=True):
        if level.dim() == 5:  # (B, na, H, W, no)
            b, na, h, w, no = level.shape
            if target == "head_objectness":
                maps[s] = level[..., 4]
            else:
                maps[s] = level.permute(0, 1, 4, 2, 3).reshape(b, na * no, h, w)
        elif level.dim() == 4:  # (B, no, H, W)
            maps[s] = level[:, 4:5] if target == "head_objectness" else level
        else:
            raise ConfigError(f"losses.mad.target: {target}: head map at stride {s} has shape "
                              f"{tuple(level.shape)}; expected (B, na, H, W, 5 + nc) or (B, 5 + nc, H, W)")
    return maps


def head_channels(model: nn.Module, strides: tuple[int, ...], target: str) -> dict[int, int]:
    """``{stride: C}`` of ``head_maps_by_stride`` for ``model``, from one no-grad forward of a small image.

    The forward runs in eval mode (BatchNorm statistics untouched) and restores the model's mode.
    """
    size = 2 * max(strides)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros(1, 3, size, size, device=device))
    finally:
        model.train(was_training)
    return {s: int(m.shape[1]) for s, m in head_maps_by_stride(_head(output), strides, target).items()}


def targets_to_boxes(targets: Tensor, img_size: int | tuple[int, int]) -> tuple[Tensor, Tensor]:
    """YOLO rows ``[image_index, class, cx, cy, w, h]`` (normalised) -> ``(boxes (M, 4) xyxy input px,
    batch_index (M,) long)``."""
    if targets.dim() != 2 or targets.shape[1] != 6:
        raise ValueError(f"targets must have shape (M, 6) [image_index, class, cx, cy, w, h], got {tuple(targets.shape)}")
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    t = targets.float()
    scale = t.new_tensor([width, height])
    centre = t[:, 2:4] * scale
    half = t[:, 4:6] * scale / 2
    return torch.cat([centre - half, centre + half], dim=1), t[:, 0].long()


def _head(output: Any) -> Any:
    """The raw head output of a detector's forward (``head``; ``head_maps`` in older outputs)."""
    if isinstance(output, Mapping):
        return output["head"] if "head" in output else output["head_maps"]
    return output.head if hasattr(output, "head") else output.head_maps


def _head_inputs(output: Any) -> Mapping[int, Tensor]:
    """The maps the detection head reads (``head_inputs``); older outputs without it: the student taps."""
    if isinstance(output, Mapping):
        return output.get("head_inputs") or output["students"]
    return getattr(output, "head_inputs", None) or output.students


def _taps(output: Any) -> tuple[Mapping[int, Tensor], Mapping[int, Tensor]]:
    if isinstance(output, Mapping):
        return output["teachers"], output["students"]
    return output.teachers, output.students
