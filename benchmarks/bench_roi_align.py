"""RoIAlign cost: our pure-torch ``detectors.ops.roi_align`` against torchvision's compiled CPU kernel.

    flock /tmp/bench.lock /tmp/tv/bin/python benchmarks/bench_roi_align.py [--rois 1000] [--repeats 7] [--threads 1]

Runs in a peer interpreter that has a working torchvision (``python -m venv /tmp/tv && /tmp/tv/bin/pip install
torch torchvision``; on this machine ``/tmp/y5venv/bin/python``); without torchvision only our time is printed.
Torchvision is the reference being timed, never a dependency of the project.

Setting: ``--rois`` RoIs pooled to 7 x 7 from one 256-channel map, a stride-8 FPN level of a 2-image batch at
800 x 1216 px ((2, 256, 100, 152)), boxes 16-400 px anywhere on the image (some crossing the border), spatial
scale 1/8; sampling_ratio 2 (torchvision's Faster R-CNN pooler) and -1 (adaptive, ceil(roi / 7) per RoI).
Forward only, no autograd, and forward + backward with respect to the map. The two implementations run
interleaved, repeat after repeat, and the medians are printed with their ratio and the machine load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.ops.roi_align import roi_align  # noqa: E402

try:
    import torchvision.ops

    tv_roi_align = torchvision.ops.roi_align
except Exception:  # no (working) torchvision in this interpreter: time ours alone
    tv_roi_align = None


def synthetic_rois(num: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(num, 2, generator=g) * 384 + 16
    xy = torch.rand(num, 2, generator=g) * torch.tensor([1216.0, 800.0]) - wh / 4
    batch = torch.randint(0, 2, (num, 1), generator=g).float()
    return torch.cat([batch, xy, xy + wh], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)  # torchvision's CPU kernel is single-threaded
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(1)
    feature = torch.randn(2, 256, 100, 152, generator=g).to(device)
    rois = synthetic_rois(args.rois).to(device)
    print(
        f"torch {torch.__version__}, torchvision {getattr(torchvision, '__version__', None) if tv_roi_align else None}, "
        f"{torch.get_num_threads()} threads, device {device}, map {tuple(feature.shape)}, {args.rois} RoIs, 7x7"
    )
    print(f"load before: {os.getloadavg()}")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for sampling_ratio in (2, -1):
        for backward in (False, True):
            impls = {"ours": roi_align}
            if tv_roi_align is not None:
                impls["torchvision"] = tv_roi_align
            times: dict[str, list[float]] = {name: [] for name in impls}
            for repeat in range(args.repeats + 1):  # the first round warms up
                for name, fn in impls.items():
                    x = feature.clone().requires_grad_(backward)
                    sync()
                    t0 = time.perf_counter()
                    out = fn(x, rois, 7, 0.125, sampling_ratio)
                    if backward:
                        out.sum().backward()
                    sync()
                    if repeat:
                        times[name].append(time.perf_counter() - t0)
            med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
            line = f"sampling_ratio {sampling_ratio:>2} {'fwd+bwd' if backward else 'forward'}: " + ", ".join(
                f"{name} {ms:.1f} ms" for name, ms in med.items()
            )
            if "torchvision" in med:
                line += f"  (ours / torchvision = {med['ours'] / med['torchvision']:.2f})"
            print(line)
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
