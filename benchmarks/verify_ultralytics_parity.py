"""Check our YOLOv5 and its loss against Ultralytics' own code (PyPI ``yolov5`` 7.0.14), once, by running both.

    .venv/bin/pip install --no-deps --target /tmp/y5site yolov5-7.0.14-py37.py38.py39.py310-none-any.whl
    .venv/bin/python benchmarks/verify_ultralytics_parity.py --site /tmp/y5site
    .venv/bin/python benchmarks/verify_ultralytics_parity.py --site /tmp/y5site --skip-timing   # parity only
    .venv/bin/python benchmarks/verify_ultralytics_parity.py --site /tmp/y5site --skip-parity   # timing only

Ultralytics' code is AGPL and is not a dependency of this project: it is imported at run time from the
folder given by ``--site`` (never copied here). Their optional or heavy imports that are missing from our
environment (``torchvision``, ``pkg_resources``, ``ultralytics``, ``psutil``, ...) are replaced by inert
stub modules; nothing that the checks below execute goes through them (NMS is not used: raw outputs are
compared). Their ``yolov5/__init__.py`` (which imports their inference helpers) is bypassed.

For each of yolov5n / yolov5s and each class count:

1. model: their ``DetectionModel(yolov5?.yaml, nc=...)`` vs ``build_detector``: state-dict keys, shapes,
   buffers (persistent and not) and BatchNorm settings; their (randomly perturbed, so BatchNorm statistics
   matter) state dict loaded into ours with ``strict=True``; max |diff| of the training-mode per-level maps
   and of the eval-mode decoded ``(B, N, 5 + nc)`` tensor on seeded random images.
2. loss: their ``ComputeLoss`` (``hyp.scratch-low.yaml`` scaled as their ``train.py`` does) vs our
   ``YOLOv5Loss`` on the same head maps and random targets: items, total, and gradients w.r.t. the maps.
3. timing (``--skip-timing`` to skip): one training step (forward + loss + backward + grad clipping +
   Nesterov SGD step), theirs and ours alternating each repetition in one process, medians.

Exits non-zero if any comparison exceeds its tolerance.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.abc
import importlib.machinery
import importlib.util
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import yaml

from detectors import build_detector
from detectors.config import GtLossConfig
from detectors.engine.schedule import build_sgd
from detectors.yolov5.loss import YOLOv5Loss

# Imports of their package we never exercise; stubbed only when not installed.
STUB_ROOTS = ("torchvision", "pkg_resources", "ultralytics", "psutil", "seaborn", "IPython", "huggingface_hub",
              "fire", "sahi", "boto3", "git")
OUTPUT_TOL = 1e-4  # float32, ~60 conv layers: relative to values of order 1..640 (pixels)
LOSS_TOL = 1e-6


# --------------------------------------------------------------------------------------------- import theirs
class _AnyMeta(type):
    """Stub classes: every attribute or item is another stub class, so they can also be subclassed."""

    def __getattr__(cls, item: str):
        if item.startswith("__"):
            raise AttributeError(item)
        return _stub_class(f"{cls.__name__}.{item}")

    def __getitem__(cls, item):
        return _stub_class(f"{cls.__name__}[]")


class _Anything(metaclass=_AnyMeta):
    """Inert placeholder: accepts any arguments; its attributes are placeholders too."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __getattr__(self, item: str):
        if item.startswith("__"):
            raise AttributeError(item)
        return _stub_class(f"{type(self).__name__}.{item}")

    def __call__(self, *args, **kwargs):
        return _Anything()


def _stub_class(name: str) -> type:
    return _AnyMeta(name, (_Anything,), {})


class _StubModule(types.ModuleType):
    def __getattr__(self, item: str):
        if item.startswith("__"):
            raise AttributeError(item)
        return _stub_class(f"{self.__name__}.{item}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots: set[str]) -> None:
        self.roots = roots

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module) -> None:
        if module.__name__ == "pkg_resources":  # their check_version() really compares versions
            from packaging.version import parse

            module.parse_version = parse
        if module.__name__ == "torchvision":
            module.__version__ = "0.0.0+stub"


