"""Where an experiment keeps its artifacts: a moved or copied study must not write to the original place."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from study.tracking.store import client


def local_artifact_root(uri: str, experiment: str) -> Path | None:
    """The local folder experiment ``experiment`` keeps artifacts in (None: not local, or no such experiment)."""
    found = client(uri).get_experiment_by_name(experiment)
    if found is None or not found.artifact_location:
        return None
    parsed = urlparse(found.artifact_location)
    if parsed.scheme not in ("", "file"):
        return None
    return Path(unquote(parsed.path))
