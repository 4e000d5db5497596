"""YOLOX's tap sets (``detector.taps``): which neck maps MSSD pairs, by name of ``model.py``'s neck map.

Torch-free (read by ``family.py`` for config validation and by ``model.py`` to wire the taps).
Strides 8 / 16 / 32:

- ``fpn_to_pan`` (default; MSSD on YOLOX, the paper's Table 3, in DESIGN.md's reading): teacher = the
  top-down (FPN) map, ``reduce_conv1.up`` (the upsampled ``reduce_conv1`` output) / ``C3_p4`` /
  ``lateral_conv0``; student = the PAN output that feeds the head, ``C3_p3`` / ``C3_n3`` / ``C3_n4``.
- ``pan_to_fpn``: the reverse pairing.
- ``backbone_to_pan``: the backbone's ``dark3`` / ``dark4`` / ``dark5`` outputs teach the PAN outputs.

The head inputs (eq 6's F for mask-assisted detection, ``DetectorOutput.head_inputs``) are ``C3_p3`` /
``C3_n3`` / ``C3_n4`` whatever the tap set. MSSD adds a projector where a pair's channels differ
(``fpn_to_pan`` at stride 32: 512 x width vs 1024 x width).
"""

from __future__ import annotations

from detectors.api import TapPair, TapSet

FPN = {8: "reduce_conv1.up", 16: "C3_p4", 32: "lateral_conv0"}  # top-down maps
PAN = {8: "C3_p3", 16: "C3_n3", 32: "C3_n4"}  # bottom-up maps, the head inputs
BACKBONE = {8: "dark3", 16: "dark4", 32: "dark5"}  # CSPDarknet outputs (dark5 after SPP and its CSP)
HEAD_INPUTS = PAN
DEFAULT_TAPS = "fpn_to_pan"


def _pairs(teachers: dict[int, str], students: dict[int, str]) -> tuple[TapPair, ...]:
    return tuple(TapPair(s, teachers[s], students[s]) for s in (8, 16, 32))


TAP_SETS = {
    "fpn_to_pan": TapSet("fpn_to_pan", _pairs(FPN, PAN),
                         "FPN reduce_conv1.up/C3_p4/lateral_conv0 teach PAN C3_p3/C3_n3/C3_n4 (Table 3, DESIGN.md)"),
    "pan_to_fpn": TapSet("pan_to_fpn", _pairs(PAN, FPN), "PAN C3_p3/C3_n3/C3_n4 teach the FPN maps (reverse)"),
    "backbone_to_pan": TapSet("backbone_to_pan", _pairs(BACKBONE, PAN), "backbone dark3/dark4/dark5 teach PAN"),
}
