"""The typed configuration of one training run.

One ``RunConfig`` describes a run completely: detector, data, losses (eq 7 of the MSSD paper),
schedule, evaluation, tracking and seed. It lives in ``detectors/`` because the trainer consumes it
and nothing may import ``study/``; YAML loading, ``--set`` overrides and file:line error messages are
``study.config``'s job.

Validation rules are attached to fields as metadata (``gt``, ``ge``, ``le``, ``lt``, ``choices``) and
checked by ``parse_config``, which converts a plain dict (from YAML) into these dataclasses, failing on
the first unknown key, wrong type or out-of-range value with the dotted key path in the message (the
conversion is ``detectors.config_fields``); defaults come from the detector family's recipe first
(``detectors.zoo``), then from the dataclasses.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from detectors.api import SCHEDULES, WEIGHT_DECAY_SCOPES
from detectors.config_fields import build as _build
from detectors.config_fields import check_rules as _check_rules  # noqa: F401 (detectors.data.augment)
from detectors.config_fields import convert as _convert  # noqa: F401 (detectors.data.augment)
from detectors.config_fields import join as _join
from detectors.config_fields import rename_keys as _rename_keys
from detectors.config_fields import rule as _rule
from detectors.config_gt import build_gt_config, drop_foreign_gt_keys, split_gt
from detectors.config_methods import (  # noqa: F401 (re-exported: the run config's method blocks)
    COCO_ANCHORS,
    METHODS,
    TEACHER_METHODS,
    DeFeatConfig,
    DistillConfig,
    FGFIConfig,
    KDConfig,
    LGDConfig,
    TeacherConfig,
)
from detectors.errors import ConfigError
from detectors.zoo import DETECTORS, family_of, tap_set


@dataclass
class DetectorConfig:
    name: str = _rule("yolov5s", choices=tuple(DETECTORS))
    # Initial weights: one of our checkpoints, a state dict, or the family's official checkpoint
    # (Ultralytics .pt for YOLOv5); null trains from scratch.
    weights: str | None = None
    # MSSD's teacher/student pairing, a tap set of the detector's family (detectors/<family>/family.py);
    # null: the family's default (DESIGN.md's reading), filled in by parse_config.
    taps: str | None = None


@dataclass
class SyntheticConfig:
    """How to generate the built-in KITTI-like set into ``data.root`` when it is missing."""

    images: int = _rule(200, ge=2)
    seed: int = 0
    width: int = _rule(1242, ge=32)
    height: int = _rule(375, ge=32)
    val_fraction: float = _rule(0.2, gt=0.0, lt=1.0)


@dataclass
class AugmentConfig:
    """Training augmentation (``detectors/data/augment/``, README "Augmentation").

    Every key is optional: null takes the detector family's recipe value, else YOLOv5's
    hyp.scratch-low (``detectors.data.augment.resolve_augment``, which also checks the ranges).
    """

    RENAMED: ClassVar[dict[str, str]] = {"hflip": "fliplr"}

    mosaic: float | None = _rule(None, ge=0.0, le=1.0)  # probability of a 4-image mosaic
    mixup: float | None = _rule(None, ge=0.0, le=1.0)  # probability of blending two mosaics
    degrees: float | None = _rule(None, ge=0.0, le=180.0)  # rotation, +- degrees
    translate: float | None = _rule(None, ge=0.0, le=0.5)  # +- fraction of the image size
    # Zoom: a gain g (zoom in [1 - g, 1 + g], YOLOv5) or a range [lo, hi] (YOLOX's mosaic_scale).
    scale: float | list[float] | None = None
    shear: float | None = _rule(None, ge=0.0, le=45.0)  # +- degrees
    perspective: float | None = _rule(None, ge=0.0, le=0.01)
    # The random affine also on images without a mosaic (YOLOv5: true; YOLOX: false).
    affine_without_mosaic: bool | None = None
    # gain: YOLOv5's multiplicative gains (hsv_* in 0..1); shift: YOLOX's additive OpenCV units.
    hsv_mode: str | None = _rule(None, choices=("gain", "shift"))
    hsv_h: float | None = _rule(None, ge=0.0)
    hsv_s: float | None = _rule(None, ge=0.0)
    hsv_v: float | None = _rule(None, ge=0.0)
    flipud: float | None = _rule(None, ge=0.0, le=1.0)  # probability of an up-down flip
    fliplr: float | None = _rule(None, ge=0.0, le=1.0)  # probability of a left-right flip
    close_mosaic: int | None = _rule(None, ge=0)  # the last N epochs without mosaic and mixup
    # Whose geometry (affine pivot, box filter, mixup): yolov5 or yolox (README "Training augmentation").
    style: str | None = _rule(None, choices=("yolov5", "yolox"))

    def __post_init__(self) -> None:
        """The checks a single field's rule cannot express: the form of ``scale``, hsv bounds by mode."""
        scale = self.scale
        if isinstance(scale, list):
            if len(scale) != 2 or not 0 < scale[0] <= scale[1] < math.inf:
                raise ConfigError(f"data.augment.scale: expected a range [lo, hi] with 0 < lo <= hi, got {scale!r}")
        elif scale is not None and not 0 <= scale < 1:
            raise ConfigError(f"data.augment.scale: expected a gain >= 0 and < 1 or a range [lo, hi], got {scale!r}")
        mode = self.hsv_mode or "gain"  # OpenCV's uint8 HSV: hue 0..179, saturation and value 0..255
        for key, upper in zip(("hsv_h", "hsv_s", "hsv_v"), (1.0, 1.0, 1.0) if mode == "gain" else (180.0, 255.0, 255.0),
                              strict=True):
            value = getattr(self, key)
            if value is not None and not 0 <= value <= upper:
                raise ConfigError(f"data.augment.{key}: expected a value >= 0 and <= {upper} for hsv_mode {mode}, "
                                  f"got {value!r}")


