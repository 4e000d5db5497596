"""The detector contract: what every detector family provides, and what the engine may rely on.

The engine (``detectors/engine/``: trainer, validation, checkpoints), ``mssd model info``, the
distillation wiring and ``study/`` see a detector only through the types below; the family's name
appears only in its own folder (``detectors/yolov5/``, ``detectors/yolox/``...) and in the one table
``detectors/zoo.py``. CONTRIBUTING.md ("Detector contract") says the same in prose.

A family provides a ``Family`` (registered in ``detectors.zoo.FAMILIES``):

- a **model** (``Detector``): images enter as RGB float in [0, 1], (B, 3, H, W), H and W multiples of
  ``recipe.stride_multiple``, letterboxed by our loader; any other input convention (BGR, 0-255,
  ImageNet normalisation) is applied inside the model. ``forward(images)`` returns a
  ``DetectorOutput(head, teachers, students)``; ``predict`` one ``Detections`` per image
  (``inference_raw``, the decoded un-suppressed predictions, only where the family has objectness).
- its **detection loss** (``DetectionLoss``): ``loss(output, targets) -> (l_gt, items)``.
- a **weight loader** for the checkpoints users already have (official releases), never running
  pickled code.
- its **recipe** (``Recipe``): the training defaults a config starts from.
- its **tap sets** (``TapSet``): the named teacher/student pairings MSSD may use (``detector.taps``).

Optional epoch hook: any of the model, the loss or the training dataset may define
``start_epoch(epoch, epochs)``; the trainer calls it at the start of every epoch (1-based ``epoch`` of
``epochs``, also after a resume), so a recipe can switch behaviour late in training (YOLOX turns on
its L1 loss and turns mosaic off for its last ``no_aug_epochs``). It must depend on its arguments only,
so that a resumed run behaves as the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor, nn


class DetectorOutput(NamedTuple):
    """Training-mode output of every detector.

    ``head``: the family's raw head output, whatever its loss consumes (YOLOv5: per-level maps
    ``(B, na, H, W, 5 + nc)``; YOLOX: per-level ``(B, 5 + nc, H, W)`` maps). Only the family's own
    loss and decoder look inside it.
    ``teachers`` / ``students``: the neck taps of the active tap set (MSSD, eqs 1-4),
    ``{stride: (B, C, H, W)}``, with ``C`` as declared in ``model.tap_channels[stride]`` (teacher, student).
    ``head_inputs``: ``{stride: (B, C, H, W)}``, the maps the head reads (eq 6's F for mask-assisted
    detection), ``C`` as in ``model.head_input_channels``, whatever the tap set.
    """

    head: Any
    teachers: dict[int, Tensor]
    students: dict[int, Tensor]
    head_inputs: dict[int, Tensor]


@dataclass(frozen=True)
class Detections:
    """Detections of one image: ``boxes (K, 4)`` xyxy, ``scores (K,)``, ``classes (K,)`` int.

    The one detection type of the project. ``model.predict`` returns torch tensors in input pixels
    (the letterboxed image); evaluation and the result writers take numpy arrays in original-image
    pixels (``Detections.numpy()`` converts). Sequences (lists) are stored as numpy arrays. It unpacks
    like a tuple: ``boxes, scores, classes = detections``.
    """

    boxes: Any = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: Any = field(default_factory=lambda: np.zeros(0, np.float32))
    classes: Any = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        if not hasattr(self.boxes, "shape"):  # a list or tuple: numpy, in the evaluation's dtypes
            object.__setattr__(self, "boxes", np.asarray(self.boxes, np.float32).reshape(-1, 4))
        if not hasattr(self.scores, "shape"):
            object.__setattr__(self, "scores", np.asarray(self.scores, np.float32).reshape(-1))
        if not hasattr(self.classes, "shape"):
            object.__setattr__(self, "classes", np.asarray(self.classes, np.int64).reshape(-1))
        if tuple(self.boxes.shape[1:]) != (4,) or not len(self.boxes) == len(self.scores) == len(self.classes):
            raise ValueError(f"Detections: expected boxes (K, 4), scores (K,), classes (K,), got "
                             f"{tuple(self.boxes.shape)}, {tuple(self.scores.shape)}, {tuple(self.classes.shape)}")

    def __iter__(self) -> Iterator[Any]:
        return iter((self.boxes, self.scores, self.classes))

    def __len__(self) -> int:
        return len(self.boxes)

    def numpy(self) -> Detections:
        """The same detections as CPU numpy arrays (float32 boxes and scores, int64 classes)."""
        return Detections(_to_numpy(self.boxes, np.float32).reshape(-1, 4), _to_numpy(self.scores, np.float32),
                          _to_numpy(self.classes, np.int64))


def _to_numpy(values: Any, dtype: type) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor (torch is not imported here: this module stays light)
        values = values.detach().float().cpu().numpy() if dtype is np.float32 else values.detach().cpu().numpy()
    return np.asarray(values, dtype).reshape(-1)


@runtime_checkable
class Detector(Protocol):
    """A detection model (an ``nn.Module``) as the engine uses it."""

    num_classes: int
    strides: tuple[int, ...]  # output strides of the head, ascending (YOLOv5/YOLOX: 8, 16, 32)
    # {stride: (teacher_channels, student_channels)} of the active tap set; sizes MSSD's projectors.
    tap_channels: dict[int, tuple[int, int]]
    head_input_channels: dict[int, int]  # {stride: channels of DetectorOutput.head_inputs[stride]}

    def forward(self, images: Tensor) -> DetectorOutput:
        """RGB [0, 1] images (B, 3, H, W) -> raw head output and taps, in any mode."""
        ...

    def predict(self, images: Tensor, *, conf: float, iou: float, max_det: int) -> list[Detections]:
        """Per image, after the family's post-processing (score threshold, class-aware NMS)."""
        ...


