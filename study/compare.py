"""The paper's Table 4 in one command: ``mssd compare`` (methods x student backbones x seeds).

``run_compare(options) -> CompareResult``:

1. ``plan_compare`` checks everything before anything is written (a refused command changes nothing on
   disk or in MLflow): the method and backbone names, every run's config (each method must exist in this
   platform's ``losses.method`` and build for each backbone), the teacher (``--teacher-weights`` or
   ``distill.teacher.weights`` an existing PyTorch file, or the teacher's own config when it is to be
   trained here), the data, the study name, the MLflow store; and it counts each method's costs;
2. starts the study's MLflow parent run (``study.grid_runs.study_tracker``); when a method needs a
   teacher and none is given, trains ``distill.teacher.name`` first, in this process, at the same budget
   (the base config with ``losses.method: none``) as a child run tagged ``mssd.role=teacher``, in
   ``<workdir>/<name>/teacher/``, and uses its best checkpoint;
3. runs every method x backbone x seed as one grid study (``study.grid_runs.run_grid``: on Ray like
   ``mssd ablate``, or ``--backend local``), with ``distill.teacher.weights`` set for every run (the
   methods without a teacher ignore it);
4. reads the runs back from MLflow and writes ``<workdir>/<name>/compare/compare.{md,csv,png}``
   (``study.compare_table``), also logged to the parent run under ``compare/``.

Methods: ``baseline`` is ``losses.method: none``; the others are their own ``losses.method`` value.
Backbones: ``cspdarknet`` is the config's YOLOv5 size, ``convnext`` is ``yolov5s_convnext``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.config import RunConfig, config_to_dict, flatten_config, parse_config
from detectors.errors import ConfigError, MSSDError
from study import tracking
from study.compare_table import MethodCost, summarise, write_outputs
from study.config import config_to_yaml, load_config
from study.grid_runs import GridOptions, resolve_backend, run_grid, study_tracker
from study.local_runs import LocalRun
from study.search_space import apply_params
from study.seed_deltas import plural, seed_range
from study.study_files import check_study_name
from study.train_plan import check_data, check_weights


@dataclass(frozen=True)
class Method:
    name: str  # as on the command line
    value: str  # losses.method
    teacher: bool  # trains against a frozen teacher detector (distill.teacher)


# Paper Table 4's rows, in its order.
METHODS = {m.name: m for m in (
    Method("baseline", "none", False), Method("kd", "kd", True), Method("fgfi", "fgfi", True),
    Method("defeat", "defeat", True), Method("lgd", "lgd", False), Method("mssd", "mssd", False))}
CONVNEXT = "yolov5s_convnext"
BACKBONES = ("cspdarknet", "convnext")
_CSPDARKNET = re.compile(r"yolov5[nsmlx]")
TEACHER_KEYS = ("distill.teacher.name", "distill.teacher.weights")


@dataclass
class CompareOptions:
    config: str
    methods: str | list[str] = field(default_factory=lambda: list(METHODS))  # "a,b" or a list
    seeds: int = 3
    backbones: str | list[str] = field(default_factory=lambda: ["cspdarknet"])
    teacher_weights: str | None = None  # default: distill.teacher.weights, else trained here when needed
    overrides: list[str] = field(default_factory=list)
    name: str | None = None  # default: compare-<config stem>-<time>
    workdir: str = "runs"
    grid: GridOptions = field(default_factory=GridOptions)


@dataclass(frozen=True)
class TeacherPlan:
    detector: str
    weights: Path  # given, or where the teacher trained here leaves its best checkpoint
    train_cfg: RunConfig | None = None  # None: given (not trained here)


@dataclass
class ComparePlan:
    cfg: RunConfig
    methods: list[Method]
    backbones: list[tuple[str, str]]  # (backbone, student detector)
    seeds: list[int]
    name: str
    folder: Path
    uri: str
    backend: str
    teacher: TeacherPlan | None  # None: no method needs one
    space_text: str
    runs: list[LocalRun]  # every run's validated config
    costs: dict[tuple[str, str], MethodCost] = field(default_factory=dict)


@dataclass
class CompareResult:
    name: str
    folder: Path
    tracking_uri: str  # redacted
    backend: str
    rows: list
    markdown: str
    files: list[Path]
    teacher_weights: Path | None
    elapsed_s: float


# ---------------------------------------------------------------------------------------------
# planning: every check, nothing written


def split_names(text: str | list[str], flag: str, known: tuple[str, ...] | list[str]) -> list[str]:
    """``"a,b"`` (or a list) -> ``["a", "b"]``; one line naming the flag for an unknown, repeated or missing name."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    if not names or any(not n for n in names):
        raise ConfigError(f"{flag}: expected a comma-separated list of {', '.join(known)}, got {text!r}")
    for n in names:
        if n not in known:
            raise ConfigError(f"{flag}: unknown name {n!r}, expected some of {', '.join(known)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{flag}: {repeated[0]!r} is named twice")
    return names


