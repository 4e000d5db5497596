"""The tap sets (``detector.taps``) of the one-stage ResNet-FPN families (FCOS, RetinaNet). Torch-free.

An FPN-only neck has no bottom-up (PAN) path, so DESIGN.md's reading of "FPN teaches PAN" becomes, at
each stride s of the FPN's own levels (8 / 16 / 32, P3-P5; docs/design-notes.md):

- teacher ``M{l}``: the top-down merged map, ``inner_blocks[i](C_l) + upsample(M_{l+1})``, before its
  3x3 output conv (the shallower, "FPN" map of the top-down pass);
- student ``P{l}``: the FPN output after that 3x3 conv, the map the head reads (the deeper one).

Names (l = log2 of the stride; channels for the ResNet-50 sizes, the ``*_tiny`` sizes in brackets)::

    C3 512 (128) [8]   C4 1024 (256) [16]   C5 2048 (512) [32]       ResNet layer2..layer4 outputs
    M3 / M4 / M5 256 (64) [8 / 16 / 32]                               top-down merged maps (no extra levels)
    P3 / P4 / P5 / P6 / P7 256 (64) [8 / 16 / 32 / 64 / 128]          FPN outputs, the head inputs

Tap sets:

- ``merged_to_output`` (default, DESIGN.md's table): M3/M4/M5 teach P3/P4/P5.
- ``output_to_merged``: the reverse pairing (P teaches M), a check that the direction matters.
- ``backbone_to_output``: the ResNet stages C3/C4/C5 teach P3/P4/P5 (MSSD projects the 256-channel
  student to the stage's 512/1024/2048 channels).

P6/P7 (strides 64/128) have no merged map (they are convs of P5, or of C5 in RetinaNet's MMDetection
preset), so no set taps them; the head inputs (``DetectorOutput.head_inputs``, eq 6's F) are P3-P7
whatever the tap set. (The R-CNNs, with levels 4-64, have their own: ``detectors/rcnn/taps.py``.)
"""

from __future__ import annotations

from detectors.api import TapPair, TapSet

TAP_STRIDES = (8, 16, 32)
STRIDES = (8, 16, 32, 64, 128)  # the head's levels, P3..P7
MERGED = {8: "M3", 16: "M4", 32: "M5"}
OUTPUT = {8: "P3", 16: "P4", 32: "P5"}
BACKBONE = {8: "C3", 16: "C4", 32: "C5"}
HEAD_INPUTS = {8: "P3", 16: "P4", 32: "P5", 64: "P6", 128: "P7"}
DEFAULT_TAPS = "merged_to_output"


def _pairs(teachers: dict[int, str], students: dict[int, str]) -> tuple[TapPair, ...]:
    return tuple(TapPair(s, teachers[s], students[s]) for s in TAP_STRIDES)


TAP_SETS = {
    "merged_to_output": TapSet("merged_to_output", _pairs(MERGED, OUTPUT),
                               "FPN top-down merged maps M3/M4/M5 (before the 3x3 conv) teach outputs P3/P4/P5"),
    "output_to_merged": TapSet("output_to_merged", _pairs(OUTPUT, MERGED),
                               "FPN outputs P3/P4/P5 teach the merged maps M3/M4/M5 (reverse)"),
    "backbone_to_output": TapSet("backbone_to_output", _pairs(BACKBONE, OUTPUT),
                                 "ResNet stages C3/C4/C5 teach FPN outputs P3/P4/P5"),
}
