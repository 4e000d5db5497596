"""The one table of detector families, and the functions that look a detector up by name.

``FAMILIES`` is written out by hand (no decorator registry): adding a family means adding its
``Family`` (``detectors/<family>/family.py``, torch-free) here. Everything else (config validation,
``build_detector``, the trainer, ``mssd model info|list``) reads this table and never names a family.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from detectors.api import Family, TapSet
from detectors.errors import ConfigError
from detectors.fcos.family import FAMILY as FCOS
from detectors.rcnn.family import CASCADE_RCNN, FASTER_RCNN
from detectors.retinanet.family import FAMILY as RETINANET
from detectors.yolov5.family import FAMILY as YOLOV5
from detectors.yolov6.family import FAMILY as YOLOV6
from detectors.yolov7.family import YOLOV3, YOLOV4, YOLOV7
from detectors.yolox.family import FAMILY as YOLOX

if TYPE_CHECKING:
    from torch import nn

FAMILIES: dict[str, Family] = {
    YOLOV5.name: YOLOV5,
    YOLOX.name: YOLOX,
    YOLOV6.name: YOLOV6,
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


# The implementation each family is checked against (parity scripts in benchmarks/), for ``mssd model list``.
REFERENCES: dict[str, str] = {
    "yolov5": "Ultralytics YOLOv5 v7.0",
    "yolox": "Megvii-BaseDetection/YOLOX",
    "yolov6": "meituan/YOLOv6 0.2.1",
    "yolov3": "WongKinYiu/yolov7 cfg/baseline (yolov3, yolov3-spp)",
    "yolov4": "WongKinYiu/yolov7 cfg/baseline/yolov4-csp.yaml",
    "yolov7": "WongKinYiu/yolov7",
    "fcos": "torchvision 0.26 (MMDetection 2.x preset: _mmdet2)",
    "faster_rcnn": "torchvision 0.26",
    "cascade_rcnn": "torchvision-style names, MMDetection 2.x importer",
    "retinanet": "torchvision 0.26 (MMDetection 2.x preset: _mmdet2)",
}


def family_of(name: str) -> Family:
    """The family of detector ``name``; ``ConfigError`` naming the known detectors otherwise."""
    family = DETECTORS.get(name)
    if family is None:
        close = difflib.get_close_matches(str(name), DETECTORS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"detector.name: unknown detector {name!r}{hint} (expected one of {', '.join(DETECTORS)})")
    return family


def count_parameters(name: str, num_classes: int) -> int:
    """Parameters of detector ``name`` as built for ``num_classes`` classes (``mssd model list``).

    Built on the meta device (shapes only, no memory, ~0.05 s even for 100 M parameters); a family
    whose initialisation writes values (YOLOv5's bias priors) is built on the CPU instead."""
    import torch

    try:
        with torch.device("meta"):
            model = build_detector(name, num_classes=num_classes)
    except (NotImplementedError, RuntimeError):  # "Cannot copy out of meta tensor"
        model = build_detector(name, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())


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
