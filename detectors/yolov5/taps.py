"""YOLOv5's tap sets (``detector.taps``): which neck maps MSSD pairs, by layer of ``model.py``'s layer map.

Torch-free (read by ``family.py`` for config validation and by ``model.py`` to wire the taps).
Strides 8 / 16 / 32:

- ``fpn_to_pan`` (default, DESIGN.md's reading of the paper's Fig. 1-2): teacher = the shallower
  top-down (FPN) map 15 / 13 / 10, student = the PAN output that feeds Detect 17 / 20 / 23.
- ``pan_to_fpn``: the reverse: the PAN outputs teach the FPN maps (issue 15's alternative reading).
- ``backbone_to_pan``: the backbone's C3 / C4 / C5 outputs (layers 4 / 6 / 9, after SPPF) teach the
  PAN outputs.

Every tap set pairs one teacher with one student per stride; which side learns (the detach) is a
loss switch (``losses.mssd``), not a pairing. The Detect inputs (eq 6's F for mask-assisted
detection, ``DetectorOutput.head_inputs``) are 17 / 20 / 23 whatever the tap set.
"""

from __future__ import annotations

from detectors.api import TapPair, TapSet

FPN = {8: "15", 16: "13", 32: "10"}  # top-down maps
PAN = {8: "17", 16: "20", 32: "23"}  # bottom-up maps, the Detect inputs
BACKBONE = {8: "4", 16: "6", 32: "9"}  # C3, C4, C5 (after SPPF)
DEFAULT_TAPS = "fpn_to_pan"


def _pairs(teachers: dict[int, str], students: dict[int, str]) -> tuple[TapPair, ...]:
    return tuple(TapPair(s, teachers[s], students[s]) for s in (8, 16, 32))


TAP_SETS = {
    "fpn_to_pan": TapSet("fpn_to_pan", _pairs(FPN, PAN), "FPN 15/13/10 teach PAN 17/20/23 (DESIGN.md)"),
    "pan_to_fpn": TapSet("pan_to_fpn", _pairs(PAN, FPN), "PAN 17/20/23 teach FPN 15/13/10 (reverse)"),
    "backbone_to_pan": TapSet("backbone_to_pan", _pairs(BACKBONE, PAN),
                              "backbone C3/C4/C5 (4/6/9) teach PAN 17/20/23"),
}