def import_ultralytics(site: Path):
    """(DetectionModel, ComputeLoss, smart_optimizer, package dir, stubbed roots) from their package."""
    package_dir = site / "yolov5"
    if not (package_dir / "models" / "yolo.py").is_file():
        sys.exit(f"--site {site}: no yolov5/models/yolo.py there; install the wheel first:\n"
                 f"  .venv/bin/pip install --no-deps --target {site} yolov5-7.0.14-py37.py38.py39.py310-none-any.whl")
    sys.path.insert(0, str(site))
    missing = {root for root in STUB_ROOTS if importlib.util.find_spec(root) is None}
    sys.meta_path.insert(0, _StubFinder(missing))
    # Bypass yolov5/__init__.py (it imports their hub/inference helpers): a bare package object.
    package = types.ModuleType("yolov5")
    package.__path__ = [str(package_dir)]
    package.__version__ = "?"
    sys.modules["yolov5"] = package
    try:
        from yolov5.models.yolo import DetectionModel
        from yolov5.utils.loss import ComputeLoss
        from yolov5.utils.torch_utils import smart_optimizer
    except ImportError as exc:
        sys.exit(f"cannot import Ultralytics' yolov5 from {site}: {exc}")
    version = "unknown"
    for dist in site.glob("yolov5-*.dist-info"):
        version = dist.name.removeprefix("yolov5-").removesuffix(".dist-info")
    return DetectionModel, ComputeLoss, smart_optimizer, package_dir, sorted(missing), version