@dataclass
class DataConfig:
    # kitti: KITTI 2D object layout; synthetic: the same layout generated on demand;
    # coco: COCO JSON; yolo: YOLO txt labels.
    format: str = _rule("synthetic", choices=("kitti", "synthetic", "coco", "yolo"))
    root: str = "data/synthetic-kitti"
    # kitti/synthetic: split names (ImageSets/<name>.txt); coco: annotation JSON paths relative to
    # root; yolo: image-list files or image folders relative to root.
    train: str = "train"
    val: str = "val"
    # coco only: the folder the JSON's file_name entries are relative to (default: root).
    images: str | None = None
    classes: list[str] = _rule(factory=lambda: ["Car", "Pedestrian", "Cyclist"])
    # Network input size in pixels (square letterbox); a multiple of the largest stride, 32.
    img_size: int = _rule(640, ge=32)
    workers: int = _rule(2, ge=0)
    # Decoded-image cache (detectors/data/image_cache.py): none; ram (per run); disk (a memory-mapped
    # file per data + input size, shared by every run on the node; $MSSD_CACHE_DIR).
    cache: str = _rule("none", choices=("none", "ram", "disk"))
    augment: AugmentConfig = _rule(factory=AugmentConfig)
    synthetic: SyntheticConfig = _rule(factory=SyntheticConfig)


@dataclass
class MSSDConfig:
    """Multi-scale self-distillation, eqs 1-4. gamma weighs stride 8 (eq 1); w_m, w_l strides 16, 32."""

    enabled: bool = True
    gamma: float = _rule(0.05, ge=0.0)  # paper Table 5 best
    w_m: float = _rule(1.0, ge=0.0)
    w_l: float = _rule(1.0, ge=0.0)
    # The deeper (student) map learns from the shallower (teacher) map, not the reverse.
    detach_teacher: bool = True
    # Readings of eqs 1-3 the paper leaves open (docs/design-notes.md); defaults are DESIGN.md's.
    # detach: which map gets no gradient; null lets detach_teacher decide (true: teacher, false: none).
    detach: str | None = _rule(None, choices=("teacher", "student", "none"))
    channel_matching: str = _rule("project_student", choices=("project_student", "project_teacher", "shared_adapter"))
    normalise: str = _rule("none", choices=("none", "channel_standardise"))


