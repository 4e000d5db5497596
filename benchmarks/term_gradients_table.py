"""Print a run's ``train.diagnose_every`` figures (``diag/*``) as markdown tables, from its last checkpoint.

    .venv/bin/mssd train configs/yolov5n-cpu.yaml --set train.diagnose_every=20      # eq 7, the paper's weights
    .venv/bin/python benchmarks/term_gradients_table.py runs/train/<run folder> [--epochs 1,2,4,8,16,24]

The checkpoint's ``history`` holds every epoch's metrics; for the chosen epochs the tables give each eq-7
part's value per image, its gradient norm on the detector's parameters and the cosine of that gradient
with L_gt's, then the pre-clip total gradient norm and the fraction of clipped steps (what each figure
means: ``detectors/engine/term_gradients.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detectors.engine.checkpoint import load_checkpoint, resolve_checkpoint

PARTS = ("gt", "distill_s", "distill_m", "distill_l", "mask")


def tables(history: list[dict], epochs: list[int]) -> str:
    rows = [m for m in history if int(m["epoch"]) in epochs]
    present = [p for p in PARTS if f"diag/grad/{p}" in (rows[0] if rows else {})]
    out = []
    for title, prefix, fmt in (("value per image", "diag/value/", "{:.4f}"), ("gradient norm", "diag/grad/", "{:.3f}"),
                               ("cosine with L_gt's gradient", "diag/cos/", "{:+.2f}")):
        parts = [p for p in present if f"{prefix}{p}" in rows[0]]
        if not parts:  # the baseline has no part besides L_gt to compare with it
            continue
        out += [f"**{title}**", "", "| epoch | " + " | ".join(parts) + " |", "| --- |" + " --- |" * len(parts)]
        out += [f"| {int(m['epoch'])} | " + " | ".join(fmt.format(m[f'{prefix}{p}']) for p in parts) + " |" for m in rows]
        out.append("")
    out += ["**whole step**", "", "| epoch | grad norm before clipping | steps clipped | mAP (%) |", "| --- | --- | --- | --- |"]
    out += [f"| {int(m['epoch'])} | {m.get('diag/grad_total', float('nan')):.2f} | {100 * m.get('diag/clipped', 0.0):.0f} % | "
            f"{100 * m.get('map', float('nan')):.1f} |" for m in rows]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder, its checkpoints folder or a checkpoint file")
    parser.add_argument("--epochs", default="1,2,4,8,16,24", help="comma-separated epochs to show")
    args = parser.parse_args()
    state = load_checkpoint(resolve_checkpoint(args.run))
    print(tables(state["history"], [int(e) for e in args.epochs.split(",")]))


if __name__ == "__main__":
    main()
