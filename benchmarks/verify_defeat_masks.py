"""Our FGFI and DeFeat masks against DeFeat.pytorch's own code, run side by side on random boxes.

DeFeat.pytorch (github.com/ggjy/DeFeat.pytorch, the reference the issue names for FGFI and DeFeat) builds
both masks in ``mmdet/models/dense_heads/anchor_head.py``: ``get_roi_mask`` (FGFI's anchor-IoU mask,
phi = psi = 0.5) and ``get_gt_mask`` (DeFeat's object mask). This script reads those methods' source from
a local clone (``fetch`` gives a bare git directory), executes them unchanged as plain functions (their
mmdet helpers replaced by minimal stand-ins: ``bbox_overlaps`` = plain IoU, ``get_anchors`` = our cell
anchors in mmdet's (H, W, A) order, ``.cuda()`` = identity), and compares their masks with
``losses.fgfi.imitation_mask`` and ``losses.defeat.box_mask`` on one level (their ``_map_roi_levels`` gives
each box to one FPN level by scale; with one level every box lands on it, which is what we do per level).

    .venv/bin/python benchmarks/verify_defeat_masks.py --repo /work/.mirror/ggjy+DeFeat.pytorch/repo

Prints the number of random cases compared, masked cells and mismatching cells (0 expected), and exits 1 on
a mismatch.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from losses.defeat import box_mask  # noqa: E402
from losses.fgfi import cell_anchors, imitation_mask, pairwise_iou  # noqa: E402

SOURCE = "mmdet/models/dense_heads/anchor_head.py"
FUNCTIONS = ("_map_roi_levels", "get_roi_mask", "get_gt_mask")


def reference_functions(repo: str) -> dict[str, types.FunctionType]:
    """DeFeat.pytorch's mask methods, compiled from their source as module-level functions."""
    text = subprocess.run(["git", "--git-dir", repo, "show", f"HEAD:{SOURCE}"], capture_output=True, text=True,
                          check=True).stdout
    tree = ast.parse(text)
    found = {node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name in FUNCTIONS}
    missing = set(FUNCTIONS) - set(found)
    if missing:
        raise SystemExit(f"{SOURCE}: methods not found: {sorted(missing)}")
    module = ast.Module(body=[found[name] for name in FUNCTIONS], type_ignores=[])
    namespace = {"torch": torch, "np": np}
    exec(compile(module, f"DeFeat.pytorch/{SOURCE}", "exec"), namespace)  # their code, unchanged
    return {name: namespace[name] for name in FUNCTIONS}


class Head:
    """The attributes of mmdet's AnchorHead the reference methods read."""

    def __init__(self, functions, anchors_wh: torch.Tensor, stride: int) -> None:
        self.functions, self.anchors_wh, self.stride = functions, anchors_wh, stride
        self.num_anchors = anchors_wh.shape[0]
        self.anchor_generator = types.SimpleNamespace(strides=[stride])

    def _map_roi_levels(self, rois, num_levels):
        return self.functions["_map_roi_levels"](self, rois, num_levels)

    def get_anchors(self, featmap_sizes, img_metas):
        per_level = [cell_anchors(self.anchors_wh, self.stride, tuple(int(v) for v in size)).reshape(-1, 4)
                     for size in featmap_sizes]
        return [per_level for _ in img_metas], None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default="/work/.mirror/ggjy+DeFeat.pytorch/repo", help="DeFeat.pytorch git dir")
    parser.add_argument("--cases", type=int, default=200)
    args = parser.parse_args()
    functions = reference_functions(args.repo)
    torch.Tensor.cuda = lambda self, *a, **k: self  # their masks are built on the GPU
    sys.modules["mmdet"] = types.ModuleType("mmdet")
    core = types.ModuleType("mmdet.core")
    core.bbox_overlaps = pairwise_iou
    sys.modules["mmdet.core"] = core

    generator = torch.Generator().manual_seed(0)
    anchors_wh = torch.tensor([[10.0, 13.0], [16.0, 30.0], [33.0, 23.0]])
    fgfi_bad = defeat_bad = fgfi_cells = defeat_cells = 0
    for case in range(args.cases):
        stride = (8, 16, 32)[case % 3]
        height, width = 4 + case % 5, 6 + case % 7
        batch = 2
        head = Head(functions, anchors_wh * stride / 8, stride)
        per_image, flat, index = [], [], []
        for b in range(batch):
            n = int(torch.randint(0, 5, (1,), generator=generator))
            xy = torch.rand(n, 2, generator=generator) * torch.tensor([width * stride, height * stride])
            wh = torch.rand(n, 2, generator=generator) * stride * 6 + 1
            boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([width * stride - 1e-3, height * stride - 1e-3]))],
                              1).double()
            per_image.append(boxes)
            flat.append(boxes.float())
            index += [b] * n
        boxes, batch_index = torch.cat(flat), torch.tensor(index, dtype=torch.long)
        scores = [torch.zeros(batch, 1, height, width)]
        metas = [{}] * batch
        theirs = functions["get_roi_mask"](head, scores, metas, per_image, phi=0.5)[0]
        ours = imitation_mask(boxes, batch_index, batch, head.anchors_wh, stride, (height, width), psi=0.5)
        fgfi_bad += int((theirs.float() != ours).sum())
        fgfi_cells += int(ours.sum())
        theirs = functions["get_gt_mask"](head, scores, metas, per_image)[0]
        ours = box_mask(boxes, batch_index, batch, stride, (height, width))
        defeat_bad += int((theirs.float() != ours).sum())
        defeat_cells += int(ours.sum())
    print(f"{args.cases} random cases (strides 8/16/32, 0-4 boxes per image, 2 images): mismatching cells: "
          f"FGFI mask {fgfi_bad} (of {fgfi_cells} masked), DeFeat object mask {defeat_bad} (of {defeat_cells} masked)")
    return 1 if fgfi_bad or defeat_bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
