"""Check our YOLOv6 against meituan/YOLOv6 release 0.2.1's own code, by running both in one process.

    git -C /work/.mirror/meituan+YOLOv6/repo archive 0.2.1 | tar -x -C /tmp/yolov6-0.2.1   # or any copy of 0.2.1
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/verify_yolov6_parity.py --src /tmp/yolov6-0.2.1

Their code is not a dependency and is never copied here: it is imported at run time from ``--src`` (a folder
holding their ``yolov6`` package and ``configs/``). Imports missing from our environment (``cv2``, ``addict``,
``thop``, ...) are inert stubs; ``torchvision`` is a stub whose ``ops.nms`` is a plain greedy loop written
below (their ``non_max_suppression`` calls it). Their configs are read with ``runpy`` into attribute dicts
(``training_mode`` "repvgg" unless the file sets it, as their tools/train.py does).

Checks (exit status 1 if any fails):

1. keys: every size (n, t, s, m, l) at 80 and 3 classes, their ``Model(config, channels=3, num_classes=K)`` vs
   ours: ordered state-dict keys and shapes (sha256 of the listing printed: tests/detectors/yolov6 records
   it), parameter totals in training form and after their ``switch_to_deploy``, BatchNorm eps / momentum.
2. outputs: random BatchNorm statistics and prediction weights, eval mode: their output vs our
   ``inference_raw`` (B, N, 5 + K); ours after ``fuse()`` vs unfused; their ``non_max_suppression`` vs our
   ``predict`` (conf 0.03, iou 0.65).
3. checkpoints: their trainer's checkpoint dict (``model`` and ``ema`` pickled whole in half precision,
   optimizer state, epoch), and the same after their ``strip_optimizer``, load through our restricted reader
   with strict keys; an 80-class file into a 3-class model skips only ``detect.cls_preds.*``; a yolov6m file
   into yolov6s is one ``WeightsError`` line naming the file and the first mismatching tensor.
4. loss: training mode, random targets (an image without objects, tiny and image-sized boxes), epoch 0
   (ATSS) and epoch 10 (TAL), for n (SIoU), s (GIoU) and m (DFL): their ``ComputeLoss`` items vs ours, and
   the gradients of the total w.r.t. every parameter.
5. ``--checks steptime`` (a timing, not a check): seconds per forward + L_gt + backward at 320 px, batch 8,
   ours and theirs interleaved, for n and s.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import platform
import runpy
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

from detectors.weights import WeightsError
from detectors.yolov6.family import YOLOv6GtConfig
from detectors.yolov6.loss import YOLOv6Loss
from detectors.yolov6.model import SIZES, YOLOv6
from detectors.yolov6.weights import load_weights

STUB_ROOTS = ("cv2", "addict", "thop", "pycocotools", "torchvision", "tensorboard", "tqdm")
OUTPUT_TOL_ABS, OUTPUT_TOL_REL = 1e-2, 1e-4  # boxes: px + relative; scores: absolute 1e-4
SCORE_TOL = 1e-4
FUSE_TOL = 1e-4  # relative to the largest box value
LOSS_TOL = 1e-5  # relative
GRAD_TOL = 1e-4  # relative to the largest gradient of the tensor (floored, see check_loss)
failures: list[str] = []
CHECKS = ("keys", "outputs", "checkpoints", "loss", "steptime")


def check(ok: bool, what: str) -> None:
    print(("  ok   " if ok else "  FAIL ") + what)
    if not ok:
        failures.append(what)


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
        return type(item, (), {"__init__": lambda self, *a, **k: None, "__call__": lambda self, *a, **k: None})


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
        if module.__name__ == "cv2":
            module.setNumThreads = lambda n: None
        if module.__name__ == "torchvision.ops":
            module.nms = greedy_nms


class AttrDict(dict):
    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def attr_dict(d: dict) -> AttrDict:
    return AttrDict({k: attr_dict(v) if isinstance(v, dict) else v for k, v in d.items()})


def import_theirs(src: Path):
    if not (src / "yolov6" / "models" / "effidehead.py").is_file():
        sys.exit(f"--src {src}: no yolov6/models/effidehead.py there (see this script's docstring)")
    sys.path.insert(0, str(src))
    stubbed = {r for r in STUB_ROOTS if r == "torchvision" or importlib.util.find_spec(r) is None}
    sys.meta_path.insert(0, _StubFinder(stubbed))
    import torchvision  # noqa: F401
    import torchvision.ops  # noqa: F401

    sys.modules["torchvision"].ops = sys.modules["torchvision.ops"]
    from yolov6.models import loss as their_loss
    from yolov6.models.yolo import Model
    from yolov6.utils import checkpoint as their_checkpoint
    from yolov6.utils.nms import non_max_suppression

    return Model, their_loss, their_checkpoint, non_max_suppression


def their_config(src: Path, size: str) -> AttrDict:
    values = runpy.run_path(str(src / "configs" / f"{size}.py"))
    cfg = attr_dict({k: v for k, v in values.items() if k in ("model", "solver", "data_aug", "training_mode")})
    cfg.setdefault("training_mode", "repvgg")  # their tools/train.py's default
    return cfg


def key_listing(model: torch.nn.Module) -> str:
    return "\n".join(f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items())


def randomise(model: torch.nn.Module, seed: int, *, class_bias: float | None = None) -> None:
    """BatchNorm statistics and affine params, and the prediction convs, away from their initialisation;
    ``class_bias`` replaces the class prior (-4.6) so that scores spread over [0, 1] (NMS has boxes to keep)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k.endswith("running_var"):
                v.copy_(torch.rand(v.shape, generator=g) * 1.5 + 0.5)
            elif k.endswith("running_mean"):
                v.copy_(torch.randn(v.shape, generator=g) * 0.1)
            elif k.endswith(("bn.weight", "rbr_identity.weight")):
                v.copy_(torch.rand(v.shape, generator=g) + 0.5)
            elif "preds" in k and k.endswith("weight"):
                v.copy_(torch.randn(v.shape, generator=g) * 0.01)
            elif "cls_preds" in k and class_bias is not None:
                v.fill_(class_bias)


