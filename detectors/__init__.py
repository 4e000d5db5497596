"""Detectors: models, their detection loss, box ops and NMS, data, evaluation and the trainer.

``build_detector(name, num_classes=...)`` is the one entry point to a model; torch is imported inside it
so that importing ``detectors`` (e.g. for ``detectors.errors`` in the CLI) stays instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detectors.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

DETECTORS = ("yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x")


def build_detector(name: str, *, num_classes: int, **kwargs) -> nn.Module:
    """A freshly initialised detector by name (``yolov5n`` ... ``yolov5x``) for ``num_classes`` classes.

    Extra keyword arguments go to the detector (YOLOv5: ``anchors``, ``teacher_layers``).
    """
    if name not in DETECTORS:
        raise ConfigError(f"detector.name: unknown detector {name!r}, expected one of {', '.join(DETECTORS)}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"num_classes: expected an integer >= 1, got {num_classes!r}")
    from detectors.yolov5.model import build_yolov5

    return build_yolov5(name, num_classes, **kwargs)
