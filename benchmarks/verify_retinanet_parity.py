"""Check our RetinaNet against torchvision's own ``retinanet_resnet50_fpn`` (v1), by running both in one process.

    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch torchvision numpy pyyaml    # a peer venv
    /tmp/tv/bin/python benchmarks/verify_retinanet_parity.py            # from the repository root
    .venv/bin/python benchmarks/verify_retinanet_parity.py --counts-only  # parameter / GFLOP counts (no torchvision)
    .venv/bin/python benchmarks/verify_retinanet_parity.py --overfit      # one batch, 150 SGD steps (no torchvision)

torchvision is not a dependency of the project (its compiled ops do not load with our CPU torch): this
script runs in a peer venv where it works, and imports our package from the repository root. Their
model is built as ``retinanet_resnet50_fpn`` builds it for fine-tuning (ResNet-50 with ``FrozenBatchNorm2d``,
``_resnet_fpn_extractor(trainable_layers=3, returned_layers=[2, 3, 4], LastLevelP6P7(256, 256))``,
``RetinaNet(backbone, K)``) without downloading weights; every weight, bias and frozen-BN statistic is then
randomised (the class bias too, so that thousands of candidates pass the score threshold and NMS has work).

Checks (exit status 1 if any fails):

1. keys: ordered state-dict keys, shapes and ``requires_grad`` of ours vs theirs, 91 and 3 classes (the
   sha256 of their listing is printed; ``tests/detectors/test_retinanet_model.py`` records it).
2. weights: their state dict saved with ``torch.save`` loads into ours through ``load_weights`` (strict),
   and into a 3-class model skipping only ``cls_logits``.
3. FPN maps: their ``backbone`` on their normalised images vs our P3-P7 (and our merged maps against a
   recomputation from their modules); anchors; head outputs (``cls_logits``, ``bbox_regression``).
4. detections: their eval forward (``GeneralizedRCNNTransform`` with min/max size equal to the image size,
   i.e. no resize) vs our ``predict`` with the same thresholds (0.05 / 0.5; 300 and 1000 detections):
   count, labels, boxes, scores.
5. loss: their training forward on the same images and targets (ground truths of mixed sizes, one image
   without objects; 512 x 512 and the rectangle) vs our ``RetinaNetLoss`` on the loader's normalised
   rows: the two items, the matched ground truth of every anchor (their matching, captured) and the gradients.
6. counts: parameters and GFLOPs at 3 classes, 640 x 640 (``detectors.model_info``) beside the paper's.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.retinanet.head import flatten_levels  # noqa: E402
from detectors.retinanet.loss import RetinaNetLoss, targets_to_images  # noqa: E402
from detectors.retinanet.model import RetinaNet as OurRetinaNet  # noqa: E402
from detectors.retinanet.weights import load_weights  # noqa: E402

failures: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
    if not ok:
        failures.append(name)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def build_theirs(num_classes: int, size: tuple[int, int] | None = None, **kwargs):
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.retinanet import RetinaNet
    from torchvision.models.resnet import resnet50
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    body = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    if size is not None:  # min_size = short side, max_size = long side: the transform's scale is exactly 1
        kwargs.update(min_size=min(size), max_size=max(size))
    return RetinaNet(backbone, num_classes, **kwargs)


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, tensor in model.state_dict().items():
        if name.endswith("running_var"):
            tensor.copy_(torch.rand(tensor.shape, generator=g) * 0.5 + 0.75)
        elif name.endswith(("running_mean", "bias")) and "cls_logits" not in name:
            tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.05)
        elif "cls_logits.bias" in name:
            tensor.copy_(torch.randn(tensor.shape, generator=g) - 1.0)
        elif name.endswith("weight") and tensor.dim() == 1:  # frozen BN scale
            tensor.copy_(1 + torch.randn(tensor.shape, generator=g) * 0.1)
        elif "head" in name and name.endswith("weight"):  # std 0.01 heads give flat maps: widen them
            tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.03)


def check_keys() -> None:
    for k in (91, 3):
        theirs, ours = build_theirs(k), OurRetinaNet("retinanet_resnet50_fpn", k)
        ts, os_ = theirs.state_dict(), ours.state_dict()
        same = list(ts) == list(os_) and all(ts[n].shape == os_[n].shape for n in ts)
        check(f"keys {k} classes", same, f"{len(ts)} tensors" if same else
              f"first difference {next((a, b) for a, b in zip(ts, os_, strict=False) if a != b) if list(ts) != list(os_) else 'shape'}")
        listing = "\n".join(f"{n} {tuple(v.shape)}" for n, v in ts.items())
        print(f"     sha256 of their '<key> <shape>' listing, {k} classes: {hashlib.sha256(listing.encode()).hexdigest()}")
        grads_t = [(n, p.requires_grad) for n, p in theirs.named_parameters()]
        grads_o = [(n, p.requires_grad) for n, p in ours.named_parameters()]
        check(f"parameters and requires_grad {k} classes", grads_t == grads_o,
              f"{sum(r for _, r in grads_t)} of {len(grads_t)} trainable")


def check_weights(theirs, folder: Path) -> OurRetinaNet:
    path = folder / "retinanet_tv.pth"
    torch.save(theirs.state_dict(), path)
    ours = OurRetinaNet("retinanet_resnet50_fpn", 3)
    report = load_weights(ours, path)
    equal = all(torch.equal(ours.state_dict()[k], v) for k, v in theirs.state_dict().items())
    check("weights load strict", not report.skipped and not report.unexpected and equal, report.summary())
    coco = build_theirs(91)
    torch.save(coco.state_dict(), folder / "coco.pth")
    other = load_weights(OurRetinaNet("retinanet_resnet50_fpn", 3), folder / "coco.pth")
    check("91 -> 3 classes skips cls_logits only", other.skipped == [
        "head.classification_head.cls_logits.weight", "head.classification_head.cls_logits.bias"], other.summary())
    return ours


@torch.no_grad()
def check_maps(theirs, ours, images: torch.Tensor) -> None:
    theirs.eval()
    ours.eval()
    image_list, _ = theirs.transform(list(images))
    check("their transform keeps the size", tuple(image_list.tensors.shape) == tuple(images.shape),
          f"{tuple(image_list.tensors.shape)}")
    normalised = ours.normalise(images)
    check("normalisation", torch.equal(image_list.tensors, normalised),
          f"max |diff| {max_diff(image_list.tensors, normalised):.3g}")
    feats_t = list(theirs.backbone(image_list.tensors).values())
    maps = ours.features(images)
    diffs = [max_diff(t, maps[f"P{level}"]) for t, level in zip(feats_t, (3, 4, 5, 6, 7), strict=True)]
    check("FPN outputs P3-P7", max(diffs) == 0.0, "max |diff| per level " + ", ".join(f"{d:.3g}" for d in diffs))
    # merged maps: recomputed from their FPN's own modules (their forward does not return them)
    body = theirs.backbone.body(image_list.tensors)
    c = list(body.values())
    fpn = theirs.backbone.fpn
    last = fpn.get_result_from_inner_blocks(c[-1], -1)
    merged = [last]
    for i in range(len(c) - 2, -1, -1):
        lateral = fpn.get_result_from_inner_blocks(c[i], i)
        last = lateral + torch.nn.functional.interpolate(last, size=lateral.shape[-2:], mode="nearest")
        merged.insert(0, last)
    diffs = [max_diff(m, maps[f"M{level}"]) for m, level in zip(merged, (3, 4, 5), strict=True)]
    check("FPN merged maps M3-M5", max(diffs) == 0.0, ", ".join(f"{d:.3g}" for d in diffs))
    output = ours(images)
    anchors_t = theirs.anchor_generator(image_list, feats_t)
    anchors_o = torch.cat(output.head.anchors)
    check("anchors", all(torch.equal(a, anchors_o) for a in anchors_t),
          f"{anchors_o.shape[0]} per image, max |diff| {max_diff(anchors_t[0], anchors_o):.3g}")
    head_t = theirs.head(feats_t)
    k = ours.num_classes
    for name, ours_part in (("cls_logits", flatten_levels(output.head.cls_logits, k)),
                            ("bbox_regression", flatten_levels(output.head.bbox_regression, 4))):
        d = max_diff(head_t[name], ours_part)
        check(f"head {name}", d == 0.0, f"max |diff| {d:.3g}")


@torch.no_grad()
def check_detections(theirs, ours, images: torch.Tensor, max_det: int = 300) -> None:
    theirs.eval()
    ours.eval()
    theirs.detections_per_img = max_det
    dets_t = theirs(list(images))
    dets_o = ours.predict(images, conf=theirs.score_thresh, iou=theirs.nms_thresh,
                          max_det=theirs.detections_per_img)
    for i, (t, o) in enumerate(zip(dets_t, dets_o, strict=True)):
        same_n = len(t["boxes"]) == len(o.boxes)
        detail = f"{len(t['boxes'])} vs {len(o.boxes)} detections"
        if same_n:
            detail += (f", labels equal {torch.equal(t['labels'], o.classes)}, max |box diff| "
                       f"{max_diff(t['boxes'], o.boxes):.3g} px, max |score diff| {max_diff(t['scores'], o.scores):.3g}")
        ok = same_n and torch.equal(t["labels"], o.classes) and max_diff(t["boxes"], o.boxes) < 1e-3 and \
            max_diff(t["scores"], o.scores) < 1e-6
        check(f"detections image {i}, max_det {max_det}", ok, detail)


def random_targets(h: int, w: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Per image: boxes on a 1/4-pixel grid (exact in the normalised round trip when h, w are powers of 2)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in (9, 0, 4):
        sizes = torch.cat([torch.tensor([[12.0, 20.0], [w * 0.8, h * 0.7]])[: min(n, 2)],
                           torch.rand(max(n - 2, 0), 2, generator=g) * torch.tensor([w * 0.5, h * 0.5]) + 8])
        centres = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
        boxes = torch.cat((centres - sizes / 2, centres + sizes / 2), 1)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        boxes = (boxes * 4).round() / 4
        keep = (boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)
        out.append({"boxes": boxes[keep], "labels": torch.randint(0, 3, (int(keep.sum()),), generator=g)})
    return out


def to_rows(targets: list[dict[str, torch.Tensor]], h: int, w: int) -> torch.Tensor:
    rows = []
    for i, t in enumerate(targets):
        b = t["boxes"]
        cxcywh = torch.stack(((b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                              (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h), 1)
        rows.append(torch.cat((torch.full((len(b), 1), float(i)), t["labels"][:, None].float(), cxcywh), 1))
    return torch.cat(rows)


def check_loss(theirs, ours, images: torch.Tensor, seed: int) -> None:
    h, w = images.shape[-2:]
    targets = random_targets(h, w, seed)
    captured = {}
    original = theirs.head.compute_loss

    def capture(targets_, head_outputs, anchors, matched_idxs):
        captured["matched"] = torch.stack(matched_idxs)
        return original(targets_, head_outputs, anchors, matched_idxs)

    theirs.head.compute_loss = capture
    theirs.train()
    ours.train()
    theirs.zero_grad()
    ours.zero_grad()
    losses_t = theirs(list(images), [dict(t) for t in targets])
    theirs.head.compute_loss = original
    total_t = sum(losses_t.values())
    total_t.backward()

    loss_fn = RetinaNetLoss(ours.fg_iou_thresh, ours.bg_iou_thresh)
    rows = to_rows(targets, h, w)
    output = ours(images)
    total_o, items = loss_fn(output, rows)
    total_o.backward()
    for theirs_name, our_name in {"classification": "cls", "bbox_regression": "box"}.items():
        value = losses_t[theirs_name].detach()
        d = max_diff(value, items[our_name])
        check(f"loss {our_name} ({theirs_name}), {h} x {w}", d < 1e-5 * max(1.0, float(value)),
              f"theirs {float(value):.6f} ours {float(items[our_name]):.6f} |diff| {d:.3g}")
    anchors = torch.cat(output.head.anchors)
    matched = torch.stack([loss_fn.match(boxes, anchors)
                           for boxes, _labels in targets_to_images(rows, images.shape[0], h, w)])
    check(f"matched ground truth per anchor, {h} x {w}", torch.equal(captured["matched"], matched),
          f"{int((captured['matched'] >= 0).sum())} foreground anchors, "
          f"{int((captured['matched'] == -2).sum())} ignored, {int((captured['matched'] != matched).sum())} differ")
    gdiffs = [max_diff(pt.grad, po.grad) / max(float(pt.grad.abs().max()), 1e-12)
              for (_, pt), (_, po) in zip(theirs.named_parameters(), ours.named_parameters(), strict=True)
              if pt.grad is not None]
    check(f"gradients (relative to each tensor's largest), {h} x {w}", max(gdiffs) < 1e-3,
          f"max {max(gdiffs):.3g} over {len(gdiffs)} tensors")


def counts() -> None:
    """Parameters and GFLOPs at 3 classes, 640 x 640, counted by ``detectors.model_info`` (2 x MACs of convs and
    linears), and the MMDetection convention the paper's figures appear to use (multiply-adds; parameters
    all, and trainable only) beside the paper's Table 7 (RetinaNet with MSSD+MAD: 36.43 M / 82.97 G)."""
    from detectors.config import parse_config
    from detectors.distillation import build_distillation
    from detectors.model_info import model_info

    for size in ("retinanet_resnet50_fpn", "retinanet_resnet50_fpn_mmdet2"):
        model = OurRetinaNet(size, 3)
        cfg = parse_config({"detector": {"name": size}, "data": {"classes": ["Car", "Pedestrian", "Cyclist"]},
                            "losses": {"mssd": {"enabled": True}, "mad": {"enabled": True}}})
        info = model_info(model, name=size, num_classes=3, img_size=640,
                          distillation=build_distillation(cfg.losses, model))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        # MMDetection's ResNet keeps BatchNorm affine terms as parameters (ours are FrozenBatchNorm2d buffers)
        bn_affine = sum(v.numel() for k, v in model.state_dict().items() if k.startswith("backbone.body.")
                        and (".bn" in k or ".downsample.1." in k) and k.endswith((".weight", ".bias")))
        extra_macs = info.training_gflops / 2
        print(f"counts {size}, 3 classes, 640 x 640:\n"
              f"  all parameters {info.params / 1e6:.2f} M (+ {bn_affine / 1e6:.2f} M frozen-BN affine terms "
              f"MMDetection counts as parameters = {(info.params + bn_affine) / 1e6:.2f} M), trainable "
              f"{trainable / 1e6:.2f} M; GFLOPs (2 x MACs) {info.gflops:.2f}, G MACs {info.gflops / 2:.2f}\n"
              f"  + MSSD projectors and MAD adapters (training only) {info.training_params / 1e6:.2f} M params, "
              f"{extra_macs:.2f} G MACs -> all {(info.params + bn_affine + info.training_params) / 1e6:.2f} M, "
              f"G MACs {info.gflops / 2 + extra_macs:.2f}\n"
              f"  paper Table 7 (RetinaNet, with MSSD+MAD): 36.43 M / 82.97 G")