def backbone_detectors(backbones: list[str], cfg_detector: str) -> list[tuple[str, str]]:
    """``(backbone, student detector)`` pairs; one line when a backbone's detector does not exist here."""
    from detectors.zoo import DETECTORS

    pairs = []
    for backbone in backbones:
        if backbone == "convnext":
            if CONVNEXT not in DETECTORS:
                raise ConfigError(f"--backbones convnext: detector {CONVNEXT} is not available in this platform "
                                  f"yet (it has {', '.join(DETECTORS)})")
            pairs.append((backbone, CONVNEXT))
        elif not _CSPDARKNET.fullmatch(cfg_detector):
            raise ConfigError(f"--backbones cspdarknet: the config's detector.name is {cfg_detector!r}, expected a "
                              "YOLOv5 CSPDarknet size (yolov5n, yolov5s, yolov5m, yolov5l or yolov5x)")
        else:
            pairs.append((backbone, cfg_detector))
    return pairs


def compare_space(methods: list[Method], detectors: list[str], seeds: list[int]) -> str:
    """The grid search space (``study.search_space`` format): losses.method x detector.name x seed."""
    def values(items: list[Any]) -> str:
        return ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in items)

    return "\n".join([
        "# Paper Table 4 comparison (generated by `mssd compare`): methods x student backbones x seeds.",
        "description: distillation methods compared (paper Table 4)",
        "params:",
        f"  losses.method: {{distribution: grid, values: [{values([m.value for m in methods])}]}}",
        f"  detector.name: {{distribution: grid, values: [{values(detectors)}]}}",
        f"  seed: {{distribution: grid, values: [{values(seeds)}]}}",
    ]) + "\n"


def _setting(cfg: RunConfig, key: str) -> Any:
    flat = flatten_config(cfg)
    if key not in flat:
        raise ConfigError(f"{key}: this platform has no teacher-based methods yet (the config has no {key})")
    return flat[key]


def _teacher_plan(cfg: RunConfig, methods: list[Method], weights: str | None, folder: Path) -> TeacherPlan | None:
    if not any(m.teacher for m in methods):
        if weights is not None:
            raise ConfigError(f"--teacher-weights: none of the methods {', '.join(m.name for m in methods)} "
                              "uses a teacher (kd, fgfi and defeat do)")
        return None
    detector = _setting(cfg, TEACHER_KEYS[0])
    given = weights if weights is not None else _setting(cfg, TEACHER_KEYS[1])
    if given:
        flag = "--teacher-weights" if weights is not None else TEACHER_KEYS[1]
        try:
            check_weights(given)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("--weights", flag, 1)) from None
        return TeacherPlan(detector, Path(given).resolve())
    # Trained here at the student's budget: the same data, schedule and seed, no distillation of its own.
    train_cfg = parse_config(apply_params(config_to_dict(cfg), {
        "detector.name": detector, "detector.weights": None, "losses.method": "none", TEACHER_KEYS[1]: None}))
    return TeacherPlan(detector, folder / "teacher" / "checkpoints" / "best.pt", train_cfg)


