"""Check our YOLOX against Megvii-BaseDetection/YOLOX's own code, by running both in one process.

    git clone https://github.com/Megvii-BaseDetection/YOLOX /tmp/YOLOX            # or any copy of it
    git -C /tmp/YOLOX archive 6ddff48 yolox | tar -x -C /tmp/yolox-main            # main branch
    git -C /tmp/YOLOX archive 0.3.0 yolox | tar -x -C /tmp/yolox-0.3.0             # the 0.3.0 release
    .venv/bin/python benchmarks/verify_yolox_parity.py --yolox-src /tmp/yolox-main
    .venv/bin/python benchmarks/verify_yolox_parity.py --yolox-src /tmp/yolox-0.3.0   # the other SimOTA prior

Their code is not a dependency and is never copied here: it is imported at run time from ``--yolox-src``
(a folder holding their ``yolox`` package). Imports missing from our environment (``loguru``, ``cv2``,
``thop``, ``tabulate``, ``psutil``, ``wandb``, ...) are inert stubs; ``torchvision`` is a stub whose
``ops.nms`` / ``ops.batched_nms`` are a plain greedy loop written below (their ``postprocess`` calls them;
nothing else of torchvision is reached). Which SimOTA geometry prior their head has (``main``:
``get_geometry_constraint``; ``0.3.0``: ``get_in_boxes_info``) is detected and ours is set to match.

Checks (exit status 1 if any fails):

1. keys: for every size (nano .. x) and 80 / 3 classes, their ``YOLOX(YOLOPAFPN, YOLOXHead)`` (as their
   exps build it) vs ours: the ordered state-dict keys and shapes; the sha256 of that listing is printed
   (``tests/detectors/yolox/test_yolox_architecture.py`` records it).
2. weights: their model saved with their ``save_checkpoint`` in their trainer's format (``start_epoch``,
   ``model``, ``optimizer``, ``best_ap``/``curr_ap`` as numpy floats) loads into ours with strict keys
   through our restricted reader, and into a 3-class model skipping only ``head.cls_preds.*``.
3. outputs: random BatchNorm statistics; their eval-mode output (``decode_in_inference``) on BGR 0-255
   images vs our ``inference_raw`` on the same images as RGB [0, 1]: max |diff| (and bit equality); their
   ``postprocess`` vs our ``predict`` (conf 0.01, NMS 0.65): boxes, scores, classes.
4. loss: training mode, random targets (an image without objects, tiny and image-sized boxes, two
   objects on one cell), L1 off and on: their ``iou_loss, conf_loss, cls_loss, l1_loss, total_loss`` vs
   our items; their per-image assignment (``get_assignments``: foreground cells, matched ground truth,
   matched IoU) vs ours; gradients of the total w.r.t. every parameter.
5. assignment: their ``get_assignments`` image by image vs our batched ``simota_assign`` on crowded images
   (12-30 objects) whose cells predict jittered copies of the nearest object, so that dynamic k is large
   and cells are contested (at initialisation, in 4., most objects get one cell).

``--thop-site DIR`` (thop installed there with ``pip install --no-deps --target DIR thop``) also prints
their own ``get_model_info`` count of yolox_s beside ours.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import os
import platform
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

from detectors.model_info import model_info
from detectors.ops.boxes import bbox_iou
from detectors.yolox.assignment import GEOMETRY_PRIORS, simota_assign
from detectors.yolox.loss import YOLOXLoss
from detectors.yolox.model import SIZES, build_yolox
from detectors.yolox.weights import load_weights

STUB_ROOTS = ("loguru", "cv2", "thop", "tabulate", "psutil", "wandb", "pycocotools", "mlflow", "torchvision")
OUTPUT_TOL = 1e-4  # float32, ~100 conv layers, values up to ~640 px
LOSS_TOL = 1e-5  # relative
GRAD_TOL = 1e-4  # relative to the largest gradient of the tensor


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
        rest = order[rank + 1 :]
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = w * h
        iou = inter / (area[i] + area[rest] - inter)
        suppressed[rank + 1 :] |= iou > iou_thr
    return torch.tensor(keep, dtype=torch.long)


def greedy_batched_nms(boxes, scores, idxs, iou_thr):
    offsets = idxs.to(boxes) * (boxes.max() + 1)  # torchvision's trick: classes never overlap
    return greedy_nms(boxes + offsets[:, None], scores, iou_thr)


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
        if module.__name__ == "tabulate":  # torch._dynamo reports with it at exit when it is importable
            module.tabulate = lambda *args, **kwargs: ""
        if module.__name__ == "torchvision":
            module.__version__ = "0.0.0+stub"
        if module.__name__ == "torchvision.ops":
            module.nms = greedy_nms
            module.batched_nms = greedy_batched_nms


def import_yolox(src: Path):
    if not (src / "yolox" / "models" / "yolo_head.py").is_file():
        sys.exit(f"--yolox-src {src}: no yolox/models/yolo_head.py there (see this script's docstring)")
    sys.path.insert(0, str(src))
    # torchvision is always the stub (ours cannot load its ops); the rest only when missing.
    stubbed = {r for r in STUB_ROOTS if r == "torchvision" or importlib.util.find_spec(r) is None}
    # --thop-site puts thop on the path before this runs; it is only stubbed when missing.
    sys.meta_path.insert(0, _StubFinder(stubbed))
    import torchvision  # noqa: F401  (the stub, so that their boxes.py finds torchvision.ops)
    import torchvision.ops  # noqa: F401

    sys.modules["torchvision"].ops = sys.modules["torchvision.ops"]
    from yolox.models import YOLOPAFPN, YOLOX, YOLOXHead
    from yolox.utils import postprocess
    from yolox.utils.checkpoint import save_checkpoint

    prior = "main" if hasattr(YOLOXHead, "get_geometry_constraint") else "0.3.0"
    return YOLOX, YOLOPAFPN, YOLOXHead, postprocess, save_checkpoint, prior, sorted(stubbed)


def build_theirs(classes, name: str, nc: int) -> nn.Module:
    """As their exps' ``get_model``: BN eps 1e-3 / momentum 0.03, prior-initialised biases."""
    yolox_cls, pafpn_cls, head_cls = classes
    spec = SIZES[name]
    in_channels = [256, 512, 1024]
    model = yolox_cls(
        pafpn_cls(spec.depth, spec.width, in_channels=in_channels, depthwise=spec.depthwise),
        head_cls(nc, spec.width, in_channels=in_channels, depthwise=spec.depthwise),
    )
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
    model.head.initialize_biases(1e-2)
    return model


