"""Check our YOLOv3 / YOLOv4-CSP / YOLOv7 loss against WongKinYiu/yolov7's ``utils/loss.py``, in one process.

    .venv/bin/python benchmarks/verify_yolov7_loss_parity.py --yolov7-src /tmp/upstream/yolov7

Their code is imported at run time from ``--yolov7-src`` with the stubs of ``verify_yolov7_parity.py``
(torchvision, seaborn, thop, wandb); nothing of theirs is copied here. For each size, their ``Model`` (K = 3,
training mode, random BatchNorm statistics) gives the raw maps of random RGB images at ``--img`` px; on the
same maps, for every target case (random, an image without targets, tiny boxes, large boxes, a crowded image
with duplicates, a batch without any target) and both losses (``ComputeLoss``: ``ota: false``;
``ComputeLossOTA``: ``ota: true``):

- the items (box, obj, cls and their sum) within 1e-5 relative of theirs, and ``loss * batch``;
- the gradient of the loss with respect to every map within 1e-5 of its largest magnitude;
- the assignment: per level, (image, anchor, row, column) and the target box, in upstream's order.

Variants on one size: label smoothing 0.1, focal gamma 1.5, positive weights 2 / 0.5, K = 1 (no class
term). Upstream's OTA creates its empty result on ``cuda:0``; for the batch without targets that device is
mapped to the CPU while their code runs. Last, the tiny crowded OTA case that
``tests/detectors/yolov7/test_yolov7_loss.py`` pins is printed (positions and items) and checked. ``--time``:
the CPU time of both losses on YOLOv7's maps (batch 8), interleaved. Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import platform
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verify_yolov7_parity import Checks, build_theirs, import_upstream, randomise  # noqa: E402

from detectors.yolov7.gt_config import YOLOv7GtConfig  # noqa: E402
from detectors.yolov7.loss import YOLOv7RepoLoss  # noqa: E402

REL = 1e-5


def target_cases(batch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Normalised [image, class, cx, cy, w, h] rows."""
    def boxes(n: int, image: int, lo: float, hi: float, centre=(0.5, 0.5), spread=0.4) -> torch.Tensor:
        wh = lo + (hi - lo) * torch.rand(n, 2, generator=g)
        cxy = torch.tensor(centre) + spread * (torch.rand(n, 2, generator=g) - 0.5) * 2
        cxy = torch.minimum(torch.maximum(cxy, wh / 2), 1 - wh / 2)
        cls = torch.randint(0, 3, (n, 1), generator=g).float()
        return torch.cat((torch.full((n, 1), float(image)), cls, cxy, wh), 1)

    random = torch.cat([boxes(3 + 2 * i, i, 0.03, 0.5) for i in range(batch)])
    empty_image = torch.cat([boxes(4, i, 0.05, 0.4) for i in range(batch) if i != 1])
    tiny = torch.cat([boxes(6, i, 2 / 320, 6 / 320) for i in range(batch)])
    large = torch.cat([boxes(2, i, 0.6, 1.0) for i in range(batch)])
    crowd = boxes(30, 0, 0.05, 0.2, centre=(0.4, 0.6), spread=0.1)
    crowded = torch.cat([crowd, crowd[:5], boxes(3, 2, 0.1, 0.3)])  # duplicates share cells and candidates
    return {"random": random, "empty image": empty_image, "tiny boxes": tiny, "large boxes": large,
            "crowded": crowded, "no target": torch.zeros(0, 6)}


@contextlib.contextmanager
def cuda_to_cpu():
    """Their ComputeLossOTA builds its empty result with device='cuda:0'; run that on the CPU."""
    original = torch.tensor

    def tensor(*args, **kwargs):
        if str(kwargs.get("device", "")).startswith("cuda") and not torch.cuda.is_available():
            kwargs["device"] = "cpu"
        return original(*args, **kwargs)

    torch.tensor = tensor
    try:
        yield
    finally:
        torch.tensor = original


