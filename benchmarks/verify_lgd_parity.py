"""Check our LGD teacher (detectors/comparators/lgd.py + losses/lgd.py) against megvii-research/LGD's own
``DynamicTeacher``, by running both in one process on the same weights and inputs.

    git -C /work/.mirror/megvii-research+LGD/repo archive HEAD models | tar -x -C /tmp/lgd-ref
    .venv/bin/python benchmarks/verify_lgd_parity.py --lgd-src /tmp/lgd-ref

Their code is not a dependency and is never copied here: their ``models/customized_detectors/dynamic_teacher/``
files are imported at run time from ``--lgd-src`` (a folder holding their ``models``) into a stand-in
package; what they import from detectron2 (a registry, ``structures.masks`` for segmentation descriptors,
unused here) is an inert stub. Their ``DynamicTeacher`` asserts 256 FPN channels and 80 classes, so the
check runs at those sizes, on one level (stride 8, ``p3``) and two images (3 and 2 objects).

Their modules' weights are randomised (every LayerNorm-free tensor, so that a swapped or transposed copy
shows) and copied into ours (their 1x1 ``Conv1d`` into our ``Linear``). Two conventions differ on purpose
(``losses/lgd.py``'s docstring) and are switched to theirs for the comparison, in our module's namespace
only: the cell of a box (their cell index j inside [x1 / s, x2 / s] vs our cell centre (j + 0.5) s inside
[x1, x2]) and the context box's clamp (theirs to W - 1, H - 1). Boxes lie inside the image (their clamp
of objects to W - 1 then does nothing).

Compared, for each of ``stuGuided`` / ``labelGuided`` x context box off / on: the label embeddings (their
``LabelEncoder`` output vs ours, before the projection) and the teacher map (their
``interactive_remapping`` output vs our ``LabelGuidedTeacher``), max |diff|; exit status 1 if any exceeds
1e-4 relative to the map's scale.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch

from detectors.comparators import lgd as ours_module
from detectors.comparators.lgd import LabelGuidedTeacher
from losses import lgd as lgd_math

TOL = 1e-4


def load_reference(src: Path) -> types.ModuleType:
    """Their dynamic_teacher package under a stand-in parent, detectron2 stubbed."""
    for name in ("detectron2", "detectron2.structures", "detectron2.structures.masks"):
        sys.modules.setdefault(name, types.ModuleType(name))
    root = src / "models" / "customized_detectors"
    parent = types.ModuleType("lgdref")
    parent.__path__ = [str(root)]
    sys.modules["lgdref"] = parent
    build = types.ModuleType("lgdref.build")

    class Registry:
        def register(self):
            return lambda cls: cls

    build.CUSTOMIZED_DETECTORS_REGISTRY = Registry()
    sys.modules["lgdref.build"] = build
    package = types.ModuleType("lgdref.dynamic_teacher")
    package.__path__ = [str(root / "dynamic_teacher")]
    sys.modules["lgdref.dynamic_teacher"] = package
    module = None
    for name in ("spatial_transformer", "utils", "layers", "label_encoder", "dynamic_teacher"):
        spec = importlib.util.spec_from_file_location(f"lgdref.dynamic_teacher.{name}", root / "dynamic_teacher" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def namespace(**kwargs) -> types.SimpleNamespace:
    return types.SimpleNamespace(**kwargs)


def their_config(pattern: str, context: bool) -> types.SimpleNamespace:
    teacher = namespace(INTERACT_PATTERN=pattern, ADD_CONTEXT_BOX=context, DETACH_APPEARANCE_EMBED=False,
                        NR_TRANSFORMER_HEADS=8)
    encoder = namespace(BOX_FORMAT="x1y1x2y2", CATEGORY_FORMAT="one_hot", LOAD_LABELMAP=False)
    return namespace(NUM_CLASSES=80, MODEL=namespace(FPN=namespace(OUT_CHANNELS=256), RECIPROCAL_FPN_STRIDES=[1 / 8],
                                                     DISTILLATOR=namespace(TEACHER=teacher, LABEL_ENCODER=encoder)))


def randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 / max(1, p.shape[-1]) ** 0.5))


def copy_weights(theirs: torch.nn.Module, ours: LabelGuidedTeacher) -> None:
    """Their DynamicTeacher's tensors into our LabelGuidedTeacher (one level, stride 8)."""
    t, o = theirs.state_dict(), {}
    for prefix, mine in (("label_encoder_.stn_desc.", "label_encoder.stn_desc."),
                         ("label_encoder_.stn_feat.", "label_encoder.stn_feat."), ("label_encoder_.", "label_encoder.")):
        for key, value in t.items():
            rest = key[len(prefix):]
            if key.startswith(prefix) and "." in rest and rest.split(".")[0] in (
                    "conv1", "conv2", "conv3", "conv4", "fc1", "fc2", "fc3"):
                o[mine + rest] = value.squeeze(-1) if value.dim() == 3 else value
    o.update({f"label_proj.{p}": t[f"canoni_proj_1D.0.0.{p}"] for p in ("weight", "bias")})
    o.update({f"student_proj.8.0.{p}": t[f"student_proj_2D.0.0.{p}"] for p in ("weight", "bias")})
    o.update({k.replace("multi_head_attn.", "attention."): v for k, v in t.items() if k.startswith("multi_head_attn.")})
    for theirs_name, ours_name in (("local_inst_proj_1D", "instance_proj_1d"), ("local_inst_proj_2D", "instance_proj_2d"),
                                   ("global_ctx_proj_1D", "context_proj_1d")):
        o.update({f"{ours_name}.{p}": t[f"{theirs_name}.{p}"] for p in ("weight", "bias") if ours_name in
                  {k.split(".")[0] for k in ours.state_dict()}})
    o.update({f"refine.{k[len('refinement_module.'):]}": v for k, v in t.items() if k.startswith("refinement_module.")})
    missing = set(ours.state_dict()) - set(o)
    if missing:
        raise SystemExit(f"weights not mapped: {sorted(missing)}")
    ours.load_state_dict(o, strict=True)


