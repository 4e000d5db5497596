"""``mssd reproduce TABLE``: run one of the paper's tables and put our numbers beside the paper's.

``run_reproduce(options) -> ReproduceResult``:

1. loads the paper's table (``paper_tables/tableN.yaml``, ``study.paper_tables``): its rows say which
   config values make each row (``set``) and what the paper reports;
2. picks the detectors: ``--detector`` or, by default, the table's ``default_detector`` (tables that
   compare detectors, 3 and 7, run every detector they name); each must be available in this
   platform (``detectors.zoo``), else one line says which is missing. The ``smoke`` and ``cpu`` budgets
   run the smallest size of the detector's family (YOLOv5s -> YOLOv5n; a ResNet-FPN family's narrow
   ``*_tiny``, ``Family.small_size``) at the family's stride multiple, and compare with the paper's rows
   for the named detector;
3. builds the base config from the budget (``BUDGETS``: a config file plus overrides; ``--set`` wins),
   then trains every row x seed one after another in this process (the rows of Tables 5 and 6 are not a
   grid: a baseline plus a sweep), each an MLflow child run of one parent run named after the study,
   as ``mssd ablate --backend local`` does; seed i is ``cfg.seed + i``;
4. reads the runs back from MLflow and writes ``<workdir>/<name>/reproduce/tableN.{md,csv,png}``:
   per row our mean ± sample std over the seeds and our delta against our baseline, beside the paper's
   value and the paper's delta against its baseline, with the budget, data, detector and commit; the
   files (and the paper's table) are logged to the parent run under ``reproduce/``.

For many seeds on a cluster, the same rows run as grid studies with ``mssd ablate`` (Table 2) and
``mssd tune`` with ``search_spaces/paper-table5-gamma.yaml`` / ``paper-table6-sigma2.yaml``.
"""

from __future__ import annotations

import csv
import math
import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.config import RunConfig, config_to_dict, parse_config
from detectors.errors import ConfigError
from study import tracking
from study.config import config_to_yaml, load_config, write_text_atomic
from study.local_runs import LocalRun, run_in_process
from study.paper_tables import METRICS, PaperRow, PaperTable, load_paper_table
from study.search_space import apply_params

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


SMOKE_CONFIGS = {"yolov5": "configs/smoke.yaml", "yolox": "configs/yolox-smoke.yaml",
                 "fcos": "configs/fcos-smoke.yaml", "retinanet": "configs/retinanet-smoke.yaml",
                 "faster_rcnn": "configs/faster_rcnn-smoke.yaml", "cascade_rcnn": "configs/cascade_rcnn-smoke.yaml"}
FULL_CONFIGS = {"yolov5": "configs/yolov5s-kitti.yaml", "yolox": "configs/yolox_s-kitti.yaml",
                "fcos": "configs/fcos-kitti.yaml", "retinanet": "configs/retinanet-kitti.yaml",
                "faster_rcnn": "configs/faster_rcnn-kitti.yaml", "cascade_rcnn": "configs/cascade_rcnn-kitti.yaml"}

BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        "smoke", SMOKE_CONFIGS,
        {"data.img_size": 64, "data.synthetic.images": 12, "train.batch_size": 4, "train.epochs": 1,
         "train.max_steps_per_epoch": 1, "train.warmup_epochs": 0, "eval.max_det": 50, "train.device": "cpu"},
        seeds=1, smallest_size=True, synthetic_root="data/reproduce-smoke",
        description="seconds per row: 64 px, 12 generated images, 1 epoch of 1 step (checks the pipeline, "
                    "not the method)"),
    "cpu": Budget(
        "cpu", SMOKE_CONFIGS,
        # As the demo (study/demo.py): 416 x 128 source images are cheap to decode and at 192 px their
        # small objects keep a few pixels. 100 steps and one evaluation per row: what a shared 2-core
        # machine affords for a whole table (benchmarks/README.md); YOLOv5n does not learn to detect yet.
        {"data.img_size": 192, "data.synthetic.images": 300, "data.synthetic.width": 416,
         "data.synthetic.height": 128, "data.synthetic.val_fraction": 0.1, "train.batch_size": 8,
         "train.epochs": 4, "train.max_steps_per_epoch": 25, "train.eval_interval": 4,
         "train.warmup_epochs": 0.5, "eval.max_det": 50, "train.device": "cpu"},
        seeds=1, smallest_size=True, synthetic_root="data/reproduce-cpu",
        description="about a minute per row on a quiet 2-core CPU: 192 px, 300 generated 416x128 images "
                    "(270 train / 30 val), batch 8, 4 epochs of 25 steps, evaluated once"),
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
class RowResult:
    detector: str  # the detector we trained
    paper_detector: str  # the detector of the paper's row we compare with
    row: PaperRow
    runs: int
    failed: int
    metrics: dict[str, tuple[float, float]]  # metric -> (mean, sample std) in %, NaN where no value


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
    wanted = table.detectors if len(table.detectors) > 1 and table.number in (3, 7) else [table.default_detector]
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
                            for k, v in budget.overrides.items()}
    pairs = [f"{k}={v}" for k, v in overrides_for_family.items()]
    if budget.synthetic_root is not None:
        pairs.append(f"data.root={Path(workdir).resolve() / budget.synthetic_root}")
    pairs.append(f"detector.name={detector}")
    return load_config(REPO / budget.configs[family], [*pairs, *overrides])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "row"


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
                jobs.append((f"{_slug(trained)}-{_slug(row.name)}-seed{seed}", trained, paper_detector, row, cfg))

    commit = tracking.git_commit(REPO)
    _run_jobs(jobs, table, budget, name, folder, uri, options.workdir, first, commit)
    rows = summarise(table, plan, tracking.study_trials(uri, name), seeds)
    context = _context(table, budget, plan, first, seeds, commit)
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
        LocalRun(trial_id, f"{row.name} ({cfg.detector.name}, seed {cfg.seed})", cfg, [*row.settings, "seed"])
        for trial_id, _trained, _paper, row, cfg in jobs], folder)


