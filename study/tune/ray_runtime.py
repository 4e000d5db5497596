"""Starting or joining Ray for a study (``--address``), and what the cluster allows.

``init_ray`` joins ``auto``, a head's GCS or a Ray Client server (one retry when a busy head's proxy fails
to start the client's server); ``check_storage`` refuses a multi-host cluster whose storage is a plain
local path (a ``file://`` URI declares a mount that every node sees; ``s3://`` etc. work too).

A local Ray that ``init_ray`` starts is watched (``study.tune.orphans``): a killed driver leaves none of its
processes behind. ``release_ray`` disconnects from a Ray that ``init_ray`` started or joined, so that no
trial worker's output (Ray forwards it to the driver's stderr) lands in a refusal printed after it; a Ray
the caller started (``start_local_ray``: tests, the demo benchmark) forwards no worker output at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Any

import ray

from study.cluster import FORWARDED_ENV, RayAddress, is_storage_uri
from study.errors import StudyError
from study.tune.console import quiet_driver
from study.tune.orphans import watch_local_ray

# Whether this process's Ray connection is one ``init_ray`` made (``release_ray`` may end it) rather
# than the caller's (``start_local_ray``, or a ``ray.init`` of its own).
_study_owns_connection = False


def init_ray(address: RayAddress, verbose: int | None = None) -> None:
    global _study_owns_connection
    # Tune forces an experiment snapshot whenever a trial has written num_to_keep checkpoints, and warns
    # each time; with per-epoch checkpoints that is expected (a snapshot costs milliseconds here).
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    level = quiet_driver(verbose, starts_local_ray=not address.text)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "logging_level": level}
    if address.is_client:
        # The head's MLflow client (in the Tune driver actor) authenticates with these; the job's
        # runtime_env is visible to whoever can list the cluster's jobs (the Ray token's holders).
        forwarded = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
        kwargs = {"runtime_env": {"env_vars": forwarded}} if forwarded else {}
        # INFO lines a client user cannot act on ("Passing the following kwargs...", "legacy output").
        for name in ("ray.client_builder", "ray.tune.tuner"):
            logging.getLogger(name).setLevel(logging.WARNING)
    # A busy head's Ray Client proxy sometimes fails to start the per-client server on the first try
    # (seen on a loaded 2-core machine); one more attempt usually gets it. Other errors are final.
    attempts = 2 if address.is_client else 1
    start_failed = False
    for attempt in range(1, attempts + 1):
        try:
            if address.text:
                ray.init(address=address.text, **kwargs)
            else:
                watch_local_ray(os.path.dirname(ray.__file__))
                ray.init(**kwargs)
            _study_owns_connection = True
            return
        except (ConnectionError, RuntimeError, ValueError) as exc:
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            start_failed = address.is_client and line.startswith("Initialization failure from server")
            if not (start_failed and attempt < attempts):
                break
            print("mssd: the head's Ray Client server did not start a server for this client; trying once more",
                  file=sys.stderr)
            ray.shutdown()  # drop the half-made client connection before the next attempt
            time.sleep(5)
    if start_failed:
        line = ("the head's Ray Client server could not start a server for this client in time (see "
                "ray_client_server*.log on the head; a busy head may need a larger "
                "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S, default 30 s, in its environment)")
    raise StudyError(f"cannot join the Ray cluster at {address}: {line}") from None


def start_local_ray(num_cpus: int) -> str:
    """Start (or reuse) a local Ray instance for studies run in this process (tests, the demo benchmark);
    returns its address for ``--address``. Its workers' output stays in Ray's log files
    (``session_*/logs/worker-*``): forwarded, it would be printed whenever it arrives, into whatever this
    process prints then (a test's captured refusal, say)."""
    global _study_owns_connection
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    _study_owns_connection = False  # the caller's from now on: release_ray leaves it running
    return ray.get_runtime_context().gcs_address


def stop_ray() -> None:
    global _study_owns_connection
    if ray.is_initialized():
        ray.shutdown()
    _study_owns_connection = False


def release_ray() -> None:
    """End the Ray connection ``init_ray`` made (a local Ray stops, a cluster is only left), waiting for Ray's
    output thread: after it, no worker line reaches this process's stderr. The lines that thread still
    prints while it stops go nowhere (Ray writes them to whatever ``sys.stderr`` is then), not just before
    the refusal that follows. A caller's Ray is left alone."""
    global _study_owns_connection
    if _study_owns_connection and ray.is_initialized():
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            ray.shutdown()
    _study_owns_connection = False


def check_storage(storage: str) -> None:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    hosts = {n.get("NodeManagerAddress") for n in nodes}
    if len(hosts) > 1 and not is_storage_uri(storage):
        raise StudyError(f"the Ray cluster spans {len(hosts)} hosts but storage {storage} is a local path that "
                         "the other nodes cannot see; pass --storage s3://... or file:///a/shared/mount")
