"""RetinaNet's tap sets (``detector.taps``): which ResNet-FPN maps MSSD pairs, by name. Torch-free.

The same reading as every FPN-only neck of the project (README "ResNet-FPN"; FCOS's ``taps.py``): the
FPN has no bottom-up (PAN) path, so at each of its own levels (strides 8 / 16 / 32, P3-P5)

- teacher ``M{l}``: the top-down merged map ``inner_blocks[i](C_l) + upsample(M_{l+1})`` before its
  3x3 output conv (the shallower map of the top-down pass);
- student ``P{l}``: the FPN output after that conv, the map the head reads.

Names (l = log2 of the stride; channels for ``retinanet_resnet50_fpn``, ``retinanet_tiny`` in brackets)::

    C3 512 (128) [8]   C4 1024 (256) [16]   C5 2048 (512) [32]       ResNet layer2..layer4 outputs
    M3 / M4 / M5 256 (64) [8 / 16 / 32]                               top-down merged maps
    P3 / P4 / P5 / P6 / P7 256 (64) [8 .. 128]                        FPN outputs, the head inputs

Tap sets: ``merged_to_output`` (default): M3/M4/M5 teach P3/P4/P5; ``output_to_merged``: the reverse;
``backbone_to_output``: C3/C4/C5 teach P3/P4/P5. P6/P7 are convs of P5 (or of C5 in the MMDetection
preset) with no merged map, so no set taps them; the head inputs (``DetectorOutput.head_inputs``, eq 6's
F) are P3-P7 whatever the tap set.
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
