"""The optimizer step as the trainer runs it (clip + SGD + EMA), per-tensor (before issue 13) vs foreach, paired.

    flock /tmp/bench.lock .venv/bin/python benchmarks/bench_optimizer_step.py [--model yolov5n] [--reps 30]

The per-tensor side is the trainer's code before issue 13 (commit aa13048): ``clip_grad_norm_`` with
torch's CPU default (a loop), ``SGD`` with ``foreach=False`` (torch's CPU default), the EMA as two ops per
state-dict tensor over ``state_dict()`` (a ``detach`` per entry). The other side is today's
``detectors.engine`` code. Both run in one process on the same model, the same random gradients, the
sides alternating every repetition: the paired ratio is robust to the load drifting on a shared machine.
Also counted: operator calls made from Python per step (torch.profiler), the CPU proxy for kernel
launches on a GPU. Numerical identity of the two sides is a test (tests/detectors/test_step_overhead.py).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import time

import torch

from detectors.engine.ema import ModelEMA
from detectors.engine.schedule import build_sgd
from detectors.zoo import build_detector


def per_tensor_ema_update(ema: ModelEMA, model: torch.nn.Module) -> None:
    """aa13048's ModelEMA.update."""
    with torch.no_grad():
        ema.updates += 1
        d = ema.decay * (1 - math.exp(-ema.updates / ema.tau))
        source = model.state_dict()
        for key, value in ema.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[key].detach(), alpha=1 - d)


def make_side(model: torch.nn.Module, foreach: bool):
    model = copy.deepcopy(model)
    optimizer = build_sgd([model], lr=0.01, momentum=0.937, weight_decay=5e-4)
    if not foreach:
        for group in optimizer.param_groups:
            group["foreach"] = False
    params = [p for g in optimizer.param_groups for p in g["params"]]
    ema = ModelEMA(model)
    grads = [torch.randn_like(p) * 1e-2 for p in params]

    def step() -> None:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(params, max_norm=10.0, foreach=foreach if foreach else None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if foreach:
            ema.update(model)
        else:
            per_tensor_ema_update(ema, model)

    return step


def python_op_calls(step) -> int:
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU]) as prof, record_function("bench::step"):
        step()
    return sum(1 for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent is not None
               and e.cpu_parent.name == "bench::step")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov5n")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_detector(args.model, num_classes=3).to(memory_format=torch.channels_last)
    sides = {"per-tensor (before)": make_side(model, False), "foreach (after)": make_side(model, True)}
    print(f"{args.model}, {sum(p.numel() for p in model.parameters())} parameters, threads {args.threads}, "
          f"load {os.getloadavg()}")
    for name, step in sides.items():
        step()  # warm-up
        print(f"{name}: {python_op_calls(step)} operator calls from Python per step")
    times: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.reps):
        for name, step in sides.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    for name in sides:
        print(f"{name}: wall median {1000 * statistics.median(times[name]):.1f} ms (min {1000 * min(times[name]):.1f}),"
              f" CPU time median {1000 * statistics.median(cpu[name]):.1f} ms (min {1000 * min(cpu[name]):.1f})")
    for label, series in (("wall", times), ("CPU time", cpu)):
        before, after = (series[k] for k in sides)
        paired = statistics.median(a / b for a, b in zip(after, before, strict=True))
        print(f"{label} ratio after/before, median of paired reps: {paired:.3f}")
    print(f"load at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
