"""``mssd confirm STUDY``: re-run the top K trials of a finished study and the baseline on N fresh seeds,
with paired deltas and 95 % intervals (see ``study.confirm``)."""

from __future__ import annotations


def register(subparsers) -> None:
    confirm = subparsers.add_parser(
        "confirm", help="re-test a study's top trials against the baseline on fresh seeds (paired 95 %% CI)")
    confirm.add_argument("study", metavar="STUDY", help="the finished study's name (its folder under --workdir)")
    confirm.add_argument("--top", type=int, default=3, metavar="K", help="configurations to re-test, best first")
    confirm.add_argument("--seeds", default="5", metavar="N|S1,S2,..",
                         help="N fresh seeds after the largest the search used, or a list of seeds it did not use")
    confirm.add_argument("--workdir", default="runs", metavar="DIR",
                         help="root of the studies and of the default MLflow store (mlflow.db)")
    add_grid_arguments(confirm)
    confirm.set_defaults(handler=_confirm)


def add_grid_arguments(parser) -> None:
    parser.add_argument("--backend", default="auto", choices=("auto", "ray", "local"),
                        help="ray: parallel runs; local: one after another in this process; auto: ray if installed")
    parser.add_argument("--max-concurrent", type=int, metavar="N", help="ray: at most N runs at once")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="C", help="ray: CPUs reserved per run")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="G", help="fractions allowed")
    parser.add_argument("--address", metavar="ADDR", help="ray: join a cluster (auto, HOST:6379 or ray://HOST:10001)")
    parser.add_argument("--quiet", action="store_true", help="no live progress table")


def _confirm(args) -> int:
    from study.confirm import ConfirmOptions, run_confirm
    from study.grid_runs import GridOptions

    grid = GridOptions(args.backend, args.cpus_per_trial, args.gpus_per_trial, args.max_concurrent, args.address,
                       0 if args.quiet else None)
    result = run_confirm(ConfirmOptions(args.study, top=args.top, seeds=args.seeds, workdir=args.workdir, grid=grid))
    print(result.markdown)
    print(f"confirm {args.study}: {result.trained} runs trained in {result.elapsed_s:.0f} s")
    for path in result.files:
        print(f"wrote {path}")
    return 0


def confirm_after_sweep(args, study: str, options) -> None:
    """``mssd tune --confirm K``: the finished sweep's top K on ``--confirm-seeds``, on the sweep's Ray
    resources (``options``: its ``StudyOptions``)."""
    from study.confirm import ConfirmOptions, run_confirm
    from study.grid_runs import GridOptions

    grid = GridOptions("ray", options.cpus_per_trial, options.gpus_per_trial, options.max_concurrent,
                       options.address, options.verbose)
    result = run_confirm(ConfirmOptions(study, top=args.confirm, seeds=args.confirm_seeds, workdir=args.workdir,
                                        grid=grid))
    print(result.markdown)
    print(f"confirm {study}: {result.trained} runs trained in {result.elapsed_s:.0f} s; files in "
          f"{result.files[0].parent}")
