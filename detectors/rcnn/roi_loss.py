"""Fast R-CNN's loss on the sampled RoIs (torchvision's ``fastrcnn_loss``), also one Cascade R-CNN stage.

With N sampled RoIs of the batch, labels ``y`` (0 background, 1..K) and regression targets ``t``::

    cls = mean_N CrossEntropy(class_logits, y)
    box = sum_{y > 0} SmoothL1_beta(delta[y], t) / N

``delta[y]`` is the predicted deltas of the RoI's own class (class-specific regression, torchvision),
or the one box of a class-agnostic head (Cascade R-CNN). torchvision's beta is 1/9; MMDetection's
Cascade R-CNN config uses 1.0 with the same normalisation (its ``avg_factor`` is the number of sampled
RoIs). Shapes: ``class_logits (N, K + 1)``, ``box_regression (N, 4 (K + 1))`` or ``(N, 4)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

TORCHVISION_BETA = 1.0 / 9.0


def fastrcnn_loss(class_logits: Tensor, box_regression: Tensor, labels: list[Tensor] | Tensor,
                  regression_targets: list[Tensor] | Tensor, *, beta: float = TORCHVISION_BETA) -> tuple[Tensor, Tensor]:
    """(classification loss, box loss), both 0-dim, as the module docstring."""
    labels = torch.cat(labels) if isinstance(labels, (list, tuple)) else labels
    targets = torch.cat(regression_targets) if isinstance(regression_targets, (list, tuple)) else regression_targets
    classification = F.cross_entropy(class_logits, labels)
    positive = torch.where(labels > 0)[0]
    n = class_logits.shape[0]
    deltas = box_regression.reshape(n, box_regression.shape[-1] // 4, 4)
    chosen = deltas[positive, 0] if deltas.shape[1] == 1 else deltas[positive, labels[positive]]
    box = F.smooth_l1_loss(chosen, targets[positive], beta=beta, reduction="sum") / labels.numel()
    return classification, box