def overfit(steps: int = 150, warmup: int = 50, clip: float | None = None) -> None:
    """Does the loss train? ``retinanet_tiny`` on one batch of 4 generated 256 px images, plain SGD lr 0.01
    momentum 0.9 after a ``warmup``-step linear warmup (gradient norm clipped at ``clip`` if given), ``steps``
    steps; prints the loss items and, at the end, how many ground truths a detection
    (score 0.3) overlaps by IoU > 0.5. No torchvision needed."""
    import time

    from detectors.data import build_dataloader, load_samples
    from detectors.engine.schedule import multistep_lr
    from detectors.ops.boxes import box_iou
    from detectors.zoo import build_detector_for, family_of
    from study.config import load_config

    torch.manual_seed(0)
    root = Path(tempfile.mkdtemp()) / "synthetic"
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "retinanet-smoke.yaml",
                      [f"data.root={root}", "data.synthetic.images=64", "data.img_size=256"])
    model = build_detector_for(cfg).train()
    loss_fn = family_of(cfg.detector.name).build_loss(model, cfg)
    batch = next(iter(build_dataloader(cfg.data, load_samples(cfg.data, "train"), batch_size=4, augment=False,
                                       shuffle=False, seed=0)))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        # torchvision's linear warmup (LinearLR from 1/1000) over the first 50 steps: without it, from this
        # random start (no ImageNet weights, FrozenBatchNorm2d at identity statistics), lr 0.01 diverges to
        # NaN within ~25 steps, as RetinaNet is known to without warmup.
        optimizer.param_groups[0]["lr"] = multistep_lr(step - 1, 0, lr=0.01, milestones=(), gamma=0.1,
                                                       warmup_iters=warmup, warmup_ratio=0.001)
        total, items = loss_fn(model(batch.images), batch.targets)
        optimizer.zero_grad()
        total.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        if step == 1 or step % (steps // 10) == 0:
            print(f"step {step}: " + ", ".join(f"{k} {float(v):.4f}" for k, v in items.items())
                  + f" ({time.perf_counter() - started:.0f} s)", flush=True)
    model.eval()
    with torch.no_grad():
        detections = model.predict(batch.images, conf=0.3, iou=0.5, max_det=20)
    found = total_gt = 0
    for (boxes, _labels), d in zip(targets_to_images(batch.targets, 4, 256, 256), detections, strict=True):
        total_gt += len(boxes)
        if len(d) and len(boxes):
            found += int((box_iou(boxes, d.boxes).max(1).values > 0.5).sum())
    print(f"overfit (warmup {warmup}, clip {clip}): {found} of {total_gt} ground truths have a detection with IoU > 0.5 after {steps} steps")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts-only", action="store_true", help="only the parameter / GFLOP counts")
    parser.add_argument("--overfit", action="store_true", help="only the one-batch training check")
    parser.add_argument("--clip", type=float, default=None, help="--overfit: clip the gradient norm at this")
    parser.add_argument("--steps", type=int, default=150, help="--overfit: SGD steps")
    parser.add_argument("--size", type=int, nargs=2, default=(384, 512), metavar=("H", "W"),
                        help="image size for maps and detections (multiples of 128)")
    args = parser.parse_args()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, torch "
          f"{torch.__version__}, load {os.getloadavg()[0]:.1f}")
    if args.counts_only:
        counts()
        return 0
    if args.overfit:
        overfit(args.steps, clip=args.clip)
        return 0
    import torchvision

    print(f"torchvision {torchvision.__version__}")
    torch.manual_seed(0)
    check_keys()
    h, w = args.size
    theirs = build_theirs(3, (h, w))
    randomise(theirs, 0)
    with tempfile.TemporaryDirectory() as folder:
        ours = check_weights(theirs, Path(folder))
    images = torch.rand(2, 3, h, w)
    check_maps(theirs, ours, images)
    check_detections(theirs, ours, images)
    check_detections(theirs, ours, images, max_det=1000)  # NMS run to the end: every kept box compared
    # Loss: a square power-of-two size (the loader's normalised rows convert back to the same pixels),
    # then the rectangle (rows round-trip through y / 384: sub-ulp differences in the boxes).
    square = build_theirs(3, (512, 512))
    square.load_state_dict(theirs.state_dict())
    with torch.no_grad():  # the square case with torchvision's head initialisation: losses of everyday size
        g = torch.Generator().manual_seed(3)
        for name, tensor in square.head.state_dict().items():
            if name.endswith("weight"):
                tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.01)
        square.head.classification_head.cls_logits.bias.fill_(-4.59512)
    ours_square = OurRetinaNet("retinanet_resnet50_fpn", 3)
    ours_square.load_state_dict(square.state_dict())
    check_loss(square, ours_square, torch.rand(3, 3, 512, 512), seed=1)
    check_loss(theirs, ours, torch.rand(3, 3, h, w), seed=2)
    print("FAILED: " + ", ".join(failures) if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
