"""Fault injection for sweeps: a real failure inside a real trial, switched on by an environment variable.

``MSSD_INJECT_FAULT`` is read by the driver (``mssd tune``) and handed to every trial; each trial adds
a ``FaultInjector`` callback to its ``fit``. The value is one or more specs separated by ``;``::

    KIND@EPOCH[:KEY=VALUE]

- ``raise-once@2``: after the first training step of epoch 2, raise ``InjectedFault`` (a plain
  ``RuntimeError``), once per trial (a marker file under the study folder remembers it), so Tune's
  ``FailureConfig`` retries the trial from its last checkpoint (epoch 1) and the retry succeeds.
- ``nonfinite@1``: after the first step of epoch 1 raise ``NonFiniteLossError``, exactly what the
  trainer raises on a NaN loss: the trial must fail at once and never be retried.
- ``:KEY=VALUE`` limits the fault to trials whose config has that value, e.g.
  ``nonfinite@1:losses.mssd.gamma=1.0`` (compared as YAML scalars).

Used by the tests and by issue 6's fault tests; nothing happens when the variable is unset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from detectors.errors import ConfigError, NonFiniteLossError

ENV_VAR = "MSSD_INJECT_FAULT"
KINDS = ("raise-once", "nonfinite")


class InjectedFault(RuntimeError):
    """A transient failure injected on purpose (retried by Tune)."""


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    epoch: int
    key: str | None = None
    value: Any = None

    def applies_to(self, flat_config: dict[str, Any]) -> bool:
        return self.key is None or flat_config.get(self.key) == self.value


def parse_faults(text: str | None) -> list[FaultSpec]:
    """``"raise-once@2;nonfinite@1:losses.mssd.gamma=1.0"`` -> specs; one-line ConfigError when malformed."""
    specs = []
    for part in filter(None, (p.strip() for p in (text or "").split(";"))):
        head, _, cond = part.partition(":")
        kind, at, epoch = head.partition("@")
        if kind not in KINDS or not at or not epoch.isdigit() or int(epoch) < 1:
            raise ConfigError(f"{ENV_VAR}={text!r}: expected KIND@EPOCH[:KEY=VALUE] with KIND in "
                              f"{', '.join(KINDS)} and EPOCH >= 1, got {part!r}")
        key = value = None
        if cond:
            key, eq, raw = cond.partition("=")
            if not eq or not key:
                raise ConfigError(f"{ENV_VAR}: condition {cond!r}: expected KEY=VALUE")
            value = yaml.safe_load(raw)
        specs.append(FaultSpec(kind, int(epoch), key, value))
    return specs


def faults_from_env() -> str | None:
    text = os.environ.get(ENV_VAR) or None
    parse_faults(text)  # fail in the driver, before any trial, when malformed
    return text


class FaultInjector:
    """A ``fit`` callback raising the configured faults. ``start_epoch``: the first epoch this run trains."""

    def __init__(self, specs: list[FaultSpec], *, trial_id: str, flat_config: dict[str, Any],
                 marker_dir: str | Path, start_epoch: int = 1) -> None:
        self.specs = [s for s in specs if s.applies_to(flat_config)]
        self.trial_id = trial_id
        self.marker_dir = Path(marker_dir)
        self.epoch = start_epoch
        self._stepped = False

    def after_step(self, trainer: Any, step: int, items: Any) -> None:
        if self._stepped:
            return
        self._stepped = True  # one check per epoch: after its first step
        for spec in self.specs:
            if spec.epoch != self.epoch:
                continue
            if spec.kind == "nonfinite":
                raise NonFiniteLossError(f"epoch {self.epoch}, step {step}: loss/total is nan (injected by {ENV_VAR})")
            marker = self.marker_dir / f"{self.trial_id}.{spec.kind}@{spec.epoch}"
            if not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text("raised\n")
                raise InjectedFault(f"injected failure in epoch {self.epoch} of trial {self.trial_id} ({ENV_VAR})")

    def after_epoch(self, trainer: Any, epoch: int, metrics: Any) -> None:
        self.epoch = epoch + 1
        self._stepped = False
