"""Load RetinaNet weights: torchvision's checkpoints, MMDetection 2.x's, ImageNet ResNet-50, our state dicts.

- torchvision (``retinanet_resnet50_fpn_coco-eeacb38b.pth``, or ``torch.save(model.state_dict())`` of their
  model): a plain state dict with our keys exactly; it loads as their ``load_state_dict(strict=True)``
  would, except that on a class-count change the class-prediction conv
  ``head.classification_head.cls_logits.{weight,bias}`` is skipped and reported, keeping its
  prior-initialised bias. (Their pre-0.13 files with ``conv.{0,2,4,6}`` head keys are not converted.)
- torchvision's ImageNet ``resnet50``: into the ResNet only (how their recipe starts).
- MMDetection 2.x (``{"meta", "state_dict", "optimizer"}``, keys ``backbone.*`` / ``neck.*`` /
  ``bbox_head.*``): the ResNet / FPN part renamed by ``mmdet_resnet_fpn_key`` (``fpn_convs.3/4`` = P6/P7),
  the head by ``mmdet_retina_head_key`` (``cls_convs.i.conv`` -> ``classification_head.conv.i.0``,
  ``retina_cls`` -> ``cls_logits``, ``reg_convs`` / ``retina_reg`` likewise). Their RetinaNet takes P6 from
  C5, so it fits ``retinanet_resnet50_fpn_mmdet2``; into the torchvision layout it is refused at
  ``backbone.fpn.extra_blocks.p6.weight`` (2048 input channels, not 256).

Class rows: both code bases predict sigmoid scores per class with no background row in MMDetection 2.x
(``num_classes`` K, rows 0..K-1 = their contiguous classes, as ours), so no row moves. torchvision's COCO
checkpoint has 91 rows indexed by COCO category id (row 0, "__background__", and the 10 unused ids never
trained as positives); a 91-class model of ours reads class i as that row, so a 80-class COCO set in our
0-based contiguous order must re-map rows or fine-tune (the class-count change above). MMDetection 1.x
sigmoid heads (81 classes with a background row 0 dropped from the logits) are not handled.

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

_MMDET_TOWER = re.compile(r"^bbox_head\.(cls|reg)_convs\.(\d+)\.conv\.(weight|bias)$")
_MMDET_HEAD = {
    "bbox_head.retina_cls.": "head.classification_head.cls_logits.",
    "bbox_head.retina_reg.": "head.regression_head.bbox_reg.",
}


def mmdet_retina_head_key(key: str) -> str | None:
    """Our name for a key of MMDetection 2.x's ``RetinaHead`` (``bbox_head.*``), None for other keys."""
    if (m := _MMDET_TOWER.match(key)) is not None:
        tower = "classification_head" if m.group(1) == "cls" else "regression_head"
        return f"head.{tower}.conv.{m.group(2)}.0.{m.group(3)}"
    for theirs, ours in _MMDET_HEAD.items():
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return None


def mmdet_to_ours(key: str) -> str | None:
    """One MMDetection RetinaNet key (ResNet, FPN with P6/P7 as fpn_convs 3/4, RetinaHead) -> ours."""
    return mmdet_resnet_fpn_key(key, fpn_levels=3) or mmdet_retina_head_key(key)


def translate(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """MMDetection RetinaNet state dicts renamed to ours; any other state dict unchanged."""
    return rename_keys(state, (mmdet_to_ours,)) if is_mmdet_state(state) else state


def load_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy the weights of ``path`` into a RetinaNet ``model``; ``cls_logits`` skipped if the class count differs."""
    size = getattr(model, "size", "RetinaNet")
    layout = ("MMDetection 2.x retinanet_r50_fpn layout, P6 from C5" if getattr(model, "style", "") == "mmdet2"
              else "torchvision's retinanet_resnet50_fpn layout; MMDetection's RetinaNet fits "
                   "retinanet_resnet50_fpn_mmdet2")
    return load_detector_checkpoint(model, path, class_dependent=CLASS_PREDICTION_KEY,
                                    expected=f"weights of {size} ({layout})", translate=translate)
