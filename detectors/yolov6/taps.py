"""YOLOv6's tap sets (``detector.taps``): which Rep-PAN maps MSSD pairs, by name of ``model.py``'s neck map.

Torch-free (read by ``family.py`` for config validation and by ``model.py`` to wire the taps).

Rep-PAN (``RepPANNeck`` / ``CSPRepPANNeck`` of meituan/YOLOv6 0.2.1) has YOLOv5's two paths with other
blocks: a top-down (FPN) path ``reduce_layer0`` (1 x 1 on the SPPF output, stride 32) -> ``upsample0``
(transposed conv) -> ``Rep_p4`` (stride 16) -> ``reduce_layer1`` -> ``upsample1`` (stride 8), and a
bottom-up (PAN) path ``Rep_p3`` (stride 8) -> ``downsample2`` -> ``Rep_n3`` (stride 16) -> ``downsample1``
-> ``Rep_n4`` (stride 32), whose three outputs feed the head. Strides 8 / 16 / 32:

- ``fpn_to_pan`` (default; DESIGN.md's YOLOv5 reading carried over position by position): teacher = the
  top-down map at that stride, ``upsample1`` (YOLOv5's upsampled lateral conv, layer 15) / ``Rep_p4``
  (the block after the first top-down concat, layer 13) / ``reduce_layer0`` (the lateral conv on the
  SPPF output, layer 10); student = the PAN output that feeds the head, ``Rep_p3`` / ``Rep_n3`` /
  ``Rep_n4`` (layers 17 / 20 / 23).
- ``pan_to_fpn``: the reverse pairing.
- ``backbone_to_pan``: the EfficientRep stage outputs ``ERBlock_3`` / ``ERBlock_4`` / ``ERBlock_5`` (after
  SimSPPF) teach the PAN outputs.

The head inputs (eq 6's F, ``DetectorOutput.head_inputs``) are ``Rep_p3`` / ``Rep_n3`` / ``Rep_n4`` whatever
the tap set. MSSD adds a projector where a pair's channels differ (``fpn_to_pan`` at stride 32:
``reduce_layer0`` has half of ``Rep_n4``'s channels, 128 vs 256 for YOLOv6s).
"""

from __future__ import annotations

from detectors.api import TapPair, TapSet

FPN = {8: "upsample1", 16: "Rep_p4", 32: "reduce_layer0"}  # top-down maps
PAN = {8: "Rep_p3", 16: "Rep_n3", 32: "Rep_n4"}  # bottom-up maps, the head inputs
BACKBONE = {8: "ERBlock_3", 16: "ERBlock_4", 32: "ERBlock_5"}
HEAD_INPUTS = PAN
DEFAULT_TAPS = "fpn_to_pan"


def _pairs(teachers: dict[int, str], students: dict[int, str]) -> tuple[TapPair, ...]:
    return tuple(TapPair(s, teachers[s], students[s]) for s in (8, 16, 32))


TAP_SETS = {
    "fpn_to_pan": TapSet("fpn_to_pan", _pairs(FPN, PAN),
                         "FPN upsample1/Rep_p4/reduce_layer0 teach PAN Rep_p3/Rep_n3/Rep_n4 (YOLOv5's reading)"),
    "pan_to_fpn": TapSet("pan_to_fpn", _pairs(PAN, FPN), "PAN Rep_p3/Rep_n3/Rep_n4 teach the FPN maps (reverse)"),
    "backbone_to_pan": TapSet("backbone_to_pan", _pairs(BACKBONE, PAN),
                              "backbone ERBlock_3/ERBlock_4/ERBlock_5 teach PAN"),
}
