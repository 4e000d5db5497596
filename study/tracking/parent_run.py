"""A study's parent run as seen by commands that come after the sweep (``mssd confirm``): its status,
and tags set on it (the confirmation's result)."""

from __future__ import annotations

from study.tracking.queries import parent_run_id
from study.tracking.store import client


def parent_run_status(uri: str, study: str) -> str:
    """MLflow's status of the study's parent run: RUNNING while a sweep has it open (or was killed
    before closing it), FINISHED or KILLED after."""
    return client(uri).get_run(parent_run_id(uri, study)).info.status


def set_parent_tags(uri: str, study: str, tags: dict[str, str]) -> None:
    mlflow_client = client(uri)
    run_id = parent_run_id(uri, study)
    for key, value in tags.items():
        mlflow_client.set_tag(run_id, key, value)


def parent_tags(uri: str, study: str) -> dict[str, str]:
    return dict(client(uri).get_run(parent_run_id(uri, study)).data.tags)
