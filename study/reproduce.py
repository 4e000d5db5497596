"""``mssd reproduce TABLE``: run one of the paper's tables and put our numbers beside the paper's.

``run_reproduce(options) -> ReproduceResult``:

1. loads the paper's table (``paper_tables/tableN.yaml``, ``study.paper_tables``): its rows say which
   config values make each row (``set``) and what the paper reports;
2. picks the detectors: ``--detector`` or, by default, the table's ``default_detector`` (tables that
   compare detectors, 1, 3 and 7, run every detector they name); each must be available in this
   platform (``detectors.zoo``), else one line says which is missing. The ``smoke`` and ``cpu`` budgets
   run the smallest size of the detector's family (YOLOv5s -> YOLOv5n; a ResNet-FPN family's narrow
   ``*_tiny``, ``Family.small_size``) at the family's stride multiple, and compare with the paper's rows
   for the named detector;
3. builds the base config from the budget (``BUDGETS``: a config file plus overrides; ``--set`` wins),
   then trains every row x seed one after another in this process (the rows of Tables 5 and 6 are not a
   grid: a baseline plus a sweep), each an MLflow child run of one parent run named after the study,
   as ``mssd ablate --backend local`` does; seed i is ``cfg.seed + i``;
4. reads the runs back from MLflow and writes ``<workdir>/<name>/reproduce/tableN.{md,csv,png}``:
   per row our mean ± sample std over the seeds and our paired delta against our baseline (seed by
   seed, with its 95 % CI, p-value and n: ``study.seed_deltas``), beside the paper's value and the
   paper's delta against its baseline, with the budget, data, each detector's input size and the
   commit; the files (and the paper's table) are logged to the parent run under ``reproduce/``.

For many seeds on a cluster, the same rows run as grid studies with ``mssd ablate`` (Table 2) and
``mssd tune`` with ``search_spaces/paper-table5-gamma.yaml`` / ``paper-table6-sigma2.yaml``.
"""

from __future__ import annotations

import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.config import RunConfig, config_to_dict, parse_config
from detectors.errors import ConfigError
from study import tracking
from study.config import config_to_yaml, load_config, write_text_atomic
from study.local_runs import LocalRun, run_in_process
from study.paper_tables import PaperTable, load_paper_table
from study.reproduce_table import (
    RowResult,
    format_markdown,
    recipe_text,
    summarise,
    trial_id,
    write_csv,
    write_outputs,
)
from study.search_space import apply_params
from study.seed_deltas import seed_range

__all__ = ["BUDGETS", "Budget", "ReproduceOptions", "ReproduceResult", "RowResult", "format_markdown",
           "run_reproduce", "summarise", "write_csv", "write_outputs"]

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Budget:
    """How much training a reproduction gets: a config file per family, overrides, seeds, detector size."""

    name: str
    # Family name -> its config, relative to the repository: each family trains with its own recipe
    # (YOLOX rows of Table 3 must not inherit YOLOv5's lr0, momentum and warmup).
    configs: dict[str, str]
    overrides: dict[str, Any]
    seeds: int
    smallest_size: bool  # run the family's smallest size instead of the table's detector
    synthetic_root: str | None  # data.root under the workdir for generated data; None: the config's
    description: str
    # Overrides for one family only (after ``overrides``): the cpu budget's pipeline-check schedule for the
    # families that do not learn within it.
    family_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Families whose baseline learns at this budget (None: all): the table's context names the others in
    # one line, each with its reason from ``shortfalls``.
    learns: tuple[str, ...] | None = None
    shortfalls: dict[str, str] = field(default_factory=dict)


SMOKE_CONFIGS = {"yolov5": "configs/smoke.yaml", "yolox": "configs/yolox-smoke.yaml",
                 "fcos": "configs/fcos-smoke.yaml", "retinanet": "configs/retinanet-smoke.yaml",
                 "faster_rcnn": "configs/faster_rcnn-smoke.yaml", "cascade_rcnn": "configs/cascade_rcnn-smoke.yaml",
                 "yolov3": "configs/yolov3-smoke.yaml", "yolov4": "configs/yolov4_csp-smoke.yaml",
                 "yolov6": "configs/yolov6-smoke.yaml", "yolov7": "configs/yolov7-smoke.yaml"}
