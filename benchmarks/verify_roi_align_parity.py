"""Parity of our RoIAlign, MultiScaleRoIAlign and RPN with torchvision's (the oracle, run side by side).

    /tmp/tv/bin/python benchmarks/verify_roi_align_parity.py [--quick]

Needs a peer interpreter with a working torchvision (its compiled ops): ``python -m venv /tmp/tv &&
/tmp/tv/bin/pip install torch torchvision`` (on this machine ``/tmp/y5venv/bin/python``, torch 2.14.1,
torchvision 0.29.1). Torchvision is only the reference here, never a dependency of the project; our code
needs torch alone. Exit status 1 when any check fails.

Checks:

1. ``roi_align`` vs ``torchvision.ops.roi_align`` (the C++ CPU kernel) on random boxes inside, crossing and
   outside the map (some inverted), sampling ratios -1/0/1/2/3, aligned or not, several scales, float64
   and float32: forward outputs must be bit-identical; gradients w.r.t. the map agree to rounding (the
   additions happen in another order). For contrast, torchvision's own pure-Python fallback
   (``torchvision.ops.roi_align._roi_align``) is measured against its kernel on the first 16 boxes (it
   materialises a (K, C, PH, PW, H, W) tensor when sampling adaptively: 2,000 boxes would need ~20 GB).
2. ``MultiScaleRoIAlign`` vs ``torchvision.ops.MultiScaleRoIAlign`` on FPN levels of an 800 x 1216 batch
   (strides 4..32, the "pool" level present and ignored): bit-identical, with stride-keyed and named levels.
3. RPN vs ``fasterrcnn_resnet50_fpn(weights=None).rpn`` with the same weights (state-dict keys compared),
   features and targets: anchors, proposals (train and eval settings) bit-identical; ``loss_objectness``
   and ``loss_rpn_box_reg`` with the sampler drawn after the same ``torch.manual_seed`` equal, and their
   gradients w.r.t. the head's weights agree to rounding.
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchvision  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402
from torchvision.ops import MultiScaleRoIAlign as TVMultiScaleRoIAlign  # noqa: E402
from torchvision.ops import roi_align as tv_roi_align  # noqa: E402
from torchvision.ops.roi_align import _roi_align as tv_python_fallback  # noqa: E402

from detectors.ops.multiscale_roi_align import MultiScaleRoIAlign  # noqa: E402
from detectors.ops.roi_align import roi_align  # noqa: E402

FAILURES: list[str] = []
FALLBACK_ROIS = 16


def report(name: str, ok: bool, detail: str) -> None:
    print(f"{'OK  ' if ok else 'FAIL'} {name}: {detail}")
    if not ok:
        FAILURES.append(name)


def random_rois(
    num: int, batch: int, extent: tuple[float, float], dtype: torch.dtype, g: torch.Generator
) -> torch.Tensor:
    """Boxes anywhere from a quarter of the map outside to beyond it, sizes -2 .. 0.6 of the map (inverted too)."""
    ext = torch.tensor(extent, dtype=torch.float64)
    xy = torch.rand(num, 2, generator=g, dtype=torch.float64) * ext * 1.5 - ext / 4
    wh = torch.rand(num, 2, generator=g, dtype=torch.float64) * ext * 0.6 - 2
    idx = torch.randint(0, batch, (num, 1), generator=g).double()
    return torch.cat([idx, xy, xy + wh], 1).to(dtype)


def check_roi_align(quick: bool) -> None:
    g = torch.Generator().manual_seed(0)
    num = 300 if quick else 2000
    for dtype in (torch.float64, torch.float32):
        equal = total = 0
        worst_grad = 0.0
        fallback_worst = 0.0
        for aligned in (False, True):
            for sampling_ratio in (-1, 0, 1, 2, 3):
                for scale, size in ((1.0, (13, 17)), (0.25, (25, 38)), (1 / 16, (50, 76)), (0.3, (9, 9))):
                    x = torch.randn(2, 6, *size, generator=g, dtype=torch.float64).to(dtype)
                    rois = random_rois(num, 2, (size[1] / scale, size[0] / scale), dtype, g)
                    ours = roi_align(x, rois, (7, 5), scale, sampling_ratio, aligned)
                    ref = tv_roi_align(x, rois, (7, 5), scale, sampling_ratio, aligned)
                    total += 1
                    equal += int(torch.equal(ours, ref))
                    # the fallback materialises (K, C, PH, PW, H, W) when adaptive: a few RoIs only
                    fb = tv_python_fallback(x, rois[:FALLBACK_ROIS], scale, 7, 5, sampling_ratio, aligned)
                    fallback_worst = max(fallback_worst, (fb - ref[:FALLBACK_ROIS]).abs().max().item())
                    if sampling_ratio in (-1, 2):
                        xg = x.clone().requires_grad_(True)
                        w = torch.randn(ref.shape, generator=g, dtype=torch.float64).to(dtype)
                        (ga,) = torch.autograd.grad(
                            (roi_align(xg, rois, (7, 5), scale, sampling_ratio, aligned) * w).sum(), xg
                        )
                        (gr,) = torch.autograd.grad(
                            (tv_roi_align(xg, rois, (7, 5), scale, sampling_ratio, aligned) * w).sum(), xg
                        )
                        worst_grad = max(
                            worst_grad, ((ga - gr).abs().max() / gr.abs().max().clamp(min=1e-30)).item()
                        )
        name = str(dtype).replace("torch.", "")
        report(
            f"roi_align forward {name}",
            equal == total,
            f"{equal}/{total} settings bit-identical ({num} RoIs each)",
        )
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        report(
            f"roi_align backward {name}", worst_grad < tol, f"max |grad diff| / max |grad| = {worst_grad:.2e}"
        )
        print(
            f"     (torchvision's pure-Python fallback vs its own kernel, first {FALLBACK_ROIS} boxes: max |diff| {fallback_worst:.3g})"
        )


def check_multiscale(quick: bool) -> None:
    g = torch.Generator().manual_seed(1)
    h, w = 800, 1216
    channels = 8 if quick else 64
    feats = {s: torch.randn(2, channels, h // s, w // s, generator=g) for s in (4, 8, 16, 32, 64)}
    named = OrderedDict(
        (name, feats[s]) for name, s in zip(("0", "1", "2", "3", "pool"), (4, 8, 16, 32, 64), strict=True)
    )
    boxes = []
    for _ in range(2):
        xy = torch.rand(500, 2, generator=g) * torch.tensor([w, h]) - 40
        wh = torch.rand(500, 2, generator=g) ** 2 * 800 + 1
        boxes.append(torch.cat([xy, xy + wh], 1))
    image_shapes = [(h, w), (760, 1100)]
    for sampling_ratio in (2, 0):
        ref = TVMultiScaleRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio)(named, boxes, image_shapes)
        by_stride = MultiScaleRoIAlign([4, 8, 16, 32], 7, sampling_ratio)(feats, boxes)
        by_name = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio)(named, boxes, image_shapes)
        report(
            f"MultiScaleRoIAlign sampling_ratio={sampling_ratio}",
            torch.equal(by_stride, ref) and torch.equal(by_name, ref),
            f"1000 boxes on 4 levels; max |diff| {(by_stride - ref).abs().max().item():.3g}",
        )


def check_rpn(quick: bool) -> None:
    from detectors.rcnn.rpn import build_rpn

    torch.manual_seed(0)
    tv_rpn = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).rpn
    ours = build_rpn(256)
    tv_keys = list(tv_rpn.state_dict())
    report("RPN state-dict keys", list(ours.state_dict()) == tv_keys, ", ".join(f"rpn.{k}" for k in tv_keys))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # livelier logits and deltas than the 0.01-std init, so NMS and matching have work
        for p in tv_rpn.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    ours.load_state_dict(tv_rpn.state_dict())

    h, w = (384, 640) if quick else (800, 1216)
    image_sizes = [(h, w), (h - 40, w - 96)]
    features = OrderedDict(
        (name, torch.randn(2, 256, -(-h // s), -(-w // s), generator=g))
        for name, s in zip(("0", "1", "2", "3", "pool"), (4, 8, 16, 32, 64), strict=True)
    )
    images = ImageList(torch.zeros(2, 3, h, w), image_sizes)

    def gt(n: int, hw: tuple[int, int]) -> torch.Tensor:
        xy = torch.rand(n, 2, generator=g) * torch.tensor([hw[1] * 0.8, hw[0] * 0.8])
        return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 300 + 8], 1)

    for case, gt_boxes in (
        ("2 images with objects", [gt(7, image_sizes[0]), gt(3, image_sizes[1])]),
        ("one image without objects", [gt(5, image_sizes[0]), torch.zeros(0, 4)]),
    ):
        for mode in ("train", "eval"):
            tv_rpn.train(mode == "train")
            ours.train(mode == "train")
            targets = [{"boxes": b} for b in gt_boxes]
            torch.manual_seed(11)
            tv_props, tv_losses = tv_rpn(images, features, targets if mode == "train" else None)
            out = ours(list(features.values()), (h, w), image_sizes)
            same_anchors = all(
                torch.equal(a, b)
                for a, b in zip(
                    out.anchors, tv_rpn.anchor_generator(images, list(features.values())), strict=True
                )
            )
            same = [torch.equal(a, b) for a, b in zip(out.proposals, tv_props, strict=True)]
            report(
                f"RPN proposals, {mode}, {case}",
                all(same) and same_anchors,
                f"anchors equal {same_anchors}; per image {[len(p) for p in out.proposals]} vs "
                f"{[len(p) for p in tv_props]} proposals, identical {same}",
            )
            if mode != "train":
                continue
            torch.manual_seed(11)
            objectness, box = ours.loss(out, gt_boxes)
            ref_obj, ref_box = tv_losses["loss_objectness"], tv_losses["loss_rpn_box_reg"]
            report(
                f"RPN losses, {case}",
                torch.equal(objectness, ref_obj) and torch.equal(box, ref_box),
                f"objectness {objectness.item():.9g} vs {ref_obj.item():.9g}, box {box.item():.9g} vs {ref_box.item():.9g}",
            )
            ours_grads = torch.autograd.grad(objectness + box, list(ours.parameters()))
            ref_grads = torch.autograd.grad(ref_obj + ref_box, list(tv_rpn.parameters()))
            worst = max(
                ((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()
                for a, b in zip(ours_grads, ref_grads, strict=True)
            )
            report(
                f"RPN loss gradients, {case}",
                worst < 1e-5,
                f"max relative diff over the head's parameters {worst:.2e}",
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer RoIs, smaller maps (a minute)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    check_roi_align(args.quick)
    check_multiscale(args.quick)
    check_rpn(args.quick)
    print("ALL MATCH" if not FAILURES else f"{len(FAILURES)} FAILED: {', '.join(FAILURES)}")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
