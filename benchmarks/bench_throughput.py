"""Trial throughput, every figure of issue 13's table, on whatever device runs it (CPU or CUDA).

    # CPU (default, small): YOLOv5n at 320 px, batch 8, MSSD + MAD on, 160/40 synthetic KITTI-like images
    flock /tmp/bench.lock .venv/bin/python benchmarks/bench_throughput.py
    # GPU, the issue's setting: YOLOv5s, 640 px, batch 16, AMP, 1600/400 images, 8 workers
    .venv/bin/python benchmarks/bench_throughput.py --model yolov5s --img 640 --batch 16 --images 2000 \
        --workers 8 --device cuda
    # any config key, e.g. the decoded-image cache or a compiled step:  --set data.cache=ram train.compile=step

Figures (each printed as one ``name: value`` line, then a summary table):

1. ``step_trainer``: a training step as the trainer runs it: wall time between consecutive ``after_step``
   callbacks of a real epoch (loader wait, host syncs and all), mean over the epoch after its first step.
2. ``step_on_device``: ``Trainer.train_step`` + ``Trainer.optimizer_step`` on batches already on the device,
   no synchronisation between steps (one at the end), mean per step. The optimizer steps every batch
   (accumulate 1: the worst case; in real training it steps once per 64 images).
3. ``forward_backward``: model forward + eq 7 + backward alone, same batches.
4. ``ops_per_step``: operator calls per step (forward + loss + backward + optimizer step + EMA) from
   torch.profiler: every ``aten::`` call and the top-level ones; on CUDA also kernel launches. Split into
   the train step and the optimizer step (the CPU proxy for the GPU's launch overhead).
5. ``eval``: ``Trainer.evaluate()`` on the val split, and its parts measured separately on the same
   loader: model forward, NMS (+ mapping boxes to the original image), COCO scoring.
6. ``loader``: the augmented train loader at ``--workers`` workers: ms per batch in steady state (first
   batch excluded, reported separately), no model.
7. ``epochs``: ``--epochs`` full epochs (train + eval + checkpoint) of a fresh run: each epoch's
   ``time/epoch``, the first included.

The data set is generated once under ``--data-root`` (not timed). Medians are noisy on a shared machine:
run under ``flock`` and note the printed load average with the figures.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from detectors.config import parse_config


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def build_config(args) -> object:
    n_val = round(args.images * 0.2)
    data = {"format": "synthetic", "root": str(Path(args.data_root) / f"synthetic-{args.images}"),
            "img_size": args.img, "workers": args.workers,
            "synthetic": {"images": args.images, "seed": 0, "width": 1242, "height": 375, "val_fraction": 0.2}}
    raw = {
        "seed": 0,
        "detector": {"name": args.model},
        "data": data,
        "losses": {"mssd": {"enabled": not args.no_distill}, "mad": {"enabled": not args.no_distill}},
        "train": {"epochs": args.epochs, "batch_size": args.batch, "device": args.device, "amp": args.amp,
                  "warmup_epochs": 0.0},
        "eval": {"max_det": 300, "conf": 0.001},
    }
    for item in args.set:
        key, _, value = item.partition("=")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _parse_value(value)
    print(f"data: {args.images - n_val} train / {n_val} val images 1242x375 at {data['root']}")
    return parse_config(raw)


def _device_batches(trainer, n: int) -> list:
    batches = []
    for batch in trainer.train_loader:
        batches.append(batch.to(trainer.device))
        if len(batches) == n:
            break
    return batches


def _set_accumulate_one(trainer) -> None:
    from detectors.engine.schedule import apply_settings

    settings = trainer.schedule.at(10**9, 0)  # after warmup: lrs of epoch 0
    apply_settings(trainer.optimizer, settings)


def measure_step_on_device(trainer, batches, steps: int) -> tuple[float, float]:
    """Mean (wall, process CPU) seconds of train_step + optimizer_step on batches already on the device;
    one sync at the end. CPU time is the steadier figure on a shared, oversubscribed machine."""
    _set_accumulate_one(trainer)
    for i in range(2):  # warm-up (cuDNN autotuning, allocator, lazy inits)
        trainer.train_step(batches[i % len(batches)], 1, i + 1)
        trainer.optimizer_step()
    _flush(trainer)
    _sync(trainer.device)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(steps):
        trainer.train_step(batches[i % len(batches)], 1, i + 1)
        trainer.optimizer_step()
    _flush(trainer)
    _sync(trainer.device)
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps


def _flush(trainer) -> None:
    """Read deferred loss terms, if this version of the trainer defers them (not part of a step's cost
    on the old trainer, which reads them inside every step)."""
    flush = getattr(trainer, "flush_losses", None)
    if flush is not None:
        flush()


def measure_forward_backward(trainer, batches, steps: int) -> tuple[float, float]:
    model, distill, loss_fn, img = trainer.model, trainer.distillation, trainer.loss_fn, trainer.cfg.data.img_size

    def once(batch):
        images = batch.images.contiguous(memory_format=torch.channels_last)
        if hasattr(trainer, "forward_loss"):  # the trainer's own forward + eq 7 (after issue 13)
            loss, _ = trainer.forward_loss(images, batch.targets)
        else:  # the trainer before issue 13 had it inline in train_step
            with torch.autocast(trainer.device.type, enabled=trainer.amp):
                output = model(images)
                gt_total, _ = loss_fn(output.head_maps, batch.targets)
                terms = distill(output, batch.targets, img)
            loss = distill.total_loss(gt_total, terms, images.shape[0])
        trainer.scaler.scale(loss).backward()

    for i in range(2):
        once(batches[i % len(batches)])
    trainer.optimizer.zero_grad(set_to_none=True)
    _sync(trainer.device)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(steps):
        once(batches[i % len(batches)])
    _sync(trainer.device)
    elapsed = (time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps
    trainer.optimizer.zero_grad(set_to_none=True)
    return elapsed


def count_ops(trainer, batches, steps: int = 3) -> dict[str, float]:
    """Operator calls per step from torch.profiler, split into train_step and optimizer_step (+ EMA)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    _set_accumulate_one(trainer)
    trainer.train_step(batches[0], 1, 1)
    trainer.optimizer_step()
    _flush(trainer)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(steps):
            with record_function("bench::train_step"):
                trainer.train_step(batches[i % len(batches)], 1, i + 1)
            with record_function("bench::optimizer_step"):
                trainer.optimizer_step()
        with record_function("bench::flush"):
            _flush(trainer)
        _sync(trainer.device)
    events = list(prof.events())

    def region_of(event) -> str | None:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("bench::"):
                return parent.name
            parent = parent.cpu_parent
        return None

    out: dict[str, float] = {"aten_train_step": 0, "aten_optimizer_step": 0, "aten_flush": 0, "top_level": 0,
                             "top_train_step": 0, "top_optimizer_step": 0, "top_flush": 0, "kernel_launches": 0}
    for e in events:
        name = e.name
        if name.startswith("aten::"):
            region = region_of(e)
            if region is not None:
                out["aten_" + region.split("::")[1]] += 1
            parent = e.cpu_parent
            if parent is not None and parent.name.startswith("bench::"):  # called from Python, not from an op
                out["top_level"] += 1
                out["top_" + parent.name.split("::")[1]] += 1
        elif name in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx",
                      "cudaGraphLaunch"):
            out["kernel_launches"] += 1
    result = {k: v / steps for k, v in out.items()}
    result["aten_total"] = result["aten_train_step"] + result["aten_optimizer_step"] + result["aten_flush"]
    return result


