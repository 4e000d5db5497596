"""YOLOX (nano, tiny, s, m, l, x) in pure PyTorch, weight-compatible with Megvii-BaseDetection/YOLOX.

What exists:

- ``YOLOX`` / ``build_yolox(size, num_classes)`` (``model.py``): CSPDarknet + PAFPN + decoupled head
  (``blocks.py``, ``head.py``), ``state_dict()`` keys and shapes equal to Megvii's ``YOLOX(YOLOPAFPN,
  YOLOXHead)``. ``forward(images) -> DetectorOutput`` (head: per-level raw maps ``(B, 5 + nc, H, W)``);
  ``inference_raw`` decodes like their eval mode; ``predict`` adds their post-processing.
- ``YOLOXLoss`` (``loss.py``) with SimOTA (``assignment.py``): items ``iou, obj, cls, l1``.
- ``load_weights(model, path)`` (``weights.py``): their ``.pth`` checkpoints, never running pickled code.
- ``FAMILY`` (``family.py``, torch-free): sizes, recipe, tap sets, builders for ``detectors.zoo``.

Only ``family`` is imported here, so reading the zoo stays cheap; import the modules for the rest.
"""

from detectors.yolox.family import FAMILY, SIZES
from detectors.yolox.taps import TAP_SETS

__all__ = ["FAMILY", "SIZES", "TAP_SETS"]
