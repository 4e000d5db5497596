"""``mssd ablate CONFIG --seeds K``: the paper's Table 2 ablation (baseline, +MAD, +MSSD, +both) x K seeds.

Runs in parallel on local Ray (or ``--address``) when Ray is available, else one run after another
(``--backend local`` forces that); every run is an MLflow child run of one parent run named after the
ablation. Writes ``<workdir>/<name>/ablation/ablation.{md,csv,png}`` (see ``study.ablation``).
"""

from __future__ import annotations

from study.cli.common import add_config_arguments


def register(subparsers) -> None:
    ablate = subparsers.add_parser("ablate", help="Table 2 ablation: baseline, +MAD, +MSSD, +both over K seeds")
    add_config_arguments(ablate)
    ablate.add_argument("--seeds", type=int, default=3, metavar="K", help="seeds per variant (default 3)")
    ablate.add_argument("--name", metavar="NAME", help="ablation name (default: ablation-<config>-<time>)")
    ablate.add_argument("--workdir", default="runs", metavar="DIR",
                        help="root of the ablation's folder and of the default MLflow store (mlflow.db)")
    ablate.add_argument("--backend", default="auto", choices=("auto", "ray", "local"),
                        help="ray: parallel trials; local: sequential in this process; auto: ray if installed")
    ablate.add_argument("--max-concurrent", type=int, metavar="N", help="ray: at most N runs at once")
    ablate.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="C", help="ray: CPUs reserved per run")
    ablate.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="G", help="fractions allowed")
    ablate.add_argument("--address", metavar="ADDR", help="ray: join a cluster (auto or ray://HOST:10001)")
    ablate.add_argument("--quiet", action="store_true", help="no live progress table")
    ablate.set_defaults(handler=_ablate)


def _ablate(args) -> int:
    from study.ablation import AblationOptions, run_ablation

    result = run_ablation(AblationOptions(
        config=args.config, seeds=args.seeds, overrides=args.overrides, name=args.name, workdir=args.workdir,
        backend=args.backend, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent, address=args.address, verbose=0 if args.quiet else None))
    print(result.markdown)
    print(f"ablation {result.name} ({result.backend}) in {result.elapsed_s:.0f} s; MLflow {result.tracking_uri}")
    for path in result.files:
        print(f"wrote {path}")
    return 0
