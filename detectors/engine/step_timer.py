"""Time spent in training steps, without a host sync per step on CUDA.

On CUDA, ``time.perf_counter`` around a step measures only how long Python took to *queue* the work,
unless the host waits for the GPU after every step (``torch.cuda.synchronize``), and that wait is what
made the GPU idle between steps (issue 13). So on CUDA each step records a pair of CUDA events, and
the elapsed GPU-timeline time of all pairs is read once, at the end of the epoch. On the CPU, where work
runs synchronously, the wall clock is exact and costs nothing.
"""

from __future__ import annotations

import time

import torch


class StepTimer:
    def __init__(self, device: torch.device) -> None:
        self.use_events = device.type == "cuda"
        self.reset()

    def reset(self) -> None:
        self._seconds = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._started: float | torch.cuda.Event | None = None

    def start(self) -> None:
        if self.use_events:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._started = event
        else:
            self._started = time.perf_counter()

    def stop(self) -> None:
        if self._started is None:
            raise RuntimeError("StepTimer.stop() without start()")
        if self.use_events:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._events.append((self._started, event))
        else:
            self._seconds += time.perf_counter() - self._started
        self._started = None

    def seconds(self) -> float:
        """Total seconds of the timed steps so far (on CUDA: waits for the last one to finish)."""
        if self._events:
            self._events[-1][1].synchronize()
            self._seconds += sum(start.elapsed_time(end) for start, end in self._events) / 1000.0
            self._events = []
        return self._seconds
