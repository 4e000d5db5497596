"""A study's folder, ``<workdir>/<name>/``, and what ``mssd tune`` records there before any trial runs.

``study.json`` (the options, the store, the metric, the searched keys), ``base-config.yaml`` and
``search-space.yaml`` are written once, atomically, when a study is created; ``--resume``, ``mssd
export``, ``report`` and ``ui`` read them back. Ray's experiment state, the trials and ``optuna.db``
live in the same folder (with the default storage).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from detectors.errors import ConfigError
from study import tracking
from study.config import load_saved_config, write_text_atomic
from study.errors import StudyError

META_FILE = "study.json"
BASE_CONFIG = "base-config.yaml"
SEARCH_SPACE = "search-space.yaml"
EMBEDDED = "embedded"  # study.json's tracking_uri for the store <workdir>/mlflow.db, wherever the workdir is
ARTIFACTS = "mlartifacts"  # the embedded store's artifacts, <workdir>/mlartifacts/<experiment>/
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def study_dir(workdir: str | Path, name: str) -> Path:
    return Path(workdir).resolve() / name


def check_study_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(f"--name {name!r}: expected letters, digits, '.', '_' or '-' (it names a folder "
                          "and an MLflow experiment)")
    return name


def default_study_name(space: str | Path) -> str:
    return f"{Path(space).stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_study_meta(workdir: str | Path, name: str) -> dict[str, Any]:
    path = study_dir(workdir, name) / META_FILE
    if not path.is_file():
        raise StudyError(f"no study {name!r} in {workdir} (expected {path}); see `ls {workdir}`")
    return json.loads(path.read_text())


# Folders ``mssd reproduce / compare / ablate`` write when their runs train in this process (no Ray, so no
# study.json): named after the output folder inside them. Their runs are ranked by mAP (study.grid_runs).
GRID_FOLDERS = {"reproduce": "mssd reproduce", "compare": "mssd compare", "ablation": "mssd ablate"}


def find_study_meta(workdir: str | Path, name: str) -> dict[str, Any]:
    """What ``mssd ui`` and ``mssd report`` need of any folder the user sees in ``<workdir>``: a tune study's
    ``study.json``, or for a reproduce / compare / ablate folder without one the same keys (its name, the
    metric its runs are ranked by, ``written_by`` the command). A folder that is neither: ``load_study_meta``'s
    error."""
    folder = study_dir(workdir, name)
    if not (folder / META_FILE).is_file() and (folder / BASE_CONFIG).is_file():
        kind = next((k for k in GRID_FOLDERS if (folder / k).is_dir()), None)
        return {"name": name, "metric": "map", "mode": "max",
                "written_by": GRID_FOLDERS[kind] if kind else "mssd ablate / compare / reproduce"}
    return load_study_meta(workdir, name)


def write_study_files(folder: Path, meta: dict[str, Any], config_text: str, space_text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / BASE_CONFIG, config_text)
    write_text_atomic(folder / SEARCH_SPACE, space_text)
    write_text_atomic(folder / META_FILE, json.dumps(meta, indent=2) + "\n")


def store_record(uri: str, workdir: str | Path) -> str:
    """What ``study.json`` records for the store: ``embedded`` for ``<workdir>/mlflow.db`` (so that a
    moved workdir finds the store beside it), else the URI without its password."""
    return EMBEDDED if uri == tracking.default_tracking_uri(workdir) else tracking.redact_uri(uri)


def recorded_tracking_uri(meta: dict[str, Any], workdir: str | Path) -> str | None:
    """The store a study recorded (None when it held a secret, which is never written)."""
    recorded = meta.get("tracking_uri")
    if not recorded or meta.get("tracking_uri_has_secret"):
        return None
    return tracking.default_tracking_uri(workdir) if recorded == EMBEDDED else recorded


def check_store_placement(uri: str, workdir: str | Path, meta: dict[str, Any]) -> None:
    """Refuse, in one line, to use a store that is not the one next to a study that was moved or copied:
    an embedded store recorded at another path, or one whose artifacts live in another workdir."""
    here = tracking.default_tracking_uri(workdir)
    name = meta["name"]
    if uri != here:
        if uri == meta.get("tracking_uri") and uri.startswith("sqlite:///") and uri.endswith("/mlflow.db"):
            raise StudyError(f"study {name!r} recorded the MLflow store {uri}, not the one next to it ({here}): the "
                             "study was moved or copied; set MLFLOW_TRACKING_URI to the store you mean")
        return
    artifacts = tracking.local_artifact_root(uri, name)
    expected = Path(workdir).resolve() / ARTIFACTS
    if artifacts is not None and expected not in (artifacts, *artifacts.parents):
        raise StudyError(f"study {name!r}: its MLflow artifacts are in {artifacts.parent}, not next to this copy "
                         f"({expected}): the study was moved or copied, and MLflow cannot move artifact "
                         "locations; run this command in the original workdir")


def study_tracking_uri(workdir: str | Path, meta: dict[str, Any]) -> str:
    """The store of an existing study, by the same rule ``mssd tune`` used (``tracking.resolve_tracking_uri``),
    refused when it is not the one next to the study (``check_store_placement``)."""
    base = study_dir(workdir, meta["name"]) / BASE_CONFIG
    cfg_uri = load_saved_config(base).tracking.uri if base.is_file() else None
    uri = tracking.resolve_tracking_uri(cfg_uri, workdir, recorded_tracking_uri(meta, workdir))
    check_store_placement(uri, workdir, meta)
    return uri
