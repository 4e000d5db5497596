"""Anchor-to-ground-truth matching by a quality matrix, as torchvision's ``_utils.Matcher``.

``Matcher(high, low, allow_low_quality_matches)(quality)`` with ``quality`` (M ground truths, N
predictions), usually IoU, returns (N,) int64: the best ground truth of each prediction when its
quality is >= ``high``; ``BELOW_LOW_THRESHOLD`` (-1) when < ``low``; ``BETWEEN_THRESHOLDS`` (-2) in
[low, high). With ``allow_low_quality_matches``, every prediction that is some ground truth's best
(ties included) gets that prediction's best ground truth back even if its quality is low
(RetinaNet: high = low = 0.5, allowed; Faster R-CNN's RPN: 0.7 / 0.3, allowed; its box head: 0.5 /
0.5, not allowed).
"""

from __future__ import annotations

import torch
from torch import Tensor


class Matcher:
    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False) -> None:
        if low_threshold > high_threshold:
            raise ValueError(f"Matcher: low_threshold {low_threshold} must be <= high_threshold {high_threshold}")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        if match_quality_matrix.numel() == 0:
            # torchvision raises too: families handle images without ground truth before matching.
            what = "ground-truth boxes" if match_quality_matrix.shape[0] == 0 else "predictions"
            raise ValueError(f"Matcher: no {what} to match (quality matrix {tuple(match_quality_matrix.shape)})")
        matched_vals, matches = match_quality_matrix.max(dim=0)  # best ground truth per prediction
        all_matches = matches.clone() if self.allow_low_quality_matches else None
        below = matched_vals < self.low_threshold
        between = (matched_vals >= self.low_threshold) & (matched_vals < self.high_threshold)
        matches[below] = self.BELOW_LOW_THRESHOLD
        matches[between] = self.BETWEEN_THRESHOLDS
        if all_matches is not None:
            self.set_low_quality_matches_(matches, all_matches, match_quality_matrix)
        return matches

    @staticmethod
    def set_low_quality_matches_(matches: Tensor, all_matches: Tensor, match_quality_matrix: Tensor) -> None:
        """Each ground truth's best predictions (all ties) take back their own best ground truth."""
        highest_quality_foreach_gt = match_quality_matrix.max(dim=1).values
        pred_inds = torch.where(match_quality_matrix == highest_quality_foreach_gt[:, None])[1]
        matches[pred_inds] = all_matches[pred_inds]
