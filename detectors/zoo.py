"""The one table of detector families, and the functions that look a detector up by name.

``FAMILIES`` is written out by hand (no decorator registry): adding a family means adding its
``Family`` (``detectors/<family>/family.py``, torch-free) here. Everything else (config validation,
``build_detector``, the trainer, ``mssd model info``) reads this table and never names a family.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detectors.api import Family, TapSet
from detectors.errors import ConfigError
from detectors.fcos.family import FAMILY as FCOS
from detectors.rcnn.family import CASCADE_RCNN, FASTER_RCNN
from detectors.retinanet.family import FAMILY as RETINANET
from detectors.yolov5.family import FAMILY as YOLOV5
from detectors.yolov7.family import YOLOV3, YOLOV4, YOLOV7
from detectors.yolox.family import FAMILY as YOLOX

if TYPE_CHECKING:
    from torch import nn

FAMILIES: dict[str, Family] = {
    YOLOV5.name: YOLOV5,
    YOLOX.name: YOLOX,
    YOLOV3.name: YOLOV3,
    YOLOV4.name: YOLOV4,
    YOLOV7.name: YOLOV7,
    FCOS.name: FCOS,
    FASTER_RCNN.name: FASTER_RCNN,
    CASCADE_RCNN.name: CASCADE_RCNN,
    RETINANET.name: RETINANET,
}

# Detector name -> its family (``yolov5s`` -> YOLOv5), in table order.
DETECTORS: dict[str, Family] = {size: family for family in FAMILIES.values() for size in family.sizes}


def family_of(name: str) -> Family:
    """The family of detector ``name``; ``ConfigError`` naming the known detectors otherwise."""
    family = DETECTORS.get(name)
    if family is None:
        raise ConfigError(f"detector.name: unknown detector {name!r}, expected one of {', '.join(DETECTORS)}")
    return family


def tap_set(name: str, taps: str | None = None) -> TapSet:
    """Detector ``name``'s tap set ``taps`` (its family's default when None); ``ConfigError`` if unknown."""
    family = family_of(name)
    taps = family.default_taps if taps is None else taps
    if taps not in family.tap_sets:
        raise ConfigError(f"detector.taps: {name} has no tap set {taps!r}, expected one of "
                          f"{', '.join(family.tap_sets)}")
    return family.tap_sets[taps]


def build_detector(name: str, *, num_classes: int, taps: str | None = None, **options) -> nn.Module:
    """A freshly initialised detector by name for ``num_classes`` classes, with tap set ``taps``.

    Extra keyword arguments go to the family's model (YOLOv5: ``anchors``).
    """
    family = family_of(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"num_classes: expected an integer >= 1, got {num_classes!r}")
    return family.build_model(name, num_classes, tap_set(name, taps), **options)


def build_detector_for(cfg: Any) -> nn.Module:
    """The detector a ``RunConfig`` describes: ``detector.name`` and ``detector.taps``, its class count."""
    return build_detector(cfg.detector.name, num_classes=cfg.num_classes, taps=cfg.detector.taps)
