"""Check our YOLOv3 / YOLOv4-CSP / YOLOv7 against WongKinYiu/yolov7's own code, by running both in one process.

    git clone https://github.com/WongKinYiu/yolov7 /tmp/upstream/yolov7        # or any copy of it
    .venv/bin/python benchmarks/verify_yolov7_parity.py --yolov7-src /tmp/upstream/yolov7
    .venv/bin/python benchmarks/verify_yolov7_parity.py --time          # also the CPU step time at 320 px

Their code is not a dependency and is never copied here: ``models.yolo`` / ``models.common`` /
``utils.general`` are imported at run time from ``--yolov7-src``. Imports missing from our environment
(``torchvision``, ``seaborn``, ``thop``, ``wandb``) are inert stubs; the stub's ``torchvision.ops.nms`` is a
plain greedy loop written below (their ``non_max_suppression`` calls it; nothing else of torchvision runs).

Checks, for each size (yolov3, yolov3_spp, yolov4_csp, yolov7_tiny, yolov7, yolov7x; exit status 1 if any
fails):

1. keys: their ``models.yolo.Model(cfg, nc=K)`` vs ours at K = 80 and 3: ordered state-dict keys and shapes
   (buffers included), the parameter total, every BatchNorm's eps / momentum, the activation of every
   layer (by class), the head's initial biases. The sha256 of the K = 3 listing is printed
   (``tests/detectors/yolov7/test_yolov7_architecture.py`` records it).
2. outputs: random BatchNorm statistics and implicit terms; their eval-mode output (``model(x)[0]``) vs our
   ``inference_raw`` on the same RGB [0, 1] images: boxes within 1e-2 px + 1e-4 |value|, probabilities
   within 1e-4; their ``non_max_suppression`` vs our ``predict`` (conf 0.001, IoU 0.65) at K = 3 and K = 1.
3. fuse: our ``fuse()`` vs our unfused model (1e-4 relative) and vs their ``Model.fuse()``; the deployed
   parameter count.
4. checkpoints: their model in their train.py's ``.pt`` format (``{'model': Model.half(), 'ema': ...,
   'optimizer': ...}``, pickling their classes) loads through our restricted reader into ours with every key;
   into a K = 80 model with only the class-dependent head tensors skipped; a checkpoint of another size is
   one ``WeightsError`` line naming the file and the first mismatching tensor, and leaves the model as it was.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import importlib.abc
import importlib.machinery
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
from torch import nn

from detectors.weights import WeightsError
from detectors.yolov7.model import YOLOv7Family
from detectors.yolov7.weights import load_weights

STUB_ROOTS = ("torchvision", "seaborn", "thop", "wandb")
CONFIGS = {
    "yolov3": "cfg/baseline/yolov3.yaml",
    "yolov3_spp": "cfg/baseline/yolov3-spp.yaml",
    "yolov4_csp": "cfg/baseline/yolov4-csp.yaml",
    "yolov7_tiny": "cfg/training/yolov7-tiny.yaml",
    "yolov7": "cfg/training/yolov7.yaml",
    "yolov7x": "cfg/training/yolov7x.yaml",
}
BOX_ABS, BOX_REL, PROB_TOL, FUSE_REL = 1e-2, 1e-4, 1e-4, 1e-4


# ---------------------------------------------------------------------------------------- import theirs
def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thr: float) -> torch.Tensor:
    """Indices kept by plain greedy NMS, by descending score (what torchvision.ops.nms returns)."""
    order = torch.argsort(scores, descending=True, stable=True)
    keep: list[int] = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    for rank, i in enumerate(order.tolist()):
        if suppressed[rank]:
            continue
        keep.append(i)
        rest = order[rank + 1:]
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = w * h
        suppressed[rank + 1:] |= inter / (area[i] + area[rest] - inter) > iou_thr
    return torch.tensor(keep, dtype=torch.long)


class _StubModule(types.ModuleType):
    def __getattr__(self, item: str):
        if item.startswith("__"):
            raise AttributeError(item)
        if item == "nms":
            return greedy_nms
        return type(item, (), {"__init__": lambda self, *a, **k: None, "__call__": lambda self, *a, **k: None})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in STUB_ROOTS:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module) -> None:
        pass


def import_upstream(src: Path):
    sys.meta_path.insert(0, _StubFinder())
    sys.path.insert(0, str(src))
    import models.yolo as their_yolo  # noqa: E402  (their package, from --yolov7-src)
    import utils.general as their_general  # noqa: E402

    return their_yolo, their_general


def build_theirs(their_yolo, src: Path, size: str, nc: int) -> nn.Module:
    import contextlib
    import io
    import logging

    logging.disable(logging.INFO)
    with contextlib.redirect_stdout(io.StringIO()):  # their Model prints its summary
        return their_yolo.Model(str(src / CONFIGS[size]), nc=nc)


# ---------------------------------------------------------------------------------------- checks
class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            self.failed.append(what)


def listing(model: nn.Module) -> str:
    return "\n".join(f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items())


def activations(model: nn.Module) -> list[str]:
    kinds = (nn.SiLU, nn.LeakyReLU, nn.ReLU, nn.Mish, nn.Hardswish, nn.Identity)
    return [f"{type(m).__name__}{getattr(m, 'negative_slope', '')}" for m in model.modules() if isinstance(m, kinds)]


def batch_norms(model: nn.Module) -> list[tuple[float, float]]:
    return [(m.eps, m.momentum) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def randomise(model: nn.Module, seed: int) -> None:
    """BatchNorm statistics and affine terms, implicit terms: away from their init, so that eps, the folds
    and the order of the implicit ops show in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.5)
            elif name.endswith("implicit"):
                t.add_(torch.randn(t.shape, generator=g) * 0.05)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)


