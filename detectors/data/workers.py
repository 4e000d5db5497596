"""How many DataLoader worker processes a run may start, from the CPUs it was given.

A trial scheduled by Ray holds ``cpus_per_trial`` CPUs; ``data.workers`` is what the config asks for,
written for a whole machine. Packing several trials on one GPU node (``--gpus-per-trial 0.5, 0.25``)
with each starting ``data.workers`` processes oversubscribes the node's cores, and the loaders then
starve the GPU. So a trial uses ``min(data.workers, max(1, floor(cpus) - 1))`` workers: one CPU for
the training loop, the rest for loading, and at least one worker (loading overlaps the step) unless
the config asks for none (``data.workers: 0`` loads in the training process).
"""

from __future__ import annotations

import math


def loader_workers(cpus: float, requested: int) -> int:
    """Worker processes for a run holding ``cpus`` CPUs whose config asks for ``requested``."""
    if requested <= 0:
        return 0
    return min(requested, max(1, math.floor(cpus) - 1))
