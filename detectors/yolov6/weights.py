"""Load YOLOv6 weights: a plain state dict, a checkpoint dict holding one, or a ``.pt`` written by
meituan/YOLOv6 0.2.1's trainer (``{'model': Model, 'ema': Model, 'updates', 'optimizer', 'epoch'}``, each model
pickled whole in half precision; after training ``strip_optimizer`` keeps ``model`` = the EMA and sets
``ema`` to None). ``detectors.weights`` reads it through the restricted unpickler
(``detectors/checkpoint_pickle.py``: classes under ``yolov6.`` become inert placeholders; nothing of theirs
runs) and takes ``ema`` over ``model`` when present, as their ``load_checkpoint``.

Checkpoints in training form only (RepVGG branches): a re-parameterised (deployed) model has other keys.
Every tensor whose key and shape match is copied; on a class-count change only the class-prediction convs
``detect.cls_preds.{0,1,2}.{weight,bias}`` are skipped (and reported). Any other mismatch (another family or
size) is one ``WeightsError`` naming the file and the first mismatching tensor; the model is left untouched.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from detectors.weights import LoadReport, load_matching

CLASS_PREDICTION_KEY = re.compile(r"^detect\.cls_preds\.\d+\.(weight|bias)$")


def load_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy the weights of ``path`` into a YOLOv6 ``model``; class-prediction convs skipped if nc differs."""
    size = getattr(model, "size", "this model")
    return load_matching(model, path, class_dependent=CLASS_PREDICTION_KEY,
                         expected=f"weights of {size} in training form (meituan/YOLOv6 0.2.1)")