# -------------------------------------------------------------------------------------------------- helpers
def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise AssertionError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def listing(state: dict[str, torch.Tensor]) -> str:
    return "\n".join(f"{k}:{tuple(v.shape)}" for k, v in state.items())


def perturb_(model: nn.Module, seed: int, score_shift: float = 0.0, size_shift: float = 0.0) -> None:
    """Random BatchNorm statistics and head biases, so eval mode is not near-identity and boxes vary;
    ``score_shift`` raises the objectness and class logits and ``size_shift`` the log box sizes (so that
    post-processing has boxes above the threshold that overlap)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.num_batches_tracked.fill_(7)
        for conv in (*model.head.reg_preds, *model.head.obj_preds, *model.head.cls_preds):
            conv.bias.add_(0.5 * torch.randn(conv.bias.shape, generator=gen))
        for conv in (*model.head.obj_preds, *model.head.cls_preds):
            conv.bias.add_(score_shift)
        for conv in model.head.reg_preds:
            conv.bias[2:].add_(size_shift)


def random_targets(batch: int, nc: int, img: int, seed: int) -> torch.Tensor:
    """Loader rows [image, class, cx, cy, w, h] normalised; image 1 has no objects; edge cases in image 0."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(batch):
        if i == 1:
            continue
        n = int(torch.randint(1, 9, (1,), generator=gen))
        xy = torch.rand(n, 2, generator=gen) * 0.9 + 0.05
        wh = torch.rand(n, 2, generator=gen) ** 2 * 0.6 + 16 / img
        cls = torch.randint(0, nc, (n, 1), generator=gen).float()
        rows.append(torch.cat((torch.full((n, 1), float(i)), cls, xy, wh), 1))
    rows.append(torch.tensor([
        [0, 0, 0.5, 0.5, 0.98, 0.98],  # nearly the whole image
        [0, nc - 1, 0.3, 0.3, 6 / img, 6 / img],  # smaller than a stride-8 cell
        [0, 0, 0.71, 0.42, 0.1, 0.12],  # two objects on one cell
        [0, nc - 1, 0.712, 0.421, 0.11, 0.1],
    ]))
    return torch.cat(rows)


