"""Load YOLOX weights: Megvii's ``yolox_*.pth`` (its ``model`` entry), a checkpoint dict, or a state dict.

Megvii's checkpoints are ``{"start_epoch", "model": state_dict, "optimizer", "best_ap", "curr_ap"}``
(released weights hold at least ``model``); ``model`` is the EMA model when they trained with EMA.
``detectors.weights`` reads them without running pickled code (numpy scalars in the AP records go through
the restricted unpickler). Keys and shapes are ours exactly, so everything loads; on a class-count change
only the class-prediction convs ``head.cls_preds.{0,1,2}.{weight,bias}`` are skipped (and reported),
keeping their prior-initialised biases.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from detectors.weights import LoadReport, load_matching

CLASS_PREDICTION_KEY = re.compile(r"^head\.cls_preds\.\d+\.(weight|bias)$")


def load_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy the weights of ``path`` into a YOLOX ``model``; class-prediction convs skipped if nc differs."""
    return load_matching(model, path, class_dependent=CLASS_PREDICTION_KEY, expected="weights of the same YOLOX size")