def compare_raw(theirs: torch.Tensor, ours: torch.Tensor) -> tuple[bool, str]:
    box_err = (theirs[..., :4] - ours[..., :4]).abs()
    box_ok = bool((box_err <= BOX_ABS + BOX_REL * theirs[..., :4].abs()).all())
    prob_err = (theirs[..., 4:] - ours[..., 4:]).abs().max().item()
    return box_ok and prob_err <= PROB_TOL, (f"boxes max |diff| {box_err.max().item():.2e} px, probabilities "
                                             f"{prob_err:.2e}, bit-equal {torch.equal(theirs, ours)}")


def compare_nms(theirs: list[torch.Tensor], ours, label: str, checks: Checks) -> None:
    counts = [(len(t), len(o)) for t, o in zip(theirs, ours, strict=True)]
    same_count = all(a == b for a, b in counts)
    ok = same_count
    worst = 0.0
    if same_count:
        for t, o in zip(theirs, ours, strict=True):
            if not len(t):
                continue
            ok &= torch.equal(t[:, 5].long(), o.classes.long())
            worst = max(worst, (t[:, :4] - o.boxes).abs().max().item(), (t[:, 4] - o.scores).abs().max().item())
    ok &= worst <= BOX_ABS
    checks.check(ok, f"{label}: their non_max_suppression vs our predict: detections per image {counts}, "
                     f"classes equal, max |diff| boxes/scores {worst:.2e}")