# The cpu budget: the YOLO families' recipes that learn in minutes of one core (benchmarks/README.md, "CPU
# budget"); the other families keep their smoke configs under PIPELINE_CHECK on the same generated data.
CPU_CONFIGS = {**SMOKE_CONFIGS, "yolov5": "configs/yolov5n-cpu.yaml", "yolox": "configs/yolox_nano-cpu.yaml",
               "yolov6": "configs/yolov6n-cpu.yaml", "yolov7": "configs/yolov7_tiny-cpu.yaml"}
CPU_RECIPES = ("yolov5", "yolox", "yolov6", "yolov7")
LEARN_AT_CPU = ("yolov5", "yolox", "yolov6")
# Why each other family falls short of the bar (measured: benchmarks/README.md, "CPU budget"); the table's
# context names the families of its rows with these reasons, in one line.
RESNET_FPN = "from-scratch ResNet-FPN: near 0 % mAP at 192 px, a pipeline check"
CPU_SHORTFALLS = {
    "yolov7": "YOLOv7-tiny reaches about 16 % mAP in the budget's 960 steps, each about 2.5x YOLOv5n's cost",
    "yolov3": "a step costs about 23x YOLOv5n's (960 steps: over an hour of one core), a pipeline check",
    "yolov4": "a step costs about 19x YOLOv5n's (960 steps: about an hour of one core), a pipeline check",
    "fcos": RESNET_FPN, "retinanet": RESNET_FPN, "faster_rcnn": RESNET_FPN, "cascade_rcnn": RESNET_FPN,
}
PIPELINE_CHECK = {"data.img_size": 192, "data.synthetic.images": 400, "data.synthetic.width": 256,
                  "data.synthetic.height": 192, "data.synthetic.val_fraction": 0.15, "train.batch_size": 8,
                  "train.epochs": 4, "train.max_steps_per_epoch": 25, "train.eval_interval": 4,
                  "train.warmup_epochs": 0.5, "eval.max_det": 50}
FULL_CONFIGS = {"yolov5": "configs/yolov5s-kitti.yaml", "yolox": "configs/yolox_s-kitti.yaml",
                "fcos": "configs/fcos-kitti.yaml", "retinanet": "configs/retinanet-kitti.yaml",
                "faster_rcnn": "configs/faster_rcnn-kitti.yaml", "cascade_rcnn": "configs/cascade_rcnn-kitti.yaml",
                "yolov3": "configs/yolov3-kitti.yaml", "yolov4": "configs/yolov4_csp-kitti.yaml",
                "yolov6": "configs/yolov6s-kitti.yaml", "yolov7": "configs/yolov7-kitti.yaml"}

BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        "smoke", SMOKE_CONFIGS,
        {"data.img_size": 64, "data.synthetic.images": 12, "train.batch_size": 4, "train.epochs": 1,
         "train.max_steps_per_epoch": 1, "train.warmup_epochs": 0, "eval.max_det": 50, "train.device": "cpu"},
        seeds=1, smallest_size=True, synthetic_root="data/reproduce-smoke",
        description="seconds per row: 64 px (or the family's stride multiple), 12 generated images, 1 epoch of 1 step (checks the pipeline, "
                    "not the method)"),
    "cpu": Budget(
        # The demo's recipe (configs/yolov5n-cpu.yaml): a YOLO baseline learns (>= 20 % mAP) in about
        # 3-4 minutes of one core: 24 epochs x 40 steps of 8 images at 192 px on 400 generated 256x192
        # images (benchmarks/README.md, "CPU budget"; docs/findings.md). YOLOv5, YOLOX and YOLOv6 learn
        # there, YOLOv7-tiny falls short (its own recipe, kept); the others keep a short pipeline-check
        # schedule on the same data.
        "cpu", CPU_CONFIGS, {"train.device": "cpu"},
        seeds=3, smallest_size=True, synthetic_root="data/reproduce-cpu",
        description="about 3-4 minutes per run on one core: 192 px, 400 generated 256x192 images (340 train / "
                    "60 val), batch 8, 24 epochs of 40 steps (YOLOv6-N and YOLOv7-tiny about 2.5x longer; "
                    "families that do not learn there: 4 epochs of 25 steps, a pipeline check)",
        family_overrides={family: PIPELINE_CHECK for family in CPU_CONFIGS if family not in CPU_RECIPES},
        learns=LEARN_AT_CPU, shortfalls=CPU_SHORTFALLS),
    "gpu": Budget(
        "gpu", FULL_CONFIGS,
        {"data.format": "synthetic", "data.synthetic.images": 2000, "data.synthetic.seed": 0, "train.epochs": 30,
         "data.workers": 4},
        seeds=2, smallest_size=False, synthetic_root="data/reproduce-gpu",
        description="one GPU: 640 px, 2000 generated KITTI-like images (1600 train / 400 val), 30 epochs, "
                    "batch 16"),
    "paper": Budget(
        "paper", FULL_CONFIGS, {}, seeds=3, smallest_size=False, synthetic_root=None,
        description="the paper's section 4.1: KITTI (data.root), 640 px, batch 16, 200 epochs"),
}