def their_hyp(src: Path, nc: int, img: int, **changes: float) -> dict:
    hyp = yaml.safe_load((src / "data/hyp.scratch.p5.yaml").read_text())
    hyp.update(changes)
    nl = 3  # train.py's scaling
    hyp["box"] *= 3. / nl
    hyp["cls"] *= nc / 80. * 3. / nl
    hyp["obj"] *= (img / 640) ** 2 * 3. / nl
    hyp.setdefault("label_smoothing", 0.0)
    return hyp


def run_theirs(their_loss, their_model, ota: bool, maps, targets, images):
    maps = [m.detach().clone().requires_grad_(True) for m in maps]
    fn = their_loss.ComputeLossOTA(their_model) if ota else their_loss.ComputeLoss(their_model)
    with cuda_to_cpu():
        total, items = fn(maps, targets, images) if ota else fn(maps, targets)
        assignment = _their_assignment(fn, ota, maps, targets, images)
    total.backward()
    return total.detach(), items, [m.grad for m in maps], assignment


def _their_assignment(fn, ota, maps, targets, images):
    """Per level (image, anchor, gj, gi, target box in grid units of the level, relative to the cell)."""
    out = []
    if ota:
        bs, as_, gjs, gis, tgts, _ = fn.build_targets(maps, targets, images)
        for i, p in enumerate(maps):
            gain = torch.tensor(p.shape)[[3, 2, 3, 2]]
            box = tgts[i][:, 2:6] * gain if len(bs[i]) else torch.zeros(0, 4)
            if len(bs[i]):
                box[:, :2] -= torch.stack([gis[i], gjs[i]], dim=1)
            out.append((bs[i], as_[i], gjs[i], gis[i], box))
    else:
        _, tbox, indices, _ = fn.build_targets(maps, targets)
        out = [(*indices[i], tbox[i]) for i in range(len(maps))]
    return out


def run_ours(detect, gt, img, maps, targets):
    maps = [m.detach().clone().requires_grad_(True) for m in maps]
    loss = YOLOv7RepoLoss(SimpleNamespace(detect=detect), img_size=img, gains=gt)
    total, items = loss(maps, targets)
    assignment = [(t.image, t.anchor, t.gj, t.gi, t.box) for t in loss.assign(maps, targets)]
    total.backward()
    return total.detach(), items, [m.grad for m in maps], assignment


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12)) if b.numel() else 0.0


def compare(checks: Checks, label: str, theirs, ours) -> None:
    t_total, t_items, t_grads, t_assign = theirs
    o_total, o_items, o_grads, o_assign = ours
    mine = torch.stack([o_items["box"], o_items["obj"], o_items["cls"]])
    mine = torch.cat((mine, mine.sum()[None]))
    worst_item = max(abs(float(a) - float(b)) / max(abs(float(b)), 1e-12) for a, b in zip(mine, t_items, strict=True))
    worst_grad = max(rel(o, t) for o, t in zip(o_grads, t_grads, strict=True))
    same_assign = all(
        len(ot[0]) == len(tt[0]) and all(torch.equal(o.long(), t.long()) for o, t in zip(ot[:4], tt[:4], strict=True))
        and (len(ot[0]) == 0 or torch.allclose(ot[4], tt[4].float(), rtol=0, atol=1e-5))
        for ot, tt in zip(o_assign, t_assign, strict=True))
    positions = sum(len(t[0]) for t in t_assign)
    checks.check(worst_item <= REL and rel(o_total, t_total) <= REL and worst_grad <= REL and same_assign,
                 f"{label}: items rel {worst_item:.1e} (box {float(t_items[0]):.6g}, obj {float(t_items[1]):.6g}, "
                 f"cls {float(t_items[2]):.6g}), loss*bs rel {rel(o_total, t_total):.1e}, grads rel {worst_grad:.1e}, "
                 f"assignment {'equal' if same_assign else 'DIFFERS'} ({positions} positions)")


