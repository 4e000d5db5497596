"""Load R-CNN weights: torchvision's checkpoints (and our state dicts), MMDetection's Cascade R-CNN checkpoints.

- torchvision's ``fasterrcnn_resnet50_fpn_coco-*.pth`` is a plain state dict with our keys exactly
  (``model.py``): it loads strictly, every tensor of the model from the file and nothing left over; on a
  class-count change the class-dependent predictor layers ``roi_heads.box_predictor[.i].cls_score`` /
  ``bbox_pred`` are skipped (they keep their fresh initialisation) and reported. Any other missing,
  extra or differently shaped tensor is one ``WeightsError`` line naming the file and the first such key.
- torchvision's ImageNet ``resnet50`` (``resnet50-0676ba61.pth``, its ``weights_backbone``: how its
  detection recipe starts when no detector checkpoint is used): into the ResNet only; FPN, RPN and RoI
  heads keep their initialisation, the classifier tensors are reported as skipped.
- MMDetection's Cascade R-CNN checkpoints (``{"meta", "state_dict"}``, keys ``backbone.*``, ``neck.*``,
  ``rpn_head.*``, ``roi_head.bbox_head.{i}.*``) go through ``mmdet_keys.py``'s key map first.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from detectors.backbones.resnet_weights import is_imagenet_resnet, load_imagenet_state, load_state_strict
from detectors.rcnn.mmdet_keys import is_mmdet_layout, mmdet_to_torchvision
from detectors.weights import LoadReport, read_state_dict

CLASS_DEPENDENT = re.compile(r"^roi_heads\.box_predictor\.(\d+\.)?(cls_score|bbox_pred)\.(weight|bias)$")


def load_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy the weights of ``path`` into a ``TwoStageDetector``; see the module docstring."""
    state, source, names = read_state_dict(path)
    if is_imagenet_resnet(state):  # torchvision's ImageNet resnet50 (weights_backbone)
        return load_imagenet_state(model.backbone.body, state, source, names, path)
    if is_mmdet_layout(state):
        state = mmdet_to_torchvision(state, path, cascade=bool(getattr(model, "cascade", False)))
        source = "mmdetection"
    expected = f"a {getattr(model, 'size', type(model).__name__)} state dict (torchvision's layout)"
    return load_state_strict(model, state, path, source=source, class_dependent=CLASS_DEPENDENT, expected=expected,
                             class_names=names)
