"""What each term of eq 7 does to the detector's weights: ``train.diagnose_every``.

A loss term's value says little about its pull on training: a term can be small and still own the
gradient, or large and nearly constant. Every ``diagnose_every`` steps the trainer hands the probe the
backpropagated loss split by term (``Distillation.contributions``: ``gt``, ``distill_s``, ``distill_m``,
``distill_l``, ``mask``, summing to what is backpropagated), and the probe takes the gradient of each
part with respect to the detector's parameters (``torch.autograd.grad`` on the step's own graph, so the
run's trajectory is unchanged) and records

- ``diag/value/<term>``: the part's value per image (what it adds to ``loss/total``);
- ``diag/grad/<term>``: the L2 norm of its gradient over all detector parameters;
- ``diag/cos/<term>``: the cosine between its gradient and L_gt's (negative: the term pulls against
  detection; near 0: it pulls elsewhere);

and, on every step, the total gradient norm before clipping (``diag/grad_total``) and the fraction of
steps whose norm exceeded ``train.grad_clip`` (``diag/clipped``): a clipped step scales L_gt's gradient
down with the distillation terms', so a term that inflates the norm slows detection learning even when it
points the same way. Epoch means are logged with the epoch's metrics. The probe costs one extra backward
per part on the probed steps; off by default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn


class TermGradientProbe:
    """Per-term gradient statistics of one run, accumulated over an epoch (see the module docstring)."""

    def __init__(self, every: int, parameters: Iterable[nn.Parameter], grad_clip: float | None) -> None:
        if every < 1:
            raise ValueError(f"TermGradientProbe: every must be >= 1, got {every}")
        self.every = int(every)
        self.parameters = [p for p in parameters if p.requires_grad]
        self.grad_clip = grad_clip
        self.reset()

    def reset(self) -> None:
        self._sums: dict[str, float] = {}
        self._probes = 0
        self._norm_sum: Tensor | float = 0.0  # on the device until the epoch ends (no sync per step)
        self._clipped: Tensor | float = 0.0
        self._steps = 0

    def due(self, step: int) -> bool:
        """Whether the step ``step`` (the run's iteration index, from 0) is probed."""
        return step % self.every == 0

    def probe(self, parts: Mapping[str, Tensor], batch_scale: int) -> None:
        """Gradients of every part w.r.t. the detector's parameters; ``parts["gt"]`` is the reference.

        ``batch_scale`` is the factor the family's convention put on the loss (YOLOv5: the batch size),
        so that ``diag/value`` is per image. Keeps the graph (the step's backward follows).
        """
        grads = {name: _flat_grad(value, self.parameters) for name, value in parts.items()}
        reference = grads.get("gt")
        for name, grad in grads.items():
            self._add(f"diag/value/{name}", float(parts[name].detach()) / batch_scale)
            norm = float(grad.norm()) if grad is not None else 0.0
            self._add(f"diag/grad/{name}", norm)
            if name != "gt" and reference is not None:
                self._add(f"diag/cos/{name}", _cosine(grad, reference))
        self._probes += 1

    def record_total_norm(self, norm: Tensor) -> None:
        """The step's gradient norm before clipping (``clip_grad_norm_``'s return), kept on the device."""
        norm = norm.detach().float()
        self._norm_sum = self._norm_sum + norm
        if self.grad_clip is not None:
            self._clipped = self._clipped + (norm > self.grad_clip).float()
        self._steps += 1

    def epoch_metrics(self) -> dict[str, float]:
        """The epoch's means (``diag/...``), then a reset for the next epoch."""
        metrics = {key: value / self._probes for key, value in self._sums.items()} if self._probes else {}
        if self._steps:
            metrics["diag/grad_total"] = float(self._norm_sum) / self._steps
            metrics["diag/clipped"] = float(self._clipped) / self._steps
        self.reset()
        return metrics

    def _add(self, key: str, value: float) -> None:
        self._sums[key] = self._sums.get(key, 0.0) + value


def _flat_grad(value: Tensor, parameters: list[nn.Parameter]) -> Tensor | None:
    """d value / d parameters as one flat vector; None when the value does not depend on them."""
    if not value.requires_grad:
        return None
    grads = torch.autograd.grad(value, parameters, retain_graph=True, allow_unused=True)
    pieces = [g.reshape(-1) if g is not None else p.new_zeros(p.numel()) for g, p in zip(grads, parameters, strict=True)]
    return torch.cat(pieces).float()


def _cosine(a: Tensor | None, b: Tensor | None) -> float:
    """cos(a, b); 0 where either gradient is absent or zero (no pull at all)."""
    if a is None or b is None:
        return 0.0
    denominator = float(a.norm()) * float(b.norm())
    if denominator == 0.0 or not math.isfinite(denominator):
        return 0.0
    return float(torch.dot(a, b)) / denominator
