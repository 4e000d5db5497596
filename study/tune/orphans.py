"""What a killed study driver leaves of its local Ray: stopped within seconds by a small watcher process.

``ray.init()`` in ``mssd tune`` starts a local cluster whose head processes (GCS, raylet, log monitor,
dashboard) share the driver's fate: the kernel kills them when it dies. The raylet's own children do not.
After a ``kill -9`` or an OOM kill of the driver, the trial workers exit about 2 s after the raylet, but
``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent`` first try to tell the dead GCS that the raylet died
(Ray 2.60, ``publish_error_to_driver``: a 60 s timeout) and stayed 60-90 s on a 2-core machine: long enough
to be taken for leaked processes, and to hold memory a resumed study wants.

``watch_local_ray(ray_dir)`` (before ``ray.init`` starts a local cluster) starts this file as a watcher: a
stdlib-only Python process in its own session (a Ctrl-C or a ``kill`` of the driver's process group does
not reach it) whose stdin is a pipe from the driver. Every ``POLL_S`` it records the Ray processes under the
driver: the driver's children running something of the Ray package (``ray_dir``) and all their descendants
(agents, trial workers, their DataLoader workers), by pid and start time. When the pipe closes (the driver
has exited, however it ended) it sends SIGTERM to each recorded process that still runs (same pid and
start time: a reused pid is another process), then SIGKILL after ``GRACE_S``. Nothing else is touched: not
the driver's other children, not another session's Ray. A driver that exits through Python (a finished or
failed study, Ctrl-C) writes ``CLEAN`` first and the watcher stops leftovers silently; otherwise it prints
one line naming what it stopped. Linux only (it reads ``/proc``); elsewhere nothing is started.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import signal
import subprocess
import sys
import time

POLL_S = 1.0  # how often the watcher records the driver's Ray processes
GRACE_S = 3.0  # SIGTERM -> SIGKILL
CLEAN = b"clean-exit\n"

_watcher: subprocess.Popen | None = None


def watch_local_ray(ray_dir: str) -> None:
    """Start the watcher for this process's local Ray (once per process; Linux only)."""
    global _watcher
    if _watcher is not None or not sys.platform.startswith("linux") or not os.path.exists("/proc/self/stat"):
        return
    read_end, write_end = os.pipe()  # not inherited by Ray's processes (close-on-exec): only the driver holds it
    try:
        # -I: stdlib only, and this folder is not put on sys.path (its module names are the package's).
        _watcher = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), str(os.getpid()), ray_dir],
                                    stdin=read_end, stdout=subprocess.DEVNULL, start_new_session=True)
    finally:
        os.close(read_end)
    atexit.register(_exiting_cleanly, write_end)


def _exiting_cleanly(write_end: int) -> None:
    with contextlib.suppress(OSError):  # the watcher is gone: nothing to tell
        os.write(write_end, CLEAN)


# --- the watcher process (stdlib only) ---

def _stat(pid: int) -> tuple[int, int, str] | None:
    """``(ppid, start time in clock ticks, state)`` of a live process, None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name in parentheses may hold spaces
    state, ppid, start = fields[0], int(fields[1]), int(fields[19])
    return None if state in ("Z", "X") else (ppid, start, state)


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _name(args: list[str]) -> str:
    """``ray::DashboardAgent``, ``raylet``, ``dashboard.py``...: what a user would recognise in ``ps``."""
    if not args:
        return "?"
    scripts = [a for a in args[1:3] if a.endswith(".py")]
    return os.path.basename(scripts[0] if scripts else args[0])


def ray_processes(driver: int, ray_dir: str) -> dict[int, tuple[int, str]]:
    """``{pid: (start time, name)}`` of the Ray processes under ``driver``: its children that run something
    of the Ray package, and every descendant of those."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                table[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    prefix = ray_dir.rstrip("/") + "/"
    roots = [pid for pid in children.get(driver, []) if any(a.startswith(prefix) for a in _cmdline(pid))]
    found, queue = {}, list(roots)
    while queue:
        pid = queue.pop()
        if pid in found or pid == os.getpid():
            continue
        found[pid] = (table[pid][1], _name(_cmdline(pid)))
        queue.extend(children.get(pid, []))
    return found


def _still_running(known: dict[int, tuple[int, str]]) -> list[int]:
    running = []
    for pid, (start, _) in known.items():
        stat = _stat(pid)
        if stat is not None and stat[1] == start:
            running.append(pid)
    return running


def stop(known: dict[int, tuple[int, str]], grace: float = GRACE_S) -> list[int]:
    """SIGTERM what of ``known`` still runs, SIGKILL it after ``grace`` s; the pids that were running."""
    running = _still_running(known)
    for pid in running:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _still_running({p: known[p] for p in running}) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _still_running({p: known[p] for p in running}):
        _signal(pid, signal.SIGKILL)
    return running


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def watch(driver: int, ray_dir: str) -> None:
    """The watcher's loop: record until stdin (the pipe from the driver) closes, then stop the leftovers."""
    known: dict[int, tuple[int, str]] = {}
    clean = False
    while True:
        readable, _, _ = select.select([0], [], [], POLL_S)
        if readable:
            data = os.read(0, 256)
            if not data:
                break
            clean = clean or CLEAN in data
            continue
        known.update(ray_processes(driver, ray_dir))
    stopped = stop(known)
    if stopped and not clean:
        names = ", ".join(f"{known[p][1]} (pid {p})" for p in sorted(stopped))
        with contextlib.suppress(OSError):  # the terminal or pipe is gone
            print(f"mssd: the study's driver (pid {driver}) ended without stopping its local Ray; stopped what was "
                  f"left of it: {names}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the pipe's end stops the watcher
    watch(int(sys.argv[1]), sys.argv[2])
