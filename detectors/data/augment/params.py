"""``AugmentParams``: the augmentation recipe of one run, resolved from three layers.

``resolve_augment(config, recipe)``: a value set in the config (``data.augment.*``; ``None`` = unset)
wins over the detector family's recipe (``Recipe.augment``, a plain dict with the same keys), which
wins over the base below. The base is Ultralytics YOLOv5's ``data/hyps/hyp.scratch-low.yaml`` (the
values this project always trained with) plus ``close_mosaic: 0`` (YOLOv5 7.0 has no switch-off), so a
family whose recipe says nothing trains as YOLOv5 does.

YOLOX's exp (``yolox/exp/yolox_base.py``) in these keys, for its family recipe::

    mosaic 1.0, mixup 1.0, degrees 10, translate 0.1, scale [0.1, 2.0], shear 2.0, hsv_mode shift,
    hsv_h 5, hsv_s 30, hsv_v 30, fliplr 0.5, close_mosaic 15 (no_aug_epochs), affine_without_mosaic false,
    style yolox
    (yolox_tiny and yolox_nano: scale [0.5, 1.5], mixup 0; yolox_nano also mosaic 0.5)

Values are checked by the config's own rules (``detectors.config.AugmentConfig``), whichever layer
they come from.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from detectors.config import AugmentConfig, _check_rules, _convert
from detectors.errors import ConfigError


@dataclass(frozen=True)
class AugmentParams:
    """Every knob with its resolved value. Probabilities are per image; ranges are symmetric ``+-``."""

    mosaic: float = 1.0  # probability of a 4-image mosaic (else the image alone, letterboxed)
    mixup: float = 0.0  # probability, after a mosaic, of blending in a second mosaic
    degrees: float = 0.0  # rotation, +- degrees
    translate: float = 0.1  # the image centre lands at (0.5 +- translate) of the output
    scale: tuple[float, float] = (0.5, 1.5)  # zoom factor drawn uniformly in [lo, hi]
    shear: float = 0.0  # +- degrees, x and y independently
    perspective: float = 0.0  # +- per-pixel perspective coefficient (YOLOv5: 0..0.001)
    # Apply the random affine to images that did not get a mosaic (YOLOv5 does; YOLOX does not).
    affine_without_mosaic: bool = True
    hsv_mode: str = "gain"  # gain: YOLOv5's multiplicative gains; shift: YOLOX's additive OpenCV units
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    flipud: float = 0.0  # probability of an up-down flip
    fliplr: float = 0.5  # probability of a left-right flip
    close_mosaic: int = 0  # the last N epochs run without mosaic and mixup
    # Whose geometry: yolov5 (affine about the centre, box_candidates, mixup of two mosaics) or yolox
    # (affine about the top-left corner, boxes <= 1 px dropped at the end, YOLOX's one-image mixup).
    style: str = "yolov5"

    def summary(self) -> str:
        """``key value`` pairs on one line, for the run's log."""
        return ", ".join(f"{f.name} {getattr(self, f.name)}" for f in dataclasses.fields(self))

    @property
    def affine_is_identity(self) -> bool:
        """True when every affine range is zero: the warp is skipped (and draws nothing)."""
        return (self.degrees == 0 and self.translate == 0 and self.scale == (1.0, 1.0) and self.shear == 0
                and self.perspective == 0)


KEYS = tuple(f.name for f in dataclasses.fields(AugmentParams))


def scale_range(scale: float | list[float] | tuple[float, float]) -> tuple[float, float]:
    """YOLOv5's gain ``g`` -> ``(1 - g, 1 + g)``; a ``[lo, hi]`` range as it is."""
    if isinstance(scale, (list, tuple)):
        return float(scale[0]), float(scale[1])
    return 1.0 - float(scale), 1.0 + float(scale)


def resolve_augment(config: AugmentConfig | None = None, recipe: Mapping[str, Any] | None = None) -> AugmentParams:
    """The run's ``AugmentParams``: ``config`` (``None`` fields unset) over ``recipe`` (the family's
    ``Recipe.augment``) over YOLOv5's hyp.scratch-low. A bad recipe value is a ``ConfigError`` naming the key."""
    values: dict[str, Any] = {}
    recipe = dict(recipe or {})
    for key in recipe:
        if key not in KEYS:
            raise ConfigError(f"recipe augment.{key}: unknown key (expected one of: {', '.join(KEYS)})")
    fields = {f.name: f for f in dataclasses.fields(AugmentConfig)}
    hints = typing.get_type_hints(AugmentConfig)
    for key in KEYS:
        value = getattr(config, key, None) if config is not None else None
        if value is None and key in recipe:  # typed and range-checked as if it came from YAML
            value = _convert(recipe[key], hints[key], f"recipe augment.{key}")
            _check_rules(value, dict(fields[key].metadata), f"recipe augment.{key}")
        if value is not None:
            values[key] = value
    AugmentConfig(**values)  # the cross-field checks (scale's form, hsv bounds for the mode)
    if "scale" in values:
        values["scale"] = scale_range(values["scale"])
    return AugmentParams(**values)
