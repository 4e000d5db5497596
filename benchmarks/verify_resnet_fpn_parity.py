"""Check the shared ResNet-FPN parts against torchvision itself, by running both in one interpreter.

Our code needs only torch; torchvision cannot be imported with the project's CPU torch, so this script
runs in a peer environment where torchvision works (never a project dependency)::

    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch torchvision numpy   # (here: /tmp/y5venv)
    PYTHONPATH=. /tmp/tv/bin/python benchmarks/verify_resnet_fpn_parity.py

Checks (exit status 1 if any fails; every comparison is exact unless a tolerance is printed):

1. keys: torchvision's ``resnet50(norm_layer=FrozenBatchNorm2d)`` through ``_resnet_fpn_extractor``
   (trainable_layers 3) for FCOS/RetinaNet (layers 2-4, ``LastLevelP6P7(256, 256)``), RetinaNet v2
   (``LastLevelP6P7(2048, 256)``) and Faster R-CNN (layers 1-4, ``LastLevelMaxPool``) vs our
   ``resnet_fpn_backbone``: ordered state-dict keys, shapes and ``requires_grad``; and the
   ``backbone.*`` keys of torchvision's ``fcos_resnet50_fpn`` / ``retinanet_resnet50_fpn`` /
   ``fasterrcnn_resnet50_fpn`` (weights=None: BatchNorm2d, so ``num_batches_tracked`` is left out).
2. maps: their state dict (random weights and frozen BN statistics) loaded into ours with
   ``strict=True``; FPN outputs for the same input batch, max abs diff.
3. ImageNet weights: torchvision's ``resnet50()`` state dict (BatchNorm2d, fc) saved and loaded by our
   ``load_imagenet_resnet50``; body outputs vs torchvision's ``IntermediateLayerGetter`` on that model.
4. ops on random cases: ``AnchorGenerator`` (RetinaNet's, the RPN's and FCOS's settings, square and
   non-square inputs), ``BoxCoder`` encode / decode (weights (1,1,1,1) and (10,10,5,5), clipping),
   ``BoxLinearCoder``, ``Matcher`` (with ties, low-quality matches on/off), ``sigmoid_focal_loss`` and
   ``generalized_box_iou_loss`` (values and gradients), ``nms`` / ``batched_nms`` (both of torchvision's
   code paths, score ties), ``clip_boxes_to_image``, ``remove_small_boxes``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import sys
import tempfile
from pathlib import Path

import torch

try:
    import torchvision
    from torchvision.models import resnet50 as tv_resnet50
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.detection import _utils as tv_det_utils
    from torchvision.models.detection import (
        fasterrcnn_resnet50_fpn,
        fcos_resnet50_fpn,
        retinanet_resnet50_fpn,
    )
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TvAnchorGenerator
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.image_list import ImageList
    from torchvision.ops import feature_pyramid_network as tv_fpn
    from torchvision.ops.misc import FrozenBatchNorm2d as TvFrozenBatchNorm2d
except ImportError as exc:  # pragma: no cover - the script's environment, not the project's
    sys.exit(f"torchvision is needed here (run this in a peer venv, see the docstring): {exc}")

from detectors.backbones.resnet import resnet50
from detectors.backbones.resnet_fpn import resnet_fpn_backbone
from detectors.backbones.resnet_weights import load_imagenet_resnet50
from detectors.necks.fpn import LastLevelMaxPool, LastLevelP6P7
from detectors.ops.anchors import AnchorGenerator
from detectors.ops.box_coder import BoxCoder, BoxLinearCoder
from detectors.ops.boxes import clip_boxes_to_image, remove_small_boxes
from detectors.ops.detection_losses import giou_loss, sigmoid_focal_loss
from detectors.ops.matcher import Matcher
from detectors.ops.nms import batched_nms, nms

RESULTS: list[tuple[str, bool, str]] = []


def record(name: str, ok: bool, detail: str) -> None:
    RESULTS.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)


def randomise(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Random weights with plausible frozen-BN statistics (var > 0), so every term of the formula matters."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if not v.is_floating_point():
            out[k] = v
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith(("running_mean", "bias")):
            out[k] = torch.randn(v.shape, generator=g) * 0.1
        elif k.endswith("bn1.weight") or ".bn" in k or "downsample.1" in k:
            out[k] = torch.rand(v.shape, generator=g) * 0.5 + 0.5
        else:  # conv weights: He-scaled so activations stay O(1) through 50 layers
            fan_in = v[0].numel()
            out[k] = torch.randn(v.shape, generator=g) * math.sqrt(1.0 / fan_in)
    return out


CONFIGS = {
    "fcos/retinanet (layers 2-4, P6P7 from P5)": ((2, 3, 4), lambda: tv_fpn.LastLevelP6P7(256, 256),
                                                  lambda: LastLevelP6P7(256, 256)),
    "retinanet v2 (layers 2-4, P6P7 from C5)": ((2, 3, 4), lambda: tv_fpn.LastLevelP6P7(2048, 256),
                                                lambda: LastLevelP6P7(2048, 256)),
    "faster r-cnn (layers 1-4, max-pool level)": ((1, 2, 3, 4), lambda: tv_fpn.LastLevelMaxPool(),
                                                  lambda: LastLevelMaxPool()),
}


def check_backbones(size: tuple[int, int], batch: int) -> None:
    for name, (layers, tv_extra, our_extra) in CONFIGS.items():
        torch.manual_seed(0)
        tv = _resnet_fpn_extractor(tv_resnet50(norm_layer=TvFrozenBatchNorm2d), 3, returned_layers=list(layers),
                                   extra_blocks=tv_extra()).eval()
        ours = resnet_fpn_backbone(returned_layers=layers, extra_blocks=our_extra()).eval()
        a, b = tv.state_dict(), ours.state_dict()
        same_keys = list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
        grads_tv = [(n, p.requires_grad) for n, p in tv.named_parameters()]
        grads_ours = [(n, p.requires_grad) for n, p in ours.named_parameters()]
        record(f"keys {name}", same_keys and grads_tv == grads_ours,
               f"{len(a)} tensors, names/order/shapes identical={same_keys}, requires_grad identical="
               f"{grads_tv == grads_ours} ({sum(r for _, r in grads_ours)} trainable parameter tensors)")
        state = randomise(a, seed=1)
        tv.load_state_dict(state, strict=True)
        ours.load_state_dict(state, strict=True)
        x = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(2)) * 4 - 2
        with torch.no_grad():
            ref = list(tv(x).values())
            got = list(ours(x).outputs.values())
        diffs = [float((r - o).abs().max()) for r, o in zip(ref, got, strict=True)]
        scale = max(float(r.abs().max()) for r in ref)
        record(f"FPN maps {name}", max(diffs) == 0.0,
               f"input {batch}x3x{size[0]}x{size[1]}, {len(ref)} levels {[tuple(r.shape[-2:]) for r in ref]}, "
               f"max abs diff {max(diffs):.3g} (largest |value| {scale:.3g})")

    for builder, prefix_ok in ((fcos_resnet50_fpn, (2, 3, 4)), (retinanet_resnet50_fpn, (2, 3, 4)),
                               (fasterrcnn_resnet50_fpn, (1, 2, 3, 4))):
        model = builder(weights=None, weights_backbone=None)
        theirs = [(k, tuple(v.shape)) for k, v in model.state_dict().items()
                  if k.startswith("backbone.") and not k.endswith("num_batches_tracked")]
        extra = LastLevelMaxPool() if prefix_ok == (1, 2, 3, 4) else LastLevelP6P7(256, 256)
        ours = [("backbone." + k, tuple(v.shape))
                for k, v in resnet_fpn_backbone(returned_layers=prefix_ok, extra_blocks=extra).state_dict().items()]
        record(f"backbone.* keys of torchvision's {builder.__name__}", theirs == ours, f"{len(theirs)} tensors")


def check_imagenet(size: tuple[int, int]) -> None:
    torch.manual_seed(3)
    net = tv_resnet50()
    net.load_state_dict(randomise(net.state_dict(), seed=4))
    net.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet50-imagenet.pth"
        torch.save(net.state_dict(), path)
        body = resnet50().eval()
        report = load_imagenet_resnet50(body, path)
    getter = IntermediateLayerGetter(net, {f"layer{i}": str(i) for i in range(1, 5)})
    # torchvision's fine-tuning body: the same weights under FrozenBatchNorm2d
    frozen = tv_resnet50(norm_layer=TvFrozenBatchNorm2d)
    frozen.load_state_dict(net.state_dict(), strict=False)
    frozen_getter = IntermediateLayerGetter(frozen.eval(), {f"layer{i}": str(i) for i in range(1, 5)})
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = body(x)
        bn = list(getter(x).values())
        fr = list(frozen_getter(x).values())
    d_frozen = max(float((a - b).abs().max()) for a, b in zip(ours, fr, strict=True))
    d_bn = max(float((a - b).abs().max()) for a, b in zip(ours, bn, strict=True))
    record("ImageNet resnet50 into our body", report.skipped == ["fc.weight", "fc.bias"] and d_frozen == 0.0,
           f"{len(report.loaded)} tensors loaded, skipped {report.skipped}; stage outputs vs torchvision with "
           f"FrozenBatchNorm2d: max abs diff {d_frozen:.3g}; vs its eval-mode BatchNorm2d: {d_bn:.3g}")


def check_anchors() -> None:
    settings = {
        "retinanet": (tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in (32, 64, 128, 256, 512)),
                      ((0.5, 1.0, 2.0),) * 5, (8, 16, 32, 64, 128)),
        "rpn": (((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5, (4, 8, 16, 32, 64)),
        "fcos": (((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5, (8, 16, 32, 64, 128)),
    }
    for name, (sizes, ratios, strides) in settings.items():
        for h, w in ((640, 640), (512, 768), (600, 1000)):
            shapes = [(math.ceil(h / s), math.ceil(w / s)) for s in strides]
            feats = [torch.zeros(1, 1, *hw) for hw in shapes]
            ref = TvAnchorGenerator(sizes, ratios)(ImageList(torch.zeros(1, 3, h, w), [(h, w)]), feats)[0]
            got = torch.cat(AnchorGenerator(sizes, ratios)((h, w), shapes))
            ok = ref.shape == got.shape and torch.equal(ref, got)
            record(f"anchors {name} {h}x{w}", ok, f"{tuple(ref.shape)} anchors, identical={ok}")


def check_box_coders(seed: int = 6) -> None:
    g = torch.Generator().manual_seed(seed)
    n = 5000
    xy = torch.rand(n, 2, generator=g) * 600
    anchors = torch.cat((xy, xy + torch.rand(n, 2, generator=g) * 200 + 1), 1)
    gxy = xy + torch.randn(n, 2, generator=g) * 30
    gts = torch.cat((gxy, gxy + torch.rand(n, 2, generator=g) * 300 + 1), 1)
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        tv = tv_det_utils.BoxCoder(weights)
        ours = BoxCoder(weights)
        enc_ok = torch.equal(tv.encode_single(gts, anchors), ours.encode(gts, anchors))
        codes = torch.randn(n, 8, generator=g) * 3  # two boxes per row; |dw| up to ~10 > clip 4.135
        dec_ok = torch.equal(tv.decode_single(codes, anchors), ours.decode_single(codes, anchors))
        batched = torch.equal(tv.decode(codes, [anchors[:2000], anchors[2000:]]),
                              ours.decode(codes, [anchors[:2000], anchors[2000:]]))
        record(f"BoxCoder{weights}", enc_ok and dec_ok and batched,
               f"{n} boxes: encode identical={enc_ok}, decode_single (2 per row, clipped) identical={dec_ok}, "
               f"decode(list) identical={batched}")
    for normalize in (True, False):
        tv, ours = tv_det_utils.BoxLinearCoder(normalize), BoxLinearCoder(normalize)
        codes = torch.rand(n, 4, generator=g) * 5
        ok = torch.equal(tv.encode(anchors, gts), ours.encode(anchors, gts)) and torch.equal(
            tv.decode(codes, anchors), ours.decode(codes, anchors))
        record(f"BoxLinearCoder(normalize_by_size={normalize})", ok, f"encode and decode identical={ok}")


def check_matcher(seed: int = 7) -> None:
    g = torch.Generator().manual_seed(seed)
    ok_all, cases = True, 0
    for allow in (True, False):
        for high, low in ((0.5, 0.4), (0.7, 0.3), (0.5, 0.5)):
            for _ in range(20):
                m, n = int(torch.randint(1, 12, (1,), generator=g)), int(torch.randint(1, 400, (1,), generator=g))
                q = (torch.rand(m, n, generator=g) * 20).round() / 20  # coarse values: many ties
                ref = tv_det_utils.Matcher(high, low, allow)(q.clone())
                got = Matcher(high, low, allow)(q.clone())
                ok_all &= torch.equal(ref, got)
                cases += 1
    record("Matcher", ok_all, f"{cases} random quality matrices (ties), low-quality matches on and off: "
                              f"identical={ok_all}")


def check_losses(seed: int = 8) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(64, 80, generator=g) * 4).requires_grad_()
    targets = (torch.rand(64, 80, generator=g) < 0.05).float()
    for alpha, gamma, reduction in ((0.25, 2.0, "sum"), (0.25, 2.0, "none"), (-1, 1.5, "mean")):
        ref = torchvision.ops.sigmoid_focal_loss(logits, targets, alpha, gamma, reduction)
        got = sigmoid_focal_loss(logits, targets, alpha, gamma, reduction)
        (g_ref,) = torch.autograd.grad(ref.sum(), logits)
        (g_got,) = torch.autograd.grad(got.sum(), logits)
        ok = torch.equal(ref, got) and torch.equal(g_ref, g_got)
        record(f"sigmoid_focal_loss alpha={alpha} gamma={gamma} {reduction}", ok, f"value and gradient identical={ok}")
    xy = torch.rand(500, 2, generator=g) * 100
    b1 = torch.cat((xy, xy + torch.rand(500, 2, generator=g) * 50 + 0.1), 1).requires_grad_()
    xy2 = xy + torch.randn(500, 2, generator=g) * 20
    b2 = torch.cat((xy2, xy2 + torch.rand(500, 2, generator=g) * 50 + 0.1), 1)
    for reduction in ("none", "sum", "mean"):
        ref = torchvision.ops.generalized_box_iou_loss(b1, b2, reduction)
        got = giou_loss(b1, b2, reduction)
        (g_ref,) = torch.autograd.grad(ref.sum(), b1)
        (g_got,) = torch.autograd.grad(got.sum(), b1)
        ok = torch.equal(ref, got) and torch.equal(g_ref, g_got)
        record(f"giou_loss {reduction}", ok, f"500 pairs (some disjoint): value and gradient identical={ok}")


def check_nms(cases: int, seed: int = 9) -> None:
    g = torch.Generator().manual_seed(seed)
    n_ok = b_ok = 0
    paths = {"offset": 0, "per-class": 0}
    for i in range(cases):
        n = int(torch.randint(1, 3000, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 400
        boxes = torch.cat((xy, xy + torch.rand(n, 2, generator=g) * 80 + 1), 1)
        scores = torch.rand(n, generator=g)
        if i % 3 == 0:
            scores = (scores * 20).round() / 20  # ties
        idxs = torch.randint(0, 6, (n,), generator=g)
        thr = float(torch.rand(1, generator=g)) * 0.8 + 0.1
        n_ok += torch.equal(torchvision.ops.nms(boxes, scores, thr), nms(boxes, scores, thr))
        b_ok += torch.equal(torchvision.ops.batched_nms(boxes, scores, idxs, thr), batched_nms(boxes, scores, idxs, thr))
        paths["offset" if boxes.numel() <= 4000 else "per-class"] += 1
    record("nms", n_ok == cases, f"{n_ok}/{cases} random cases identical (1-3000 boxes, 1/3 with score ties)")
    record("batched_nms", b_ok == cases, f"{b_ok}/{cases} identical (6 classes; torchvision's offset path "
                                         f"{paths['offset']} cases, per-class path {paths['per-class']})")
    boxes = torch.randn(4, 50, 4, generator=g) * 300
    ok_clip = torch.equal(torchvision.ops.clip_boxes_to_image(boxes, (480, 640)), clip_boxes_to_image(boxes, (480, 640)))
    small = torch.rand(500, 4, generator=g) * 5
    ok_small = torch.equal(torchvision.ops.remove_small_boxes(small, 1.0), remove_small_boxes(small, 1.0))
    record("clip_boxes_to_image / remove_small_boxes", ok_clip and ok_small, f"identical={ok_clip}/{ok_small}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(512, 640), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--nms-cases", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()} {platform.system()}, "
          f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{torch.get_num_threads()} threads")
    check_backbones(tuple(args.size), args.batch)
    check_imagenet(tuple(args.size))
    check_anchors()
    check_box_coders()
    check_matcher()
    check_losses()
    check_nms(args.nms_cases)
    failed = [name for name, ok, _ in RESULTS if not ok]
    print(f"\n{len(RESULTS) - len(failed)}/{len(RESULTS)} checks pass" + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
