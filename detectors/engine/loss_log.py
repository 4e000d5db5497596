"""Per-step loss terms kept on the device and read in one go: no host sync per training step.

Reading a GPU tensor's value (``.item()``, ``.tolist()``) waits for every queued kernel; doing it every
step for the logged loss terms keeps the GPU idle while Python catches up (issue 13). ``LossLog`` keeps
each step's terms as one small device tensor and reads all pending steps with a single ``.tolist()``
when asked: every ``read_interval`` steps and at the end of an epoch (the trainer's choice), or when a
callback looks at a step's values.

The non-finite check stays exact: pending steps are checked in order at the read, and the first step
whose ``total`` is not finite raises the same ``NonFiniteLossError`` (same epoch, step and term) as a
check inside the step would have. Only *when* it raises moves: up to ``read_interval`` steps later, never
after the epoch's end, so a non-finite value never reaches a checkpoint, an evaluation or ``after_epoch``.
Sums for the epoch means are accumulated on the host from the read floats, in step order, exactly as a
per-step ``sums[name] += value * batch_size`` would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

import torch

from detectors.errors import NonFiniteLossError


class LossLog:
    """The loss terms of one epoch's steps. ``names`` order the values of each step's tensor;
    ``describe(values, epoch, step)`` words the error for a step whose ``values["total"]`` is not finite."""

    def __init__(self, names: tuple[str, ...], describe: Callable[[dict[str, float], int, int], str]) -> None:
        self.names = names
        self.describe = describe
        self.start_epoch()

    def start_epoch(self) -> None:
        self.sums = dict.fromkeys(self.names, 0.0)
        self.images = 0
        self._pending: list[tuple[torch.Tensor, int, int, int]] = []  # (values, epoch, step, batch size)
        self._read: dict[int, dict[str, float]] = {}  # step -> its values, for the callbacks

    def add(self, values: torch.Tensor, *, epoch: int, step: int, batch_size: int) -> StepLosses:
        """Keep one step's terms (a 1-D tensor in ``names`` order, on any device) without reading it."""
        if values.shape != (len(self.names),):
            raise ValueError(f"loss terms: expected shape ({len(self.names)},), got {tuple(values.shape)}")
        self._pending.append((values.detach(), epoch, step, batch_size))
        return StepLosses(self, step)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def read(self) -> None:
        """Copy every pending step's terms to the host (one sync), check them in step order, sum them."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        rows = torch.stack([values for values, *_ in pending]).tolist()
        for row, (_, epoch, step, batch_size) in zip(rows, pending, strict=True):
            values = dict(zip(self.names, row, strict=True))
            if not math.isfinite(values["total"]):
                raise NonFiniteLossError(self.describe(values, epoch, step))
            for name in self.names:
                self.sums[name] += values[name] * batch_size
            self.images += batch_size
            self._read[step] = values

    def values_of(self, step: int) -> dict[str, float]:
        if step not in self._read:
            self.read()
        return self._read[step]

    def means(self) -> dict[str, float]:
        """Per-image means over the epoch's steps (reads what is pending first)."""
        self.read()
        return {name: self.sums[name] / max(self.images, 1) for name in self.names}


class StepLosses(Mapping):
    """One step's terms as floats, read from the device on first access (which synchronises)."""

    def __init__(self, log: LossLog, step: int) -> None:
        self._log = log
        self._step = step

    def __getitem__(self, name: str) -> float:
        return self._log.values_of(self._step)[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._log.names)

    def __len__(self) -> int:
        return len(self._log.names)

    def __repr__(self) -> str:
        return f"StepLosses(step={self._step})"
