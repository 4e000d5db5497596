"""Load FCOS weights: torchvision's checkpoints, MMDetection 2.x's, or any state dict of ours.

- torchvision (``fcos_resnet50_fpn_coco-99b0c9b7.pth``, or ``torch.save(model.state_dict())`` of their
  model): a plain state dict with our keys exactly; it loads as their ``load_state_dict(strict=True)``
  would, except that on a class-count change the class-prediction conv
  ``head.classification_head.cls_logits.{weight,bias}`` is skipped and reported, keeping its
  prior-initialised bias.
- torchvision's ImageNet ``resnet50`` (the fine-tuning start of their recipe): into the ResNet only.
- MMDetection 2.x (``{"meta", "state_dict", "optimizer"}``, keys ``backbone.*`` / ``neck.*`` /
  ``bbox_head.*``): renamed into ours (the ResNet / FPN part by ``mmdet_resnet_fpn_key``, the head by
  ``mmdet_fcos_head_key``), then loaded the same way. Their GN-head FCOS has tower convs without bias and a
  ``Scale`` per level, so it fits ``fcos_resnet50_fpn_mmdet2``; into the torchvision-style model it is
  refused, naming the first tensor it lacks. FCOS predicts K sigmoid classes in both code bases (no
  background row to move).

Anything else (another detector, another width) is one ``WeightsError`` naming the file and the first
missing, extra or mis-shaped tensor (``detectors.backbones.resnet_weights.load_detector_checkpoint``).
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import Tensor, nn

from detectors.backbones.resnet_weights import (
    is_mmdet_state,
    load_detector_checkpoint,
    mmdet_resnet_fpn_key,
    rename_keys,
)
from detectors.weights import LoadReport

CLASS_PREDICTION_KEY = re.compile(r"^head\.classification_head\.cls_logits\.(weight|bias)$")

_MMDET_TOWER = re.compile(r"^bbox_head\.(cls|reg)_convs\.(\d+)\.(conv|gn)\.(weight|bias)$")
_MMDET_HEAD = {
    "bbox_head.conv_cls.": "head.classification_head.cls_logits.",
    "bbox_head.conv_reg.": "head.regression_head.bbox_reg.",
    "bbox_head.conv_centerness.": "head.regression_head.bbox_ctrness.",
}
_MMDET_SCALE = re.compile(r"^bbox_head\.scales\.(\d+)\.scale$")


def mmdet_fcos_head_key(key: str) -> str | None:
    """Our name for a key of MMDetection 2.x's ``FCOSHead`` (``bbox_head.*``), None for other keys.

    Tower i's ``ConvModule`` (``.conv``, ``.gn``) is our Sequential's 3i (conv) and 3i + 1 (GroupNorm).
    """
    if (m := _MMDET_TOWER.match(key)) is not None:
        tower = "classification_head" if m.group(1) == "cls" else "regression_head"
        index = 3 * int(m.group(2)) + (0 if m.group(3) == "conv" else 1)
        return f"head.{tower}.conv.{index}.{m.group(4)}"
    for theirs, ours in _MMDET_HEAD.items():
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    if (m := _MMDET_SCALE.match(key)) is not None:
        return f"head.regression_head.scales.{m.group(1)}.scale"
    return None


def mmdet_to_ours(key: str) -> str | None:
    """One MMDetection FCOS key (ResNet, FPN with P6/P7 on the output, FCOSHead) -> ours."""
    return mmdet_resnet_fpn_key(key, fpn_levels=3) or mmdet_fcos_head_key(key)


def translate(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """MMDetection FCOS state dicts renamed to ours; any other state dict unchanged."""
    return rename_keys(state, (mmdet_to_ours,)) if is_mmdet_state(state) else state


def load_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy the weights of ``path`` into an FCOS ``model``; ``cls_logits`` skipped if the class count differs.

    An ImageNet ``resnet50`` checkpoint (``resnet50-0676ba61.pth`` / ``-11ad3fa6.pth``) goes into the
    ResNet only (torchvision's ``weights_backbone``, how its FCOS recipe starts); FPN and head keep their
    initialisation, and the report lists the classifier tensors it skipped.
    """
    size = getattr(model, "size", "FCOS")
    style = getattr(model, "style", "torchvision")
    expected = (f"weights of {size} ({'MMDetection 2.x GN-head FCOS' if style == 'mmdet2' else 'torchvision'} "
                "layout; MMDetection's GN-head FCOS fits fcos_resnet50_fpn_mmdet2)")
    return load_detector_checkpoint(model, path, class_dependent=CLASS_PREDICTION_KEY, expected=expected,
                                    translate=translate)
