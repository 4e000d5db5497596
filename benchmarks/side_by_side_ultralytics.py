"""Side-by-side: our YOLOv5 trainer (the ``data.augment`` recipe) vs Ultralytics' own ``train.py`` (issue 9).

Both train from scratch on the same generated set, exported once to Ultralytics' YOLO txt layout (so both
read the very same images and labels), with the same model size, image size, batch, epochs and
hyperparameters (``hyp.scratch-low.yaml``), and both final weights are scored by OUR evaluator
(``evaluate_checkpoint``: their ``last.pt`` goes through our restricted ``.pt`` loader).

    .venv/bin/python benchmarks/side_by_side_ultralytics.py --kitti /tmp/h8/synth --out /tmp/h8/sbs \\
        --y5-python /tmp/y5venv/bin/python --y5-site /tmp/y5site --model yolov5n --epochs 8

``--y5-python`` is a separate interpreter with a working torch + torchvision (see benchmarks/README.md);
``--y5-site`` holds the PyPI ``yolov5==7.0.14`` package (``yolov5/train.py``). Nothing here is imported
from their code; their ``train.py`` runs in its own process, offline.

Kept equal on both sides (besides the hyperparameter file): SGD, nominal batch 64, EMA, cosine lr
(``--cos-lr`` on theirs: ours only has cosine), no autoanchor (``--noautoanchor``: ours keeps the
default anchors), no pretrained weights, and their warmup rule ``max(round(3 * nb), 100)`` iterations,
which ours gets as ``train.warmup_epochs = that / nb``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.config import parse_config  # noqa: E402
from detectors.data.kitti import read_kitti  # noqa: E402

CLASSES = ["Car", "Pedestrian", "Cyclist"]


def export_yolo(kitti_root: Path, out: Path) -> Path:
    """KITTI-layout set -> ``out/images/{train,val}`` (symlinks) + ``out/labels/{train,val}`` + data.yaml."""
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for sample in read_kitti(kitti_root, split, CLASSES):
            path = Path(sample.image_path)
            link = out / "images" / split / path.name
            if not link.exists():
                link.symlink_to(path.resolve())
            w, h = sample.width, sample.height
            lines = []
            for (x1, y1, x2, y2), c in zip(sample.boxes.tolist(), sample.classes.tolist(), strict=True):
                lines.append(f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                             f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
            (out / "labels" / split / (path.stem + ".txt")).write_text("\n".join(lines) + ("\n" if lines else ""))
    data_yaml = out / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": str(out), "train": "images/train", "val": "images/val",
                                         "nc": len(CLASSES), "names": CLASSES}))
    return data_yaml


def our_config(yolo_root: Path, args, warmup_epochs: float) -> dict:
    hyp = yaml.safe_load((args.y5_site / "yolov5/data/hyps/hyp.scratch-low.yaml").read_text())
    return {
        "seed": args.seed,
        "detector": {"name": args.model, "weights": None},
        "data": {"format": "yolo", "root": str(yolo_root), "train": "images/train", "val": "images/val",
                 "classes": CLASSES, "img_size": args.img, "workers": args.workers},
        "losses": {"mssd": {"enabled": False}, "mad": {"enabled": False},
                   "gt": {"box": hyp["box"], "obj": hyp["obj"], "cls": hyp["cls"], "anchor_t": hyp["anchor_t"]}},
        "train": {"epochs": args.epochs, "batch_size": args.batch, "lr0": hyp["lr0"], "lrf": hyp["lrf"],
                  "momentum": hyp["momentum"], "weight_decay": hyp["weight_decay"],
                  "warmup_epochs": warmup_epochs, "warmup_momentum": hyp["warmup_momentum"],
                  "warmup_bias_lr": hyp["warmup_bias_lr"], "device": "cpu", "eval_interval": args.epochs},
        "tracking": {"experiment": "side-by-side"},
    }


def train_ours(cfg_dict: dict, workdir: Path) -> tuple[Path, float]:
    from detectors.engine.trainer import fit

    cfg = parse_config(cfg_dict)
    start = time.perf_counter()
    fit(cfg, workdir)
    seconds = time.perf_counter() - start
    last = max(workdir.rglob("last.pt"), key=lambda p: p.stat().st_mtime)
    return last, seconds


def train_theirs(data_yaml: Path, args, project: Path) -> tuple[Path, float, str]:
    config_dir = project / "y5config"
    config_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.font, config_dir / "Arial.ttf")
    # Their metrics.py calls np.trapz, which NumPy 2.4 removed (opencv 5 needs NumPy 2): alias it back
    # at start-up rather than touching their code.
    shim = project / "y5shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text("import numpy\nif not hasattr(numpy, 'trapz'):\n"
                                           "    numpy.trapz = numpy.trapezoid\n")
    # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD: their strip_optimizer calls torch.load without weights_only, which
    # torch >= 2.6 refuses for their own pickled model (the 2026-11-25 run crashed there after training).
    env = dict(os.environ, PYTHONPATH=f"{shim}{os.pathsep}{args.y5_site}", TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", YOLO_OFFLINE="1", YOLOV5_CONFIG_DIR=str(config_dir),
               WANDB_MODE="disabled", COMET_MODE="disabled", OMP_NUM_THREADS=str(args.threads))
    cmd = [str(args.y5_python), str(args.y5_site / "yolov5/train.py"),
           "--data", str(data_yaml), "--cfg", str(args.y5_site / f"yolov5/models/{args.model}.yaml"),
           "--weights", "", "--hyp", str(args.y5_site / "yolov5/data/hyps/hyp.scratch-low.yaml"),
           "--img", str(args.img), "--batch-size", str(args.batch), "--epochs", str(args.epochs),
           "--device", "cpu", "--workers", str(args.workers), "--cos-lr", "--noautoanchor", "--noplots",
           "--seed", str(args.seed), "--project", str(project), "--name", "theirs", "--exist-ok"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=project)
    seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    (project / "theirs.log").write_text(log)
    if proc.returncode != 0:
        raise SystemExit(f"their train.py failed (rc {proc.returncode}); log: {project / 'theirs.log'}\n"
                         + log[-3000:])
    return their_state_dict(project / "theirs/weights/last.pt", env, args), seconds, log


def their_state_dict(last: Path, env: dict, args) -> Path:
    """Their stripped ``last.pt`` (``model`` = the EMA, fp16) -> a plain float state dict beside it.

    The PyPI package pickles ``yolov5.models.yolo.DetectionModel`` (the GitHub repo: ``models.yolo...``),
    a module path our restricted unpickler refuses; the state dict's keys are the same as ours.
    """
    out = last.with_name("last_state_dict.pt")
    code = ("import sys, torch; x = torch.load(sys.argv[1], map_location='cpu', weights_only=False); "
            "torch.save(x['model'].float().state_dict(), sys.argv[2])")
    subprocess.run([str(args.y5_python), "-c", code, str(last), str(out)], env=env, check=True)
    return out


def their_final_val(log: str) -> str:
    """The ``all`` row(s) their val.py printed (images, instances, P, R, mAP50, mAP50-95)."""
    return "\n".join(line.strip() for line in log.splitlines() if line.strip().startswith("all "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kitti", type=Path, required=True, help="KITTI-layout set (mssd data synth --out)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--y5-python", type=Path, required=True)
    parser.add_argument("--y5-site", type=Path, required=True)
    parser.add_argument("--font", type=Path, default=Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"))
    parser.add_argument("--model", default="yolov5n", choices=("yolov5n", "yolov5s"))
    parser.add_argument("--img", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per side (both sides run at once)")
    parser.add_argument("--sides", default="ours,theirs")
    parser.add_argument("--seed", type=int, default=0, help="both sides' training seed")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    from detectors.engine.validate import evaluate_checkpoint

    torch.set_num_threads(args.threads)
    data_yaml = export_yolo(args.kitti, args.out / "yolo")
    train_images = len(list((args.out / "yolo/images/train").iterdir()))
    batches = math.ceil(train_images / args.batch)
    warmup_iters = max(round(3.0 * batches), 100)  # their rule (hyp warmup_epochs 3.0)
    cfg_dict = our_config(args.out / "yolo", args, warmup_iters / batches)
    cfg = parse_config(cfg_dict)
    (args.out / "ours.yaml").write_text(yaml.safe_dump(cfg_dict))

    results = {}
    sides = args.sides.split(",")
    theirs_proc = None
    if "theirs" in sides:  # their train.py in its own process, concurrently with ours
        import threading

        box = {}
        theirs_proc = threading.Thread(target=lambda: box.update(
            zip(("last", "seconds", "log"), train_theirs(data_yaml, args, args.out), strict=True)))
        theirs_proc.start()
    if "ours" in sides:
        last, seconds = train_ours(cfg_dict, args.out / "ours")
        results["ours"] = {"weights": str(last), "train_s": round(seconds, 1), **evaluate_checkpoint(cfg, last)}
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    if theirs_proc is not None:
        theirs_proc.join()
        if "last" not in box:
            raise SystemExit("their train.py did not finish; see " + str(args.out / "theirs.log"))
        results["theirs"] = {"weights": str(box["last"]), "train_s": round(box["seconds"], 1),
                             "their_val": their_final_val(box["log"]), **evaluate_checkpoint(cfg, box["last"])}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"{args.model} {args.img}px batch {args.batch} epochs {args.epochs}, {train_images} train images, "
          f"warmup {warmup_iters} iterations; our evaluator on the val split:")
    print(f"{'side':8} {'mAP':>7} {'AP50':>7} {'AP75':>7} {'train s':>8}")
    for side, r in results.items():
        print(f"{side:8} {r['map']:7.4f} {r['ap50']:7.4f} {r['ap75']:7.4f} {r['train_s']:8.1f}")
        if r.get("their_val"):
            print(f"  their val.py: {r['their_val']}")


if __name__ == "__main__":
    main()