# ---------------------------------------------------------------------------------------------
# the table


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [100 * v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def summarise(table: PaperTable, plan: list[tuple[str, str]], records: list[Any], seeds: list[int]
              ) -> list[RowResult]:
    """One ``RowResult`` per (detector, paper row), matched to MLflow records by trial id."""
    by_id = {r.trial_id: r for r in records}
    results = []
    for trained, paper_detector in plan:
        for row in table.rows_for(paper_detector):
            mine = [by_id[t] for t in (f"{_slug(trained)}-{_slug(row.name)}-seed{s}" for s in seeds) if t in by_id]
            done = [r for r in mine if r.status == "completed"]
            metrics = {m: _mean_std([r.metrics.get(m, math.nan) for r in done]) for m in table.metrics}
            results.append(RowResult(trained, paper_detector, row, len(done), len(seeds) - len(done), metrics))
    return results


def _context(table: PaperTable, budget: Budget, plan: list[tuple[str, str]], cfg: RunConfig, seeds: list[int],
             commit: str | None) -> list[str]:
    data = cfg.data
    source = (f"{data.format} at {data.root}" + (f" ({data.synthetic.images} images, val fraction "
                                                   f"{data.synthetic.val_fraction})" if data.format == "synthetic" else ""))
    steps = f", at most {cfg.train.max_steps_per_epoch} steps per epoch" if cfg.train.max_steps_per_epoch else ""
    lines = [
        f"Ours: budget `{budget.name}` ({budget.description}); detector "
        f"{', '.join(trained for trained, _ in plan)}; data {source}; {data.img_size} px, batch "
        f"{cfg.train.batch_size}, {cfg.train.epochs} epochs{steps}; seeds {seeds[0]}..{seeds[-1]}; commit "
        f"{(commit or 'unknown')[:12]}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
        f"{platform.machine()} {platform.system()}.",
        f"Paper: {table.setting}; detector {', '.join(paper for _, paper in plan)} ({table.source}).",
    ]
    for trained, paper in plan:
        if trained != paper:
            lines.append(f"Note: the paper's numbers are for {paper}; ours ran {trained} at this budget, so compare "
                         "the deltas, not the levels.")
    return lines


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _delta(value: float, base: float, digits: int = 2) -> str:
    if math.isnan(value) or math.isnan(base):
        return "n/a"
    return f"{value - base:+.{digits}f}"


def _baseline(rows: list[RowResult], row: RowResult) -> RowResult:
    return next(r for r in rows if r.detector == row.detector and r.row.baseline)


def format_markdown(table: PaperTable, rows: list[RowResult], context: list[str]) -> str:
    header = ["detector", "row", "runs"]
    for m in table.metrics:
        header += [f"{METRICS[m]} ours", f"Δ{METRICS[m]} ours", f"{METRICS[m]} paper", f"Δ{METRICS[m]} paper"]
    lines = [f"# Paper Table {table.number} reproduced: {table.title}", "", *context, "",
             "| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for r in rows:
        base = _baseline(rows, r)
        runs = f"{r.runs}" + (f" ({r.failed} failed)" if r.failed else "")
        marked = r.row.baseline and "baseline" not in r.row.name.lower()
        cells = [r.detector, r.row.name + (" (baseline)" if marked else ""), runs]
        for m in table.metrics:
            mean, std = r.metrics[m]
            cells += [f"{_fmt(mean)} ± {_fmt(std)}" if not math.isnan(mean) else "n/a",
                      _delta(mean, base.metrics[m][0]), _fmt(r.row.paper[m], 1),
                      _delta(r.row.paper[m], base.row.paper[m], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Values in %. Ours: mean ± sample std over the completed seeds; Δ: the row's mean minus the "
              "baseline's mean of the same detector (ours against ours, the paper's against the paper's)."]
    return "\n".join(lines) + "\n"


def write_csv(table: PaperTable, rows: list[RowResult], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["detector", "paper_detector", "row", "baseline", "runs", "failed",
                         *(f"{m}_{k}" for m in table.metrics for k in ("mean", "std", "paper"))])
        for r in rows:
            writer.writerow([r.detector, r.paper_detector, r.row.name, r.row.baseline, r.runs, r.failed,
                             *(v for m in table.metrics for v in (f"{r.metrics[m][0]:.4f}", f"{r.metrics[m][1]:.4f}",
                                                                  r.row.paper[m]))])


def plot_deltas(table: PaperTable, rows: list[RowResult], path: Path, title: str) -> None:
    """Per metric, two panels: the values (ours with std bars beside the paper's) and each row's delta
    against its baseline (ours beside the paper's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(table.metrics)
    fig, axes = plt.subplots(2, len(metrics), figsize=(max(5.5, 3.2 * len(metrics)), 7.5), squeeze=False)
    labels = [f"{r.row.name}" + (f"\n{r.detector}" if len({x.detector for x in rows}) > 1 else "") for r in rows]
    xs = list(range(len(rows)))

    def bars(ax: Any, ours: list[float], stds: list[float], paper: list[float], ylabel: str) -> None:
        ax.bar([x - 0.2 for x in xs], [0 if math.isnan(v) else v for v in ours], 0.4,
               yerr=[0 if math.isnan(v) else v for v in stds], capsize=3, label="ours (mean ± std)")
        ax.bar([x + 0.2 for x in xs], paper, 0.4, label="paper")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(xs, labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(ylabel, fontsize=9)

    for column, m in enumerate(metrics):
        bars(axes[0][column], [r.metrics[m][0] for r in rows], [r.metrics[m][1] for r in rows],
             [r.row.paper[m] for r in rows], f"{METRICS[m]} (%)")
        bars(axes[1][column], [r.metrics[m][0] - _baseline(rows, r).metrics[m][0] for r in rows],
             [r.metrics[m][1] for r in rows], [r.row.paper[m] - _baseline(rows, r).row.paper[m] for r in rows],
             f"Δ{METRICS[m]} vs own baseline (points)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(table: PaperTable, rows: list[RowResult], folder: Path, context: list[str], budget: str = ""
                  ) -> list[Path]:
    """``tableN.md``, ``tableN.csv`` and ``tableN.png`` in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    md, csv_path, png = (folder / f"table{table.number}.{ext}" for ext in ("md", "csv", "png"))
    write_text_atomic(md, format_markdown(table, rows, context))
    write_csv(table, rows, csv_path)
    detectors = ", ".join(dict.fromkeys(r.detector for r in rows))
    plot_deltas(table, rows, png, f"Paper Table {table.number} vs ours ({detectors}, budget {budget})")
    return [md, csv_path, png]
