"""Faster R-CNN parity with torchvision, and the R-CNN parameter / FLOP counts beside the paper's Table 7.

Run with an interpreter that has a working torchvision (here /tmp/y5venv: torch 2.14.1, torchvision 0.29.1;
make one with ``python -m venv /tmp/tv && /tmp/tv/bin/pip install torch torchvision``)::

    /tmp/y5venv/bin/python benchmarks/verify_rcnn_parity.py [--img 320x448] [--classes 3] [--seeds 3]

torchvision is the oracle only: our code (``detectors.rcnn``) runs on torch alone. torchvision's model is
``FasterRCNN(_resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3), num_classes=K + 1)``, i.e.
``fasterrcnn_resnet50_fpn`` as built for fine-tuning from its COCO weights, with its random init; its
``GeneralizedRCNNTransform.resize`` is replaced by the identity so that both models see the same pixels
(our loader letterboxes; the sizes used are multiples of 64, so its batching pads nothing). Checked:

1. ``state_dict`` keys and shapes equal; torchvision's state dict saved to a file loads into ours through
   ``detectors.rcnn.weights.load_weights`` (strict), and with another class count skips exactly the
   predictor's two layers.
2. FPN maps ("0".."3", "pool") of the same normalised batch: max |difference|.
3. Detections in eval mode (score 0.05, NMS 0.5, 100 per image): same count, boxes / scores max
   |difference|, labels equal (ours 0..K-1 = torchvision's 1..K minus 1).
4. Loss items in training mode with the same targets and ``torch.manual_seed(s)`` before each forward
   (both samplers draw ``randperm`` from the global generator in the same order): loss_objectness,
   loss_rpn_box_reg, loss_classifier, loss_box_reg vs our rpn_obj, rpn_box, cls, box.
5. Counts at K = 3, 640 x 640 for fasterrcnn_resnet50_fpn and cascadercnn_resnet50_fpn, in two
   conventions: ours (``detectors.model_info``: every parameter; 2 x multiply-accumulates of one eval
   forward, the RoI heads on the proposals the RPN keeps for a zero image, which depends on the weights:
   ``mssd model info``'s figure) and MMDetection 2.x's
   ``tools/analysis_tools/get_flops.py`` (mmcv's ``get_model_complexity_info``: parameters with
   ``requires_grad``, i.e. without conv1 / layer1 (``frozen_stages=1``) but with the BatchNorm affine
   terms of layers 2-4 that our FrozenBatchNorm2d holds as buffers, and Faster R-CNN's class-specific
   regressor without a background slot; FLOPs = multiply-accumulates of ``forward_dummy``, whose RoI head
   runs on 1000 proposals; RoIAlign, pooling and activations uncounted).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAPER = {"fasterrcnn_resnet50_fpn": (41.22, 91.11), "cascadercnn_resnet50_fpn": (68.96, 118.86)}


def torchvision_faster_rcnn(num_classes: int):
    from torchvision.models import resnet50
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import misc

    backbone = _resnet_fpn_extractor(resnet50(norm_layer=misc.FrozenBatchNorm2d), 3)
    model = FasterRCNN(backbone, num_classes=num_classes + 1)
    model.transform.resize = lambda image, target=None: (image, target)  # no resize: same pixels as ours
    return model


def loader_rows(targets: list[dict], height: int, width: int) -> torch.Tensor:
    """torchvision targets (xyxy px, labels 1..K) -> our loader's (M, 6) normalised rows."""
    rows = []
    for i, t in enumerate(targets):
        b = t["boxes"]
        cx, cy = (b[:, 0] + b[:, 2]) / 2 / width, (b[:, 1] + b[:, 3]) / 2 / height
        w, h = (b[:, 2] - b[:, 0]) / width, (b[:, 3] - b[:, 1]) / height
        rows.append(torch.stack((torch.full_like(cx, i), (t["labels"] - 1).float(), cx, cy, w, h), 1))
    return torch.cat(rows)


def random_targets(generator: torch.Generator, batch: int, height: int, width: int, classes: int) -> list[dict]:
    out = []
    for _ in range(batch):
        n = int(torch.randint(1, 6, (1,), generator=generator))
        xy = torch.rand(n, 2, generator=generator) * torch.tensor([width * 0.7, height * 0.7])
        wh = 16 + torch.rand(n, 2, generator=generator) * torch.tensor([width * 0.3, height * 0.3])
        out.append({"boxes": torch.cat((xy, xy + wh), 1),
                    "labels": torch.randint(1, classes + 1, (n,), generator=generator)})
    return out


