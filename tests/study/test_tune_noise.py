"""Nothing alarming on a sweep that succeeded: Tune's upload of its experiment state racing its own next
snapshot (a temporary file renamed under it) is not shown, other upload failures are; a Ray worker's
interpreter shutdown noise ("Exception ignored in: <function WeakSet...>") never reaches the driver's
output, other unraisable exceptions do. (The end-to-end check, a real sweep's stderr without a traceback,
is in test_trial_ranking.py.)"""

from __future__ import annotations

import logging
import sys

import pytest

pytest.importorskip("ray")

STAGING = "/tmp/ray/session_2026-12-06_03-10-00_000000_1/artifacts/2026-12-06_03-10-05/s/driver_artifacts"


def _state_record(exc: BaseException) -> logging.LogRecord:
    return logging.LogRecord("ray.tune.execution.experiment_state", logging.ERROR, __file__, 1,
                             "Saving experiment state to storage at '/w/runs/s' failed with exception: ", None,
                             (type(exc), exc, None))


def test_a_temporary_file_renamed_during_tunes_upload_is_not_shown():
    from study.tune.console import _TempFileRace

    vanished = FileNotFoundError(f"[Errno 2] Failed to open local file '{STAGING}/"
                                 ".0b6c3a8e-51f2-4d7a-9a7e-3c2f1d0e9b8a-experiment_state.json'. Detail: [errno 2]")
    assert _TempFileRace().filter(_state_record(vanished)) is False


@pytest.mark.parametrize("exc", [FileNotFoundError(f"[Errno 2] Failed to open local file '{STAGING}/tuner.pkl'"),
                                 PermissionError("[Errno 13] Permission denied: '/w/runs/s'")])
def test_any_other_failure_to_save_the_experiment_state_is_shown(exc):
    from study.tune.console import _TempFileRace

    assert _TempFileRace().filter(_state_record(exc)) is True


def test_the_driver_installs_the_filter_once(monkeypatch):
    from study.tune.console import _TempFileRace, quiet_driver

    quiet_driver(None, starts_local_ray=False)
    quiet_driver(None, starts_local_ray=False)
    filters = logging.getLogger("ray.tune.execution.experiment_state").filters
    assert sum(isinstance(f, _TempFileRace) for f in filters) == 1


class _Noisy:
    def __del__(self):
        raise TypeError("'NoneType' object is not callable")  # what a half-torn-down module gives


def _unraisable(monkeypatch):
    """A real ``UnraisableHookArgs``, as Python hands it to ``sys.unraisablehook``."""
    caught = []
    monkeypatch.setattr(sys, "unraisablehook", caught.append)
    noisy = _Noisy()
    del noisy
    monkeypatch.undo()
    return caught[0]


def test_a_finalizing_workers_unraisable_noise_is_dropped_and_other_ones_printed(monkeypatch, capsys):
    from study.tune.console import _quiet_finalizing

    unraisable = _unraisable(monkeypatch)
    monkeypatch.setattr(sys, "is_finalizing", lambda: True)
    _quiet_finalizing(unraisable)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys, "is_finalizing", lambda: False)
    _quiet_finalizing(unraisable)
    assert "Exception ignored" in capsys.readouterr().err
