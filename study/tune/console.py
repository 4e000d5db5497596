"""What a study prints: Ray's live table on a terminal and our own lines, not Ray's noise.

Quiet (the default): a local Ray starts with token authentication as Ray's default, without the
warning that says so; Ray's and Tune's INFO lines and the trials' "Checkpoint successfully
created" lines are not shown, and Tune's classic reporter draws one compact table (status, the searched
parameters, epoch, the metric, the total loss) on a terminal -- no experiment box, TensorBoard hint or
35-line result box per trial; two Tune tracebacks about files that are already gone are dropped
(``_TempFileRace``, ``_CheckpointAlreadyDeleted``), any other error is shown. ``StudyOptions.verbose >= 2``
(``mssd tune --verbose``) leaves all of Ray's output as Ray prints it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from ray.tune import CLIReporter

FULL = 2  # StudyOptions.verbose from which Ray prints everything itself


_TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"
_OPTUNA_LOGGER = "optuna"  # the searcher's sampler, in the driver


def is_full(verbose: int | None) -> bool:
    return verbose is not None and verbose >= FULL


def quiet_driver(verbose: int | None, starts_local_ray: bool) -> int:
    """Before ``ray.init`` in the driver; returns the ``logging_level`` to start Ray with."""
    if is_full(verbose):  # also undo a quiet study run earlier in this process
        for name in (_TOKEN_LOGGER, "ray.tune"):
            logging.getLogger(name).setLevel(logging.NOTSET)
        logging.getLogger(_OPTUNA_LOGGER).setLevel(logging.INFO)  # Optuna's own default
        return logging.INFO
    if starts_local_ray:  # a new local cluster gets token auth by default; Ray warns that it did so
        logging.getLogger(_TOKEN_LOGGER).setLevel(logging.ERROR)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)  # "Wrote the latest version of all result files"
    logging.getLogger(_OPTUNA_LOGGER).setLevel(logging.WARNING)  # "[I ...] A new study created in RDB with name"
    for name, kind in ((_STATE_LOGGER, _TempFileRace), (_CONTROLLER_LOGGER, _CheckpointAlreadyDeleted)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
    return logging.WARNING


_STATE_LOGGER = "ray.tune.execution.experiment_state"
# Tune's atomic writes go through ``.<uuid4>-<name>`` temporary files in the driver's staging folder
_TEMP_FILE = re.compile(r"/\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-[^/'\"]+")


class _TempFileRace(logging.Filter):
    """Drops Tune's "Saving experiment state to storage ... failed" traceback when the file that vanished
    is one of its own temporary files: Tune writes the next snapshot into the staging folder while the
    previous upload is still copying it (slow on a loaded machine), the upload lists the temporary file
    and finds it renamed. The renamed file goes up with the next upload, and the last one (when the sweep
    ends) waits for the running upload first, so nothing is lost. Any other failure is shown."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        race = (isinstance(exc, FileNotFoundError) and record.getMessage().startswith("Saving experiment state")
                and _TEMP_FILE.search(str(exc)) is not None)
        return not race


_CONTROLLER_LOGGER = "ray.tune.execution.tune_controller"


class _CheckpointAlreadyDeleted(logging.Filter):
    """Drops Tune's "Trial ...: Error handling checkpoint" traceback when the error is Tune failing to delete,
    as ``--keep-checkpoints`` asks, an old checkpoint that is already gone. It happens on ``--resume`` after
    a killed driver: that driver deleted the trial's oldest checkpoint after its last experiment snapshot,
    which still lists it; the resumed trial's next checkpoint makes Tune delete it again. The new checkpoint
    is registered first (Tune updates its list before deleting), so only the log line is wrong. Any other
    failure while handling a checkpoint is shown."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.exc_info and isinstance(record.exc_info[1], FileNotFoundError)
                and str(record.msg).startswith("Trial %s: Error handling checkpoint")):
            return True
        frames, tb = [], record.exc_info[2]
        while tb is not None:
            frames.append(tb.tb_frame.f_code.co_name)
            tb = tb.tb_next
        deleting = "register_checkpoint" in frames and "_delete_fs_path" in frames
        return not deleting


@contextlib.contextmanager
def ray_output(verbose: int | None) -> Iterator[None]:
    """Around ``Tuner.fit``: quiet studies use Tune's classic reporter (the newer one adds the boxes and
    hints this module exists to drop); read by Tune at fit time, and restored after it."""
    if is_full(verbose) or "RAY_AIR_NEW_OUTPUT" in os.environ:  # a user's own setting wins
        yield
        return
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        os.environ.pop("RAY_AIR_NEW_OUTPUT", None)


def quiet_trial(verbose: int | None) -> None:
    """In a trial's worker: its INFO lines ("Checkpoint successfully created at ...") reach the driver's terminal,
    and so would its shutdown noise (``_quiet_finalizing``)."""
    if not is_full(verbose):
        logging.getLogger("ray.train").setLevel(logging.WARNING)
        logging.getLogger("ray.tune").setLevel(logging.WARNING)
        if sys.unraisablehook is not _quiet_finalizing:
            sys.unraisablehook = _quiet_finalizing


def _quiet_finalizing(unraisable: Any) -> None:
    """A Ray worker's interpreter shutting down garbage-collects half-torn-down modules, and Python prints
    "Exception ignored in: <function WeakSet...>" tracebacks that Ray forwards to whichever command of the
    driver process is printing then (e.g. a later refusal's one line). Nothing to act on: dropped while the
    interpreter finalizes; any other unraisable exception is printed as usual."""
    if sys.is_finalizing():
        return
    sys.__unraisablehook__(unraisable)


def reporting(verbose: int | None, metric: str, searched: list[str]) -> dict[str, Any]:
    """``tune.RunConfig`` keyword arguments: Ray's own output (full), or one compact live table on a
    terminal (quiet; none when stdout is not a terminal or ``verbose == 0``)."""
    if is_full(verbose):
        return {"verbose": verbose}
    table = verbose if verbose is not None else (1 if sys.stdout.isatty() else 0)
    columns = {"epoch": "epoch", metric: metric}
    if metric != "loss/total":
        columns["loss/total"] = "loss"
    short = [key.rpartition(".")[2] for key in searched]  # losses.mssd.gamma -> gamma, unless ambiguous
    params = {key: name if short.count(name) == 1 else key for key, name in zip(searched, short, strict=True)}
    reporter = CLIReporter(metric_columns=columns, parameter_columns=params, max_report_frequency=15,
                           print_intermediate_tables=True)
    return {"verbose": min(table, 1), "progress_reporter": reporter}
