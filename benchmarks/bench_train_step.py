"""Seconds per training step (forward + L_gt + backward + SGD step) for YOLOv5 n/s, and where they go.

    .venv/bin/python benchmarks/bench_train_step.py                       # yolov5n, yolov5s; 320 px, batch 8
    .venv/bin/python benchmarks/bench_train_step.py --distillation        # + MSSD and MAD terms (eq 7)
    .venv/bin/python benchmarks/bench_train_step.py --models yolov5n --profile   # top ops by CPU time

The step is the trainer's (``detectors.engine.trainer.Trainer.train_step`` + ``optimizer_step`` pieces):
the same loss, optimizer groups and gradient clipping, on fixed random images with 6 random boxes
each, so the figure is comparable with Ultralytics' ``train.py`` step at the same settings (where EMA
and the optimizer step run once per 64 images; here the optimizer steps every batch, the worst case).
Median of ``--steps`` timed steps after ``--warmup`` untimed ones; one process, ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from detectors import build_detector
from detectors.config import GtLossConfig, LossesConfig, MADConfig, MSSDConfig
from detectors.distillation import build_distillation
from detectors.engine.ema import ModelEMA
from detectors.engine.schedule import build_sgd
from detectors.yolov5.loss import YOLOv5Loss


def random_batch(batch: int, img: int, num_classes: int, boxes_per_image: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, img, img, generator=gen)
    m = batch * boxes_per_image
    targets = torch.cat(
        (
            torch.arange(batch).repeat_interleave(boxes_per_image)[:, None].float(),
            torch.randint(0, num_classes, (m, 1), generator=gen).float(),
            torch.rand(m, 2, generator=gen) * 0.8 + 0.1,
            torch.rand(m, 2, generator=gen) * 0.3 + 0.02,
        ),
        dim=1,
    )
    return images, targets


def make_step(name: str, *, img: int, num_classes: int, distillation: bool, channels_last: bool = True):
    torch.manual_seed(0)
    model = build_detector(name, num_classes=num_classes).train()
    if channels_last:  # as the trainer does
        model.to(memory_format=torch.channels_last)
    enabled = distillation
    distill = build_distillation(
        LossesConfig(mssd=MSSDConfig(enabled=enabled), mad=MADConfig(enabled=enabled)), model
    ).train()
    loss_fn = YOLOv5Loss(model, img_size=img, gains=GtLossConfig())
    optimizer = build_sgd([model, distill], lr=0.01, momentum=0.937, weight_decay=5e-4)
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def step(images: torch.Tensor, targets: torch.Tensor) -> float:
        output = model(images)
        gt_total, _ = loss_fn(output.head, targets)
        terms = distill(output, targets, img)
        loss = distill.total_loss(gt_total, terms, images.shape[0])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm=10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return model, step


def time_steps(step, images, targets, *, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step(images, targets)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(images, targets)
        times.append(time.perf_counter() - start)
    return times


def profile(step, images, targets, *, rows: int = 15) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step(images, targets)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step(images, targets)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["yolov5n", "yolov5s"])
    parser.add_argument("--img", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--distillation", action="store_true", help="add the MSSD and MAD terms of eq 7")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops per model")
    parser.add_argument("--contiguous", dest="channels_last", action="store_false",
                        help="NCHW memory layout instead of the trainer's channels_last")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {args.threads}, "
          f"img {args.img}, batch {args.batch}, distillation {'on' if args.distillation else 'off'}, "
          f"{'channels_last' if args.channels_last else 'contiguous'}, load {os.getloadavg()[0]:.1f}")
    images, targets = random_batch(args.batch, args.img, args.classes)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    print(f"{'model':<8} {'s/step':>8} {'min':>8} {'img/s':>8} {'EMA upd s':>10}")
    for name in args.models:
        model, step = make_step(name, img=args.img, num_classes=args.classes, distillation=args.distillation,
                                channels_last=args.channels_last)
        times = time_steps(step, images, targets, warmup=args.warmup, steps=args.steps)
        ema = ModelEMA(model)
        start = time.perf_counter()
        for _ in range(5):
            ema.update(model)
        ema_s = (time.perf_counter() - start) / 5
        median = statistics.median(times)
        print(f"{name:<8} {median:8.3f} {min(times):8.3f} {args.batch / median:8.1f} {ema_s:10.4f}")
        if args.profile:
            print(profile(step, images, targets))


if __name__ == "__main__":
    main()