# Optional: families with an objectness output (YOLOv5, YOLOX) also define
# ``inference_raw(images) -> (B, N, 5 + nc)``, decoded un-suppressed predictions (cx, cy, w, h in input
# pixels, objectness, class scores). The engine never calls it (validation uses ``predict``), so families
# without objectness (FCOS, RetinaNet, the R-CNNs) leave it out.


@runtime_checkable
class DetectionLoss(Protocol):
    """A family's ground-truth loss L_gt.

    ``loss(output, targets) -> (l_gt, items)``: ``targets`` are the loader's ``(M, 6)`` rows
    ``[image_index, class, cx, cy, w, h]`` normalised to the input size; ``l_gt`` is the scalar the
    family backpropagates for the batch (YOLOv5: ``(box + obj + cls) * batch_size``, see
    ``Recipe.loss_scaled_by_batch``); ``items`` maps every name of ``term_names`` to a detached 0-dim
    float tensor, per image, whose sum is L_gt per image. The trainer logs ``loss/gt`` (their sum) and
    ``loss/gt/<term>``.
    """

    term_names: tuple[str, ...]

    def __call__(self, output: DetectorOutput, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]: ...


class WeightsReport(Protocol):
    """What a weight loader reports: ``summary()`` is logged (tensors loaded, skipped, ignored)."""

    def summary(self) -> str: ...


# The engine's lr shapes (train.schedule, detectors/engine/schedule.py) and weight-decay scopes.
SCHEDULES = ("cosine", "yolox_cosine", "multistep")
WEIGHT_DECAY_SCOPES = ("weights", "all")


@dataclass(frozen=True)
class Recipe:
    """A family's training defaults; a config starts from them (explicit config values win).

    ``config_defaults()`` turns the optimisation fields into ``train.*`` config keys, which is how
    ``parse_config`` applies them; ``augment`` is resolved by the data layer (a null ``data.augment.*``
    key takes the recipe's value); the remaining fields are conventions the engine follows.
    """

    lr0: float  # initial learning rate (train.lr0)
    lrf: float  # final lr = lr0 * lrf (train.lrf; the cosine shapes only)
    momentum: float  # SGD momentum (train.momentum), Nesterov unless nesterov is False
    weight_decay: float  # (train.weight_decay), per nominal batch when nominal_batch is set
    warmup_epochs: float  # (train.warmup_epochs)
    warmup_momentum: float  # (train.warmup_momentum)
    warmup_bias_lr: float  # (train.warmup_bias_lr)
    ema_decay: float  # (train.ema_decay)
    # Batch convention. nominal_batch: gradients accumulate to about this many images per step and the
    # weight decay is scaled to it (YOLOv5: 64); None: one step per batch, weight decay as given.
    nominal_batch: int | None = 64
    # The backpropagated loss is batch_size * (L_gt + lambda_distill * L_distill + lambda_mask * L_mask)
    # (YOLOv5); False: L_gt + ... unscaled (a per-batch mean, YOLOX).
    loss_scaled_by_batch: bool = True
    optimizer: str = "sgd"  # SGD with three groups (engine/schedule.py); the only one the engine has
    # (train.schedule) cosine: YOLOv5's per-epoch cosine to lr0 * lrf after a linear warmup; yolox_cosine:
    # YOLOX's yoloxwarmcos (quadratic warmup, cosine, the last close_mosaic epochs at lr0 * lrf); multistep:
    # torchvision's / MMDetection's step schedule (lr0 * lr_gamma ** milestones passed, linear warmup from
    # lr0 * warmup_ratio over warmup_iters iterations).
    schedule: str = "cosine"
    # multistep: milestones (train.lr_steps), each a fraction of the run (< 1) or an epoch number (>= 1).
    lr_steps: tuple[float, ...] = ()
    lr_gamma: float = 0.1  # (train.lr_gamma) lr factor at each milestone
    # (train.warmup_iters) warmup length in iterations; None: warmup_epochs epochs' worth.
    warmup_iters: int | None = None
    warmup_ratio: float = 0.001  # (train.warmup_ratio) multistep: the warmup's first lr is lr0 * this
    nesterov: bool = True  # (train.nesterov) torchvision / MMDetection: plain momentum SGD
    # (train.weight_decay_scope) weights: conv/linear weights only (YOLO); all: every trainable
    # parameter, biases included (torch.optim.SGD's default, which torchvision and MMDetection use).
    weight_decay_scope: str = "weights"
    ema: bool = True  # (train.ema) evaluate an EMA of the weights (YOLO); torchvision / MMDetection: none
    grad_clip: float | None = 10.0  # (train.grad_clip) max gradient norm; None: no clipping
    stride_multiple: int = 32  # data.img_size must be a multiple of this (the largest stride)
    # data.augment.* defaults by key, resolved by the data layer; empty: the data layer's own defaults.
    augment: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The engine has one optimiser and three lr shapes; a recipe asking for another is a family bug.
        if self.optimizer != "sgd" or self.schedule not in SCHEDULES:
            raise ValueError(f"Recipe: the engine runs optimizer 'sgd' with schedule one of {SCHEDULES}, "
                             f"got {self.optimizer!r} / {self.schedule!r}")
        if self.weight_decay_scope not in WEIGHT_DECAY_SCOPES:
            raise ValueError(f"Recipe: weight_decay_scope must be one of {WEIGHT_DECAY_SCOPES}, "
                             f"got {self.weight_decay_scope!r}")

    def config_defaults(self) -> dict[str, Any]:
        """The optimisation fields as nested config keys: ``{"train": {"lr0": ..., ...}}``."""
        train = {key: getattr(self, key) for key in (
            "lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr",
            "ema_decay", "nominal_batch", "schedule", "lr_gamma", "warmup_iters", "warmup_ratio", "nesterov",
            "weight_decay_scope", "ema", "grad_clip")}
        train["lr_steps"] = list(self.lr_steps)
        return {"train": train}


