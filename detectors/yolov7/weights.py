"""Load YOLOv3 / YOLOv4-CSP / YOLOv7 weights: a plain state dict, a checkpoint dict holding one, or a ``.pt``
written by the yolov7 repository's train.py (``{'model': Model, 'ema': Model, ...}``, pickling their
``models.yolo.Model`` and ``models.common.*``), read by ``detectors.weights`` through the restricted unpickler
(``detectors/checkpoint_pickle.py``: classes under ``models.`` become inert placeholders; nothing of theirs
runs). The ``ema`` entry is taken over ``model`` when present, as their ``attempt_load``.

Every tensor whose key and shape match is copied. Only the class-dependent tensors may differ (another
class count): the head's output convs ``model.<last>.m.*`` and YOLOv7's ``im.*.implicit`` (one scale per
output channel); they are skipped and reported. Any other mismatch (another family or size) is one
``WeightsError`` naming the file and the first mismatching tensor; the model is left untouched.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from detectors.weights import LoadReport, WeightsError, load_matching

__all__ = ["CLASS_DEPENDENT_KEY", "LoadReport", "WeightsError", "load_weights"]

CLASS_DEPENDENT_KEY = re.compile(r"^model\.\d+\.(m\.\d+\.(weight|bias)|im\.\d+\.implicit)$")


def load_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy the weights of ``path`` into ``model``; the class-dependent head tensors are skipped if nc differs."""
    size = getattr(model, "size", "this model")
    return load_matching(model, path, class_dependent=CLASS_DEPENDENT_KEY,
                         expected=f"weights of {size} (WongKinYiu/yolov7 layer table)")
