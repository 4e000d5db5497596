"""Balanced positive/negative sampling of labelled anchors or proposals (Faster R-CNN's RPN and RoI heads).

Per image, at most ``batch_size_per_image * positive_fraction`` positives (label >= 1) and enough negatives
(label == 0) to fill ``batch_size_per_image`` are drawn uniformly without replacement; label -1 is ignored.
The draws are torchvision's (``BalancedPositiveNegativeSampler`` in models/detection/_utils.py): per image
one ``torch.randperm`` over the positives, then one over the negatives, each cut to its quota. With
``generator=None`` they come from torch's global generator, so after the same ``torch.manual_seed`` this
sampler and torchvision's pick the same elements; a ``torch.Generator`` seeded with ``s`` gives the draws
of ``torch.manual_seed(s)`` without touching the global stream (CPU).
"""

from __future__ import annotations

import torch


class BalancedPositiveNegativeSampler:
    def __init__(
        self, batch_size_per_image: int, positive_fraction: float, *, generator: torch.Generator | None = None
    ) -> None:
        if batch_size_per_image < 1:
            raise ValueError(f"batch_size_per_image: expected >= 1, got {batch_size_per_image}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction: expected a value in [0, 1], got {positive_fraction}")
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.generator = generator

    def __call__(self, labels: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-image labels (-1 ignore, 0 negative, >= 1 positive) -> (positive masks, negative masks), uint8."""
        pos_masks, neg_masks = [], []
        for labels_per_image in labels:
            positive = torch.where(labels_per_image >= 1)[0]
            negative = torch.where(labels_per_image == 0)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
            chosen = []
            for candidates, quota in ((positive, num_pos), (negative, num_neg)):
                order = torch.randperm(
                    candidates.numel(), generator=self.generator, device=self._device(candidates)
                )
                mask = torch.zeros_like(labels_per_image, dtype=torch.uint8)
                mask[candidates[order[:quota].to(candidates.device)]] = 1
                chosen.append(mask)
            pos_masks.append(chosen[0])
            neg_masks.append(chosen[1])
        return pos_masks, neg_masks

    def _device(self, candidates: torch.Tensor) -> torch.device:
        # A generator draws on its own device (a CPU generator for CUDA labels gives CPU indices).
        return self.generator.device if self.generator is not None else candidates.device
