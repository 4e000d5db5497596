"""What produced a run: package versions and the git commit, logged as tags."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in ("mssd-study", "torch", "ray", "optuna", "mlflow", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def git_commit(cwd: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
