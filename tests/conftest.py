"""How `make test` spreads the suite over two pytest-xdist workers (`-n 2 --dist loadscope`).

Much of the suite's wall time is waiting (Ray and MLflow starting, trials reporting, servers restarting),
so two workers finish sooner than one. Each worker is its own process with its own session fixtures, so
the tests that share heavy session state run together, in their usual order, on one worker (one work
unit of the scheduler below):

- ``tests/integration``: one PostgreSQL, one ``mlflow server``, one two-node Ray cluster per session;
- the test files that use the session's local Ray (``ray_address``, tests/study/conftest.py);
- every other file is a unit of its own (its module fixtures are built once), as ``loadscope`` does.

The two long units are scheduled first, one per worker (``--no-loadscope-reorder`` keeps the order the
workers collect in, sorted here); the other files fill in behind them. Each worker is pinned to its own
share of the CPUs, and so are the processes it starts (Ray's workers, `mssd` subprocesses): two workers
each running torch with every core's worth of threads, plus their trials, slow each other down far more
than twice. A plain ``pytest`` (no ``-n``) runs as before.

(xdist's own ``--dist loadgroup`` marks do not group under pytest 9.2: they rename ``item._nodeid``,
which pytest no longer reads, so the grouping is done by the scheduler from the node ids.)
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent.parent
_INTEGRATION_DIR = "tests/integration/"
_INTEGRATION, _LOCAL_RAY = "integration", "local-ray"  # the two long units
_FIRST = (_INTEGRATION, _LOCAL_RAY)


@functools.cache
def _uses_local_ray(path: str) -> bool:
    try:
        return "ray_address" in (_ROOT / path).read_text()
    except OSError:
        return False


def work_unit(nodeid: str) -> str:
    """The unit of work (one worker, in order) a test belongs to."""
    path = nodeid.split("::", 1)[0]
    if path.startswith(_INTEGRATION_DIR):
        return _INTEGRATION
    return _LOCAL_RAY if _uses_local_ray(path) else path


def pytest_configure(config: pytest.Config) -> None:
    worker = getattr(config, "workerinput", None)
    if worker is None or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    workers, index = int(worker["workercount"]), int(worker["workerid"].removeprefix("gw"))
    if workers <= len(cpus):  # torch and the trainer size their thread pools from this affinity
        os.sched_setaffinity(0, cpus[index::workers])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if getattr(config, "workerinput", None) is None:
        return
    rank = {unit: i for i, unit in enumerate(_FIRST)}
    items.sort(key=lambda item: rank.get(work_unit(item.nodeid), len(_FIRST)))  # stable: usual order within


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest without xdist (or -p no:xdist) does not know it
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    if config.getvalue("dist") != "loadscope":
        return None  # xdist's own scheduler for the other modes
    from xdist.scheduler import LoadScopeScheduling

    class SuiteUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return SuiteUnits(config, log)
