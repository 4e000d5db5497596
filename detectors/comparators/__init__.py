"""The distillation methods MSSD is compared with (paper Table 4): KD, FGFI, DeFeat (teacher-based) and LGD.

One file per method owns its training-only parameters (``Comparator``, ``base.py``); the math is a pure
function in ``losses/<method>.py``; ``teacher.py`` is the frozen teacher. ``BUILDERS`` is the one table
from ``losses.method`` to the module that builds it (imported when used, so a method's torch code loads
only for runs that use it); ``detectors.distillation.build_distillation`` dispatches through it.
"""

from __future__ import annotations

import importlib
from typing import Any

from detectors.comparators.base import Comparator, ComparatorContext
from detectors.errors import ConfigError

# losses.method -> module defining ``build(losses_cfg, context) -> Comparator``.
BUILDERS: dict[str, str] = {
    "kd": "detectors.comparators.kd",
    "fgfi": "detectors.comparators.fgfi",
    "defeat": "detectors.comparators.defeat",
    "lgd": "detectors.comparators.lgd",
}

__all__ = ["BUILDERS", "Comparator", "ComparatorContext", "build_comparator"]


def build_comparator(method: str, losses_cfg: Any, context: ComparatorContext) -> Comparator:
    """The ``Comparator`` of ``losses.method`` ``method``, sized for ``context``."""
    if method not in BUILDERS:
        raise ConfigError(f"losses.method: no comparator {method!r}, expected one of {', '.join(BUILDERS)}")
    try:
        module = importlib.import_module(BUILDERS[method])
    except ModuleNotFoundError as exc:
        if exc.name != BUILDERS[method]:
            raise
        raise ConfigError(f"losses.method: {method} is not implemented in this version") from None
    comparator = module.build(losses_cfg, context)
    if comparator.needs_teacher and context.teacher is None:
        raise ConfigError(f"losses.method: {method} needs a teacher (distill.teacher)")
    return comparator