def deploy(model: torch.nn.Module) -> torch.nn.Module:
    for m in model.modules():
        if hasattr(m, "switch_to_deploy"):
            m.switch_to_deploy()
    return model


# ---------------------------------------------------------------------------------------- checks
def check_keys(Model, src: Path) -> None:
    print("1. keys, counts, BatchNorm settings")
    for size in SIZES:
        for nc in (80, 3):
            theirs = Model(their_config(src, size), channels=3, num_classes=nc)
            ours = YOLOv6(size, nc)
            listing = key_listing(theirs)
            sha = hashlib.sha256(key_listing(ours).encode()).hexdigest()
            n_theirs, n_ours = (sum(p.numel() for p in m.parameters()) for m in (theirs, ours))
            bn = [(m.eps, m.momentum) for m in theirs.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            bn_ours = [(m.eps, m.momentum) for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            deployed = sum(p.numel() for p in deploy(theirs).parameters())
            check(listing == key_listing(ours) and n_theirs == n_ours and bn == bn_ours,
                  f"{size} nc={nc}: {len(ours.state_dict())} keys equal, params {n_ours:,} (theirs {n_theirs:,}), "
                  f"after switch_to_deploy {deployed:,}, BN eps/momentum equal; key sha256 {sha}")


def check_outputs(Model, nms, src: Path) -> None:
    print("2. eval outputs, fuse, predict")
    for i, size in enumerate(SIZES):
        theirs = Model(their_config(src, size), channels=3, num_classes=3)
        randomise(theirs, i, class_bias=-1.0)
        ours = YOLOv6(size, 3)
        ours.load_state_dict(theirs.state_dict())
        theirs.eval()
        ours.eval()
        images = torch.rand(2, 3, 256, 320, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            ref = theirs(images)[0]
            out = ours.inference_raw(images)
            box_diff = (out[..., :4] - ref[..., :4]).abs()
            box_ok = bool((box_diff <= OUTPUT_TOL_ABS + OUTPUT_TOL_REL * ref[..., :4].abs()).all())
            score_err = (out[..., 4:] - ref[..., 4:]).abs().max().item()
            check(out.shape == ref.shape and box_ok and score_err <= SCORE_TOL,
                  f"{size}: inference_raw {tuple(out.shape)} vs theirs: boxes max |diff| {box_diff.max().item():.2e} px "
                  f"(tolerance 1e-2 px + 1e-4 |v|), scores max |diff| {score_err:.2e}")
            their_dets = nms(ref.clone(), 0.03, 0.65, max_det=300)
            our_dets = ours.predict(images, conf=0.03, iou=0.65, max_det=300)
            same = all(len(d) == len(o) and torch.allclose(d[:, :4], o.boxes, atol=1e-2)
                       and torch.allclose(d[:, 4], o.scores, atol=1e-4) and torch.equal(d[:, 5].long(), o.classes)
                       for d, o in zip(their_dets, our_dets, strict=True))
            check(same, f"{size}: predict = their non_max_suppression ({[len(d) for d in their_dets]} boxes)")
            count = sum(p.numel() for p in ours.parameters())
            fused = copy.deepcopy(ours).fuse()
            out_fused = fused.inference_raw(images)
            rel = ((out_fused - out).abs().max() / out[..., :4].abs().max()).item()
            check(rel <= FUSE_TOL, f"{size}: fuse() {count:,} -> {sum(p.numel() for p in fused.parameters()):,} "
                                   f"params, outputs max |diff| / max |box| {rel:.1e}")


def check_checkpoints(Model, their_checkpoint, src: Path) -> None:
    print("3. their checkpoints through our restricted reader")
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for size, nc in (("yolov6s", 80), ("yolov6s", 3), ("yolov6m", 3)):
            model = Model(their_config(src, size), channels=3, num_classes=nc)
            randomise(model, nc)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            model(torch.rand(1, 3, 64, 64))[0][1].sum().backward()
            optimizer.step()
            ckpt = {"model": copy.deepcopy(model).half(), "ema": copy.deepcopy(model).half(), "updates": 7,
                    "optimizer": optimizer.state_dict(), "epoch": 3}
            folder = Path(tmp) / f"{size}-{nc}"
            their_checkpoint.save_checkpoint(ckpt, False, str(folder), model_name="last_ckpt")
            files[size, nc] = (folder / "last_ckpt.pt", model)
        path, model = files["yolov6s", 3]
        ours = YOLOv6("yolov6s", 3)
        report = load_weights(ours, path)
        expected = {k: v.half().float() for k, v in model.state_dict().items()}
        exact = all(torch.equal(ours.state_dict()[k], v) for k, v in expected.items() if v.is_floating_point())
        check(exact and not report.skipped, f"yolov6s last_ckpt.pt ({report.source}): {len(report.loaded)} tensors, "
                                            "equal to their model in half precision")
        # Their strip_optimizer reloads the file with torch.load's default, weights_only since torch 2.6, which
        # refuses their pickled classes; these are files this script just wrote, so it reads them unrestricted.
        plain_load = torch.load
        torch.load = functools.partial(plain_load, weights_only=False)
        try:
            their_checkpoint.strip_optimizer(str(path.parent), 3)
        finally:
            torch.load = plain_load
        ours = YOLOv6("yolov6s", 3)
        report = load_weights(ours, path)
        check(len(report.loaded) == len(ours.state_dict()), f"stripped checkpoint: {len(report.loaded)} tensors")
        ours = YOLOv6("yolov6s", 3)
        report = load_weights(ours, files["yolov6s", 80][0])
        check(sorted(report.skipped) == sorted(f"detect.cls_preds.{i}.{p}" for i in range(3) for p in ("weight", "bias")),
              f"80-class file into 3 classes: skipped {report.skipped}")
        ours = YOLOv6("yolov6s", 3)
        before = copy.deepcopy(ours.state_dict())
        try:
            load_weights(ours, files["yolov6m", 3][0])
            check(False, "yolov6m file into yolov6s: no error")
        except WeightsError as exc:
            untouched = all(torch.equal(before[k], v) for k, v in ours.state_dict().items())
            check("\n" not in str(exc) and untouched, f"yolov6m file into yolov6s: WeightsError: {exc}")


def targets_for(batch: int, seed: int) -> torch.Tensor:
    """Rows [image, class, cx, cy, w, h] normalised; image ``batch - 1`` has none; tiny and full-size boxes."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for image in range(batch - 1):
        n = 3 + image * 4
        wh = torch.rand(n, 2, generator=g) * 0.5 + 0.02
        xy = wh / 2 + torch.rand(n, 2, generator=g) * (1 - wh)
        cls = torch.randint(0, 3, (n, 1), generator=g).float()
        rows.append(torch.cat((torch.full((n, 1), float(image)), cls, xy, wh), 1))
    rows.append(torch.tensor([[0, 1, 0.5, 0.5, 1.0, 1.0], [0, 2, 0.3, 0.4, 0.01, 0.015]]))
    return torch.cat(rows)


def their_assignment(their_loss, compute, outputs, targets: torch.Tensor, epoch: int):
    """Their assigner's (labels, boxes, scores, fg) on their own inputs: the lines of their ComputeLoss.__call__
    before the loss, with their functions."""
    feats, pred_scores, pred_distri = outputs
    anchors, points, sizes, strides = their_loss.generate_anchors(feats, compute.fpn_strides, compute.grid_cell_size,
                                                                  compute.grid_cell_offset, device=feats[0].device)
    scale = torch.full((1, 4), compute.ori_img_size).type_as(pred_scores)
    padded = compute.preprocess(targets, pred_scores.shape[0], scale)
    labels, boxes = padded[:, :, :1], padded[:, :, 1:]
    mask_gt = (boxes.sum(-1, keepdim=True) > 0).float()
    pred_boxes = compute.bbox_decode(points / strides, pred_distri).detach() * strides
    if epoch < compute.warmup_epoch:
        return compute.warmup_assigner(anchors, sizes, labels, boxes, mask_gt, pred_boxes)
    return compute.formal_assigner(pred_scores.detach(), pred_boxes, points, labels, boxes, mask_gt)


def check_loss(Model, their_loss, src: Path) -> None:
    print("4. loss items and gradients (ATSS at epoch 0, TAL at epoch 10)")
    for size in ("yolov6n", "yolov6s", "yolov6m"):
        cfg = their_config(src, size)
        spec = SIZES[size]
        for epoch in (0, 10):
            theirs = Model(cfg, channels=3, num_classes=3)
            randomise(theirs, 5)
            ours = YOLOv6(size, 3)
            ours.load_state_dict(theirs.state_dict())
            theirs.train()
            ours.train()
            images = torch.rand(3, 3, 320, 320, generator=torch.Generator().manual_seed(epoch))
            targets = targets_for(3, epoch + 1)
            compute = their_loss.ComputeLoss(num_classes=3, ori_img_size=320, use_dfl=cfg.model.head.use_dfl,
                                             reg_max=cfg.model.head.reg_max, iou_type=cfg.model.head.iou_type)
            their_out = theirs(images)[0]
            with torch.no_grad():
                ref = their_assignment(their_loss, compute, their_out, targets.clone(), epoch)
            total, items = compute(their_out, targets.clone(), epoch, 1)
            total.backward()
            loss = YOLOv6Loss(3, ours.strides, reg_max=spec.reg_max, iou_type=spec.iou_type, settings=YOLOv6GtConfig())
            loss.start_epoch(epoch + 1, 20)
            our_out = ours(images)
            assigned = loss.assign(our_out.head, targets.clone())
            same_assignment = (torch.equal(assigned.fg, ref[3].bool()) and torch.equal(assigned.labels[assigned.fg],
                               ref[0].long()[assigned.fg]) and torch.equal(assigned.boxes, ref[1])
                               and torch.allclose(assigned.scores.double(), ref[2].double(), rtol=1e-6, atol=1e-9))
            l_gt, ours_items = loss(our_out, targets.clone())
            l_gt.backward()
            mine = torch.stack([ours_items[k] for k in ("iou", "dfl", "cls")])
            rel = ((mine.double() - items.double()).abs() / items.double().abs().clamp(min=1e-12)).max().item()
            rel_total = abs(l_gt.item() - total.item()) / abs(total.item())
            grads = {name: p.grad for name, p in theirs.named_parameters() if p.grad is not None}
            # A tensor whose true gradient is 0 (a bias right before a train-mode BatchNorm: the transposed
            # convs' here, ~1e-8 of float noise on both sides) cannot be compared relatively: it passes when
            # ours is below 1e-6 of the largest gradient too.
            floor = 1e-6 * max(g.abs().max().item() for g in grads.values())
            worst, zero = 0.0, 0
            for name, p in ours.named_parameters():
                if not p.requires_grad:
                    continue  # BottleRep.alpha: in no group of their optimiser, so frozen here (blocks.py)
                if (name in grads) != (p.grad is not None):
                    worst = float("inf")  # a gradient on one side only
                elif name in grads and grads[name].abs().max() < floor:
                    zero += 1
                    worst = worst if p.grad.abs().max() < floor else float("inf")
                elif name in grads:
                    ref = grads[name]
                    worst = max(worst, ((p.grad - ref).abs().max() / ref.abs().max()).item())
            check(rel <= LOSS_TOL and rel_total <= LOSS_TOL and worst <= GRAD_TOL and same_assignment,
                  f"{size} epoch {epoch} ({loss.assigner}, {spec.iou_type}, reg_max {spec.reg_max}): items "
                  f"iou/dfl/cls {[round(v, 6) for v in mine.tolist()]} vs theirs {[round(v, 6) for v in items.tolist()]}"
                  f" (rel {rel:.1e}, total {rel_total:.1e}), grads max rel {worst:.1e} ({zero} tensors ~0 on both sides); "
                  f"assignment {'identical' if same_assignment else 'DIFFERS'} ({int(assigned.fg.sum())} foreground)")


def check_step_time(Model, their_loss, src: Path, sizes=("yolov6n", "yolov6s"), steps: int = 5) -> None:
    """Not a check: seconds per training step (forward + L_gt + backward), 320 px, batch 8, 6 boxes per
    image, TAL, ours and theirs interleaved in this process (median of ``steps`` after one untimed)."""
    print("5. step time, 320 px, batch 8 (forward + L_gt + backward), interleaved with theirs")
    for size in sizes:
        cfg, spec = their_config(src, size), SIZES[size]
        theirs = Model(cfg, channels=3, num_classes=3).train()
        ours = YOLOv6(size, 3).train()
        ours.load_state_dict(theirs.state_dict())
        g = torch.Generator().manual_seed(0)
        images = torch.rand(8, 3, 320, 320, generator=g)
        targets = torch.cat((torch.arange(8).repeat_interleave(6)[:, None].float(),
                             torch.randint(0, 3, (48, 1), generator=g).float(),
                             torch.rand(48, 2, generator=g) * 0.6 + 0.2, torch.rand(48, 2, generator=g) * 0.3 + 0.05), 1)
        compute = their_loss.ComputeLoss(num_classes=3, ori_img_size=320, use_dfl=cfg.model.head.use_dfl,
                                         reg_max=cfg.model.head.reg_max, iou_type=cfg.model.head.iou_type)
        loss = YOLOv6Loss(3, ours.strides, reg_max=spec.reg_max, iou_type=spec.iou_type, settings=YOLOv6GtConfig())
        loss.start_epoch(10, 20)

        times: dict[str, list[float]] = {"ours": [], "theirs": []}
        for i in range(steps + 1):
            for name in times:
                start = time.perf_counter()
                if name == "ours":
                    loss(ours(images), targets)[0].backward()
                else:
                    compute(theirs(images)[0], targets.clone(), 10, 1)[0].backward()
                if i:
                    times[name].append(time.perf_counter() - start)
        ours_s, theirs_s = (statistics.median(times[k]) for k in ("ours", "theirs"))
        print(f"  {size}: ours {ours_s:.2f} s/step, theirs {theirs_s:.2f} s/step (median of {steps}, "
              f"{torch.get_num_threads()} thread(s))")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=Path("/tmp/upstream/yolov6-0.2.1"))
    parser.add_argument("--checks", nargs="+", default=list(CHECKS[:4]), choices=list(CHECKS),
                        help="which checks to run (steptime, a timing, only when named)")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}, "
          f"threads {torch.get_num_threads()}; theirs: {args.src}")
    Model, their_loss, their_checkpoint, nms = import_theirs(args.src)
    runs = {"keys": lambda: check_keys(Model, args.src), "outputs": lambda: check_outputs(Model, nms, args.src),
            "checkpoints": lambda: check_checkpoints(Model, their_checkpoint, args.src),
            "loss": lambda: check_loss(Model, their_loss, args.src),
            "steptime": lambda: check_step_time(Model, their_loss, args.src)}
    for name in args.checks:
        runs[name]()
    print(f"{len(failures)} failure(s)" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
