"""Errors of the study layer (one line each, like every ``MSSDError``)."""

from __future__ import annotations

from detectors.errors import MSSDError


class StudyError(MSSDError):
    """A study cannot start or continue (name clash, nothing to resume, cluster or storage unusable)."""