def check_keys_and_loading(ours, tv, classes: int) -> None:
    from detectors.rcnn.model import TwoStageDetector
    from detectors.rcnn.weights import load_weights

    a = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in tv.state_dict().items()}
    print(f"1. keys: ours {len(a)}, torchvision {len(b)}, same names and order {list(a) == list(b)}, "
          f"same shapes {a == b}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tv.pth"
        torch.save(tv.state_dict(), path)
        report = load_weights(ours, path)
        print(f"   load_weights: {report.summary()}")
        other = TwoStageDetector("fasterrcnn_resnet50_fpn", classes + 2)
        print(f"   with {classes + 2} classes: skipped {load_weights(other, path).skipped}")
    same = all(torch.equal(x, tv.state_dict()[k]) for k, x in ours.state_dict().items())
    print(f"   every tensor equal after loading: {same}")


@torch.no_grad()
def check_fpn(ours, tv, images: torch.Tensor) -> None:
    normalised = (images - ours.image_mean) / ours.image_std
    theirs = tv.backbone(normalised)
    mine = ours.backbone(normalised).outputs
    diffs = {name: float((theirs[name] - mine[s]).abs().max()) for name, s in zip(theirs, sorted(mine), strict=True)}
    print(f"2. FPN maps max |diff| by level: {diffs}")


@torch.no_grad()
def check_detections(ours, tv, images: torch.Tensor) -> None:
    ours.eval()
    tv.eval()
    theirs = tv(list(images))
    mine = ours.predict(images, conf=0.05, iou=0.5, max_det=100)
    for i, (t, m) in enumerate(zip(theirs, mine, strict=True)):
        same_n = len(t["boxes"]) == len(m)
        line = f"3. image {i}: detections torchvision {len(t['boxes'])}, ours {len(m)}"
        if same_n and len(m):
            line += (f"; boxes max |diff| {float((t['boxes'] - m.boxes).abs().max()):.3g} px, scores "
                     f"{float((t['scores'] - m.scores).abs().max()):.3g}, labels equal "
                     f"{bool(torch.equal(t['labels'] - 1, m.classes))}")
        print(line)


def check_losses(ours, tv, images: torch.Tensor, targets: list[dict], seed: int) -> None:
    from detectors.rcnn.loss import RCNNLoss

    ours.train()
    tv.train()
    torch.manual_seed(seed)
    theirs = tv(list(images), [{k: v.clone() for k, v in t.items()} for t in targets])
    torch.manual_seed(seed)
    _, items = RCNNLoss(ours)(ours(images), loader_rows(targets, *images.shape[-2:]))
    pairs = (("loss_objectness", "rpn_obj"), ("loss_rpn_box_reg", "rpn_box"), ("loss_classifier", "cls"),
             ("loss_box_reg", "box"))
    text = ", ".join(f"{b} {float(items[b]):.6f} vs {float(theirs[a].detach()):.6f} (diff {float(items[b] - theirs[a].detach()):.2g})"
                     for a, b in pairs)
    print(f"4. seed {seed}: {text}")


def mmdet_params(model) -> int:
    """mmcv's count for MMDetection's equivalent model (module docstring, item 5)."""
    from detectors.backbones.resnet import FrozenBatchNorm2d

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    body = model.backbone.body
    bn_affine = sum(m.weight.numel() + m.bias.numel() for name, m in body.named_modules()
                    if isinstance(m, FrozenBatchNorm2d) and name.startswith(("layer2", "layer3", "layer4")))
    background_regressor = 0
    if not model.cascade:  # MMDetection's Faster R-CNN regresses K boxes, torchvision K + 1
        fc = model.roi_heads.box_predictor.bbox_pred
        background_regressor = fc.in_features * 4 + 4
    return trainable + bn_affine - background_regressor


@torch.no_grad()
def mmdet_gmacs(model, img: int) -> float:
    """forward_dummy's multiply-accumulates: backbone, FPN, RPN head on one image, RoI heads on 1000 boxes."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    x = torch.zeros(1, 3, img, img)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(1000, 2, generator=g) * img * 0.8
    boxes = torch.cat((xy, xy + 8 + torch.rand(1000, 2, generator=g) * img * 0.2), 1)
    with FlopCounterMode(display=False) as counter:
        maps = model.backbone((x - model.image_mean) / model.image_std).outputs
        model.rpn.head(list(maps.values()))
        features = {name: maps[s] for name, s in zip(("0", "1", "2", "3", "pool"), sorted(maps), strict=True)}
        heads = model.roi_heads
        if model.cascade:
            for stage in range(len(heads.box_head)):
                heads.stage_outputs(stage, features, [boxes], (img, img))
        else:
            heads.box_outputs(features, [boxes], (img, img))
    return counter.get_total_flops() / 2 / 1e9


def counts(img: int = 640, classes: int = 3) -> None:
    from detectors.model_info import count_gflops, count_params
    from detectors.rcnn.model import TwoStageDetector

    print(f"5. counts at {classes} classes, {img} x {img}:")
    for name, (paper_m, paper_g) in PAPER.items():
        torch.manual_seed(0)
        model = TwoStageDetector(name, classes).eval()
        with torch.no_grad():
            kept = len(model(torch.zeros(1, 3, img, img)).head.proposals[0])
        print(f"   {name}: ours {count_params(model) / 1e6:.2f} M params, {count_gflops(model, img):.2f} GFLOPs "
              f"(2 x MACs, RoI heads on the {kept} proposals the RPN keeps for a zero image at this init); "
              f"MMDetection convention {mmdet_params(model) / 1e6:.2f} M, {mmdet_gmacs(model, img):.2f} G (MACs, 1000 "
              f"RoIs); paper {paper_m} M / {paper_g} G")


def overfit(steps: int = 100) -> None:
    """Training through the contract's path (forward, then the loss running the RoI heads) fits one batch:
    the tiny sizes, 2 images of 128 px with 3 objects, SGD 0.005 momentum 0.9, clipping at 10."""
    from detectors.rcnn.loss import RCNNLoss
    from detectors.rcnn.model import TwoStageDetector

    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.5], [1, 0, 0.3, 0.3, 0.3, 0.3], [1, 2, 0.7, 0.6, 0.3, 0.5]])
    for name in ("fasterrcnn_tiny", "cascadercnn_tiny"):
        torch.manual_seed(0)
        model = TwoStageDetector(name, 3)
        loss_fn = RCNNLoss(model)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.005, momentum=0.9)
        for step in range(steps):
            total, items = loss_fn(model(images), targets)
            optimizer.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            if step in (0, steps - 1):
                print(f"   {name} step {step}: " + ", ".join(f"{k} {float(v):.3f}" for k, v in items.items()))
        found = model.predict(images, conf=0.3, iou=0.5, max_det=5)
        for i, d in enumerate(found):
            boxes = [[round(float(v)) for v in b] for b in d.boxes]
            print(f"   {name} image {i} detections (score > 0.3): boxes {boxes}, classes {d.classes.tolist()}")
    print("   ground truth: image 0 [[38, 32, 90, 96]] class 1; image 1 [[19, 19, 58, 58], [70, 45, 109, 109]] "
          "classes 0, 2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img", default="320x448", help="H x W, multiples of 64")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--skip-counts", action="store_true")
    parser.add_argument("--overfit", action="store_true", help="only the one-batch fit (torch alone, no torchvision)")
    args = parser.parse_args()
    if args.overfit:
        print("6. one-batch fit of the tiny sizes:")
        overfit()
        return
    import torchvision

    from detectors.rcnn.model import TwoStageDetector

    height, width = (int(v) for v in args.img.split("x"))
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, images 2 x {height} x {width}, "
          f"K = {args.classes}")
    started = time.perf_counter()
    torch.manual_seed(0)
    tv = torchvision_faster_rcnn(args.classes)
    ours = TwoStageDetector("fasterrcnn_resnet50_fpn", args.classes)
    check_keys_and_loading(ours, tv, args.classes)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, height, width, generator=g)
    check_fpn(ours, tv, images)
    check_detections(ours, tv, images)
    for seed in range(args.seeds):
        check_losses(ours, tv, images, random_targets(g, 2, height, width, args.classes), seed)
    if not args.skip_counts:
        counts(640, args.classes)
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
