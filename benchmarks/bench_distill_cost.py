"""What MSSD + MAD cost: training-step time on versus off (one run, interleaved), parameters and FLOPs.

    flock /tmp/mssd-bench.lock .venv/bin/python benchmarks/bench_distill_cost.py
    flock /tmp/mssd-bench.lock .venv/bin/python benchmarks/bench_distill_cost.py --model yolov5n --reps 5

The step is the trainer's: forward, ``YOLOv5Loss``, the distillation terms, eq 7 (``total_loss``),
backward, gradient clipping and an SGD step over the trainer's parameter groups (``build_sgd``), on fixed
random images with 6 random boxes each. Two copies of the detector with identical initial weights run
the step with distillation off (baseline) and on (MSSD + MAD). Repetitions alternate the two in an
ABBA order so drift in machine load (the CPU is shared) hits both alike. Both the wall time and the
process CPU time of each step are recorded; the cost is reported as on/off ratios of their medians and
minima and the median of the per-repetition ratios. With ``--threads 1`` the CPU time tracks the work
done and is less sensitive than the wall time to other jobs (cache and scheduler effects remain).
Last, the distillation terms' forward + backward alone (on one step's detached taps, timed many times)
as a fraction of the baseline step: the added work without the step-to-step noise.

It also prints the training-only parameters MSSD and MAD add for YOLOv5 n/s/m against the paper's
Table 2 deltas, and the forward multiply-adds they add (1x1 projectors and adaptation convs), as
GFLOPs = 2 x MACs at the benchmark's input size, against the detector's own convolutions.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timezone

import torch
from torch import nn

from detectors import build_detector
from detectors.config import GtLossConfig, LossesConfig, MADConfig, MSSDConfig
from detectors.distillation import build_distillation
from detectors.engine.schedule import build_sgd
from detectors.yolov5.loss import YOLOv5Loss

# Jia et al. 2024, Table 2: parameters (M) added over the baseline by +MAD and +MSSD alone.
PAPER_DELTAS_M = {"yolov5n": (0.02, 0.00), "yolov5s": (0.04, 0.01), "yolov5m": (0.24, 0.07)}


def random_batch(batch: int, img: int, num_classes: int, boxes_per_image: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, img, img, generator=gen)
    m = batch * boxes_per_image
    targets = torch.cat(
        (
            torch.arange(batch).repeat_interleave(boxes_per_image)[:, None].float(),
            torch.randint(0, num_classes, (m, 1), generator=gen).float(),
            torch.rand(m, 2, generator=gen) * 0.8 + 0.1,  # centres
            torch.rand(m, 2, generator=gen) * 0.3 + 0.02,  # sizes
        ),
        dim=1,
    )
    return images, targets


def losses_config(enabled: bool) -> LossesConfig:
    return LossesConfig(mssd=MSSDConfig(enabled=enabled), mad=MADConfig(enabled=enabled))


def make_step(name: str, *, img: int, num_classes: int, distillation: bool):
    """A closure running one full training step; same initial weights for both variants (seed 0)."""
    torch.manual_seed(0)
    model = build_detector(name, num_classes=num_classes).train()
    distill = build_distillation(losses_config(distillation), model).train()
    loss_fn = YOLOv5Loss(model, img_size=img, gains=GtLossConfig())
    optimizer = build_sgd([model, distill], lr=0.01, momentum=0.937, weight_decay=5e-4)
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def step(images: torch.Tensor, targets: torch.Tensor) -> None:
        output = model(images)
        gt_total, _ = loss_fn(output.head, targets)
        terms = distill(output, targets, img)
        loss = distill.total_loss(gt_total, terms, images.shape[0])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm=10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def timed(step, images, targets) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one step. On a shared machine the CPU time is
    the steadier figure: other processes stretch the wall time but not the work this one does."""
    wall, cpu = time.perf_counter(), time.process_time()
    step(images, targets)
    return time.perf_counter() - wall, time.process_time() - cpu


def distillation_cpu_seconds(name: str, img: int, images, targets, num_classes: int, *, reps: int) -> float:
    torch.manual_seed(0)
    model = build_detector(name, num_classes=num_classes).train()
    distill = build_distillation(losses_config(True), model).train()
    with torch.no_grad():
        output = model(images)
    taps = {key: {s: t.detach().requires_grad_() for s, t in getattr(output, key).items()}
            for key in ("teachers", "students")}
    times = []
    for _ in range(reps):
        start = time.process_time()
        terms = distill(taps, targets, img)
        (terms["distill"] + terms["mask"]).backward()
        times.append(time.process_time() - start)
        for t in taps["students"].values():
            t.grad = None
        distill.zero_grad(set_to_none=True)
    return statistics.median(times)