@dataclass
class MADConfig:
    """Mask-assisted detection, eqs 5-6."""

    enabled: bool = True
    sigma2: float = _rule(2.0, gt=0.0)  # paper Table 6 best; .inf gives the binary box mask
    adapter_kernel: int = _rule(3, ge=1)
    # Readings of eqs 5-6 the paper leaves open (docs/design-notes.md); defaults are DESIGN.md's.
    adapter_relu: bool = True
    # F of eq 6: the detect input, or the head's output maps (objectness logits, or all channels).
    target: str = _rule("detect_input", choices=("detect_input", "head_objectness", "head_all"))
    # Eq 5's offsets: over the box's half width/height, or in input pixels (sigma2 in px^2, literal).
    coordinates: str = _rule("box_normalised", choices=("box_normalised", "pixels"))
    # null: each level's mask at its own stride; t: built once at stride t, averaged down to each level.
    mask_stride: int | None = _rule(None, ge=1)


def _default_gt_config() -> Any:
    """The default detector's ``losses.gt`` block (``parse_config`` builds the running family's)."""
    return family_of(DetectorConfig.name).gt_config()


# The default detector's gt block type (YOLOv5's gains): the name older code and tests import.
GtLossConfig = family_of(DetectorConfig.name).gt_config


@dataclass
class DistillWarmupConfig:
    """Warm-up of lambda_distill and lambda_mask: 0 for zero_epochs epochs, then a linear ramp to 1."""

    zero_epochs: int = _rule(0, ge=0)
    ramp_epochs: int = _rule(0, ge=0)


@dataclass
class LossesConfig:
    """Eq 7: L = L_gt + lambda_distill * L_distill + lambda_mask * L_mask (paper: both lambdas 1)."""

    # The method added to L_gt (METHODS); mssd and mad (and their switches) apply to method mssd only.
    method: str = _rule("mssd", choices=METHODS)
    mssd: MSSDConfig = _rule(factory=MSSDConfig)
    mad: MADConfig = _rule(factory=MADConfig)
    kd: KDConfig = _rule(factory=KDConfig)
    fgfi: FGFIConfig = _rule(factory=FGFIConfig)
    defeat: DeFeatConfig = _rule(factory=DeFeatConfig)
    lgd: LGDConfig = _rule(factory=LGDConfig)
    # 0.1 each, not the paper's 1 and 1: at the CPU budget the terms' pull on the detector cost up to 21 mAP,
    # and 0.1 / 0.1 with the unscaled reading is what a fresh-seed confirmation found no worse than the
    # baseline (docs/findings.md). `--set losses.lambda_distill=1 losses.lambda_mask=1 losses.scale=batch`
    # is eq 7 read literally.
    lambda_distill: float = _rule(0.1, ge=0.0)
    lambda_mask: float = _rule(0.1, ge=0.0)
    # L_gt's settings: the detector family's own block (``Family.gt_config``; README "Configs"), parsed by
    # parse_config against the running detector (typed Any: its type depends on detector.name).
    gt: Any = _rule(factory=_default_gt_config)
    # Families that scale L_gt by the batch (YOLOv5, YOLOv3/v4/v7): unscaled_terms adds the distillation terms
    # as they are, batch_size * L_gt + terms (the default since the CPU-budget study, docs/findings.md: eq 7's
    # literal `batch`, batch_size * (L_gt + terms), cost YOLOv5n 21 mAP at the paper's weights).
    scale: str = _rule("unscaled_terms", choices=("batch", "unscaled_terms"))
    warmup: DistillWarmupConfig = _rule(factory=DistillWarmupConfig)