def measure_eval(trainer) -> dict[str, float]:
    """Trainer.evaluate() wall time, and its parts measured separately on the same loader."""
    from detectors.engine.evaluation import Detections, evaluate
    from detectors.ops.nms import non_max_suppression

    cfg, device, model = trainer.cfg, trainer.device, trainer.eval_model
    trainer.evaluate()  # warm-up (worker start, cuDNN autotuning for these shapes)
    start, cpu = time.perf_counter(), time.process_time()
    metrics = trainer.evaluate()
    total, total_cpu = time.perf_counter() - start, time.process_time() - cpu

    was_training = model.training
    model.eval()
    forward = nms = forward_cpu = nms_cpu = 0.0
    predictions = {}
    autocast = torch.autocast(device.type, enabled=trainer.amp)
    with torch.no_grad():
        for batch in trainer.val_loader:
            images = batch.images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            with autocast:
                raw = model.inference_raw(images)
            _sync(device)
            t1, c1 = time.perf_counter(), time.process_time()
            per_image = non_max_suppression(raw, conf=cfg.eval.conf, iou=cfg.eval.iou, max_det=cfg.eval.max_det)
            for (boxes, scores, classes), meta, image_id in zip(per_image, batch.metas, batch.image_ids, strict=True):
                predictions[image_id] = Detections(meta.to_original(boxes.float().cpu().numpy()),
                                                   scores.float().cpu().numpy(), classes.cpu().numpy())
            t2, c2 = time.perf_counter(), time.process_time()
            forward, forward_cpu = forward + t1 - t0, forward_cpu + c1 - c0
            nms, nms_cpu = nms + t2 - t1, nms_cpu + c2 - c1
    model.train(was_training)
    t0, c0 = time.perf_counter(), time.process_time()
    backend = {"backend": cfg.eval.backend} if hasattr(cfg.eval, "backend") else {}
    evaluate(trainer.val_samples, predictions, list(cfg.data.classes), **backend)
    coco, coco_cpu = time.perf_counter() - t0, time.process_time() - c0
    dets = sum(len(d.scores) for d in predictions.values())
    return {"eval_total": total, "eval_model": forward, "eval_nms": nms, "eval_coco": coco,
            "eval_total_cpu": total_cpu, "eval_model_cpu": forward_cpu, "eval_nms_cpu": nms_cpu,
            "eval_coco_cpu": coco_cpu, "eval_input": tuple(batch.images.shape[2:]),
            "eval_detections": dets, "eval_images": len(trainer.val_samples), "eval_map": metrics["map"]}


