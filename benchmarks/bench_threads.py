"""CPU threads per run (``train.threads``): smoke epoch time with 1 thread, 2 threads and torch's own default.

Each measurement is a fresh process (torch's default thread count is decided at process start, and
``train.threads`` sets it for the process) training ``configs/smoke.yaml`` for 2 epochs; the figure is
the second epoch (``time/epoch``: its steps plus evaluation; ``time/train_steps``: the steps alone).
Settings are interleaved round by round, so load that changes over the run hits each setting alike.

    OMP_NUM_THREADS= flock /tmp/mssd-cpu.lock python benchmarks/bench_threads.py --rounds 3 --data /tmp/smoke

``default`` runs with ``OMP_NUM_THREADS`` unset and torch's own count (the trainer's setting bypassed),
which is what every run got before ``train.threads`` existed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_RUN = """
import json, sys, tempfile, torch
import detectors.engine.trainer as trainer
from study.config import load_config
setting, root = sys.argv[1], sys.argv[2]
overrides = [f"data.root={root}", "train.epochs=2"]
if setting == "default":  # torch's own count: the trainer's setting bypassed
    trainer.use_threads = lambda threads: torch.get_num_threads()
else:
    overrides.append(f"train.threads={setting}")
cfg = load_config(sys.argv[3], overrides)
metrics = trainer.fit(cfg, tempfile.mkdtemp())
print(json.dumps({"threads": torch.get_num_threads(), "epoch": metrics["time/epoch"],
                  "steps": metrics["time/train_steps"]}))
"""


def measure(setting: str, root: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", _RUN, setting, root, str(REPO / "configs" / "smoke.yaml")],
                         env=env, capture_output=True, text=True, check=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default="/tmp/mssd-bench-threads/smoke", help="data.root (generated on first use)")
    args = parser.parse_args()
    settings = ("1", "2", "default")
    results: dict[str, list[dict]] = {s: [] for s in settings}
    print(f"affinity {len(os.sched_getaffinity(0))} CPUs, load {os.getloadavg()[0]:.2f} at start", flush=True)
    measure("1", args.data)  # generates the data set once, outside the timings
    for round_ in range(1, args.rounds + 1):
        for setting in settings:
            r = measure(setting, args.data)
            results[setting].append(r)
            print(f"round {round_} {setting:>7}: {r['threads']} threads, epoch {r['epoch']:.2f} s, "
                  f"steps {r['steps']:.2f} s", flush=True)
    print(f"load {os.getloadavg()[0]:.2f} at end")
    print("| threads | torch threads | epoch 2 (s), median | train steps (s), median | runs |")
    print("| --- | --- | --- | --- | --- |")
    for setting in settings:
        rs = results[setting]
        print(f"| {setting} | {rs[0]['threads']} | {statistics.median(r['epoch'] for r in rs):.2f} | "
              f"{statistics.median(r['steps'] for r in rs):.2f} | {len(rs)} |")


if __name__ == "__main__":
    main()
