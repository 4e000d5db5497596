"""The per-RoI layers of Fast R-CNN with torchvision's names (``fc6``, ``fc7``, ``cls_score``, ``bbox_pred``).

``TwoMLPHead`` (torchvision's, MMDetection's ``Shared2FCBBoxHead`` shared part): flatten the pooled
(N, C, 7, 7) features, fc6 + ReLU, fc7 + ReLU -> (N, representation). ``FastRCNNPredictor``: class
logits (N, K + 1) with background at index 0, and box deltas (N, 4 (K + 1)) per class, or (N, 4) when
``class_agnostic`` (Cascade R-CNN regresses one box per RoI). Default ``nn.Linear`` initialisation, as
torchvision's constructors leave it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class TwoMLPHead(nn.Module):
    def __init__(self, in_channels: int, representation_size: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(start_dim=1)  # (N, C * 7 * 7), channel-major as torchvision
        return F.relu(self.fc7(F.relu(self.fc6(x))))


class FastRCNNPredictor(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, *, class_agnostic: bool = False) -> None:
        """``num_classes`` counts the background (K + 1)."""
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4 if class_agnostic else num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)
