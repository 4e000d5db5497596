"""Every MLflow write goes through one background thread, retried in order; and the batches it writes.

A single writer keeps SQLite free of "database is locked", and a server that goes away mid-sweep only
delays writes: operations queue up and are retried in order, with timestamps fixed at submission so a
retried write is idempotent. Epochs already present in MLflow (the ``epoch`` metric's history) are
skipped by the callers, so retries, restores and back-fills never log an epoch twice.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from study.tracking.store import first_line

log = logging.getLogger(__name__)

# MLflow error codes that no retry can fix: drop the write with a warning instead of blocking the queue.
_PERMANENT_CODES = {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST",
                    "BAD_REQUEST", "INVALID_STATE", "MALFORMED_REQUEST"}


def _is_permanent(exc: BaseException) -> bool:
    return getattr(exc, "error_code", None) in _PERMANENT_CODES


class Writer:
    """Runs MLflow writes one at a time on a daemon thread, retrying transient failures in order."""

    def __init__(self, name: str = "mlflow-writer") -> None:
        self._queue: queue.Queue[tuple[Callable[[], None], str] | None] = queue.Queue()
        self._unfinished = 0
        self._lock = threading.Condition()
        self._outage_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, op: Callable[[], None], what: str) -> None:
        with self._lock:
            self._unfinished += 1
        self._queue.put((op, what))

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every submitted write is done (or ``timeout`` s); return how many remain."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._unfinished:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._lock.wait(timeout=left if left is not None else 1.0)
            return self._unfinished

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            op, what = item
            delay = 0.5
            while True:
                try:
                    op()
                except Exception as exc:
                    if _is_permanent(exc):
                        log.warning("MLflow rejected %s: %s", what, first_line(exc))
                        break
                    if self._outage_since is None:
                        self._outage_since = time.monotonic()
                        print(f"mssd: MLflow write failed ({first_line(exc, 120)}); buffering and retrying",
                              file=sys.stderr, flush=True)
                    time.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                if self._outage_since is not None:
                    print(f"mssd: MLflow reachable again after {time.monotonic() - self._outage_since:.0f} s; "
                          "back-filling buffered writes", file=sys.stderr, flush=True)
                    self._outage_since = None
                break
            with self._lock:
                self._unfinished -= 1
                self._lock.notify_all()


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers among ``metrics`` as floats; NaN is kept (e.g. aps with no small objects)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_params(mlflow_client: Any, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, _param_text(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow's per-request limit
        mlflow_client.log_batch(run_id, params=items[i: i + 100])


def _param_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:6000]


def log_epoch(mlflow_client: Any, run_id: str, epoch: int, metrics: dict[str, float], timestamp_ms: int) -> None:
    """One epoch's metrics in one batch (one transaction on the server), ``epoch`` itself included."""
    from mlflow.entities import Metric

    points = [Metric(k, v, timestamp_ms, epoch) for k, v in metrics.items() if k != "epoch"]
    points.append(Metric("epoch", float(epoch), timestamp_ms, epoch))
    mlflow_client.log_batch(run_id, metrics=points)


def logged_epochs(mlflow_client: Any, run_id: str) -> set[int]:
    return {int(m.step) for m in mlflow_client.get_metric_history(run_id, "epoch")}