@dataclass
class ReproduceOptions:
    table: str
    budget: str = "smoke"
    seeds: int | None = None  # default: the budget's
    detector: str | None = None
    overrides: list[str] = field(default_factory=list)
    name: str | None = None  # default: reproduce-table<N>-<budget>-<time>
    workdir: str = "runs"


@dataclass
class ReproduceResult:
    name: str
    table: PaperTable
    budget: Budget
    rows: list[RowResult]
    markdown: str
    files: list[Path]
    tracking_uri: str  # redacted
    elapsed_s: float


# ---------------------------------------------------------------------------------------------
# planning: which detectors, which config


def _detector_plan(table: PaperTable, budget: Budget, detector: str | None) -> list[tuple[str, str]]:
    """``[(detector to train, paper detector to compare with)]``; one line if a family is missing."""
    from detectors.zoo import DETECTORS, family_of

    available = ", ".join(DETECTORS)
    if detector is not None:
        if detector not in DETECTORS:
            raise ConfigError(f"--detector: unknown detector {detector!r}, expected one of {available}")
        family = family_of(detector)
        same_family = [d for d in table.detectors if d in DETECTORS and family_of(d) is family]
        compare = detector if table.rows_for(detector) else (same_family or [table.default_detector])[0]
        return [(detector, compare)]
    wanted = table.detectors if len(table.detectors) > 1 and table.number in (1, 3, 7) else [table.default_detector]
    missing = [d for d in wanted if d not in DETECTORS]
    if missing:
        raise ConfigError(f"table {table.number} needs detector{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(missing)}, not available yet (this platform has {available}); "
                          "pass --detector for one that is")
    plan = []
    for paper_detector in wanted:
        trained = family_of(paper_detector).smallest if budget.smallest_size else paper_detector
        # The table's own rows for the trained size when it has them (Table 2 has YOLOv5n).
        plan.append((trained, trained if table.rows_for(trained) else paper_detector))
    return plan


