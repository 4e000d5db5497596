"""Study commands: ``mssd tune``, ``mssd export``, ``mssd report``, ``mssd ui``, ``mssd demo``.

A study lives in ``<workdir>/<name>/`` (Ray's experiment folder: trials, checkpoints, ``study.json``,
``base-config.yaml``, ``search-space.yaml``, ``optuna.db``, ``report/``) and in MLflow (one experiment
named after the study). See ``study.tune`` for what runs and ``study.tracking`` for what is logged.
"""

from __future__ import annotations

import argparse
import sys

from study.cli.common import add_config_arguments


def register(subparsers) -> None:
    tune = subparsers.add_parser("tune", help="run a hyperparameter study (Ray Tune + Optuna + ASHA, MLflow)")
    add_config_arguments(tune)
    tune.add_argument("--space", required=True, metavar="FILE", help="search space YAML (see search_spaces/)")
    tune.add_argument("--samples", type=int, metavar="N",
                      help="trials to sample (default 8); for a grid space: repeats of the grid (default 1)")
    tune.add_argument("--max-concurrent", type=int, metavar="K", help="at most K trials at once")
    tune.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="C",
                      help="CPUs Ray reserves for each trial (also sets its torch threads and loader workers)")
    tune.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="G", help="fractions allowed, e.g. 0.25")
    tune.add_argument("--address", metavar="ADDR",
                      help="join a Ray cluster: auto (on a cluster node), HOST:6379 (its GCS), or ray://HOST:10001 "
                           "(Ray Client: needs an http(s) MLflow server and --storage s3://... or file:///mount)")
    tune.add_argument("--storage", metavar="URI",
                      help="where trials and checkpoints persist (default: the workdir); s3://..., "
                           "file:///shared/mount for multi-node clusters")
    tune.add_argument("--name", metavar="NAME", help="study name (default: <space>-<time>)")
    tune.add_argument("--workdir", default="runs", metavar="DIR", help="root of the studies and of the default MLflow store (mlflow.db)")
    tune.add_argument("--resume", action="store_true", help="continue the interrupted study --name NAME")
    tune.add_argument("--metric", default="map", help="the metric ASHA, Optuna and export rank trials by")
    tune.add_argument("--mode", default="max", choices=("max", "min"), help="whether a larger --metric is better")
    tune.add_argument("--no-asha", dest="asha", action="store_false", help="run every trial to its last epoch")
    tune.add_argument("--grace-period", type=int, default=None, metavar="EPOCHS",
                      help="ASHA: epochs before any stop (default: a quarter of train.epochs)")
    tune.add_argument("--reduction-factor", type=float, default=2.0, metavar="ETA", help="ASHA: keep 1/ETA per rung")
    tune.add_argument("--max-failures", type=int, default=2, help="retries per trial, from its last checkpoint")
    tune.add_argument("--keep-checkpoints", type=int, default=2, metavar="N", help="checkpoints kept per trial")
    tune.add_argument("--seed", type=int, help="Optuna sampler seed (default: the config's seed)")
    tune.add_argument("--confirm", type=int, metavar="K",
                      help="after the sweep, `mssd confirm` its top K trials against the baseline on fresh seeds")
    tune.add_argument("--confirm-seeds", default="5", metavar="N|S1,S2,..", help="--confirm: fresh seeds")
    output = tune.add_mutually_exclusive_group()
    output.add_argument("--quiet", action="store_true", help="no live progress table")
    output.add_argument("--verbose", action="store_true",
                        help="all of Ray's own output (result boxes, INFO and worker log lines, hints)")
    tune.set_defaults(handler=_tune)

    export = subparsers.add_parser("export", help="write the best trial's config (or the top K) for `mssd train`")
    export.add_argument("study", metavar="STUDY", help="the study's name (its folder under --workdir)")
    export.add_argument("--workdir", default="runs", metavar="DIR", help="root of the studies and of the default MLflow store (mlflow.db)")
    export.add_argument("--top-k", type=int, default=1, metavar="K",
                        help="export the K best trials (FILE-1.yaml, FILE-2.yaml, ... when K > 1)")
    export.add_argument("--epochs", type=int, metavar="E", help="train.epochs of the exported config, e.g. 200")
    export.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override one value of the exported config (repeatable)")
    export.add_argument("--out", required=True, metavar="FILE", help="the config file to write")
    export.set_defaults(handler=_export)

    report = subparsers.add_parser("report", help="top trials table and PNG plots of a study")
    report.add_argument("study", metavar="STUDY", help="the study's name (its folder under --workdir)")
    report.add_argument("--workdir", default="runs", metavar="DIR", help="root of the studies and of the default MLflow store (mlflow.db)")
    report.add_argument("--top", type=int, metavar="N", help="list only the first N trials (default: every trial)")
    report.set_defaults(handler=_report)

    ui = subparsers.add_parser("ui", help="start the MLflow UI on the studies' store (127.0.0.1)")
    ui.add_argument("study", nargs="?", metavar="STUDY", help="print this study's page")
    ui.add_argument("--workdir", default="runs", metavar="DIR", help="root of the studies and of the default MLflow store (mlflow.db)")
    ui.add_argument("--port", type=int, default=5000, help="port of the UI on 127.0.0.1")
    ui.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    ui.add_argument("--verbose", action="store_true", help="also the server's deprecation warnings")
    ui.set_defaults(handler=_ui)

    demo = subparsers.add_parser("demo", help="the embedded demo: a small real sweep, export, report")
    demo.add_argument("--workdir", default="runs", metavar="DIR", help="root of the studies and of the default MLflow store (mlflow.db)")
    demo.add_argument("--samples", type=int, metavar="N",
                      help="trials of the demo sweep (default: 4 on a CPU, 8 on a GPU)")
    demo.add_argument("--epochs", type=int, metavar="E", help="epochs per trial (default: 24 on a CPU, 30 on a GPU)")
    demo.set_defaults(handler=_demo)


