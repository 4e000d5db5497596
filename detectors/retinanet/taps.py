"""RetinaNet's tap sets (``detector.taps``): the one-stage ResNet-FPN ones, defined and documented once in
``detectors/necks/fpn_taps.py`` (shared with FCOS). Torch-free."""

from detectors.necks.fpn_taps import DEFAULT_TAPS, HEAD_INPUTS, STRIDES, TAP_SETS, TAP_STRIDES

__all__ = ["DEFAULT_TAPS", "HEAD_INPUTS", "STRIDES", "TAP_SETS", "TAP_STRIDES"]