@dataclass(frozen=True)
class TapPair:
    """One MSSD pairing at one stride: ``teacher`` and ``student`` name maps of the family's network."""

    stride: int
    teacher: str
    student: str


@dataclass(frozen=True)
class TapSet:
    """A named pairing of neck maps (``detector.taps``), documented where the family defines it."""

    name: str
    pairs: tuple[TapPair, ...]
    doc: str  # one line: what is paired with what, and why this reading

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(sorted({p.stride for p in self.pairs}))


@dataclass
class NoGtSettings:
    """The ``losses.gt`` block of a family whose L_gt reads no setting (an empty block): FCOS, RetinaNet
    and the R-CNNs take their loss constants from the model, as torchvision does."""


@dataclass(frozen=True)
class Family:
    """Everything the engine needs from one detector family (one entry of ``detectors.zoo.FAMILIES``).

    Builders import the family's torch code when called, so that reading the table (config validation,
    ``mssd --help``) stays cheap.
    """

    name: str  # e.g. "yolov5"
    sizes: tuple[str, ...]  # detector names, e.g. ("yolov5n", ..., "yolov5x")
    # (size name, num_classes, tap set, **family options) -> a Detector (an nn.Module)
    build_model: Callable[..., nn.Module]
    # (model, cfg: detectors.config.RunConfig) -> DetectionLoss (typed Any: the config imports the zoo)
    build_loss: Callable[[nn.Module, Any], DetectionLoss]
    # (model, path) -> WeightsReport: official checkpoints (and plain state dicts) into the model
    load_weights: Callable[[nn.Module, Path], WeightsReport]
    recipe: Recipe
    tap_sets: Mapping[str, TapSet]
    default_taps: str  # the name in tap_sets that DESIGN.md's reading gives
    # The size CPU budgets and smoke runs train (``mssd reproduce --budget smoke|cpu``); None: sizes[0],
    # the smallest real size (YOLOv5n). The ResNet-FPN families name their narrow test size here.
    small_size: str | None = None
    # The family's ``losses.gt`` block: a dataclass whose fields (``detectors.config_fields.rule``, with their
    # checks) are exactly what its build_loss reads from ``cfg.losses.gt``; defaults are upstream's. Torch-free.
    gt_config: type = NoGtSettings

    def __post_init__(self) -> None:
        if not (isinstance(self.gt_config, type) and dataclasses.is_dataclass(self.gt_config)):
            raise ValueError(f"{self.name}: gt_config must be a dataclass type, got {self.gt_config!r}")
        if self.default_taps not in self.tap_sets:
            raise ValueError(f"{self.name}: default_taps {self.default_taps!r} is not one of {sorted(self.tap_sets)}")
        if self.small_size is not None and self.small_size not in self.sizes:
            raise ValueError(f"{self.name}: small_size {self.small_size!r} is not one of {self.sizes}")

    @property
    def smallest(self) -> str:
        """The size to train where compute is short (``small_size``, else the first size)."""
        return self.small_size or self.sizes[0]