@dataclass
class TrainConfig:
    """Schedule and optimiser, paper section 4.1 and YOLOv5 defaults."""

    epochs: int = _rule(200, ge=1)
    batch_size: int = _rule(16, ge=1)
    lr0: float = _rule(0.01, gt=0.0)
    lrf: float = _rule(0.1, gt=0.0, le=1.0)  # cosine decay ends at lr0 * lrf
    momentum: float = _rule(0.937, ge=0.0, lt=1.0)
    weight_decay: float = _rule(0.0005, ge=0.0)
    warmup_epochs: float = _rule(3.0, ge=0.0)
    warmup_momentum: float = _rule(0.8, ge=0.0, lt=1.0)
    warmup_bias_lr: float = _rule(0.1, ge=0.0)
    # Gradients accumulate to about this many images per step and the weight decay is scaled to it
    # (YOLOv5's nbs); null: one step per batch, weight decay as given. Default from the family's recipe.
    nominal_batch: int | None = _rule(64, ge=1)
    # lr shape (detectors/engine/schedule.py): cosine per epoch with YOLOv5's linear warmup, YOLOX's
    # per-iteration yoloxwarmcos, or multistep (torchvision / MMDetection). Default from the family's recipe.
    schedule: str = _rule("cosine", choices=SCHEDULES)
    # multistep: lr0 * lr_gamma ** (milestones passed); a milestone < 1 is a fraction of the run (rounded to
    # the nearest epoch, e.g. 0.667 and 0.917 of 12 epochs = epochs 8 and 11), >= 1 an epoch number.
    lr_steps: list[float] = _rule(factory=list)
    lr_gamma: float = _rule(0.1, gt=0.0, le=1.0)
    # Warmup length in iterations (every schedule); null: warmup_epochs * steps per epoch.
    warmup_iters: int | None = _rule(None, ge=0)
    # multistep's linear warmup starts at lr0 * warmup_ratio (torchvision 1/1000, MMDetection 0.001).
    warmup_ratio: float = _rule(0.001, ge=0.0, le=1.0)
    nesterov: bool = True  # Nesterov momentum (YOLO); torchvision / MMDetection: false
    # Which parameters weight decay applies to: weights (conv/linear weights, YOLO) or all (biases and
    # norm weights too, torchvision / MMDetection).
    weight_decay_scope: str = _rule("weights", choices=WEIGHT_DECAY_SCOPES)
    ema: bool = True
    ema_decay: float = _rule(0.9999, gt=0.0, lt=1.0)
    grad_clip: float | None = _rule(10.0, gt=0.0)  # max grad norm; null disables
    amp: bool = True  # only used on CUDA
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # torch's CPU threads (detectors/engine/threads.py); null: the CPUs reserved for the run (a tune trial's
    # --cpus-per-trial, else this process's CPU affinity), not torch's one per core of the machine.
    threads: int | None = _rule(None, ge=1)
    # torch.compile of the model's forward (model) or of forward + eq 7 (step); none on the CPU.
    compile: str = _rule("none", choices=("none", "model", "step"))
    eval_interval: int = _rule(1, ge=1)
    # Caps the steps per epoch: smoke tests and quick sweeps on a CPU. null = the whole epoch.
    max_steps_per_epoch: int | None = _rule(None, ge=1)
    # Every N steps, the gradient of each eq-7 term w.r.t. the detector (norm, cosine with L_gt's) and the
    # pre-clip gradient norm, logged as diag/* (detectors/engine/term_gradients.py). null: off (it costs
    # one extra backward per term on the probed steps).
    diagnose_every: int | None = _rule(None, ge=1)

    def __post_init__(self) -> None:
        """``lr_steps``: positive, fractions below 1 or whole epoch numbers, ascending."""
        for i, step in enumerate(self.lr_steps):
            if not (step > 0 and (step < 1 or float(step).is_integer())):
                raise ConfigError(f"train.lr_steps[{i}]: expected a fraction of the run (0 < x < 1) or a whole "
                                  f"epoch number (>= 1), got {step!r}")
        if any(b <= a for a, b in zip(self.lr_steps, self.lr_steps[1:], strict=False)):
            raise ConfigError(f"train.lr_steps: expected ascending milestones, got {self.lr_steps!r}")


@dataclass
class EvalConfig:
    conf: float = _rule(0.001, ge=0.0, le=1.0)
    iou: float = _rule(0.6, gt=0.0, le=1.0)
    max_det: int = _rule(300, ge=1)
    batch_size: int | None = _rule(None, ge=1)  # null: train.batch_size * 2
    # COCOeval implementation: faster (faster-coco-eval, C++) or pycocotools (the reference); same numbers.
    backend: str = _rule("faster", choices=("faster", "pycocotools"))
    # Rectangular batches: each letterboxed to its minimal stride-aligned shape (detectors/data/rect_eval.py).
    rect: bool = True


@dataclass
class TrackingConfig:
    # null: $MLFLOW_TRACKING_URI if set, else sqlite:///<workdir>/mlflow.db
    uri: str | None = None
    experiment: str = "mssd"


@dataclass
class RunConfig:
    detector: DetectorConfig = _rule(factory=DetectorConfig)
    data: DataConfig = _rule(factory=DataConfig)
    losses: LossesConfig = _rule(factory=LossesConfig)
    distill: DistillConfig = _rule(factory=DistillConfig)
    train: TrainConfig = _rule(factory=TrainConfig)
    eval: EvalConfig = _rule(factory=EvalConfig)
    tracking: TrackingConfig = _rule(factory=TrackingConfig)
    seed: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.data.classes)