def _tune(args) -> int:
    from study.tune import StudyOptions, run_study
    from study.tune.ray_runtime import release_ray

    options = StudyOptions(
        config=args.config, space=args.space, overrides=args.overrides, name=args.name, workdir=args.workdir,
        samples=args.samples, max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, address=args.address, storage=args.storage, resume=args.resume,
        metric=args.metric, mode=args.mode, asha=args.asha, grace_period=args.grace_period,
        reduction_factor=args.reduction_factor, max_failures=args.max_failures,
        keep_checkpoints=args.keep_checkpoints, seed=args.seed, verbose=0 if args.quiet else 2 if args.verbose else None)
    if args.confirm is not None:  # a typo must not wait for the end of the sweep
        from study.confirm import check_confirm_arguments

        check_confirm_arguments(args.confirm, args.confirm_seeds)
    summary = run_study(options)
    # The sweep is over: end its Ray connection before printing, so that no exiting worker's output (Ray
    # forwards it to this stderr whenever it arrives) lands in the summary, --confirm's output or a refusal.
    release_ray()
    print(summary.describe(args.workdir))
    if not summary.succeeded:
        from study.errors import StudyError

        raise StudyError(summary.failure())
    if args.confirm is not None:
        from study.cli.confirm_cmd import confirm_after_sweep

        confirm_after_sweep(args, summary.name, options)
    return 0


def _export(args) -> int:
    from study.export import export_best_configs

    for item in export_best_configs(args.workdir, args.study, args.out, top_k=args.top_k, epochs=args.epochs,
                                    overrides=args.overrides):
        what = f"trial {item.trial or item.trial_id}, run {item.run_id}, {item.value:.4f}" if item.run_id else item.trial
        print(f"wrote {item.path} ({what})")
        if item.provenance:
            print(f"  {item.provenance}")
    return 0


def _report(args) -> int:
    from study.report import write_report

    report = write_report(args.workdir, args.study, top=args.top)
    print(report.table)
    if report.errors:
        print(report.errors)
    for note in report.notes:
        print(f"note: {note}")
    print(f"plots in {report.folder} (also in the study's parent MLflow run)")
    return 0


def _ui(args) -> int:
    import os
    import signal
    import subprocess

    from study import mlflow_view, tracking
    from study.study_files import find_study_meta, study_tracking_uri

    mlflow_view.check_port(args.host, args.port)  # before a URL is printed: it would open another server
    uri = study_tracking_uri(args.workdir, find_study_meta(args.workdir, args.study)) if args.study \
        else tracking.resolve_tracking_uri(None, args.workdir)
    tracking.check_tracking(uri)
    base = f"http://{args.host}:{args.port}"
    # The model-training view (MLflow 3 opens GenAI's otherwise); a study opens on its trials view.
    url = mlflow_view.study_url(base, tracking.experiment_id(uri, args.study)) if args.study \
        else mlflow_view.root_url(base)
    print(f"MLflow UI for {tracking.redact_uri(uri)} at {url}  (Ctrl-C stops it)", flush=True)
    if not args.study:  # the experiment list opens experiments in MLflow's default (GenAI) view: link each
        for name, experiment_id, has_view in tracking.model_training_experiments(uri):
            print(f"  {name}: {mlflow_view.study_url(base, experiment_id, with_view=has_view)}", flush=True)
    env = dict(os.environ)
    if not args.verbose:  # MLflow's server imports a module Starlette deprecates: nothing a user can act on
        env["PYTHONWARNINGS"] = ",".join(filter(None, (env.get("PYTHONWARNINGS"), _UI_WARNINGS)))
    # Its own process group, so that stopping `mssd ui` (Ctrl-C or SIGTERM) stops the server's workers too.
    proc = subprocess.Popen(tracking.ui_command(uri, args.port, args.host), start_new_session=True, env=env)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


_UI_WARNINGS = "ignore:starlette.middleware.wsgi is deprecated"


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _demo(args) -> int:
    from study.demo import run_demo

    run_demo(args.workdir, samples=args.samples, epochs=args.epochs, out=sys.stdout)
    return 0
