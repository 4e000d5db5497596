"""How many CPU threads a run's torch operators use (``train.threads``).

torch's default is one thread per core of the machine, whatever share of it the run has: on a 2-core
machine shared by several processes (or a Ray trial given 1 CPU of 2) that oversubscribes the cores, and a
smoke epoch took 3.5-10.6 s instead of 0.5 s (benchmarks/README.md, "CPU threads"). The thread count also
changes float summation order inside the kernels, so a ``mssd train`` run and a tune trial of the same
config only match when they use the same count.

``train.threads`` null means the CPUs reserved for the run: a tune trial's per-trial CPUs (the study layer
sets it before the trial's ``fit``), else ``OMP_NUM_THREADS`` when the environment sets it (a reservation
made by hand, as the shared CPU lock of this project's contributors does), else this process's CPU affinity
(``taskset``, a container's cpuset, a batch scheduler's allocation), not the machine's core count.

Only intra-op threads are set: torch's inter-op pool can be sized once per process, before any parallel
work, which a second run in the same process (tests, a reused Ray worker) could not honour, and eager
training runs its operators one after the other anyway.
"""

from __future__ import annotations

import os

import torch


def reserved_cpus() -> int:
    """The CPUs this process may run on (its affinity), or the machine's count where affinity is unknown."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None) -> int:
    """``train.threads`` as a number: the configured value, else ``OMP_NUM_THREADS``, else the reserved CPUs."""
    if threads is not None:
        return int(threads)
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if text.isdigit() and int(text) >= 1:
        return int(text)
    return reserved_cpus()


def use_threads(threads: int | None) -> int:
    """Set torch's intra-op threads for this run; returns the number set."""
    count = resolve_threads(threads)
    torch.set_num_threads(count)
    return count
