"""One command that proves the GPU path: every family trains, the step, the loader, evaluation and
packed trials are timed against the goals, and one markdown table + JSON are written.

    python benchmarks/gpu_check.py --out runs/gpu-check     # full: one CUDA device, ~8 minutes
    python benchmarks/gpu_check.py --smoke --out /tmp/gc    # every part at toy sizes on the CPU (the test)
    python benchmarks/gpu_check.py --parts b d --out gc     # a few parts again

Parts (benchmarks/gpu_check_parts/, one file each; benchmarks/README.md "GPU check" says how to run it on a
lent machine): a every family of the zoo trains 20 steps through the trainer (smallest and paper size,
MSSD + MAD and each comparator), b YOLOv5s / YOLOX-s step time at 640 px batch 16 (and train.compile),
c first vs second epoch and the loader, d evaluation timings and eval.rect mAP, e two and three packed
trainings, f the report. Imports only torch, numpy and the project: the GPU image has no ray, optuna,
mlflow, pycocotools or faster-coco-eval (carry the last as a wheel to score part d).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # gpu_check_parts, and the project without installing it

import torch  # noqa: E402
from gpu_check_parts.common import (  # noqa: E402
    FULL,
    SMOKE,
    coco_backend,
    ensure_data,
    environment,
    release_loaders,
)
from gpu_check_parts.report import PARTS, write_report  # noqa: E402


def run(sizes, parts: list[str], out: Path, data_root: Path | None, log) -> dict:
    from gpu_check_parts.epochs import check_epochs, loader_against_step
    from gpu_check_parts.evaluation import check_eval
    from gpu_check_parts.families import check_families
    from gpu_check_parts.packing import check_packing
    from gpu_check_parts.step import check_steps

    started = time.perf_counter()
    results: dict = {"date": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
                     "environment": environment(sizes), "sizes": sizes.__dict__, "parts": {}, "crashed": {},
                     "coco_backend": coco_backend()}
    log(f"{results['date']}: {results['environment']}")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        scratch = Path(scratch)
        data_root = data_root or scratch / "synthetic"
        results["data_seconds"] = ensure_data(sizes, data_root)
        log(f"data: {sizes.train_images} + {sizes.val_images} images at {data_root} "
            f"({results['data_seconds']:.1f} s to generate)")
        trained = None

        def part(name: str, call):
            if name not in parts:
                return None
            log(f"part {name}")
            part_started = time.perf_counter()
            try:
                return call()
            except Exception as error:  # a part that crashes is reported; the others still run
                results["crashed"][name] = f"{type(error).__name__}: {error}"
                log(traceback.format_exc())
                return None
            finally:
                log(f"part {name}: {time.perf_counter() - part_started:.1f} s")

        def save_so_far(name: str, value) -> None:
            """Each part's figures are written as soon as it ends: a run cut off at its time limit keeps them."""
            results["parts"][name] = value
            results["seconds"] = time.perf_counter() - started
            write_report(_finished(results, sizes), out)

        save_so_far("a", part("a", lambda: check_families(sizes, data_root, log)))
        save_so_far("b", part("b", lambda: check_steps(sizes, data_root, log)))
        c_and_model = part("c", lambda: check_epochs(sizes, data_root, log, scratch))
        if c_and_model is not None:
            results["parts"]["c"], trained = c_and_model
            step = (results["parts"].get("b") or {}).get("step_s")
            results["loader_vs_step"] = loader_against_step(results["parts"]["c"], step)
            save_so_far("c", results["parts"]["c"])
        if "d" in parts and trained is None:
            trained = part("d", lambda: _briefly_trained(sizes, data_root, scratch))
        if trained is not None:
            save_so_far("d", part("d", lambda: check_eval(trained, log)))
            release_loaders(trained)
            del trained
        save_so_far("e", part("e", lambda: check_packing(sizes, data_root, log, Path(__file__).resolve())))
    results["seconds"] = time.perf_counter() - started
    results = _finished(results, sizes)
    md, js = write_report(results, out)
    log(f"wrote {md} and {js}")
    return results


def _finished(results: dict, sizes) -> dict:
    """The results as written: parts that ran, how syncs were counted, each part's pass/fail."""
    results["parts"] = {k: v for k, v in results["parts"].items() if v is not None}
    results["sync_method"] = ("torch.cuda.set_sync_debug_mode('warn') inside train_step and optimizer_step"
                              if sizes.device == "cuda" else
                              "Tensor.item/float/int/bool/tolist/numpy calls inside train_step and optimizer_step "
                              "(CPU proxy: on a GPU each is a sync; nonzero and boolean indexing are not counted)")
    results["passed"] = {p: bool(results["parts"][p].get("passed")) for p in results["parts"]}
    return results


def _briefly_trained(sizes, data_root: Path, scratch: Path):
    """Part d without part c: one epoch of part c's model, uncached."""
    from gpu_check_parts.common import run_config

    from detectors.engine.trainer import Trainer

    cfg = run_config(sizes, data_root, sizes.eval_model, workers=max(sizes.loader_workers))
    trainer = Trainer(cfg, scratch / "brief")
    trainer.run_epoch(1)
    return trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every part at toy sizes on the CPU (< 1 minute)")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-check"), help="folder for gpu_check.md and .json")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="parts to run (default all)")
    parser.add_argument("--data-root", type=Path, help="keep the generated set here between runs")
    parser.add_argument("--pack-worker", help=argparse.SUPPRESS)  # part e's worker process (JSON options)
    args = parser.parse_args(argv)
    if args.pack_worker:
        from gpu_check_parts.packing import worker

        worker(json.loads(args.pack_worker))
        return 0
    sizes = SMOKE if args.smoke else FULL
    if sizes.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU machine, or --smoke for the CPU check", file=sys.stderr)
        return 2
    if sizes.device == "cpu":
        torch.set_num_threads(1)  # the smoke run shares a small CPU; its figures are not timings

    def log(line: str) -> None:
        print(line, flush=True)

    results = run(sizes, args.parts, args.out, args.data_root, log)
    print((args.out / "gpu_check.md").read_text())
    return 1 if results["crashed"] else 0


if __name__ == "__main__":
    sys.exit(main())
