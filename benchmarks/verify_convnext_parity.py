"""Check our ConvNeXt-T backbone (``yolov5s_convnext``) against the official ConvNeXt code and timm, in one process.

    git -C /work/.mirror/facebookresearch+ConvNeXt/repo show HEAD:models/convnext.py > /tmp/fb_convnext.py
    /tmp/tv/bin/pip install --no-deps --target /tmp/timm_site timm    # timm, outside any project venv
    PYTHONPATH=.:/tmp/timm_site /tmp/tv/bin/python benchmarks/verify_convnext_parity.py \
        --official /tmp/fb_convnext.py

``/tmp/tv`` is a peer venv with torch and torchvision (``python -m venv /tmp/tv && /tmp/tv/bin/pip install
torch torchvision``): timm imports torchvision. Neither theirs nor timm is a dependency of the project: the
official ``models/convnext.py`` (facebookresearch/ConvNeXt) is imported at run time from ``--official``,
timm from the path given.

Checks (exit status 1 if any fails), on randomised weights (every LayerNorm affine and layer-scale gamma
drawn, so that a swapped or dropped key shows):

1. official: their ``convnext_tiny()`` saved as their release files are (``{"model": state_dict}``) loads
   through ``Family.load_weights`` into ``yolov5s_convnext``; the dropped classifier keys are exactly their
   ``norm.*`` / ``head.*``; the outputs of their stages 1-3 (``downsample_layers[i]`` then ``stages[i]``, on
   ImageNet-normalised input) equal ours before our out-norms, max |diff| printed.
2. timm: timm's ``convnext_tiny()`` state dict (timm names) loads through the same loader;
   its stages 1-3 (``stem``, ``stages[i]``) equal ours.
3. the map: timm's own ``checkpoint_filter_fn`` (official -> timm) followed by our ``timm_to_official``
   gives back the official state dict, key for key and tensor for tensor.
4. drop path: ours and theirs in training mode with the same seed and drop_path_rate 0.4 agree (same
   Bernoulli draws per block, in the same order).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

from detectors.backbones.convnext import IMAGENET_MEAN, IMAGENET_STD, ConvNeXt
from detectors.backbones.convnext_weights import timm_to_official
from detectors.zoo import build_detector, family_of

TOL = 1e-4


def randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("gamma") or ".norm" in name or name.startswith(("norm", "stem.1", "head")) \
                    or p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if name.endswith("weight") else 0.0))


def our_stages(backbone: ConvNeXt, images: torch.Tensor) -> list[torch.Tensor]:
    x = (images - backbone.pixel_mean) / backbone.pixel_std
    outs = []
    for s in range(4):
        x = backbone.stages[s](backbone.downsample_layers[s](x))
        if s >= 1:
            outs.append(x)
    return outs


def compare(label: str, ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> bool:
    diffs = [float((a - b).abs().max()) for a, b in zip(ours, theirs, strict=True)]
    scale = [float(b.abs().max()) for b in theirs]
    ok = all(d <= TOL * max(1.0, s) for d, s in zip(diffs, scale, strict=True))
    print(f"{label}: stage 1-3 max |diff| {', '.join(f'{d:.2e}' for d in diffs)} "
          f"(max |value| {', '.join(f'{s:.1f}' for s in scale)}) -> {'MATCH' if ok else 'DIFFER'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, type=Path, help="facebookresearch/ConvNeXt models/convnext.py")
    parser.add_argument("--size", type=int, default=128, help="input size (multiple of 32)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    spec = importlib.util.spec_from_file_location("fb_convnext", args.official)
    fb = importlib.util.module_from_spec(spec)
    sys.modules["fb_convnext"] = fb  # timm's register_model looks the module up
    spec.loader.exec_module(fb)
    # timm's own builder, called directly: the official file registered a convnext_tiny of its own.
    from timm.models.convnext import checkpoint_filter_fn
    from timm.models.convnext import convnext_tiny as timm_convnext_tiny

    images = torch.rand(2, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    normalised = (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    load = family_of("yolov5s_convnext").load_weights
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        # 1. official layout
        theirs = fb.convnext_tiny().eval()
        randomise(theirs, 1)
        path = Path(tmp) / "convnext_tiny_1k_224_ema.pth"
        torch.save({"model": theirs.state_dict()}, path)
        model = build_detector("yolov5s_convnext", num_classes=3).eval()
        report = load(model, path)
        print(report.summary())
        dropped_ok = sorted(report.unexpected) == sorted(k for k in theirs.state_dict() if k.startswith(("norm.", "head.")))
        print(f"official: dropped {report.unexpected} -> {'OK' if dropped_ok else 'WRONG'}")
        x, ref = normalised, []
        for i in range(4):
            x = theirs.stages[i](theirs.downsample_layers[i](x))
            if i >= 1:
                ref.append(x)
        ok &= dropped_ok & compare("official", our_stages(model.backbone, images), ref)
        outs = model.backbone(images)
        full = all(torch.equal(o, getattr(model.backbone, f"norm{s}")(r)) for s, o, r in
                   zip((1, 2, 3), outs, our_stages(model.backbone, images), strict=True))
        print(f"ours: forward = out-norms of the stages -> {'OK' if full else 'WRONG'}")
        ok &= full

        # 2. timm layout
        tm = timm_convnext_tiny(pretrained=False).eval()
        randomise(tm, 2)
        path = Path(tmp) / "timm_convnext_tiny.pth"
        torch.save(tm.state_dict(), path)
        model = build_detector("yolov5s_convnext", num_classes=3).eval()
        report = load(model, path)
        print(report.summary())
        x, ref = tm.stem(normalised), []
        for i in range(4):
            x = tm.stages[i](x)
            if i >= 1:
                ref.append(x)
        ok &= compare("timm", our_stages(model.backbone, images), ref)

        # 3. the map is the inverse of timm's filter
        official = theirs.state_dict()
        back = timm_to_official(checkpoint_filter_fn({"model": official}, tm))
        inverse = back.keys() == official.keys() and all(torch.equal(back[k], official[k]) for k in official)
        print(f"map: timm_to_official(checkpoint_filter_fn(official)) == official -> {'OK' if inverse else 'WRONG'}")
        ok &= inverse

    # 4. drop path in training mode, same seed
    torch.set_grad_enabled(True)
    theirs = fb.convnext_tiny(drop_path_rate=0.4).train()
    ours = ConvNeXt(drop_path_rate=0.4).train()
    ours.load_state_dict({k: v for k, v in theirs.state_dict().items() if not k.startswith(("norm.", "head."))},
                         strict=False)
    torch.manual_seed(3)
    x, ref = normalised, []
    for i in range(4):
        x = theirs.stages[i](theirs.downsample_layers[i](x))
        if i >= 1:
            ref.append(x.detach())
    torch.manual_seed(3)
    ok &= compare("drop path 0.4 (train mode)", [o.detach() for o in our_stages(ours, images)], ref)
    print("ALL MATCH" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
