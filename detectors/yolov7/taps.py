"""Tap sets (``detector.taps``) of the YOLOv3, YOLOv4-CSP and YOLOv7 families. Torch-free.

Pairs name maps by role and level (the digit is log2 of the stride: 3/4/5 = strides 8/16/32); each size's
table (``layers.py``, ``Table.maps``) says which upstream layer that is:

| map | YOLOv3 | YOLOv4-CSP | YOLOv7-tiny | YOLOv7 | YOLOv7x | what it is |
| --- | --- | --- | --- | --- | --- | --- |
| C3 / C4 / C5 | 6 / 8 / 10 | 6 / 8 / 10 | 14 / 21 / 28 | 24 / 37 / 50 | 28 / 43 / 58 | backbone stage outputs |
| F3 / F4 / F5 | | 18 / 16 / 11 | 49 / 47 / 37 | 65 / 63 / 51 | 75 / 73 / 59 | top-down (FPN) maps |
| M3 / M4 / M5 | 26 / 21 / 14 | | | | | YOLOv3's trunk before each output conv |
| P3 / P4 / P5 | 27 / 22 / 15 | 22 / 26 / 30 | 74 / 75 / 76 | 102 / 103 / 104 | 118 / 119 / 120 | Detect inputs |

Where the neck has both paths (YOLOv4-CSP's CSP-PAN, YOLOv7's ELAN-PAN), the default follows YOLOv5's
(DESIGN.md): the teacher is the top-down map at each stride, the one the bottom-up path concatenates back
(F5 = the SPPCSPC output, F4 = the first top-down block's output), and at stride 8, where the last top-down
block is also the first bottom-up one, the upsampled top-down map F3 (YOLOv5's layer 15); the student is the
Detect input (after YOLOv7's RepConv / 3x3 head conv), the map the head reads.

YOLOv3's neck is FPN-only: no bottom-up path. As for FCOS and RetinaNet (``merged_to_output``), the
teacher is the top-down map before the level's output conv(s), the student the level's output: M5 = layer
14 (1x1 after the SPP-less trunk, also the source of the next lateral) teaches P5 = 15 (3x3 conv); M4 = 21
teaches P4 = 22; M3 = 26 (the first Bottleneck after the last concat) teaches P3 = 27 (the last two).

Which side learns (the detach) is a loss switch (``losses.mssd``), not a pairing. The head inputs (eq 6's
F, ``DetectorOutput.head_inputs``) are P3/P4/P5 whatever the tap set.
"""

from __future__ import annotations

from detectors.api import TapPair, TapSet

LEVELS = {8: 3, 16: 4, 32: 5}
PAN_DEFAULT_TAPS = "fpn_to_pan"
FPN_DEFAULT_TAPS = "merged_to_output"


def _pairs(teacher: str, student: str) -> tuple[TapPair, ...]:
    return tuple(TapPair(s, f"{teacher}{level}", f"{student}{level}") for s, level in LEVELS.items())


# YOLOv4-CSP and YOLOv7 (FPN + PAN).
PAN_TAP_SETS = {
    "fpn_to_pan": TapSet("fpn_to_pan", _pairs("F", "P"),
                         "top-down (FPN) maps F3/F4/F5 teach the Detect inputs P3/P4/P5 (DESIGN.md, as YOLOv5)"),
    "pan_to_fpn": TapSet("pan_to_fpn", _pairs("P", "F"), "Detect inputs P3/P4/P5 teach F3/F4/F5 (reverse)"),
    "backbone_to_pan": TapSet("backbone_to_pan", _pairs("C", "P"),
                              "backbone stages C3/C4/C5 teach the Detect inputs P3/P4/P5"),
}

# YOLOv3 (FPN only).
FPN_TAP_SETS = {
    "merged_to_output": TapSet("merged_to_output", _pairs("M", "P"),
                               "trunk maps M3/M4/M5 before each output conv teach the outputs P3/P4/P5 "
                               "(FPN-only neck, as FCOS)"),
    "output_to_merged": TapSet("output_to_merged", _pairs("P", "M"), "outputs P3/P4/P5 teach M3/M4/M5 (reverse)"),
    "backbone_to_output": TapSet("backbone_to_output", _pairs("C", "P"),
                                 "backbone stages C3/C4/C5 teach the outputs P3/P4/P5"),
}


def default_tap_set(size: str) -> TapSet:
    """The family default of ``size``: ``merged_to_output`` for YOLOv3, else ``fpn_to_pan``."""
    if size.startswith("yolov3"):
        return FPN_TAP_SETS[FPN_DEFAULT_TAPS]
    return PAN_TAP_SETS[PAN_DEFAULT_TAPS]
