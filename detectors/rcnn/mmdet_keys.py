"""MMDetection's Cascade R-CNN R50-FPN checkpoint -> our (torchvision-style) state dict.

MMDetection 2.x / 3.x name the parts of ``configs/_base_/models/cascade_rcnn_r50_fpn.py`` as below
(backbone and neck: ``detectors.backbones.resnet_weights.mmdet_resnet_fpn_key`` with the four levels
C2-C5; the heads: one regular expression per module here; ``num_batches_tracked`` of their BatchNorm is
dropped: our backbone uses FrozenBatchNorm2d, the same running statistics and affine terms)::

    backbone.<x>                                   -> backbone.body.<x>
    neck.lateral_convs.<i>.conv.<p>                -> backbone.fpn.inner_blocks.<i>.0.<p>
    neck.fpn_convs.<i>.conv.<p>                    -> backbone.fpn.layer_blocks.<i>.0.<p>
    rpn_head.rpn_conv.<p>                          -> rpn.head.conv.0.0.<p>
    rpn_head.rpn_cls.<p> / rpn_head.rpn_reg.<p>    -> rpn.head.cls_logits.<p> / rpn.head.bbox_pred.<p>
    roi_head.bbox_head.<t>.shared_fcs.0 / .1.<p>   -> roi_heads.box_head.<t>.fc6 / fc7.<p>
    roi_head.bbox_head.<t>.fc_cls.<p>              -> roi_heads.box_predictor.<t>.cls_score.<p>
    roi_head.bbox_head.<t>.fc_reg.<p>              -> roi_heads.box_predictor.<t>.bbox_pred.<p>

Two value changes make the imported model compute what MMDetection's does:

- class order: MMDetection puts the background *last* (``fc_cls`` row K), torchvision first: the
  background row moves to the front.
- regression scale: MMDetection's deltas are divided by the target stds (0.1, 0.1, 0.2, 0.2) /
  (0.05, 0.05, 0.1, 0.1) / (0.033, 0.033, 0.067, 0.067), ours multiplied by the coder weights (10, 10,
  5, 5) / (20, 20, 10, 10) / (30, 30, 15, 15); a delta means the same when ours = theirs x std x weight,
  so each ``fc_reg`` output row is scaled by that factor (exactly 1 for the first two stages, 0.99 and
  1.005 for the third).

Our Cascade R-CNN pools as mmcv's RoIAlign does (``aligned=True``, adaptive ``sampling_ratio=0``, the
same level rule as ``finest_scale=56``). What stays different: MMDetection's anchors are not rounded,
torchvision's (our RPN's) are, and MMDetection does not drop boxes under 0.01 px; imported weights give
detections close to, not bit-equal to, MMDetection's (not checked here: no MMDetection in this
environment).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from detectors.backbones.resnet_weights import mmdet_resnet_fpn_key, rename_keys
from detectors.rcnn.cascade_heads import STAGE_REG_WEIGHTS
from detectors.weights import WeightsError

MMDET_STAGE_STDS = ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067))

# The head's names; backbone and neck go through detectors.backbones.resnet_weights.mmdet_resnet_fpn_key.
HEAD_KEYS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(a), b) for a, b in (
    (r"^rpn_head\.rpn_conv\.(weight|bias)$", r"rpn.head.conv.0.0.\1"),
    (r"^rpn_head\.rpn_cls\.(weight|bias)$", r"rpn.head.cls_logits.\1"),
    (r"^rpn_head\.rpn_reg\.(weight|bias)$", r"rpn.head.bbox_pred.\1"),
    (r"^roi_head\.bbox_head\.(\d+)\.shared_fcs\.0\.(weight|bias)$", r"roi_heads.box_head.\1.fc6.\2"),
    (r"^roi_head\.bbox_head\.(\d+)\.shared_fcs\.1\.(weight|bias)$", r"roi_heads.box_head.\1.fc7.\2"),
    (r"^roi_head\.bbox_head\.(\d+)\.fc_cls\.(weight|bias)$", r"roi_heads.box_predictor.\1.cls_score.\2"),
    (r"^roi_head\.bbox_head\.(\d+)\.fc_reg\.(weight|bias)$", r"roi_heads.box_predictor.\1.bbox_pred.\2"),
))
_CLS = re.compile(r"^roi_heads\.box_predictor\.(\d+)\.cls_score\.")
_REG = re.compile(r"^roi_heads\.box_predictor\.(\d+)\.bbox_pred\.")


def is_mmdet_layout(state: dict[str, torch.Tensor]) -> bool:
    """True for MMDetection's two-stage layout (``rpn_head.*`` and ``roi_head.*`` keys)."""
    return any(k.startswith("rpn_head.") for k in state) and any(k.startswith("roi_head.") for k in state)


def head_key(key: str) -> str | None:
    """Our name for an MMDetection RPN / RoI-head key; None for other keys."""
    for pattern, replacement in HEAD_KEYS:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return None


def mmdet_to_torchvision(state: dict[str, torch.Tensor], path: str | Path, *, cascade: bool
                         ) -> dict[str, torch.Tensor]:
    """The state dict of the module docstring (unknown keys keep their names for the strict load to name)."""
    if not cascade:
        raise WeightsError(f"{path}: an MMDetection checkpoint; only Cascade R-CNN's are imported (build a "
                           "cascadercnn_* detector), Faster R-CNN takes torchvision's checkpoints")
    # Keys no rule knows keep their name: the strict load then names the first one.
    renamed = rename_keys(state, (lambda k: mmdet_resnet_fpn_key(k, fpn_levels=4), head_key))
    out: dict[str, torch.Tensor] = {}
    for new, value in renamed.items():
        if _CLS.match(new) is not None:
            value = torch.cat((value[-1:], value[:-1]))  # background row: last (MMDetection) -> first
        elif (match := _REG.match(new)) is not None:
            stage = int(match.group(1))
            if stage >= len(STAGE_REG_WEIGHTS) or value.shape[0] != 4:
                raise WeightsError(f"{path}: {new!r} (MMDetection's fc_reg) has shape {tuple(value.shape)}; expected "
                                   f"a class-agnostic (4 outputs) regressor of one of {len(STAGE_REG_WEIGHTS)} stages")
            factor = torch.tensor([s * w for s, w in zip(MMDET_STAGE_STDS[stage], STAGE_REG_WEIGHTS[stage],
                                                         strict=True)], dtype=value.dtype)
            value = value * (factor[:, None] if value.dim() == 2 else factor)
        out[new] = value
    return out