def conv_macs(module: nn.Module, run) -> int:
    """Multiply-adds of every Conv2d in ``module`` during ``run()``, per image."""
    total = 0

    def hook(conv: nn.Conv2d, _inputs, output):
        nonlocal total
        kh, kw = conv.kernel_size
        total += output[0].numel() * (conv.in_channels // conv.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return total


def added_cost(name: str, img: int, num_classes: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_detector(name, num_classes=num_classes).train()
    images, targets = random_batch(1, img, num_classes)
    output = model(images)
    counts = {}
    for label, mssd, mad in (("mad", False, True), ("mssd", True, False)):
        cfg = LossesConfig(mssd=MSSDConfig(enabled=mssd), mad=MADConfig(enabled=mad))
        dist = build_distillation(cfg, model)
        counts[f"params_{label}"] = dist.count_parameters()["total"]
        counts[f"macs_{label}"] = conv_macs(dist, lambda dist=dist: dist(output, targets, img))
    counts["params_model"] = sum(p.numel() for p in model.parameters())
    counts["macs_model"] = conv_macs(model, lambda: model(images))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov5s")
    parser.add_argument("--img", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=12, help="timed ABBA pairs (each times both variants)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    num_classes = 3

    print(f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; torch {torch.__version__}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads; "
          f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")

    print("\n## Training-only parameters and forward cost added (input "
          f"{args.img} px; GFLOPs = 2 x conv MACs per image)\n")
    print("| model | +MAD params | paper +MAD | +MSSD params | paper +MSSD | detector params "
          "| +MAD GFLOPs | +MSSD GFLOPs | detector GFLOPs |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, (paper_mad, paper_mssd) in PAPER_DELTAS_M.items():
        c = added_cost(name, args.img, num_classes)
        print(f"| {name} | {c['params_mad'] / 1e6:.4f} M | {paper_mad:.2f} M | {c['params_mssd'] / 1e6:.4f} M | "
              f"{paper_mssd:.2f} M | {c['params_model'] / 1e6:.3f} M | {2 * c['macs_mad'] / 1e9:.4f} | "
              f"{2 * c['macs_mssd'] / 1e9:.4f} | {2 * c['macs_model'] / 1e9:.3f} |")

    images, targets = random_batch(args.batch, args.img, num_classes)
    steps = {False: make_step(args.model, img=args.img, num_classes=num_classes, distillation=False),
             True: make_step(args.model, img=args.img, num_classes=num_classes, distillation=True)}
    for _ in range(args.warmup):
        for on in (False, True):
            steps[on](images, targets)
    wall: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for rep in range(args.reps):
        order = (False, True) if rep % 2 == 0 else (True, False)  # ABBA: cancels linear drift
        for on in order:
            w, c = timed(steps[on], images, targets)
            wall[on].append(w)
            cpu[on].append(c)

    print(f"\n## Training step, {args.model}, {args.img} px, batch {args.batch}, CPU, {torch.get_num_threads()} "
          f"threads, {args.reps} interleaved ABBA repetitions after {args.warmup} warm-up\n")
    print("| clock | off: median s/step (min) | on: median s/step (min) | on/off ratio of medians "
          "| ratio of minima | median of per-repetition ratios (quartiles) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, times in (("wall", wall), ("process CPU", cpu)):
        off, on = statistics.median(times[False]), statistics.median(times[True])
        ratios = [b / a for a, b in zip(times[False], times[True], strict=True)]
        q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
        print(f"| {label} | {off:.3f} ({min(times[False]):.3f}) | {on:.3f} ({min(times[True]):.3f}) | "
              f"{on / off:.3f} | {min(times[True]) / min(times[False]):.3f} | "
              f"{statistics.median(ratios):.3f} ({q[0]:.3f} .. {q[2]:.3f}) |")
    print("\ntarget: on/off <= 1.03")

    # The added work on its own: the distillation terms' forward + backward on one step's taps, as a
    # fraction of the baseline step. Small enough to be timed many times, so less at the mercy of load.
    added = distillation_cpu_seconds(args.model, args.img, images, targets, num_classes, reps=4 * args.reps)
    base = statistics.median(cpu[False])
    print(f"distillation terms alone (forward + backward, process CPU): median {1e3 * added:.1f} ms "
          f"= {100 * added / base:.1f}% of the baseline step's {base:.3f} s")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
