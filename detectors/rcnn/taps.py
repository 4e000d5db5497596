"""The R-CNN tap sets (``detector.taps``): which FPN maps MSSD pairs. Torch-free (read by ``family.py``).

Faster and Cascade R-CNN have an FPN-only neck (no bottom-up path), so DESIGN.md's reading pairs, at
each FPN level with a top-down merge, the merged map *before* its 3x3 output conv (shallower: the
teacher) with the FPN output P_s after it (the map the RPN and the RoI heads read: the student).
Levels: strides 4, 8, 16, 32 (ResNet layer1..layer4). The stride-64 "pool" level (a max-pool of P5,
no merge of its own) is a head input but has no teacher, so no pair. MSSD's scale weights
(``losses.mssd.scale_of_stride``) put strides 4 and 8 in "s" (gamma), 16 in "m", 32 in "l".

- ``merged_to_output`` (default): merged map -> FPN output, strides 4..32.
- ``output_to_merged``: the reverse pairing (the FPN outputs teach the merged maps).

``DetectorOutput.head_inputs`` are the FPN outputs at strides 4..64 whatever the tap set.
"""

from __future__ import annotations

from detectors.api import TapPair, TapSet

TAP_STRIDES = (4, 8, 16, 32)  # levels with a top-down merge (layer1..layer4)
HEAD_STRIDES = (4, 8, 16, 32, 64)  # every FPN output, the "pool" level included
MERGED = "merged"  # the top-down merged map before the 3x3 output conv
OUTPUT = "output"  # the FPN output P_s
DEFAULT_TAPS = "merged_to_output"


def _pairs(teacher: str, student: str) -> tuple[TapPair, ...]:
    return tuple(TapPair(s, teacher, student) for s in TAP_STRIDES)


TAP_SETS = {
    "merged_to_output": TapSet("merged_to_output", _pairs(MERGED, OUTPUT),
                               "FPN top-down merge before the 3x3 conv teaches the FPN output P_s, strides 4-32 "
                               "(DESIGN.md)"),
    "output_to_merged": TapSet("output_to_merged", _pairs(OUTPUT, MERGED),
                               "FPN outputs teach the merged maps (reverse), strides 4-32"),
}
