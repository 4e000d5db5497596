"""Multi-scale self-distillation, eqs 1-4 of Jia et al. 2024.

At every stride k the neck gives a shallower top-down (FPN) map T_k, the teacher, and a deeper
bottom-up (PAN) map S_k at the same resolution, the student (DESIGN.md, "Neck taps"). Eqs 1-3:

    L_k = w_k * mean((S_k - T_k)^2)          mean over the N = H*W*C elements and the batch,

with w_s = gamma for the small-object scale (stride 8, eq 1), w_m and w_l for strides 16 and 32
(the paper's 1; searchable here). Eq 4: ``L_distill = (1/k) * sum_k L_k`` with k the number of levels.

``mssd_loss`` is the pure function; ``MSSDLoss`` owns what is learned or decided before it: a 1x1 conv
per stride projecting the student to the teacher's channels when they differ (identity otherwise) and
the teacher's detachment (the deeper map learns from the shallower one, not the reverse). Projectors
are training-only parameters: they live here, never in the detector, so exported weights exclude them.

Readings the paper leaves open are arguments of ``MSSDLoss`` (docs/design-notes.md): which side is
detached (``detach``: teacher, student or none), how channels are matched (``channel_matching``:
project the student, project the teacher, or a shared 1x1 adapter after projecting the student) and
how each map is normalised before the squared error (``normalise``: none or per-channel standardisation).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Log names of the three scales: s = small objects = the finest map (stride 8).
SCALE_NAMES = ("s", "m", "l")
# The readings of eqs 1-3 a config may choose (docs/design-notes.md); the first of each is the default.
DETACH = ("teacher", "student", "none")
CHANNEL_MATCHING = ("project_student", "project_teacher", "shared_adapter")
NORMALISE = ("none", "channel_standardise")


def scale_of_stride(stride: int) -> str:
    """The paper's scale of a pyramid level: ``"s"`` below stride 16, ``"m"`` below 32, ``"l"`` beyond.

    Strides 8/16/32 are the paper's three levels; detectors with more levels (FCOS and RetinaNet go to
    stride 128) put their extra coarse levels in ``"l"`` and any finer one in ``"s"``.
    """
    if stride < 16:
        return "s"
    if stride < 32:
        return "m"
    return "l"


def scale_weights(strides: tuple[int, ...] | list[int], *, gamma: float, w_m: float, w_l: float) -> dict[int, float]:
    """``{stride: w_k}``: gamma for the small-object scale (eq 1), w_m and w_l for the others."""
    by_scale = {"s": gamma, "m": w_m, "l": w_l}
    return {int(s): float(by_scale[scale_of_stride(int(s))]) for s in strides}


def standardise_channels(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Each channel of each image to zero mean and unit variance over its H x W cells, in float32 at least.

    ``(x - mean) / sqrt(var + eps)`` per (image, channel), the biased variance: what feature distillers
    that normalise before the MSE do (e.g. PKD), so only the pattern of a map is matched, not its scale.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    x = x.to(dtype)
    mean = x.mean(dim=(-2, -1), keepdim=True)
    var = x.var(dim=(-2, -1), keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(var + eps)


def mssd_level_losses(
    students: Mapping[int, Tensor], teachers: Mapping[int, Tensor], weights: Mapping[int, float]
) -> dict[int, Tensor]:
    """Eqs 1-3: ``{k: weights[k] * mean((S_k - T_k)^2)}`` per level k, each a scalar tensor.

    Args:
        students: ``{stride: (B, C, H, W)}`` student maps (already projected to the teacher's channels).
        teachers: ``{stride: (B, C, H, W)}`` teacher maps, same keys and shape per key (detach them
            first for a one-way distillation; this function does not).
        weights: ``{stride: w_k}`` for every key of ``students``.

    The squared error is computed in float32 at least, so an fp16 autocast forward cannot overflow it.
    """
    if set(students) != set(teachers):
        raise ValueError(
            f"mssd_loss: students and teachers must have the same strides, got {sorted(students)} and {sorted(teachers)}"
        )
    if not students:
        raise ValueError("mssd_loss: expected at least one level, got none")
    missing = set(students) - set(weights)
    if missing:
        raise ValueError(f"mssd_loss: no weight for strides {sorted(missing)} (weights given for {sorted(weights)})")
    losses = {}
    for k in sorted(students):
        s, t = students[k], teachers[k]
        if s.shape != t.shape:
            raise ValueError(
                f"mssd_loss: stride {k}: student shape {tuple(s.shape)} != teacher shape {tuple(t.shape)}"
            )
        dtype = torch.promote_types(torch.promote_types(s.dtype, t.dtype), torch.float32)
        # mse_loss is mean((s - t)^2) fused into one kernel forward and backward: half the time of
        # the spelled-out expression on the CPU.
        losses[k] = weights[k] * F.mse_loss(s.to(dtype), t.to(dtype))
    return losses


def mssd_loss(
    students: Mapping[int, Tensor], teachers: Mapping[int, Tensor], weights: Mapping[int, float]
) -> Tensor:
    """Eqs 1-4: ``(1/k) * sum_k weights[k] * mean((S_k - T_k)^2)``, a scalar tensor.

    ``students`` and ``teachers`` are ``{stride: (B, C, H, W)}`` dicts with the same keys and equal
    shapes per key; ``weights`` is ``{stride: w_k}``; k is the number of levels. Detaching the teacher
    and projecting the student happen before this function (see ``MSSDLoss``).
    """
    levels = mssd_level_losses(students, teachers, weights)
    return torch.stack(list(levels.values())).sum() / len(levels)


class MSSDLoss(nn.Module):
    """Eqs 1-4 with per-stride channel matching (training-only parameters).

    Args:
        tap_channels: ``{stride: (teacher_channels, student_channels)}``, the detector's contract.
        gamma, w_m, w_l: scale weights of strides 8, 16, 32 (``scale_weights``).
        detach_teacher: stop the gradient into the teacher map (DESIGN.md default: true); used only
            when ``detach`` is ``None`` (true means ``"teacher"``, false ``"none"``).
        detach: which raw map gets no gradient: ``"teacher"``, ``"student"`` or ``"none"``.
        channel_matching: ``"project_student"`` (a 1x1 conv maps the student to the teacher's channels,
            identity when they match), ``"project_teacher"`` (the teacher to the student's channels), or
            ``"shared_adapter"`` (the student projected as in the first, then one 1x1 conv per stride
            shared by both sides before comparing).
        normalise: ``"none"`` or ``"channel_standardise"`` (``standardise_channels`` on both maps just
            before the squared error).

    Detaching acts on the raw maps, before any projection: the projectors keep learning either way.

    ``forward(students, teachers)`` returns ``{"distill": L_distill, "distill_s": L_s, "distill_m": L_m,
    "distill_l": L_l}``: the per-scale terms are the weighted L_k of eqs 1-3 (L_s includes gamma), so
    ``distill = (distill_s + distill_m + distill_l) / k``. A scale with no level logs 0; several levels
    in one scale (detectors with more than three) add up in that scale's term.
    """

    def __init__(
        self,
        tap_channels: Mapping[int, tuple[int, int]],
        *,
        gamma: float = 0.05,
        w_m: float = 1.0,
        w_l: float = 1.0,
        detach_teacher: bool = True,
        detach: str | None = None,
        channel_matching: str = "project_student",
        normalise: str = "none",
    ) -> None:
        super().__init__()
        if not tap_channels:
            raise ValueError("MSSDLoss: tap_channels is empty: the detector exposes no teacher/student taps")
        detach = detach if detach is not None else ("teacher" if detach_teacher else "none")
        for name, value, allowed in (("detach", detach, DETACH), ("channel_matching", channel_matching,
                                     CHANNEL_MATCHING), ("normalise", normalise, NORMALISE)):
            if value not in allowed:
                raise ValueError(f"MSSDLoss: {name} must be one of {allowed}, got {value!r}")
        self.strides = tuple(sorted(int(s) for s in tap_channels))
        self.weights = scale_weights(self.strides, gamma=gamma, w_m=w_m, w_l=w_l)
        self.detach = detach
        self.channel_matching = channel_matching
        self.normalise = normalise
        # A 1x1 conv maps one side into the other's channel space (e.g. the student's 512 -> the teacher's
        # 256 at stride 32 in YOLOv5s), so the loss compares like with like; projecting the student (the
        # default) keeps the teacher a fixed target. ModuleDict keys must be strings.
        project_teacher = channel_matching == "project_teacher"

        def projector(teacher: int, student: int) -> nn.Module:
            if teacher == student:
                return nn.Identity()
            return nn.Conv2d(teacher, student, 1) if project_teacher else nn.Conv2d(student, teacher, 1)

        self.projectors = nn.ModuleDict({str(s): projector(*tap_channels[s]) for s in self.strides})
        self.shared = None
        if channel_matching == "shared_adapter":
            self.shared = nn.ModuleDict(
                {str(s): nn.Conv2d(tap_channels[s][0], tap_channels[s][0], 1) for s in self.strides}
            )

    @property
    def detach_teacher(self) -> bool:
        return self.detach == "teacher"

    def matched(self, students: Mapping[int, Tensor], teachers: Mapping[int, Tensor]
                ) -> tuple[dict[int, Tensor], dict[int, Tensor]]:
        """``(students, teachers)`` as eqs 1-3 compare them: detached, projected, adapted, normalised."""
        out_s, out_t = {}, {}
        for s in self.strides:
            student, teacher = students[s], teachers[s]
            if self.detach == "teacher":
                teacher = teacher.detach()
            elif self.detach == "student":
                student = student.detach()
            if self.channel_matching == "project_teacher":
                teacher = self.projectors[str(s)](teacher)
            else:
                student = self.projectors[str(s)](student)
            if self.shared is not None:
                student, teacher = self.shared[str(s)](student), self.shared[str(s)](teacher)
            if self.normalise == "channel_standardise":
                student, teacher = standardise_channels(student), standardise_channels(teacher)
            out_s[s], out_t[s] = student, teacher
        return out_s, out_t

    def forward(self, students: Mapping[int, Tensor], teachers: Mapping[int, Tensor]) -> dict[str, Tensor]:
        """``students``/``teachers``: ``{stride: (B, C_student|C_teacher, H, W)}`` for every tapped stride."""
        matched_students, matched_teachers = self.matched(students, teachers)
        levels = mssd_level_losses(matched_students, matched_teachers, self.weights)
        zero = next(iter(levels.values())).new_zeros(())
        terms = {f"distill_{name}": zero for name in SCALE_NAMES}
        for s, value in levels.items():
            key = f"distill_{scale_of_stride(s)}"
            terms[key] = terms[key] + value
        return {"distill": torch.stack(list(levels.values())).sum() / len(levels), **terms}
