"""The config blocks of the comparator methods (``losses.method``, ``losses.kd|fgfi|defeat|lgd``) and of
their teacher (``distill.teacher``): the Table 4 half of the run config, split out of ``detectors/config.py``
(which re-exports every name here) to keep each file to one concept."""

from __future__ import annotations

from dataclasses import dataclass

from detectors.config_fields import rule as _rule
from detectors.errors import ConfigError
from detectors.zoo import DETECTORS

# losses.method: which training-time method adds to L_gt (README "Comparators (Table 4)").
# mssd: eqs 1-7 (losses.mssd / losses.mad); none: L_gt alone (the baseline); kd, fgfi, defeat need a
# teacher (distill.teacher); lgd is teacher-free.
METHODS = ("mssd", "kd", "fgfi", "defeat", "lgd", "none")
TEACHER_METHODS = ("kd", "fgfi", "defeat")
# YOLOv5's default anchors (input pixels, w h pairs) at strides 8, 16, 32: FGFI's mask anchors by default.
COCO_ANCHORS = [[10.0, 13.0, 16.0, 30.0, 33.0, 23.0], [30.0, 61.0, 62.0, 45.0, 59.0, 119.0],
                [116.0, 90.0, 156.0, 198.0, 373.0, 326.0]]


@dataclass
class KDConfig:
    """KD, Chen et al. 2017, on a one-stage head (losses/kd.py): soft classification/objectness with
    temperature, teacher-bounded regression with margin, hint on the neck through an adapter."""

    mu: float = _rule(0.5, gt=0.0, le=1.0)  # hard/soft balance: mu * L_hard + (1 - mu) * L_soft (paper 0.5)
    temperature: float = _rule(1.0, gt=0.0)  # T of the soft targets
    background_weight: float = _rule(1.5, ge=0.0)  # w_0, the background class's weight (paper 1.5)
    regression_weight: float = _rule(0.5, ge=0.0)  # nu of the bounded regression loss (paper 0.5)
    margin: float = _rule(0.0, ge=0.0)  # m: the student is penalised while worse than teacher - m
    hint_weight: float = _rule(0.5, ge=0.0)  # gamma of the hint loss (paper 0.5)
    adapter_kernel: int = _rule(1, ge=1)  # the hint adaptation layer (student -> teacher channels)


@dataclass
class FGFIConfig:
    """FGFI, Wang et al. 2019 (losses/fgfi.py): imitation of the teacher's neck inside the anchor-IoU mask."""

    weight: float = _rule(0.01, ge=0.0)  # lambda (paper 0.01, with N_p counting positions)
    psi: float = _rule(0.5, gt=0.0, le=1.0)  # mask threshold factor on each box's best anchor IoU
    # N_p: mask positions (the paper) or positions x channels (DeFeat.pytorch's reimplementation).
    normalise: str = _rule("positions", choices=("positions", "elements"))
    adapter_kernel: int = _rule(3, ge=1)  # FGFI's code: 3x3 conv + ReLU
    adapter_relu: bool = True
    anchors: list[list[float]] = _rule(factory=lambda: [list(a) for a in COCO_ANCHORS])

    def __post_init__(self) -> None:
        for i, level in enumerate(self.anchors):
            if not level or len(level) % 2 or any(not v > 0 for v in level):
                raise ConfigError(f"losses.fgfi.anchors[{i}]: expected w, h pairs of positive pixels, got {level!r}")


@dataclass
class DeFeatConfig:
    """DeFeat, Guo et al. 2021 (losses/defeat.py): decoupled object/background feature imitation and
    decoupled classification KD. Defaults: DeFeat.pytorch's released config."""

    feature_object_weight: float = _rule(3.0, ge=0.0)  # hint_neck_w
    feature_background_weight: float = _rule(12.0, ge=0.0)  # hint_neck_back_w
    cls_object_weight: float = _rule(2.0, ge=0.0)  # head_cls_w
    cls_background_weight: float = _rule(2.0, ge=0.0)  # head_cls_back_w
    temperature: float = _rule(1.0, gt=0.0)  # head_cls_T
    adapter_kernel: int = _rule(3, ge=1)  # neck_adapt: 3x3 conv, no ReLU
    adapter_relu: bool = False


@dataclass
class LGDConfig:
    """LGD, Zhang et al. 2022 (losses/lgd.py, detectors/comparators/lgd.py): teacher-free label-guided
    self-distillation. Defaults: megvii-research/LGD's configs (names in comments)."""

    weight: float = _rule(1.0, ge=0.0)  # lambda of the distillation MSE (MODEL.DISTILLATOR.LAMBDA)
    teacher_weight: float = _rule(1.0, ge=0.0)  # the teacher map's detection loss (their losses_tea, weight 1)
    # D, the width of the label embeddings, the interaction and the teacher maps; null: the median of the
    # student's head-input channels (their FPN width, 256, for 256-channel FPNs and YOLOv5s; 128 for YOLOv5n).
    hidden_dim: int | None = _rule(None, ge=8)
    heads: int = _rule(8, ge=1)  # attention heads (TEACHER.NR_TRANSFORMER_HEADS); must divide D
    # Who queries in the relation adapter (TEACHER.INTERACT_PATTERN stuGuided / labelGuided).
    interaction: str = _rule("student_guided", choices=("student_guided", "label_guided"))
    context_box: bool = False  # a whole-image box per image (TEACHER.ADD_CONTEXT_BOX; their RetinaNet: true)
    detach_appearance: bool = False  # no teacher gradient into the student's maps (DETACH_APPEARANCE_EMBED)
    adapter_convs: int = _rule(3, ge=1)  # 3x3 convs of the distillation adapter (SequentialConvs: 3)
    # The first floor(fraction * epochs) epochs detach the student's side (PRE_NONDISTILL_ITERS 30k of 180k).
    pre_distill_fraction: float = _rule(1 / 6, ge=0.0, lt=1.0)

    def __post_init__(self) -> None:
        if self.hidden_dim is not None and self.hidden_dim % self.heads:
            raise ConfigError(f"losses.lgd.heads: must divide losses.lgd.hidden_dim {self.hidden_dim}, "
                              f"got {self.heads}")


@dataclass
class TeacherConfig:
    """The frozen teacher of kd / fgfi / defeat (detectors/comparators/teacher.py)."""

    name: str = _rule("yolov5m", choices=tuple(DETECTORS))
    # One of our checkpoints, a state dict, or the family's official file (Ultralytics .pt); required
    # by a teacher method when training (mssd model info builds the teacher without it).
    weights: str | None = None


@dataclass
class DistillConfig:
    teacher: TeacherConfig = _rule(factory=TeacherConfig)