def measure_loader(trainer, workers: int) -> dict[str, float]:
    from detectors.data import build_dataloader

    cfg = trainer.cfg
    loader = build_dataloader(cfg.data, trainer.train_samples, batch_size=cfg.train.batch_size, augment=True,
                              shuffle=True, seed=cfg.seed, workers=workers, pin_memory=trainer.use_cuda)
    start = time.perf_counter()
    stamps = []
    for _ in loader:
        stamps.append(time.perf_counter())
    first = stamps[0] - start
    steady = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)
    del loader
    return {"loader_first_batch": first, "loader_per_batch": steady, "loader_batches": len(stamps)}


class StepClock:
    """``after_step`` callback: wall time between consecutive steps of an epoch."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def after_step(self, trainer, step, items) -> None:
        self.stamps.append(time.perf_counter())


def measure_epochs(cfg, workdir: Path, epochs: int) -> dict[str, object]:
    from detectors.engine.trainer import Trainer

    clock = StepClock()
    trainer = Trainer(cfg, workdir / "epochs", callbacks=[clock])
    steps = trainer.steps_per_epoch
    start = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - start
    epoch_times = [m["time/epoch"] for m in trainer.history]
    # step_trainer: the last epoch's steps (steady state), first step of the epoch excluded.
    last = clock.stamps[-steps:]
    step_trainer = (last[-1] - last[0]) / max(len(last) - 1, 1)
    return {"epoch_times": epoch_times, "fit_wall": wall, "step_trainer": step_trainer,
            "train_steps_per_epoch": [m["time/train_steps"] for m in trainer.history],
            "eval_per_epoch": [m["time/eval"] for m in trainer.history],
            "steps_per_epoch": steps, "final_map": trainer.history[-1].get("map", float("nan"))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov5n")
    parser.add_argument("--img", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--images", type=int, default=200, help="synthetic images, 80%% train / 20%% val")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="CUDA only")
    parser.add_argument("--no-distill", action="store_true", help="L_gt only (MSSD and MAD off)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps for the on-device figures")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data-root", default=os.path.join(tempfile.gettempdir(), "mssd-bench-data"))
    parser.add_argument("--only", nargs="+", default=["step", "ops", "eval", "loader", "epochs"],
                        choices=["step", "ops", "eval", "loader", "epochs"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    cfg = build_config(args)
    device_name = (torch.cuda.get_device_name(0) if args.device.startswith("cuda") and torch.cuda.is_available()
                   else f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)")
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, {device_name}, "
          f"threads {args.threads}, {args.model} {args.img} px batch {args.batch}, "
          f"distill {'off' if args.no_distill else 'MSSD+MAD'}, AMP {args.amp and args.device != 'cpu'}, "
          f"set {args.set}, load {os.getloadavg()}")
    from detectors.engine.trainer import Trainer

    print(f"code: {Path(Trainer.__module__ and __import__('detectors').__file__).parent}")
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if {"step", "ops", "eval", "loader"} & set(args.only):
            trainer = Trainer(cfg, workdir / "probe")
            batches = _device_batches(trainer, 4)
            if "step" in args.only:
                results["step_on_device"], results["step_on_device_cpu"] = measure_step_on_device(
                    trainer, batches, args.steps)
                results["forward_backward"], results["forward_backward_cpu"] = measure_forward_backward(
                    trainer, batches, args.steps)
            if "ops" in args.only:
                results.update(count_ops(trainer, batches))
            if "eval" in args.only:
                results.update(measure_eval(trainer))
            if "loader" in args.only:
                results.update(measure_loader(trainer, args.workers))
            del trainer, batches
        if "epochs" in args.only:
            results.update(measure_epochs(cfg, workdir, args.epochs))
    for key, value in results.items():
        print(f"{key}: {value}")
    print("\n| what | figure |\n| --- | --- |")
    ms = lambda s: f"{1000 * s:.0f} ms"  # noqa: E731
    if "step_trainer" in results:
        print(f"| training step as the trainer runs it | {ms(results['step_trainer'])} |")
    if "step_on_device" in results:
        print(f"| same step, batches on the device, no per-step sync | {ms(results['step_on_device'])} "
              f"(CPU time {ms(results['step_on_device_cpu'])}) |")
        print(f"| forward + backward alone | {ms(results['forward_backward'])} "
              f"(CPU time {ms(results['forward_backward_cpu'])}) |")
    if "aten_total" in results:
        r = results
        print(f"| operator calls per step (aten, all levels) | {r['aten_total']:.0f} (step {r['aten_train_step']:.0f}"
              f" + optimizer/EMA {r['aten_optimizer_step']:.0f} + loss read {r['aten_flush']:.0f}); called from Python "
              f"{r['top_level']:.0f} (step {r['top_train_step']:.0f} + optimizer/EMA {r['top_optimizer_step']:.0f} + "
              f"loss read {r['top_flush']:.0f}); kernel launches {r['kernel_launches']:.0f} |")
    if "eval_total" in results:
        r = results
        print(f"| evaluation, {r['eval_images']} images ({r['eval_detections']} detections, last batch "
              f"{r['eval_input']}) | {r['eval_total']:.2f} s: model {r['eval_model']:.2f} s, NMS {r['eval_nms']:.2f} s, "
              f"COCO {r['eval_coco']:.2f} s (CPU time {r['eval_total_cpu']:.2f} s: {r['eval_model_cpu']:.2f} / "
              f"{r['eval_nms_cpu']:.2f} / {r['eval_coco_cpu']:.2f}) |")
    if "loader_per_batch" in results:
        print(f"| data loader, {args.workers} workers | {ms(results['loader_per_batch'])}/batch "
              f"(first batch {results['loader_first_batch']:.2f} s) |")
    if "epoch_times" in results:
        times = ", ".join(f"{t:.1f}" for t in results["epoch_times"])
        print(f"| epoch (train + eval), {results['steps_per_epoch']} steps | {times} s |")
    print(f"load at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