def check_size(size: str, their_yolo, their_general, src: Path, checks: Checks, img: int) -> None:
    print(f"== {size}")
    for nc in (80, 3):
        torch.manual_seed(0)
        theirs = build_theirs(their_yolo, src, size, nc)
        ours = YOLOv7Family(size, nc)
        same = listing(theirs) == listing(ours)
        n_theirs = sum(p.numel() for p in theirs.parameters())
        n_ours = sum(p.numel() for p in ours.parameters())
        checks.check(same, f"K={nc}: state-dict keys and shapes in order ({len(theirs.state_dict())} tensors)")
        checks.check(n_theirs == n_ours, f"K={nc}: parameters {n_ours:,} (theirs {n_theirs:,})")
        if nc == 3:
            digest = hashlib.sha256(listing(ours).encode()).hexdigest()
            print(f"  sha256 of the K=3 key listing: {digest}")
    checks.check(batch_norms(theirs) == batch_norms(ours), "BatchNorm eps/momentum of every BatchNorm2d "
                 f"({sorted(set(batch_norms(ours)))})")
    checks.check(activations(theirs) == activations(ours), f"activations in order ({sorted(set(activations(ours)))})")
    # Their _initialize_biases adds log(8 / (640 / s)^2) to the objectness and log(0.6 / (nc - 0.99)) to the
    # class biases of a default-initialised conv (uniform within 1 / sqrt(fan_in)): the means per level match
    # the prior within that spread, in both models.
    head_t, head_o = theirs.model[-1], ours.detect
    worst = 0.0
    for head in (head_t, head_o):
        for conv, s in zip(head.m, (8, 16, 32), strict=True):
            b = conv.bias.detach().view(head_o.na, -1)
            spread = 1 / conv.weight[0].numel() ** 0.5
            worst = max(worst, (b[:, 4].mean() - math.log(8 / (640 / s) ** 2)).abs().item() / spread,
                        (b[:, 5:].mean() - math.log(0.6 / (nc - 0.99))).abs().item() / spread)
    checks.check(worst < 1.0, f"head bias prior as their _initialize_biases (worst mean offset {worst:.2f} of "
                              "the init spread)")

    # outputs
    randomise(theirs, 1)
    ours.load_state_dict(theirs.state_dict())
    theirs.eval()
    ours.eval()
    images = torch.rand(2, 3, img, img, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out_t = theirs(images.clone())[0]
        out_o = ours.inference_raw(images)
    ok, detail = compare_raw(out_t, out_o)
    checks.check(ok and out_t.shape == out_o.shape, f"eval output {tuple(out_o.shape)}: {detail}")
    with torch.no_grad():
        nms_t = their_general.non_max_suppression(out_t.clone(), conf_thres=0.001, iou_thres=0.65)
        nms_o = ours.predict(images, conf=0.001, iou=0.65, max_det=300)
    compare_nms(nms_t, nms_o, "K=3", checks)

    # fuse (on copies: fusing changes the modules)
    with torch.no_grad():
        fused_o = copy.deepcopy(ours).fuse()
        out_fo = fused_o.inference_raw(images)
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            fused_t = copy.deepcopy(theirs).fuse()
        out_ft = fused_t(images.clone())[0]
    rel = ((out_fo - out_o).abs() / out_o.abs().clamp(min=1.0)).max().item()
    checks.check(rel <= FUSE_REL, f"fused vs unfused: max relative diff {rel:.2e}")
    ok, detail = compare_raw(out_ft, out_fo)
    checks.check(ok, f"fused vs their fuse(): {detail}")
    n_fused = sum(p.numel() for p in fused_o.parameters())
    n_their_fused = sum(p.numel() for p in fused_t.parameters())
    implicit = sum(p.numel() for n, p in fused_t.named_parameters() if ".ia." in n or ".im." in n)
    print(f"  deployed parameters: ours {n_fused:,}; theirs after fuse() {n_their_fused:,} "
          f"({n_their_fused - implicit:,} without the folded implicit terms they keep)")
    checks.check(n_fused == n_their_fused - implicit, "deployed count = theirs without the folded implicit terms")

    # checkpoints in their train.py format
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "last.pt"
        theirs.train()
        opt = torch.optim.SGD(theirs.parameters(), lr=0.01, momentum=0.937, nesterov=True)
        theirs.nc, theirs.hyp, theirs.gr, theirs.names = 3, {"box": 0.05}, 1.0, ["Car", "Pedestrian", "Cyclist"]
        torch.save({"epoch": 0, "best_fitness": None, "training_results": "",
                    "model": copy.deepcopy(theirs).half(), "ema": copy.deepcopy(theirs).half(), "updates": 1,
                    "optimizer": opt.state_dict(), "wandb_id": None}, path)
        fresh = YOLOv7Family(size, 3)
        report = load_weights(fresh, path)
        expected = {k: v.half().float() if v.is_floating_point() else v for k, v in theirs.state_dict().items()}
        same = all(torch.equal(fresh.state_dict()[k], v) for k, v in expected.items())
        checks.check(same and not report.skipped, f"their .pt loads (restricted reader): {report.summary()}")
        other_k = YOLOv7Family(size, 80)
        report = load_weights(other_k, path)
        checks.check(bool(report.skipped) and all(".m." in k or ".im." in k for k in report.skipped),
                     f"into a K=80 model: skipped only {report.skipped}")
        other = "yolov7" if size != "yolov7" else "yolov7x"
        wrong = YOLOv7Family(other, 3)
        before = {k: v.clone() for k, v in wrong.state_dict().items()}
        try:
            load_weights(wrong, path)
            checks.check(False, f"a {size} checkpoint into {other}: no error")
        except WeightsError as exc:
            untouched = all(torch.equal(before[k], v) for k, v in wrong.state_dict().items())
            checks.check("\n" not in str(exc) and str(path) in str(exc) and untouched,
                         f"a {size} checkpoint into {other}: {exc} (model untouched: {untouched})")


def check_single_class(their_yolo, their_general, src: Path, checks: Checks, img: int) -> None:
    """K = 1: their NMS scores a box by objectness alone (the class probability is ignored)."""
    print("== yolov7_tiny, K=1 (NMS)")
    torch.manual_seed(0)
    theirs = build_theirs(their_yolo, src, "yolov7_tiny", 1)
    randomise(theirs, 3)
    ours = YOLOv7Family("yolov7_tiny", 1)
    ours.load_state_dict(theirs.state_dict())
    theirs.eval()
    ours.eval()
    images = torch.rand(2, 3, img, img, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        nms_t = their_general.non_max_suppression(theirs(images.clone())[0], conf_thres=0.001, iou_thres=0.65)
        nms_o = ours.predict(images, conf=0.001, iou=0.65, max_det=300)
    compare_nms(nms_t, nms_o, "K=1", checks)


def step_times(sizes: list[str], img: int = 320, batch: int = 8, steps: int = 3) -> None:
    """Forward + backward at ``img`` px, batch ``batch``: the median of ``steps`` after one warm-up step.
    The backward is of the sum of squares of the raw head maps (a stand-in for L_gt, whose cost is small
    beside the network's)."""
    print(f"== CPU step time, {img} px, batch {batch}, {torch.get_num_threads()} thread(s), "
          f"load {os.getloadavg()[0]:.1f}")
    for size in sizes:
        model = YOLOv7Family(size, 3).train()
        images = torch.rand(batch, 3, img, img)
        times = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            out = model(images)
            sum(m.float().pow(2).mean() for m in out.head).backward()
            model.zero_grad(set_to_none=True)
            if i:
                times.append(time.perf_counter() - t0)
        print(f"  {size}: {statistics.median(times):.2f} s/step (median of {steps})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--yolov7-src", type=Path, default=Path("/tmp/upstream/yolov7"))
    parser.add_argument("--sizes", nargs="*", default=list(CONFIGS))
    parser.add_argument("--img", type=int, default=320, help="image size of the output checks")
    parser.add_argument("--time", action="store_true", help="also the CPU step time at 320 px")
    args = parser.parse_args()
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
          f"{platform.machine()}, {torch.get_num_threads()} thread(s), load {os.getloadavg()[0]:.1f}")
    their_yolo, their_general = import_upstream(args.yolov7_src)
    checks = Checks()
    for size in args.sizes:
        check_size(size, their_yolo, their_general, args.yolov7_src, checks, args.img)
    check_single_class(their_yolo, their_general, args.yolov7_src, checks, args.img)
    if args.time:
        step_times(args.sizes)
    print(f"{len(checks.failed)} check(s) failed" + (": " + "; ".join(checks.failed) if checks.failed else ""))
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
