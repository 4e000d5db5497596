"""What each comparator costs per training step: the frozen teacher's forward and the method's own terms.

For a student / teacher pair (default YOLOv5n student, YOLOv5s teacher: the CPU budget of issue 12; the
paper's pair is YOLOv5s / YOLOv5m, ``--student yolov5s --teacher yolov5m``), one training step (student
forward, L_gt, the method's terms with the teacher's forward, eq 7, backward) is timed for every
``losses.method``, interleaved round by round so that load changes hit every method alike; the teacher's
forward alone and the student's step without any method are timed in the same rounds. Memory, measured
deterministically rather than by a noisy RSS: the bytes autograd saves for the backward (activations the
step holds; the teacher under no_grad saves none) and the teacher's parameter bytes (resident while
training). The teacher's weights are random but go through the real loading path (a saved state dict).

    flock /tmp/bench.lock .venv/bin/python benchmarks/bench_comparators.py [--student yolov5n]
        [--teacher yolov5s] [--img 320] [--batch 4] [--rounds 5] [--device cpu] [--threads 1]

Prints a markdown table (median step time, ratio to ``none``, teacher forward share, saved-activation and
teacher-parameter MiB) and the load average before and after.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.config import parse_config  # noqa: E402
from detectors.distillation import build_distillation_for  # noqa: E402
from detectors.zoo import build_detector, family_of  # noqa: E402

METHODS = ("none", "mssd", "kd", "fgfi", "defeat")
CLASSES = ["Car", "Pedestrian", "Cyclist"]


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0] if Path("/proc/loadavg").exists() else "n/a"


def saved_bytes(step) -> int:
    """Bytes of the tensors autograd saves for the backward during ``step()``."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(backward=False)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="yolov5n")
    parser.add_argument("--teacher", default="yolov5s")
    parser.add_argument("--img", type=int, default=320)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 on a shared, loaded CPU avoids oversubscription")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    methods = args.methods.split(",")
    load_before = loadavg()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        teacher_path = Path(tmp) / "teacher.pt"
        torch.save(build_detector(args.teacher, num_classes=len(CLASSES)).state_dict(), teacher_path)
        steps, teacher_forward, info = {}, None, {}
        for method in methods:
            cfg = parse_config({"detector": {"name": args.student}, "data": {"classes": CLASSES, "img_size": args.img},
                                "losses": {"method": method},
                                "distill": {"teacher": {"name": args.teacher, "weights": str(teacher_path)}}})
            model = build_detector(args.student, num_classes=len(CLASSES)).to(device).train()
            dist = build_distillation_for(cfg, model).to(device).train()
            loss_fn = family_of(args.student).build_loss(model, cfg)
            images = torch.rand(args.batch, 3, args.img, args.img, device=device)
            targets = torch.tensor([[i, i % 3, 0.3 + 0.1 * (i % 4), 0.5, 0.2, 0.3] for i in range(args.batch)],
                                   device=device)

            def step(backward: bool = True, model=model, dist=dist, loss_fn=loss_fn, images=images, targets=targets):
                output = model(images)
                gt_total, _ = loss_fn(output, targets)
                terms = dist(output, targets, args.img, images=images)
                loss = dist.total_loss(gt_total, terms, args.batch)
                if backward:
                    loss.backward()
                    model.zero_grad(set_to_none=True)
                    dist.zero_grad(set_to_none=True)

            steps[method] = step
            info[method] = {"saved": saved_bytes(step), "teacher_params": 0, "times": []}
            teacher = getattr(dist, "teacher", None)  # MSSD's Distillation has none
            if teacher is not None:
                info[method]["teacher_params"] = sum(p.numel() * p.element_size() for p in teacher.parameters())
                teacher_forward = teacher_forward or (lambda teacher=teacher, images=images: teacher(images))
        teacher_times: list[float] = []
        for method in methods:  # warm-up
            steps[method]()
        for _ in range(args.rounds):
            for method in methods:
                sync(device)
                started = time.perf_counter()
                steps[method]()
                sync(device)
                info[method]["times"].append(time.perf_counter() - started)
            if teacher_forward is not None:
                started = time.perf_counter()
                teacher_forward()
                sync(device)
                teacher_times.append(time.perf_counter() - started)

    base = statistics.median(info["none"]["times"]) if "none" in info else None
    teacher_s = statistics.median(teacher_times) if teacher_times else None
    print(f"student {args.student}, teacher {args.teacher}, {args.img}x{args.img}, batch {args.batch}, "
          f"{args.rounds} interleaved rounds, {device}, torch threads {torch.get_num_threads()}")
    if teacher_s is not None:
        print(f"teacher forward alone (no_grad, eval): {teacher_s * 1000:.0f} ms (median)")
    print("| method | step ms (median) | x none | teacher forward share | saved for backward MiB | teacher params MiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for method in methods:
        median = statistics.median(info[method]["times"])
        share = f"{teacher_s / median:.0%}" if teacher_s is not None and info[method]["teacher_params"] else "-"
        ratio = f"{median / base:.2f}" if base else "-"
        print(f"| {method} | {median * 1000:.0f} | {ratio} | {share} | {info[method]['saved'] / 2**20:.1f} | "
              f"{info[method]['teacher_params'] / 2**20:.1f} |")
    print(f"load average (1 min): {load_before} before, {loadavg()} after")
    return 0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    raise SystemExit(main())
