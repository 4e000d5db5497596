"""``mssd reproduce TABLE``: run one of the paper's tables (2, 5, 6; 3 and 7 once their detectors exist)
at a budget and write our numbers beside the paper's (``study.reproduce``)."""

from __future__ import annotations

# study.reproduce.BUDGETS, spelled out so that `mssd --help` imports nothing heavy.
BUDGETS = ("smoke", "cpu", "gpu", "paper")


def register(subparsers) -> None:
    cmd = subparsers.add_parser(
        "reproduce", help="run a paper table (2, 5, 6; 3, 7) and put our numbers beside the paper's")
    cmd.add_argument("table", metavar="TABLE", help="the paper's table number (paper_tables/tableN.yaml)")
    cmd.add_argument("--budget", default="smoke", choices=BUDGETS,
                     help="smoke: seconds, checks the pipeline; cpu: minutes per row; gpu: one GPU, 30 epochs; "
                          "paper: section 4.1 on KITTI (default smoke)")
    cmd.add_argument("--seeds", type=int, metavar="K", help="seeds per row (default: the budget's)")
    cmd.add_argument("--detector", metavar="NAME", help="train this detector (default: the table's, its "
                                                        "family's smallest size at the smoke and cpu budgets)")
    cmd.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override one config value over the budget's (repeatable)")
    cmd.add_argument("--name", metavar="NAME", help="study name (default: reproduce-table<N>-<budget>-<time>)")
    cmd.add_argument("--workdir", default="runs", metavar="DIR",
                     help="root of the reproduction's folder and of the default MLflow store (mlflow.db)")
    cmd.set_defaults(handler=_reproduce)


def _reproduce(args) -> int:
    from study.reproduce import ReproduceOptions, run_reproduce

    result = run_reproduce(ReproduceOptions(
        table=args.table, budget=args.budget, seeds=args.seeds, detector=args.detector, overrides=args.overrides,
        name=args.name, workdir=args.workdir))
    print(result.markdown)
    print(f"reproduce {result.name} ({result.budget.name}) in {result.elapsed_s:.0f} s; MLflow {result.tracking_uri}")
    for path in result.files:
        print(f"wrote {path}")
    return 0