def megvii_labels(targets: torch.Tensor, batch: int, img: int) -> torch.Tensor:
    """Their label tensor (B, max_labels, 5): [class, cx, cy, w, h] pixels, zero rows for padding."""
    counts = torch.bincount(targets[:, 0].long(), minlength=batch)
    labels = torch.zeros(batch, max(int(counts.max()), 1), 5)
    for i in range(batch):
        rows = targets[targets[:, 0] == i]
        labels[i, : len(rows), 0] = rows[:, 1]
        labels[i, : len(rows), 1:] = rows[:, 2:] * img
    return labels


# --------------------------------------------------------------------------------------------------- checks
def check_keys(classes, log) -> bool:
    ok = True
    for name in SIZES:
        for nc in (80, 3):
            theirs = build_theirs(classes, name, nc).state_dict()
            ours = build_yolox(name, nc).state_dict()
            same = listing(theirs) == listing(ours)
            digest = hashlib.sha256(listing(theirs).encode()).hexdigest()[:16]
            params = sum(v.numel() for k, v in theirs.items() if "running" not in k and "num_batches" not in k)
            log(f"  keys {name:10s} nc={nc:2d}: {len(theirs)} tensors, {params:,} parameters, listing sha256 "
                f"{digest}: {'identical (names, order, shapes)' if same else 'DIFFERENT'}")
            ok &= same
    return ok