def their_cells(boxes: torch.Tensor, stride: int, feature_size: tuple[int, int]) -> torch.Tensor:
    """Their get_inside_gt_mask: cell index j (not its centre) between x1 / s and x2 / s."""
    h, w = feature_size
    b = boxes / stride
    ys = torch.arange(h, dtype=boxes.dtype)
    xs = torch.arange(w, dtype=boxes.dtype)
    inside_x = (xs[None] >= b[:, 0:1]) & (xs[None] <= b[:, 2:3])
    inside_y = (ys[None] >= b[:, 1:2]) & (ys[None] <= b[:, 3:4])
    return (inside_y[:, :, None] & inside_x[:, None, :]).flatten(1).to(boxes.dtype)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lgd-src", required=True, type=Path, help="folder holding their models/ package")
    args = parser.parse_args()
    ref = load_reference(args.lgd_src)
    torch.set_grad_enabled(False)
    img_h, img_w, stride = 64, 96, 8
    # (image, class, x1, y1, x2, y2) in pixels, inside the image, no edge on a multiple of the stride (where
    # their |centre - j| / size <= 0.5 and our j >= x1 / s could round apart).
    objects = [
        (0, 3, 5.0, 7.0, 41.0, 51.0), (0, 17, 30.0, 3.0, 90.0, 30.0), (0, 3, 50.0, 33.0, 70.0, 60.0),
        (1, 79, 10.0, 10.0, 60.0, 58.0), (1, 0, 62.0, 20.0, 94.0, 44.0)]
    features = torch.randn(2, 256, img_h // stride, img_w // stride, generator=torch.Generator().manual_seed(5))

    class Boxes:
        def __init__(self, t):
            self.tensor = t
            self.device = t.device

    class Instances:
        def __init__(self, rows):
            self.gt_boxes = Boxes(torch.tensor([r[2:] for r in rows]))
            self.gt_classes = torch.tensor([r[1] for r in rows])

        def __len__(self):
            return len(self.gt_classes)

    batched = [{"instances": Instances([r for r in objects if r[0] == i])} for i in range(2)]
    images = namespace(tensor=torch.zeros(2, 3, img_h, img_w))
    boxes = torch.tensor([r[2:] for r in objects])
    classes = torch.tensor([r[1] for r in objects])
    batch_index = torch.tensor([r[0] for r in objects])

    ok = True
    for pattern, ours_pattern in (("stuGuided", "student_guided"), ("labelGuided", "label_guided")):
        for context in (False, True):
            theirs = ref.DynamicTeacher(their_config(pattern, context)).eval()
            randomise(theirs, 1)
            ours = LabelGuidedTeacher({8: 256}, 80, dim=256, heads=8, interaction=ours_pattern, context_box=context,
                                      detach_appearance=False).eval()
            copy_weights(theirs, ours)
            # Their conventions, in our module's namespace only: cell index instead of centre, and the
            # context box clamped to (W - 1, H - 1) before normalising by W, H.
            ours_module.inside_box_masks = their_cells

            def their_descriptors(*a, _orig=lgd_math.label_descriptors, **k):
                d, index, is_context, clamped = _orig(*a, **k)
                if is_context.any():
                    clamped = clamped.clone()
                    clamped[is_context] = torch.tensor([0.0, 0.0, img_w - 1.0, img_h - 1.0])
                    d = d.clone()
                    d[is_context, :4] = clamped[is_context] / torch.tensor([img_w, img_h, img_w, img_h]) * 2 - 1
                return d, index, is_context, clamped

            ours_module.label_descriptors = their_descriptors
            try:
                their_maps, _, _ = theirs((batched, images, None, {"p3": features}))
                x, *_ = theirs.label_encoder_((batched, images, None, {"p3": features}))
                d, index, _, _ = their_descriptors(boxes, classes, batch_index, 2, (img_h, img_w), 80,
                                                   context_box=context)
                our_embed = ours.label_encoder(d, index, 2)
                our_maps = ours({8: features}, boxes, classes, batch_index, (img_h, img_w))
            finally:
                ours_module.inside_box_masks = lgd_math.inside_box_masks
                ours_module.label_descriptors = lgd_math.label_descriptors
            embed_diff = float((our_embed - x).abs().max())
            map_diff = float((our_maps[8] - their_maps["p3"]).abs().max())
            scale = float(their_maps["p3"].abs().max())
            good = embed_diff <= TOL * max(1.0, float(x.abs().max())) and map_diff <= TOL * max(1.0, scale)
            ok &= good
            print(f"{pattern:11s} context {'on ' if context else 'off'}: label embeddings ({tuple(x.shape)}) max|diff| "
                  f"{embed_diff:.2e}; teacher map {tuple(our_maps[8].shape)} max|diff| {map_diff:.2e} "
                  f"(max |value| {scale:.2f}) -> {'MATCH' if good else 'DIFFER'}")
    print("ALL MATCH" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
