"""``mssd compare CONFIG --methods baseline,kd,fgfi,defeat,lgd,mssd --seeds K [--backbones cspdarknet,convnext]``:
the paper's Table 4, every method x student backbone x seed as one study (see ``study.compare``).

Runs on local Ray (or ``--address``) when Ray is available, else one run after another; every run is an
MLflow child run of one parent run named after the comparison, the teacher too when this command trains
it. Writes ``<workdir>/<name>/compare/compare.{md,csv,png}``.
"""

from __future__ import annotations

from study.cli.common import add_config_arguments

_METHODS = "baseline,kd,fgfi,defeat,lgd,mssd"


def register(subparsers) -> None:
    compare = subparsers.add_parser("compare", help="Table 4: distillation methods x student backbones over K seeds")
    add_config_arguments(compare)
    compare.add_argument("--methods", default=_METHODS, metavar="M1,M2",
                         help=f"methods to compare, comma-separated, from {_METHODS} (default: all)")
    compare.add_argument("--seeds", type=int, default=3, metavar="K", help="seeds per method and backbone (default 3)")
    compare.add_argument("--backbones", default="cspdarknet", metavar="B1,B2",
                         help="student backbones: cspdarknet (the config's YOLOv5 size), convnext (yolov5s_convnext)")
    compare.add_argument("--teacher-weights", metavar="PATH",
                         help="the teacher's checkpoint for kd/fgfi/defeat (default: distill.teacher.weights; if "
                              "neither, distill.teacher.name is trained first at the same budget)")
    compare.add_argument("--name", metavar="NAME", help="comparison name (default: compare-<config>-<time>)")
    compare.add_argument("--workdir", default="runs", metavar="DIR",
                         help="root of the comparison's folder and of the default MLflow store (mlflow.db)")
    compare.add_argument("--backend", default="auto", choices=("auto", "ray", "local"),
                         help="ray: parallel trials; local: sequential in this process; auto: ray if installed")
    compare.add_argument("--max-concurrent", type=int, metavar="N", help="ray: at most N runs at once")
    compare.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="C", help="ray: CPUs reserved per run")
    compare.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="G", help="fractions allowed")
    compare.add_argument("--address", metavar="ADDR", help="ray: join a cluster (auto or ray://HOST:10001)")
    compare.add_argument("--quiet", action="store_true", help="no live progress table")
    compare.set_defaults(handler=_compare)


def _compare(args) -> int:
    from study.compare import CompareOptions, run_compare
    from study.grid_runs import GridOptions

    result = run_compare(CompareOptions(
        config=args.config, methods=args.methods, seeds=args.seeds, backbones=args.backbones,
        teacher_weights=args.teacher_weights, overrides=args.overrides, name=args.name, workdir=args.workdir,
        grid=GridOptions(args.backend, args.cpus_per_trial, args.gpus_per_trial, args.max_concurrent, args.address,
                         0 if args.quiet else None)))
    print(result.markdown)
    print(f"comparison {result.name} ({result.backend}) in {result.elapsed_s:.0f} s; MLflow {result.tracking_uri}")
    for path in result.files:
        print(f"wrote {path}")
    return 0
