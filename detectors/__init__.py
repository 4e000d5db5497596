"""Detectors: the family contract (``api``), the family table (``zoo``), box ops and NMS, data, evaluation
and the trainer.

``build_detector(name, num_classes=...)`` is the one entry point to a model; torch is imported inside it
so that importing ``detectors`` (e.g. for ``detectors.errors`` in the CLI) stays instant.
"""

from __future__ import annotations

from detectors.zoo import DETECTORS, build_detector

__all__ = ["DETECTORS", "build_detector"]