def plan_compare(options: CompareOptions) -> ComparePlan:
    """Every check of ``mssd compare`` and the method costs; nothing written (module docstring)."""
    if options.seeds < 1:
        raise ConfigError(f"--seeds: expected at least 1, got {options.seeds}")
    methods = [METHODS[n] for n in split_names(options.methods, "--methods", tuple(METHODS))]
    backbone_names = split_names(options.backbones, "--backbones", BACKBONES)
    backend = resolve_backend(options.grid.backend)
    cfg = load_config(options.config, options.overrides)  # file:line errors
    backbones = backbone_detectors(backbone_names, cfg.detector.name)
    name = check_study_name(options.name or f"compare-{Path(options.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    folder = Path(options.workdir).resolve() / name
    if folder.exists():
        raise ConfigError(f"--name: {folder} already exists; pass another --name")
    teacher = _teacher_plan(cfg, methods, options.teacher_weights, folder)
    base = config_to_dict(cfg)
    if teacher is not None:
        base = apply_params(base, {TEACHER_KEYS[1]: str(teacher.weights)})
    seeds = [cfg.seed + i for i in range(options.seeds)]
    searched = ["losses.method", "detector.name", "seed"]
    runs = []
    for backbone, detector in backbones:
        for method in methods:
            try:
                run_cfg = parse_config(apply_params(base, {"losses.method": method.value, "detector.name": detector}))
            except ConfigError as exc:
                raise ConfigError(f"--methods {method.name} with {detector}: {exc}") from None
            for seed in seeds:
                trial = f"{backbone}-{method.name}-seed{seed}"
                runs.append(LocalRun(trial, trial, parse_config(apply_params(config_to_dict(run_cfg), {"seed": seed})),
                                     searched))
    check_data(cfg)
    uri = tracking.resolve_tracking_uri(cfg.tracking.uri, options.workdir)
    plan = ComparePlan(cfg, methods, backbones, seeds, name, folder, uri, backend, teacher,
                       compare_space(methods, [d for _, d in backbones], seeds), runs)
    plan.costs = method_costs(plan)
    tracking.check_tracking(uri)
    try:
        tracking.experiment_id(uri, name)
    except tracking.TrackingError:
        return plan  # no such study yet
    raise ConfigError(f"--name: MLflow store {tracking.redact_uri(uri)} already has a study {name!r}; pass another "
                      "--name")


def method_costs(plan: ComparePlan) -> dict[tuple[str, str], MethodCost]:
    """Per (backbone, method): the training-only modules' params and GFLOPs and the frozen teacher's, one
    image at ``data.img_size`` (``detectors.model_info``'s counters, as ``mssd model info`` shows them).
    Building each method here also checks that it builds for the backbone (a teacher at the student's
    strides); a given teacher file is loaded once."""
    import torch

    from detectors.distillation import build_distillation_for, check_teacher
    from detectors.model_info import count_distillation, count_gflops, count_params
    from detectors.zoo import build_detector_for

    torch.manual_seed(0)
    costs: dict[tuple[str, str], MethodCost] = {}
    students: dict[str, Any] = {}
    for run in plan.runs:
        backbone, method_name = run.trial_id.split("-")[:2]
        if (backbone, method_name) in costs:
            continue
        method, detector = METHODS[method_name], run.cfg.detector.name
        if detector not in students:  # one student per backbone: building a method leaves it as it is
            students[detector] = build_detector_for(run.cfg)
        try:
            distillation = build_distillation_for(run.cfg, students[detector], load_teacher=False)
            parts = count_distillation(students[detector], distillation, run.cfg.data.img_size)
        except MSSDError as exc:
            raise ConfigError(f"--methods {method.name} with {detector}: {exc}") from None
        teacher = getattr(distillation, "teacher", None)
        costs[(backbone, method_name)] = MethodCost(
            sum(p.params for p in parts.values()), sum(p.gflops for p in parts.values()),
            teacher.name if teacher is not None else None, count_params(teacher) if teacher is not None else 0,
            count_gflops(teacher.model, run.cfg.data.img_size) if teacher is not None else 0.0)
    if plan.teacher is not None and plan.teacher.train_cfg is None:
        check_teacher(next(r.cfg for r in plan.runs if METHODS[r.trial_id.split("-")[1]].teacher))
    return costs


# ---------------------------------------------------------------------------------------------
# running


class _EpochLine:
    def __init__(self, label: str) -> None:
        self.label = label

    def after_epoch(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        shown = "  ".join(f"{k} {metrics[k]:.4g}" for k in ("loss/total", "map", "ap50") if isinstance(metrics.get(k), float))
        print(f"{self.label}: epoch {epoch}/{trainer.cfg.train.epochs}  {shown}", flush=True)


def train_teacher(plan: ComparePlan, parent_run_id: str, workdir: str, threads: int | None = None) -> Path:
    """Train the planned teacher as a child run of the study's parent run; its best (else last) checkpoint.

    ``threads``: torch's intra-op threads while it trains, as a Ray trial gets one per reserved CPU
    (``study.tune.trainable``); on a loaded CPU, more threads than free cores make every step wait.
    """
    import torch

    from detectors.engine.trainer import fit
    from study.run_results import RunResults

    teacher = plan.teacher
    assert teacher is not None and teacher.train_cfg is not None
    run_dir = plan.folder / "teacher"
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = teacher.train_cfg
    print(f"teacher {teacher.detector}: training first, at the students' budget, in {run_dir}", flush=True)
    logger = tracking.RunLogger(plan.uri, plan.name, run_name=f"teacher {teacher.detector}", params=flatten_config(cfg),
                                artifact_root=Path(workdir).resolve() / "mlartifacts", config_text=config_to_yaml(cfg),
                                tags={"mssd.role": "teacher", "mssd.study": plan.name, "mssd.status": "teacher",
                                      "mlflow.parentRunId": parent_run_id})
    results = RunResults(run_dir, on_written=lambda paths: [logger.log_file(p) for p in paths])
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        fit(cfg, run_dir, callbacks=[logger, results, _EpochLine(f"teacher {teacher.detector}")])
    except BaseException as exc:
        logger.close("FAILED", f"{type(exc).__name__}: {exc}", timeout=60)
        raise
    finally:
        torch.set_num_threads(before)
    logger.close("FINISHED")
    best = run_dir / "checkpoints" / "best.pt"
    return best if best.is_file() else run_dir / "checkpoints" / "last.pt"


def run_compare(options: CompareOptions) -> CompareResult:
    """Plan, train the teacher if needed, run the grid, write the table (module docstring)."""
    started = time.monotonic()
    plan = plan_compare(options)
    plan.folder.mkdir(parents=True)
    searched = list(plan.runs[0].searched)
    tags = {"mssd.backend": plan.backend, "mssd.compare.methods": ",".join(m.name for m in plan.methods),
            "mssd.compare.backbones": ",".join(d for _, d in plan.backbones)}
    if plan.teacher is not None:
        tags["mssd.compare.teacher"] = plan.teacher.detector
    tracker = study_tracker(plan.uri, plan.name, plan.folder, options.workdir, plan.cfg, plan.space_text, searched, tags)
    tracker.start()
    teacher_weights = plan.teacher.weights if plan.teacher is not None else None
    overrides = list(options.overrides)
    try:
        if plan.teacher is not None and plan.teacher.train_cfg is not None:
            # The students' threads: one per reserved CPU on Ray, torch's default in this process (local).
            threads = max(1, int(options.grid.cpus_per_trial)) if plan.backend == "ray" else None
            teacher_weights = train_teacher(plan, tracker.parent_run_id, options.workdir, threads)
        if teacher_weights is not None:
            overrides.append(f"{TEACHER_KEYS[1]}={teacher_weights}")
        runs = plan.runs
        if teacher_weights is not None and teacher_weights != plan.teacher.weights:  # last.pt: no best checkpoint
            runs = [LocalRun(r.trial_id, r.name, parse_config(apply_params(
                config_to_dict(r.cfg), {TEACHER_KEYS[1]: str(teacher_weights)})), r.searched) for r in runs]
        run_grid(options.grid, plan.backend, config=options.config, overrides=overrides, name=plan.name,
                 workdir=options.workdir, base=load_config(options.config, overrides), space_text=plan.space_text,
                 searched=searched, local_runs=lambda: runs, tracker=tracker)
    except BaseException:
        tracker.study_finished("KILLED")  # closed by run_in_process / run_study when they got that far
        tracker.flush(60)
        raise
    rows = summarise(tracking.study_trials(plan.uri, plan.name), [(m.name, m.value) for m in plan.methods],
                     plan.backbones, plan.costs)
    files = write_outputs(rows, plan.folder / "compare", _context(plan, teacher_weights), f"{plan.name}: mAP and step time")
    tracking.log_parent_artifacts(plan.uri, plan.name, files, "compare")
    return CompareResult(plan.name, plan.folder, tracking.redact_uri(plan.uri), plan.backend, rows,
                         files[0].read_text(), files, teacher_weights, time.monotonic() - started)


def _context(plan: ComparePlan, teacher_weights: Path | None) -> list[str]:
    cfg = plan.cfg
    steps = f", at most {plural(cfg.train.max_steps_per_epoch, 'step')} per epoch" if cfg.train.max_steps_per_epoch else ""
    lines = [f"**Comparison {plan.name}** ({plan.backend} backend): {cfg.data.format} data ({cfg.data.root}), "
             f"{cfg.data.img_size} px, batch {cfg.train.batch_size}, {plural(cfg.train.epochs, 'epoch')}{steps}, "
             f"{seed_range(plan.seeds)}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."]
    if plan.teacher is not None:
        how = "trained first by this command" if plan.teacher.train_cfg is not None else "given"
        lines.append(f"Teacher: {plan.teacher.detector} ({how}: {teacher_weights}).")
    return lines