# -------------------------------------------------------------------------------------------------- helpers
def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise AssertionError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def perturb_(model: torch.nn.Module, seed: int) -> None:
    """Random BatchNorm affine parameters and running statistics, so eval mode is not a near-identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.num_batches_tracked.fill_(7)


def random_targets(batch: int, per_image: int, nc: int, seed: int) -> torch.Tensor:
    """[image, class, cx, cy, w, h] normalised; includes border-hugging centres, tiny and huge boxes, duplicates."""
    gen = torch.Generator().manual_seed(seed)
    m = batch * per_image
    t = torch.cat(
        (
            torch.arange(batch).repeat_interleave(per_image)[:, None].float(),
            torch.randint(0, nc, (m, 1), generator=gen).float(),
            torch.rand(m, 2, generator=gen) * 0.96 + 0.02,
            torch.rand(m, 2, generator=gen) ** 2 * 0.7 + 0.005,
        ),
        dim=1,
    )
    extra = torch.tensor(
        [
            [0, 0, 0.001, 0.999, 0.02, 0.03],  # centre at the image corner
            [0, nc - 1, 0.5, 0.5, 0.99, 0.99],  # as large as the image
            [0, 0, 0.3, 0.3, 0.002, 0.002],  # tiny: matches no anchor on coarse levels
        ]
    )
    if batch > 1:  # two targets in the same cell and anchor: the later write wins in both
        extra = torch.cat((extra, torch.tensor([[1, 0, 0.4, 0.4, 0.1, 0.1], [1, nc - 1, 0.401, 0.402, 0.11, 0.09]])))
    return torch.cat((t, extra))


def scaled_hyp(package_dir: Path, nc: int, nl: int, imgsz: int) -> dict:
    """hyp.scratch-low.yaml with YOLOv5 v7.0 train.py's scaling (label smoothing 0)."""
    hyp = yaml.safe_load((package_dir / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    hyp["box"] *= 3 / nl
    hyp["cls"] *= nc / 80 * 3 / nl
    hyp["obj"] *= (imgsz / 640) ** 2 * 3 / nl
    hyp["label_smoothing"] = 0.0
    return hyp


# ------------------------------------------------------------------------------------------------- checks
def check_model(DetectionModel, package_dir: Path, name: str, nc: int, sizes: list[int], seed: int, log) -> tuple:
    torch.manual_seed(seed)
    theirs = DetectionModel(str(package_dir / "models" / f"{name}.yaml"), ch=3, nc=nc)
    ours = build_detector(name, num_classes=nc)
    perturb_(theirs, seed + 1)
    their_sd, our_sd = theirs.state_dict(), ours.state_dict()
    ok = True

    keys_t, keys_o = list(their_sd), list(our_sd)
    if keys_t != keys_o:
        ok = False
        log(f"  state_dict keys DIFFER: only theirs {sorted(set(keys_t) - set(keys_o))[:8]}, "
            f"only ours {sorted(set(keys_o) - set(keys_t))[:8]}, same set but other order: {set(keys_t) == set(keys_o)}")
    bad_shapes = [k for k in keys_t if k in our_sd and their_sd[k].shape != our_sd[k].shape]
    ok &= not bad_shapes
    # Buffers: persistent ones are in the state dict; non-persistent ones (our stride) are not.
    bufs_t = {k for k, _ in theirs.named_buffers()}
    bufs_o = {k for k, _ in ours.named_buffers()}
    nonpersistent_o = sorted(bufs_o - set(our_sd))
    nonpersistent_t = sorted(bufs_t - set(their_sd))
    bn_t = [(m.eps, m.momentum) for m in theirs.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    bn_o = [(m.eps, m.momentum) for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    ok &= bn_t == bn_o
    anchors_equal = max_diff(theirs.model[-1].anchors, ours.detect.anchors)
    strides_equal = theirs.stride.tolist() == ours.stride.tolist() == ours.detect.stride.tolist()
    ok &= anchors_equal == 0 and strides_equal
    log(f"  state_dict: {len(keys_t)} keys theirs / {len(keys_o)} ours, same order {keys_t == keys_o}, "
        f"shape mismatches {len(bad_shapes)}; buffers theirs {len(bufs_t)} (non-persistent {nonpersistent_t}), "
        f"ours {len(bufs_o)} (non-persistent {nonpersistent_o}); BatchNorm eps/momentum equal {bn_t == bn_o} "
        f"({bn_t[0] if bn_t else None}); anchors max|diff| {anchors_equal:.1e}; strides equal {strides_equal}")

    ours.load_state_dict(their_sd, strict=True)
    snapshot = copy.deepcopy(their_sd)
    worst = {"train": 0.0, "eval": 0.0}
    for img in sizes:
        gen = torch.Generator().manual_seed(seed + img)
        images = torch.rand(2, 3, img, img, generator=gen)
        theirs.load_state_dict(snapshot)
        ours.load_state_dict(snapshot)
        theirs.train()
        ours.train()
        with torch.no_grad():
            maps_t = theirs(images)
            maps_o = ours(images).head
        d_train = max(max_diff(a, b) for a, b in zip(maps_t, maps_o, strict=True))
        # Training forward updated BatchNorm running stats on both sides alike; check, then go to eval.
        d_running = max(max_diff(a, b) for (k, a), b in zip(theirs.state_dict().items(), ours.state_dict().values(),
                                                            strict=True) if "running" in k)
        theirs.eval()
        ours.eval()
        with torch.no_grad():
            decoded_t, maps_t_eval = theirs(images)
            decoded_o = ours.inference_raw(images)
        d_eval = max_diff(decoded_t, decoded_o)
        d_eval_xy = max_diff(decoded_t[..., :4], decoded_o[..., :4])
        d_eval_scores = max_diff(decoded_t[..., 4:], decoded_o[..., 4:])
        worst["train"] = max(worst["train"], d_train)
        worst["eval"] = max(worst["eval"], d_eval)
        ok &= d_train < OUTPUT_TOL and d_eval < OUTPUT_TOL and d_running < OUTPUT_TOL
        log(f"  {img}px: train maps max|diff| {d_train:.2e} (|max| {max(float(m.abs().max()) for m in maps_t):.1f}); "
            f"BN running stats after train step {d_running:.2e}; eval decoded {tuple(decoded_t.shape)} max|diff| "
            f"{d_eval:.2e} (xywh px {d_eval_xy:.2e}, scores {d_eval_scores:.2e})")
    theirs.load_state_dict(snapshot)
    ours.load_state_dict(snapshot)
    return ok, theirs, ours, worst


def check_loss(ComputeLoss, package_dir: Path, theirs, ours, nc: int, img: int, seeds: list[int], log) -> tuple:
    ok = True
    nl = theirs.model[-1].nl
    theirs.hyp = scaled_hyp(package_dir, nc, nl, img)
    their_loss = ComputeLoss(theirs)
    our_loss = YOLOv5Loss(ours, img_size=img, gains=GtLossConfig())
    worst = {"items": 0.0, "total": 0.0, "grad": 0.0}
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        batch = 4
        images = torch.rand(batch, 3, img, img, generator=gen)
        theirs.train()
        with torch.no_grad():
            scale = 1.0 + 3.0 * (seed % 2)  # odd seeds: saturated logits, large boxes, negative CIoU
            base = [m.detach() * scale for m in theirs(images)]
        targets = random_targets(batch, per_image=2 + seed % 9, nc=nc, seed=seed)
        maps_t = [m.clone().requires_grad_(True) for m in base]
        maps_o = [m.clone().requires_grad_(True) for m in base]
        total_t, items_t = their_loss(maps_t, targets.clone())
        total_o, items_o = our_loss(maps_o, targets.clone())
        grads_t = torch.autograd.grad(total_t.sum(), maps_t)
        grads_o = torch.autograd.grad(total_o, maps_o)
        ours_items = torch.stack([items_o["box"], items_o["obj"], items_o["cls"]])
        d_items = max_diff(items_t, ours_items)
        d_total = max_diff(total_t.reshape(()), total_o)
        d_grad = max(max_diff(a, b) for a, b in zip(grads_t, grads_o, strict=True))
        gmax = max(float(g.abs().max()) for g in grads_t)
        for k, v in (("items", d_items), ("total", d_total), ("grad", d_grad)):
            worst[k] = max(worst[k], v)
        ok &= d_items < LOSS_TOL and d_total < LOSS_TOL * batch * 10 and d_grad < LOSS_TOL * max(gmax, 1e-3)
        log(f"  loss seed {seed}, maps x{scale:.0f}, {len(targets)} targets: theirs box/obj/cls "
            f"{items_t[0]:.6f}/{items_t[1]:.6f}/{items_t[2]:.6f} total {float(total_t):.6f}; ours "
            f"{float(items_o['box']):.6f}/{float(items_o['obj']):.6f}/{float(items_o['cls']):.6f} total "
            f"{float(total_o):.6f}; max|diff| items {d_items:.1e} total {d_total:.1e} grad {d_grad:.1e} "
            f"(|grad| max {gmax:.1e})")
    return ok, worst


# ------------------------------------------------------------------------------------------------- timing
def timing(DetectionModel, ComputeLoss, smart_optimizer, package_dir: Path, name: str, nc: int, img: int,
           batch: int, warmup: int, reps: int, log) -> dict:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, img, img, generator=gen)
    targets = random_targets(batch, per_image=6, nc=nc, seed=1)[: batch * 6]
    hyp = scaled_hyp(package_dir, nc, 3, img)

    torch.manual_seed(0)
    theirs = DetectionModel(str(package_dir / "models" / f"{name}.yaml"), ch=3, nc=nc).train()
    theirs.hyp = hyp
    their_loss = ComputeLoss(theirs)
    their_opt = smart_optimizer(theirs, "SGD", hyp["lr0"], hyp["momentum"], hyp["weight_decay"] * batch / 64)

    def their_step() -> None:  # their train.py: forward, loss, backward, clip 10, step, zero_grad
        pred = theirs(images)
        loss, _ = their_loss(pred, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm=10.0)
        their_opt.step()
        their_opt.zero_grad()

    def make_ours(channels_last: bool):
        model = build_detector(name, num_classes=nc).train()
        model.load_state_dict(theirs.state_dict())
        x = images
        if channels_last:  # our trainer's layout
            model.to(memory_format=torch.channels_last)
            x = images.contiguous(memory_format=torch.channels_last)
        loss_fn = YOLOv5Loss(model, img_size=img, gains=GtLossConfig())
        opt = build_sgd([model], lr=hyp["lr0"], momentum=hyp["momentum"], weight_decay=hyp["weight_decay"] * batch / 64)
        params = [p for g in opt.param_groups for p in g["params"]]

        def step() -> None:
            total, _ = loss_fn(model(x).head, targets)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, max_norm=10.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    steps = {"ultralytics": their_step, "ours (channels_last)": make_ours(True), "ours (NCHW)": make_ours(False)}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for rep in range(warmup + reps):
        for label, step in steps.items():  # interleaved: theirs, ours, ours, theirs, ...
            start = time.perf_counter()
            step()
            if rep >= warmup:
                times[label].append(time.perf_counter() - start)
    result = {}
    for label, ts in times.items():
        med = statistics.median(ts)
        result[label] = med
        log(f"  {name:<8} {label:<22} median {med:7.3f} s/step  min {min(ts):7.3f}  max {max(ts):7.3f}  "
            f"{batch / med:6.1f} img/s")
    base = result["ultralytics"]
    for label in list(result)[1:]:
        # Paired: each repetition's ratio against the Ultralytics step run just before it (drifting load).
        paired = statistics.median(o / t for o, t in zip(times[label], times["ultralytics"], strict=True))
        log(f"  {name:<8} {label:<22} time ratio ours/theirs: of medians {result[label] / base:.3f}, "
            f"median of paired reps {paired:.3f} (speed-up x{1 / paired:.2f})")
    return result


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=Path("/tmp/y5site"), help="folder holding their yolov5 package")
    parser.add_argument("--models", nargs="+", default=["yolov5n", "yolov5s"])
    parser.add_argument("--classes", nargs="+", type=int, default=[3, 80])
    parser.add_argument("--sizes", nargs="+", type=int, default=[160, 320])
    parser.add_argument("--loss-seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-parity", action="store_true", help="timing only")
    parser.add_argument("--img", type=int, default=320, help="timing input size")
    parser.add_argument("--batch", type=int, default=8, help="timing batch size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--timing-classes", type=int, default=3)
    args = parser.parse_args(argv)

    DetectionModel, ComputeLoss, smart_optimizer, package_dir, stubbed, version = import_ultralytics(args.site)
    import logging

    logging.getLogger("yolov5").setLevel(logging.ERROR)  # their per-layer model summary
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; torch {torch.__version__}; Ultralytics yolov5 "
        f"{version} from {args.site} (stubbed imports: {', '.join(stubbed) or 'none'}); "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, threads {args.threads}")
    all_ok = True
    for name in [] if args.skip_parity else args.models:
        for nc in args.classes:
            log(f"{name} nc={nc}")
            ok_m, theirs, ours, worst_m = check_model(DetectionModel, package_dir, name, nc, args.sizes, 0, log)
            ok_l, worst_l = check_loss(ComputeLoss, package_dir, theirs, ours, nc, max(args.sizes), args.loss_seeds, log)
            all_ok &= ok_m and ok_l
            log(f"  => {name} nc={nc}: model {'MATCH' if ok_m else 'MISMATCH'} (train {worst_m['train']:.1e}, eval "
                f"{worst_m['eval']:.1e}); loss {'MATCH' if ok_l else 'MISMATCH'} (items {worst_l['items']:.1e}, "
                f"total {worst_l['total']:.1e}, grad {worst_l['grad']:.1e})")

    if not args.skip_timing:
        log(f"timing: {args.img}px, batch {args.batch}, {args.threads} threads, nc={args.timing_classes}, "
            f"{args.warmup} warmup + {args.reps} reps, interleaved; load before {os.getloadavg()}")
        for name in args.models:
            timing(DetectionModel, ComputeLoss, smart_optimizer, package_dir, name, args.timing_classes, args.img,
                   args.batch, args.warmup, args.reps, log)
        log(f"load after {os.getloadavg()}")
    if not args.skip_parity:
        log("ALL MATCH" if all_ok else "MISMATCH FOUND")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
