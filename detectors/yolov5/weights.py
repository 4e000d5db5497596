"""Load YOLOv5 weights: a plain state dict, a checkpoint dict holding one, or an official Ultralytics ``.pt``.

``load_weights(model, path)`` reads the file with ``detectors.weights`` (never running its code; official
checkpoints, which pickle whole modules, go through the restricted unpickler), takes the ``ema`` entry
over ``model`` as Ultralytics' ``attempt_load`` does, and copies every tensor whose key and shape match.
Only the head's final convs (``model.24.m.*``, sized by the class count) may differ: they are skipped and
reported. Any other mismatch means the file is for another model size and is an error naming the file
and the key. A model with an external backbone (``yolov5s_convnext``) also takes that backbone's ImageNet
checkpoint (``detectors/backbones/convnext_weights.py``): the backbone is loaded, the neck and head keep
their initialisation.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from detectors.weights import LoadReport, WeightsError, load_matching, read_state_dict

__all__ = ["HEAD_OUTPUT_KEY", "LoadReport", "WeightsError", "load_weights", "read_state_dict"]

# The class-count-dependent tensors: Detect's output convs, (na * (5 + nc), C, 1, 1) and (na * (5 + nc),).
HEAD_OUTPUT_KEY = re.compile(r"^model\.\d+\.m\.\d+\.(weight|bias)$")


def load_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy the weights of ``path`` into ``model``; the head's output convs are skipped if nc differs."""
    if getattr(model, "backbone", None) is not None:
        from detectors.backbones.convnext_weights import is_convnext_checkpoint, load_convnext_backbone

        state, source, _names = read_state_dict(path)
        if is_convnext_checkpoint(state):
            others = [k for k in model.state_dict() if not k.startswith("backbone.")]
            return load_convnext_backbone(model.backbone, state, path, source=source, prefix="backbone.",
                                          others=tuple(others))
    return load_matching(model, path, class_dependent=HEAD_OUTPUT_KEY, expected="weights of the same YOLOv5 size")
