"""FCOS (Tian et al. 2019) with a ResNet-50-FPN in pure PyTorch, weight-compatible with torchvision.

What exists:

- ``FCOS`` / ``build_fcos(size, num_classes)`` (``model.py``, ``head.py``): torchvision's
  ``fcos_resnet50_fpn`` key for key (``fcos_tiny``: the narrow test size; ``fcos_resnet50_fpn_mmdet2``:
  MMDetection 2.x's caffe-style GN-head variant). ``forward(images) -> DetectorOutput``; ``predict``
  runs torchvision's post-processing (``postprocess.py``).
- ``FCOSLoss`` (``loss.py``): torchvision's matching and loss items ``cls, box, ctrness``.
- ``load_weights(model, path)`` (``weights.py``): torchvision and MMDetection checkpoints.
- ``FAMILY`` (``family.py``, torch-free): sizes, recipe, tap sets (``taps.py``), builders.

Only ``family`` is imported here, so reading the zoo stays cheap; import the modules for the rest.
"""

from detectors.fcos.family import FAMILY, SIZES
from detectors.fcos.taps import TAP_SETS

__all__ = ["FAMILY", "SIZES", "TAP_SETS"]