def check_size(checks, their_yolo, their_loss, src, size, img, batch, seed, variants) -> None:
    torch.manual_seed(seed)
    model = build_theirs(their_yolo, src, size, nc=3)
    randomise(model, seed)
    model.train()
    images = torch.rand(batch, 3, img, img, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        maps = [m.detach() for m in model(images)]
    cases = target_cases(batch, torch.Generator().manual_seed(seed + 1))
    for changes in variants:
        nc = changes.pop("nc", 3)
        their = model
        if nc != 3:
            their = build_theirs(their_yolo, src, size, nc=nc)
            randomise(their, seed)
            their.train()
            with torch.no_grad():
                maps_nc = [m.detach() for m in their(images)]
        else:
            maps_nc = maps
        their.hyp, their.gr, their.nc = their_hyp(src, nc, img, **changes), 1.0, nc
        names = {"label_smoothing": "label_smoothing", "fl_gamma": "fl_gamma", "cls_pw": "cls_pw", "obj_pw": "obj_pw"}
        for ota in (False, True):
            gt = YOLOv7GtConfig(ota=ota, **{names[k]: v for k, v in changes.items()})
            variant = ", ".join([f"{k} {v}" for k, v in changes.items()] + ([f"K {nc}"] if nc != 3 else []))
            for case, targets in cases.items():
                targets = targets.clone()
                if nc == 1:
                    targets[:, 1] = 0
                label = f"{size} {'ComputeLossOTA' if ota else 'ComputeLoss'}{' (' + variant + ')' if variant else ''}, {case}"
                theirs = run_theirs(their_loss, their, ota, maps_nc, targets, images)
                ours = run_ours(their.model[-1], gt, img, maps_nc, targets)
                compare(checks, label, theirs, ours)


def tiny_crowded_case() -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """(maps, targets, anchors in grid units, strides) of the case the test pins: 64 px, 2 images, K = 3,
    YOLOv7's anchors, seeded maps; image 0 crowded (six boxes, one twice), image 1 one box."""
    g = torch.Generator().manual_seed(7)
    maps = [torch.randn(2, 3, s, s, 8, generator=g) for s in (8, 4, 2)]
    targets = torch.tensor([
        [0, 0, 0.45, 0.55, 0.20, 0.30], [0, 1, 0.50, 0.50, 0.30, 0.20], [0, 2, 0.40, 0.60, 0.15, 0.15],
        [0, 0, 0.55, 0.45, 0.35, 0.35], [0, 1, 0.45, 0.55, 0.20, 0.30], [0, 2, 0.60, 0.60, 0.10, 0.25],
        [0, 0, 0.50, 0.55, 0.25, 0.20], [1, 2, 0.30, 0.30, 0.40, 0.50]])
    strides = torch.tensor([8.0, 16.0, 32.0])
    anchors = torch.tensor([[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]],
                           dtype=torch.float32).view(3, 3, 2) / strides.view(3, 1, 1)
    return maps, targets, anchors, strides


class _TheirHeadHolder(torch.nn.Module):
    """What their ComputeLossOTA reads of a model: parameters (a device), hyp, gr and model[-1]."""

    def __init__(self, anchors, strides, nc, hyp) -> None:
        super().__init__()
        detect = torch.nn.Module()
        detect.nl, detect.na, detect.nc, detect.anchors, detect.stride = 3, 3, nc, anchors, strides
        self.model = torch.nn.ModuleList([torch.nn.Linear(1, 1), detect])
        self.hyp, self.gr = hyp, 1.0


def record(checks: Checks, their_loss, src: Path) -> None:
    """Print upstream's OTA positions and items on the tiny crowded case, and check ours equals them."""
    maps, targets, anchors, strides = tiny_crowded_case()
    holder = _TheirHeadHolder(anchors, strides, 3, their_hyp(src, 3, 64))
    images = torch.zeros(2, 3, 64, 64)
    theirs = run_theirs(their_loss, holder, True, maps, targets, images)
    ours = run_ours(holder.model[-1], YOLOv7GtConfig(), 64, maps, targets)
    print("tiny crowded OTA case (tests/detectors/yolov7/test_yolov7_loss.py):")
    for level, (b, a, gj, gi, _) in enumerate(theirs[3]):
        print(f"  level {level}: {list(zip(b.tolist(), a.tolist(), gj.tolist(), gi.tolist(), strict=True))}")
    print(f"  items box {float(theirs[1][0]):.8g} obj {float(theirs[1][1]):.8g} cls {float(theirs[1][2]):.8g}")
    compare(checks, "tiny crowded OTA case", theirs, ours)


def time_losses(their_yolo, their_loss, src: Path, size: str, img: int, batch: int, repeats: int = 7) -> None:
    """Median seconds of loss + backward on the same maps (their code vs ours), interleaved, 1 thread."""
    import statistics
    import time

    model = build_theirs(their_yolo, src, size, nc=3)
    randomise(model, 0)
    model.train()
    model.hyp, model.gr, model.nc = their_hyp(src, 3, img), 1.0, 3
    images = torch.rand(batch, 3, img, img, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps = [m.detach() for m in model(images)]
    g = torch.Generator().manual_seed(1)
    targets = torch.cat([target_cases(batch, g)["random"]])
    for ota in (False, True):
        gt = YOLOv7GtConfig(ota=ota)
        times: dict[str, list[float]] = {"theirs": [], "ours": []}
        theirs = their_loss.ComputeLossOTA(model) if ota else their_loss.ComputeLoss(model)
        ours = YOLOv7RepoLoss(SimpleNamespace(detect=model.model[-1]), img_size=img, gains=gt)
        for _ in range(repeats):
            for who, fn in (("theirs", theirs), ("ours", ours)):
                leaves = [m.clone().requires_grad_(True) for m in maps]
                start = time.perf_counter()
                total = fn(leaves, targets, images)[0] if (ota and who == "theirs") else fn(leaves, targets)[0]
                total.backward()
                times[who].append(time.perf_counter() - start)
        t, o = statistics.median(times["theirs"]), statistics.median(times["ours"])
        print(f"  time {size} {'ComputeLossOTA' if ota else 'ComputeLoss'} ({len(targets)} targets, batch {batch}, "
              f"{img} px; loss + backward): theirs {t * 1e3:.1f} ms, ours {o * 1e3:.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yolov7-src", type=Path, default=Path("/tmp/upstream/yolov7"))
    parser.add_argument("--img", type=int, default=320)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", nargs="+", default=["yolov3", "yolov4_csp", "yolov7_tiny", "yolov7"])
    parser.add_argument("--time", action="store_true", help="also time both losses on yolov7 maps, batch 8")
    args = parser.parse_args()
    torch.set_num_threads(1)
    their_yolo, _ = import_upstream(args.yolov7_src)
    import utils.loss as their_loss  # noqa: E402  (their package, from --yolov7-src)

    print(f"yolov7 loss parity: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, torch "
          f"{torch.__version__}, {platform.processor() or platform.machine()}, {args.img} px, batch {args.batch}, "
          f"float32 CPU, source {args.yolov7_src}")
    checks = Checks()
    for i, size in enumerate(args.sizes):
        variants = [{}]
        if i == 0:
            variants += [{"label_smoothing": 0.1}, {"fl_gamma": 1.5}, {"cls_pw": 2.0, "obj_pw": 0.5}, {"nc": 1}]
        print(f"{size}:")
        check_size(checks, their_yolo, their_loss, args.yolov7_src, size, args.img, args.batch, args.seed,
                   copy.deepcopy(variants))
    record(checks, their_loss, args.yolov7_src)
    if args.time:
        time_losses(their_yolo, their_loss, args.yolov7_src, "yolov7", args.img, 8)
    print(f"{'ALL OK' if not checks.failed else f'{len(checks.failed)} FAILED'}")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