def _check_cross_fields(cfg: RunConfig) -> None:
    tap_set(cfg.detector.name, cfg.detector.taps)  # a ConfigError naming the family's tap sets if unknown
    multiple = family_of(cfg.detector.name).recipe.stride_multiple
    if cfg.data.img_size % multiple:
        raise ConfigError(f"data.img_size: expected a multiple of {multiple} (the largest stride of "
                          f"{cfg.detector.name}), got {cfg.data.img_size}")
    if not cfg.data.classes:
        raise ConfigError("data.classes: expected at least one class name, got an empty list")
    if len(set(cfg.data.classes)) != len(cfg.data.classes):
        raise ConfigError(f"data.classes: expected unique names, got {cfg.data.classes}")


def parse_config(data: dict | None) -> RunConfig:
    """Build a validated ``RunConfig`` from a plain dict; missing keys take their defaults.

    Defaults come from the detector family's recipe first (``train.*``, ``data.augment.*`` and
    ``detector.taps``, see ``detectors.api.Recipe``), then from the dataclasses below.
    """
    data, gt = split_gt(_with_family_defaults(data or {}))
    cfg = _build(RunConfig, data, "")
    cfg.losses.gt = build_gt_config(cfg.detector.name, gt)  # the running family's block (detectors.config_gt)
    if cfg.detector.taps is None:
        cfg.detector.taps = family_of(cfg.detector.name).default_taps
    _check_cross_fields(cfg)
    return cfg


def parse_saved_config(data: dict) -> RunConfig:
    """A config this or an older release saved (a checkpoint's, a study's base config) through today's
    schema: renamed keys under their new names, and the ``losses.gt`` keys of other families dropped (an
    older release wrote every family's into one block). A user's file goes through ``parse_config``."""
    data = _rename_keys(RunConfig, data)
    return parse_config(drop_foreign_gt_keys(data, _detector_name(data)))


def _detector_name(data: dict) -> Any:
    detector = data.get("detector")
    return detector.get("name", DetectorConfig.name) if isinstance(detector, dict) else DetectorConfig.name


def _with_family_defaults(data: dict) -> dict:
    """``data`` over the defaults of its detector's family (``data`` wins key by key)."""
    name = _detector_name(data)
    if not isinstance(name, str) or name not in DETECTORS:
        return data  # _build reports the bad name with the known ones
    family = family_of(name)
    defaults = {**family.recipe.config_defaults(), "detector": {"taps": family.default_taps}}
    return _merge(defaults, data)


def _merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        both_mappings = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both_mappings else value
    return merged


def config_to_dict(cfg: Any) -> dict:
    """The plain-dict form of a config (round-trips through ``parse_config``)."""
    return dataclasses.asdict(cfg)


# losses.method -> the method blocks of ``losses`` it reads; ``used_config_dict`` leaves the others out.
METHOD_BLOCKS: dict[str, tuple[str, ...]] = {
    "mssd": ("mssd", "mad"), "kd": ("kd",), "fgfi": ("fgfi",), "defeat": ("defeat",), "lgd": ("lgd",), "none": (),
}


def used_config_dict(cfg: RunConfig) -> dict:
    """What the run uses, as a plain dict (``mssd config show``, exported configs): the active method's
    blocks only (mssd: mssd and mad; none: no block), ``distill`` only for a method with a teacher; the
    family's own ``losses.gt`` as always. Reloads through ``parse_config`` to the same run; keep
    ``config_to_dict`` where another method may be switched on later (a study's base config)."""
    data = config_to_dict(cfg)
    active = METHOD_BLOCKS[cfg.losses.method]
    for block in {b for blocks in METHOD_BLOCKS.values() for b in blocks} - set(active):
        data["losses"].pop(block)
    if cfg.losses.method not in TEACHER_METHODS:
        data.pop("distill")
    return data


def flatten_config(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train.lr0": 0.01, ...}``: the form logged as MLflow params and used by search spaces."""
    flat: dict[str, Any] = {}
    items = config_to_dict(cfg).items() if dataclasses.is_dataclass(cfg) else cfg.items()
    for key, value in items:
        path = _join(prefix, key)
        if isinstance(value, dict):
            flat.update(flatten_config(value, path))
        else:
            flat[path] = value
    return flat