def check_weights(classes, save_checkpoint, log) -> bool:
    theirs = build_theirs(classes, "yolox_s", 80)
    perturb_(theirs, 1)
    optimizer = torch.optim.SGD(theirs.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    theirs(torch.rand(1, 3, 64, 64) * 255, torch.tensor([[[0, 32.0, 32.0, 20.0, 20.0]]])
           )["total_loss"].backward()
    optimizer.step()  # a momentum buffer per parameter, as in their checkpoints
    theirs.eval()
    with tempfile.TemporaryDirectory() as tmp:
        state = {"start_epoch": 300, "model": theirs.state_dict(), "optimizer": optimizer.state_dict(),
                 "best_ap": np.float64(40.5), "curr_ap": np.float64(40.1)}
        save_checkpoint(state, False, tmp, "yolox_s")
        path = Path(tmp) / "yolox_s_ckpt.pth"
        ours = build_yolox("yolox_s", 80)
        report = load_weights(ours, path)
        loaded_equal = all(torch.equal(ours.state_dict()[k], v) for k, v in theirs.state_dict().items())
        small = build_yolox("yolox_s", 3)
        report3 = load_weights(small, path)
    want_skipped = [f"head.cls_preds.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    ok = (not report.skipped and not report.unexpected and loaded_equal and report3.skipped == want_skipped)
    log(f"  their yolox_s checkpoint ({report.source}): {len(report.loaded)} tensors loaded, values "
        f"{'identical' if loaded_equal else 'DIFFERENT'}; into a 3-class model: skipped {report3.skipped}")
    return ok


def check_outputs(classes, postprocess, name: str, nc: int, shape: tuple[int, int], seed: int, log) -> bool:
    torch.manual_seed(seed)
    theirs = build_theirs(classes, name, nc)
    perturb_(theirs, seed, score_shift=2.5, size_shift=2.0)
    ours = build_yolox(name, nc)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.eval()
    ours.eval()
    gen = torch.Generator().manual_seed(seed)
    # Images as our loader makes them (uint8 / 255): their input is the same picture in BGR 0-255.
    rgb = torch.randint(0, 256, (2, 3, *shape), generator=gen).float() / 255
    with torch.no_grad():
        their_out = theirs(rgb.flip(1) * 255)
        our_out = ours.inference_raw(rgb)
        their_det = postprocess(their_out.clone(), nc, 0.01, 0.65)
        our_det = ours.predict(rgb, conf=0.01, iou=0.65, max_det=100000)
    diff = max_diff(their_out, our_out)
    det_ok, det_diff, counts = True, 0.0, []
    for t, o in zip(their_det, our_det, strict=True):
        boxes, scores, cls = o
        if t is None:
            det_ok &= len(boxes) == 0
            counts.append((0, len(boxes)))
            continue
        t_scores = t[:, 4] * t[:, 5]
        counts.append((len(t), len(boxes)))
        if len(t) != len(boxes):
            det_ok = False
            continue
        det_diff = max(det_diff, max_diff(t[:, :4], boxes), max_diff(t_scores, scores))
        det_ok &= torch.equal(t[:, 6].long(), cls)
    det_ok &= det_diff < OUTPUT_TOL
    log(f"  outputs {name} nc={nc} {shape[0]}x{shape[1]}: eval output {tuple(our_out.shape)} max|diff| {diff:.3g} "
        f"({'bit-identical' if torch.equal(their_out, our_out) else 'not bit-identical'}); predict vs their "
        f"postprocess: detections per image (theirs, ours) {counts}, max|diff| boxes/scores {det_diff:.3g}, "
        f"classes {'equal' if det_ok else 'DIFFERENT'}")
    return diff < OUTPUT_TOL and det_ok


def check_loss(classes, prior: str, name: str, nc: int, img: int, seed: int, use_l1: bool, log) -> bool:
    torch.manual_seed(seed)
    theirs = build_theirs(classes, name, nc)
    perturb_(theirs, seed)
    ours = build_yolox(name, nc)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.train()
    ours.train()
    theirs.head.use_l1 = use_l1
    batch = 3
    gen = torch.Generator().manual_seed(100 + seed)
    rgb = torch.randint(0, 256, (batch, 3, img, img), generator=gen).float() / 255
    targets = random_targets(batch, nc, img, seed)
    labels = megvii_labels(targets, batch, img)

    recorded = []
    original = theirs.head.get_assignments

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        recorded.append((args[0], [o.clone() if torch.is_tensor(o) else o for o in out]))
        return out

    theirs.head.get_assignments = recording
    their_out = theirs(rgb.flip(1) * 255, labels)
    their_out["total_loss"].backward()
    their_items = {k: v.detach() if torch.is_tensor(v) else v for k, v in their_out.items()}
    loss_fn = YOLOXLoss(nc, simota_prior=prior, use_l1=use_l1)
    total, items = loss_fn(ours(rgb), targets)
    total.backward()

    pairs = {"iou": "iou_loss", "obj": "conf_loss", "cls": "cls_loss", "l1": "l1_loss"}
    rel = {k: abs(float(items[k]) - float(their_items[v])) / max(abs(float(their_items[v])), 1e-12)
           for k, v in pairs.items()}
    rel["total"] = abs(float(total) - float(their_items["total_loss"])) / float(their_items["total_loss"])
    assign = loss_fn.last_assignment
    same_fg = same_gt = True
    iou_diff = 0.0
    for image, (_classes, fg_mask, ious, gt_inds, _num_fg) in recorded:
        ours_fg = assign.foreground[image]
        same_fg &= torch.equal(fg_mask, ours_fg)
        if torch.equal(fg_mask, ours_fg):
            same_gt &= torch.equal(gt_inds, assign.gt_index[image][ours_fg])
            iou_diff = max(iou_diff, max_diff(ious, assign.iou[image][ours_fg]))
    no_object_image_ok = not bool(assign.foreground[1].any())  # image 1 has no objects: theirs skips it
    grad_rel = 0.0
    their_params = dict(theirs.named_parameters())
    for key, p in ours.named_parameters():
        g_t, g_o = their_params[key].grad, p.grad
        scale = float(g_t.abs().max()) or 1.0
        grad_rel = max(grad_rel, max_diff(g_t, g_o) / scale)
    ok = (max(rel.values()) < LOSS_TOL and same_fg and same_gt and iou_diff < 1e-6 and no_object_image_ok
          and grad_rel < GRAD_TOL)
    log(f"  loss {name} nc={nc} {img}px seed {seed} l1={'on' if use_l1 else 'off'} prior {prior}: "
        + ", ".join(f"{k} {float(items[k]):.6f} vs {float(their_items[v]):.6f}" for k, v in pairs.items())
        + f"; max rel diff {max(rel.values()):.2g}; foreground cells {assign.num_foreground} "
        f"(theirs {sum(int(r[1][1].sum()) for r in recorded)}), masks {'equal' if same_fg else 'DIFFERENT'}, "
        f"matched gt {'equal' if same_gt else 'DIFFERENT'}, matched IoU max|diff| {iou_diff:.2g}; "
        f"gradients max rel diff {grad_rel:.2g}")
    return ok


def check_assignment(head_cls, prior: str, seed: int, log) -> bool:
    """Their ``get_assignments`` vs our batched ``simota_assign`` on crowded images with good predictions.

    At initialisation (``check_loss``) most ground truths get k = 1 cell; here every cell predicts a
    jittered copy of the nearest ground truth (IoUs ~0.3-0.95), so dynamic k reaches ~10 and many cells
    are wanted by several ground truths: the conflict rule is exercised.
    """
    gen = torch.Generator().manual_seed(seed)
    img, nc, batch = 320, 5, 4
    head = head_cls(nc, 0.25, in_channels=[256, 512, 1024])
    offsets, strides = [], []
    for s in (8, 16, 32):
        rows, cols = torch.meshgrid(torch.arange(img // s), torch.arange(img // s), indexing="ij")
        offsets.append(torch.stack((cols, rows), -1).view(-1, 2).float())
        strides.append(torch.full((rows.numel(),), float(s)))
    offsets, strides = torch.cat(offsets), torch.cat(strides)
    centers = (offsets + 0.5) * strides[:, None]
    n_gt = [int(torch.randint(12, 31, (1,), generator=gen)) for _ in range(batch)]
    g = max(n_gt)
    gt = torch.zeros(batch, g, 4)
    classes = torch.zeros(batch, g, dtype=torch.long)
    valid = torch.zeros(batch, g, dtype=torch.bool)
    preds = torch.zeros(batch, len(centers), 4)
    for i, n in enumerate(n_gt):
        gt[i, :n, :2] = torch.rand(n, 2, generator=gen) * img * 0.9 + img * 0.05
        gt[i, :n, 2:] = torch.rand(n, 2, generator=gen) ** 1.5 * img * 0.4 + 6
        classes[i, :n] = torch.randint(0, nc, (n,), generator=gen)
        valid[i, :n] = True
        nearest = torch.cdist(centers, gt[i, :n, :2]).argmin(1)
        jitter = 1 + 0.25 * torch.randn(len(centers), 4, generator=gen)
        preds[i] = gt[i, nearest] * jitter.abs().clamp(min=0.2)
    cls = torch.randn(batch, len(centers), nc, generator=gen)
    obj = torch.randn(batch, len(centers), 1, generator=gen)
    ours = simota_assign(preds, cls, obj, centers, strides, gt, classes, valid, GEOMETRY_PRIORS[prior])
    params = inspect.signature(head.get_assignments).parameters
    same, fg_total, contested = True, 0, 0
    for i, n in enumerate(n_gt):
        kwargs = dict(batch_idx=i, num_gt=n, gt_bboxes_per_image=gt[i, :n], gt_classes=classes[i, :n].float(),
                      bboxes_preds_per_image=preds[i], expanded_strides=strides[None], x_shifts=offsets[None, :, 0],
                      y_shifts=offsets[None, :, 1], cls_preds=cls, obj_preds=obj)
        if "total_num_anchors" in params:  # 0.3.0's signature
            kwargs.update(total_num_anchors=len(centers), bbox_preds=preds, labels=None, imgs=None)
        _, fg_mask, ious, gt_inds, num_fg = head.get_assignments(**kwargs)
        fg = ours.foreground[i]
        ok = torch.equal(fg_mask, fg) and torch.equal(gt_inds, ours.gt_index[i][fg])
        ok = ok and max_diff(ious, ours.iou[i][fg]) < 1e-6
        same &= ok
        fg_total += num_fg
        # Cells that more than one ground truth's k cheapest included (then resolved to one).
        iou = bbox_iou(gt[i, :n, None], preds[i, None], eps=0.0)[..., 0]
        contested += int((iou > 0.3).sum(0).gt(1).sum())
    log(f"  assignment seed {seed} prior {prior}: {batch} images of {n_gt} objects, {fg_total} foreground cells "
        f"(ours {ours.num_foreground}), {contested} cells overlapping several objects at IoU > 0.3: "
        f"{'identical' if same else 'DIFFERENT'} foreground, matched object and IoU")
    return same and fg_total == ours.num_foreground


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yolox-src", type=Path, required=True, help="folder holding their yolox package")
    parser.add_argument("--loss-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--thop-site", type=Path, help="folder holding thop (pip install --no-deps --target DIR "
                        "thop): also print Megvii's own get_model_info count of yolox_s")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.thop_site:
        sys.path.insert(0, str(args.thop_site))
    yolox_cls, pafpn_cls, head_cls, postprocess, save_checkpoint, prior, stubbed = import_yolox(args.yolox_src)
    classes = (yolox_cls, pafpn_cls, head_cls)

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; torch {torch.__version__}; their code from "
        f"{args.yolox_src} (SimOTA prior: {prior}); stubbed imports: {', '.join(stubbed)}; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    results = {"keys": check_keys(classes, log), "weights": check_weights(classes, save_checkpoint, log)}
    results["outputs"] = all([
        check_outputs(classes, postprocess, "yolox_nano", 3, (160, 224), 0, log),
        check_outputs(classes, postprocess, "yolox_s", 80, (256, 256), 1, log),
        check_outputs(classes, postprocess, "yolox_tiny", 3, (320, 192), 2, log),
    ])
    results["assignment"] = all(check_assignment(head_cls, prior, seed, log) for seed in (0, 1, 2))
    results["loss"] = all(
        check_loss(classes, prior, name, nc, img, seed, use_l1, log)
        for name, nc, img in (("yolox_nano", 3, 256), ("yolox_s", 80, 320))
        for seed in args.loss_seeds
        for use_l1 in (False, True)
    )
    info = model_info(build_yolox("yolox_s", 3), name="yolox_s", num_classes=3, img_size=640)
    log(f"  yolox_s, 3 classes, 640 px: {info.params:,} parameters ({info.params / 1e6:.2f} M; "
        f"{info.params_fused:,} after BN fusion), {info.gflops:.2f} GFLOPs (2 x MACs); paper Table 3: 8.94 M, 26.81 G")
    if args.thop_site:
        from yolox.utils.model_utils import get_model_info  # their thop-based count (64 px input, scaled)

        for nc in (3, 80):
            log(f"  Megvii's get_model_info(yolox_s, {nc} classes, 640 x 640) with thop: "
                f"{get_model_info(build_theirs(classes, 'yolox_s', nc), (640, 640))}")
    for name, ok in results.items():
        log(f"{name}: {'PASS' if ok else 'FAIL'}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
