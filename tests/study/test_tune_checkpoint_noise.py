"""Nothing alarming on a resumed study that succeeded: Tune's "Error handling checkpoint" traceback when it
deletes an old checkpoint that a killed driver had already deleted (Ray's real checkpoint manager raises
it here) is not shown; any other error while handling a checkpoint is. Nor are Optuna's INFO lines ("A new
study created in RDB") unless --verbose."""

from __future__ import annotations

import logging
import shutil

import pytest

pytest.importorskip("ray")

CONTROLLER = "ray.tune.execution.tune_controller"


def _record(exc: BaseException) -> logging.LogRecord:
    """The record Tune's controller logs (``logger.exception("Trial %s: Error handling checkpoint %s", ...)``)."""
    return logging.LogRecord(CONTROLLER, logging.ERROR, __file__, 1, "Trial %s: Error handling checkpoint %s",
                             ("trial_1", "TrainingResult(...)"), (type(exc), exc, exc.__traceback__))


def _register_after_the_oldest_was_deleted(tmp_path) -> BaseException:
    """Tune's checkpoint manager (keep 1) restored with a list naming a checkpoint that is gone."""
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    manager = _CheckpointManager(CheckpointConfig(num_to_keep=1))
    folders = [tmp_path / f"checkpoint_00000{i}" for i in range(2)]
    for folder in folders:
        folder.mkdir()
    manager.register_checkpoint(_TrainingResult(Checkpoint.from_directory(str(folders[0])), {"epoch": 1}))
    shutil.rmtree(folders[0])  # deleted by the killed driver after its last snapshot
    try:
        manager.register_checkpoint(_TrainingResult(Checkpoint.from_directory(str(folders[1])), {"epoch": 2}))
    except FileNotFoundError as exc:
        return exc
    raise AssertionError("Ray's checkpoint manager no longer fails on a checkpoint that is already deleted")


def test_deleting_a_checkpoint_that_is_already_gone_is_not_shown(tmp_path):
    from study.tune.console import _CheckpointAlreadyDeleted

    exc = _register_after_the_oldest_was_deleted(tmp_path)
    assert _CheckpointAlreadyDeleted().filter(_record(exc)) is False


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize("exc", [FileNotFoundError("[Errno 2] No such file: 'trial_1/checkpoint_000003/last.pt'"),
                                 PermissionError("[Errno 13] Permission denied: 'trial_1'"),
                                 RuntimeError("a callback failed")])
def test_any_other_error_while_handling_a_checkpoint_is_shown(exc):
    from study.tune.console import _CheckpointAlreadyDeleted

    assert _CheckpointAlreadyDeleted().filter(_record(_raise(exc))) is True


def test_a_quiet_driver_installs_the_filter_on_tunes_controller_once():
    from study.tune.console import _CheckpointAlreadyDeleted, quiet_driver

    quiet_driver(None, starts_local_ray=False)
    quiet_driver(None, starts_local_ray=False)
    filters = logging.getLogger(CONTROLLER).filters
    assert sum(isinstance(f, _CheckpointAlreadyDeleted) for f in filters) == 1


def test_a_quiet_driver_hides_optunas_info_lines_and_verbose_shows_them():
    from study.tune.console import quiet_driver

    optuna = logging.getLogger("optuna")
    before = optuna.level
    try:
        quiet_driver(None, starts_local_ray=False)
        assert not optuna.isEnabledFor(logging.INFO) and optuna.isEnabledFor(logging.WARNING)
        quiet_driver(2, starts_local_ray=False)
        assert optuna.isEnabledFor(logging.INFO)
    finally:
        quiet_driver(None, starts_local_ray=False)  # the state the other tests of this file leave
        optuna.setLevel(before)