def _base_config(budget: Budget, detector: str, overrides: list[str], workdir: str) -> RunConfig:
    from detectors.zoo import family_of

    family = family_of(detector).name
    if family not in budget.configs:
        raise ConfigError(f"--budget {budget.name}: no config for the {family} family yet (it has "
                          f"{', '.join(budget.configs)}); pass --detector of one of those families")
    # A budget's input size rounded up to the family's stride multiple (FCOS/RetinaNet 128, R-CNN 64).
    multiple = family_of(detector).recipe.stride_multiple
    overrides_for_family = {k: (-(-v // multiple) * multiple if k == "data.img_size" else v)
                            for k, v in {**budget.overrides, **budget.family_overrides.get(family, {})}.items()}
    pairs = [f"{k}={v}" for k, v in overrides_for_family.items()]
    if budget.synthetic_root is not None:
        pairs.append(f"data.root={Path(workdir).resolve() / budget.synthetic_root}")
    pairs.append(f"detector.name={detector}")
    return load_config(REPO / budget.configs[family], [*pairs, *overrides])


# ---------------------------------------------------------------------------------------------
# running


def run_reproduce(options: ReproduceOptions) -> ReproduceResult:
    """Run the table's rows x seeds, read them back, write the side-by-side table (module docstring)."""
    started = time.monotonic()
    if options.budget not in BUDGETS:
        raise ConfigError(f"--budget: expected one of {', '.join(BUDGETS)}, got {options.budget!r}")
    budget = BUDGETS[options.budget]
    table = load_paper_table(options.table)
    seeds_count = budget.seeds if options.seeds is None else options.seeds
    if seeds_count < 1:
        raise ConfigError(f"--seeds: expected at least 1, got {seeds_count}")
    plan = _detector_plan(table, budget, options.detector)
    bases = {trained: _base_config(budget, trained, options.overrides, options.workdir) for trained, _ in plan}
    first = bases[plan[0][0]]
    name = options.name or f"reproduce-table{table.number}-{budget.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise ConfigError(f"--name {name!r}: expected letters, digits, '.', '_' or '-'")
    folder = Path(options.workdir).resolve() / name
    if folder.exists():
        raise ConfigError(f"--name: {folder} already exists; pass another --name")
    uri = tracking.resolve_tracking_uri(first.tracking.uri, options.workdir)
    seeds = [first.seed + i for i in range(seeds_count)]
    # Every row's config is validated before the first run starts.
    jobs = []
    for trained, paper_detector in plan:
        base = config_to_dict(bases[trained])
        for row in table.rows_for(paper_detector):
            for seed in seeds:
                cfg = parse_config(apply_params(base, {**row.settings, "seed": seed}))
                jobs.append((trial_id(trained, row.name, seed), trained, paper_detector, row, cfg))

    commit = tracking.git_commit(REPO)
    _run_jobs(jobs, table, budget, name, folder, uri, options.workdir, first, commit)
    rows = summarise(table, plan, tracking.study_trials(uri, name), seeds)
    context = _context(table, budget, plan, bases, seeds, commit)
    files = write_outputs(table, rows, folder / "reproduce", context, budget.name)
    tracking.log_parent_artifacts(uri, name, [*files, table.path], "reproduce")
    return ReproduceResult(name, table, budget, rows, files[0].read_text(), files, tracking.redact_uri(uri),
                           time.monotonic() - started)


def _run_jobs(jobs: list, table: PaperTable, budget: Budget, name: str, folder: Path, uri: str, workdir: str,
              base: RunConfig, commit: str | None) -> None:
    folder.mkdir(parents=True)
    config_text = config_to_yaml(base)
    write_text_atomic(folder / "base-config.yaml", config_text)
    tags = {"mssd.backend": "local", "mssd.metric": "map", "mssd.mode": "max",
            "mssd.reproduce.table": str(table.number), "mssd.reproduce.budget": budget.name,
            "mssd.reproduce.detectors": ",".join(dict.fromkeys(j[1] for j in jobs))}
    if commit:
        tags["mlflow.source.git.commit"] = commit
    tracker = tracking.StudyTracker(
        uri, name, staging_dir=folder / ".mlflow-staging", artifact_root=Path(workdir).resolve() / "mlartifacts",
        tags=tags, artifacts={"base-config.yaml": config_text, "paper-table.yaml": table.path.read_text()})
    tracker.start()
    run_in_process(tracker, [
        LocalRun(run_id, f"{row.name} ({cfg.detector.name}, seed {cfg.seed})", cfg, [*row.settings, "seed"])
        for run_id, _trained, _paper, row, cfg in jobs], folder)


# ---------------------------------------------------------------------------------------------
# the table's heading


def _context(table: PaperTable, budget: Budget, plan: list[tuple[str, str]], bases: dict[str, RunConfig],
             seeds: list[int], commit: str | None) -> list[str]:
    data = bases[plan[0][0]].data
    source = (f"{data.format} at {data.root}" + (f" ({data.synthetic.images} images, val fraction "
                                                   f"{data.synthetic.val_fraction})" if data.format == "synthetic" else ""))
    # Families round the input size up to their stride multiple (and may differ in batch): say each one's.
    recipes = {trained: recipe_text(bases[trained]) for trained, _ in plan}
    if len(set(recipes.values())) == 1:
        trained_with = f"detector {', '.join(recipes)}; {next(iter(recipes.values()))}"
    else:
        trained_with = "detectors " + "; ".join(f"{d} at {text}" for d, text in recipes.items())
    lines = [
        f"Ours: budget `{budget.name}` ({budget.description}); data {source}; {trained_with}; "
        f"{seed_range(seeds)}; commit {(commit or 'unknown')[:12]}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()} {platform.system()}.",
        f"Paper: {table.setting}; detector{'s' if len(plan) > 1 else ''} "
        f"{', '.join(paper for _, paper in plan)} ({table.source}).",
    ]
    for trained, paper in plan:
        if trained != paper:
            lines.append(f"Note: the paper's numbers are for {paper}; ours ran {trained} at this budget, so compare "
                         "the deltas, not the levels.")
    from detectors.zoo import family_of

    silent = sorted({family_of(trained).name for trained, _ in plan} - set(budget.learns or ()))
    if budget.learns is not None and silent:
        reasons = "; ".join(f"{family} ({budget.shortfalls[family]})" if family in budget.shortfalls else family
                            for family in silent)
        lines.append(f"Note: {'these families do' if len(silent) > 1 else 'this family does'} not learn at the "
                     f"{budget.name} budget (baseline mAP below 20 %), so their rows say little about the method: "
                     f"{reasons}.")
    return lines
