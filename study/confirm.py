"""``mssd confirm STUDY``: re-test a finished sweep's winners against the baseline on fresh seeds.

The best of many single-seed trials is biased upward (the winner's curse): its lead is partly the luck
of its seed. ``run_confirm(options)``:

1. ``plan_confirm`` checks everything before anything is written (a refused command leaves no folder
   and no MLflow run): the study exists, is not moved or copied, is closed in MLflow (not still
   running) and has a completed trial; ``--top K >= 1``; the seeds: ``--seeds N`` (N >= 2, a CI needs
   two) takes the N seeds after the largest seed any trial of the search used, an explicit list must
   not share one with the search;
2. the arms: each of the top K trials (ranked by ``study.export.rank_trials``, the rule ``mssd export``
   uses) is the study's base config with the trial's searched values; its baseline is the same config
   with the method off (``losses.mssd.enabled`` and ``losses.mad.enabled`` false for MSSD,
   ``losses.method: none`` for a comparator), the same recipe. Arms with equal configs share runs, so
   usually one baseline serves all K;
3. each arm is a small grid study over the seeds named ``<study>-confirm-<label>`` (its own folder under
   the workdir and MLflow experiment, in the study's store): on Ray (``study.tune.run_study``, ASHA off,
   trials in parallel, local or ``--address``) or, with ``--backend local``, in this process. Seeds whose
   run already ended are not trained again, so the same command continues an interrupted confirmation
   (a Ray arm resumes its Tune experiment);
4. tabulates the paired deltas (``study.confirm_table``) into ``<study>/confirm/``, logs those files under
   the study's parent run (``confirm/``) with the tags ``mssd.confirm.best``, ``.best_delta``, ``.ci_low``,
   ``.ci_high``, ``.seeds``, and writes ``confirm.json`` (``study.confirm_record``), which ``mssd export``
   reads.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from detectors.config import RunConfig, config_to_dict, parse_config
from detectors.errors import ConfigError, MSSDError
from study import tracking
from study.config import config_to_yaml, load_saved_config
from study.confirm_record import BASELINE, CONFIRM_DIR, ConfirmRecord, write_record
from study.confirm_table import ArmRuns, Confirmation, summarise, write_outputs
from study.errors import StudyError
from study.export import rank_trials, top_configurations
from study.grid_runs import GridOptions, resolve_backend, run_grid
from study.local_runs import LocalRun
from study.search_space import apply_params
from study.study_files import (
    BASE_CONFIG,
    META_FILE,
    SEARCH_SPACE,
    load_study_meta,
    study_dir,
    study_tracking_uri,
)
from study.tracking.parent_run import parent_run_status, set_parent_tags

TERMINAL = ("completed", "early_stopped", "nonfinite", "error")


@dataclass
class ConfirmOptions:
    study: str
    top: int = 3
    seeds: int | str | list[int] = 5  # N fresh seeds, or "S1,S2,..." / a list
    workdir: str = "runs"
    grid: GridOptions = field(default_factory=GridOptions)


@dataclass(frozen=True)
class Arm:
    label: str  # t03 (the search trial's run name), baseline, baseline-t05
    cfg: RunConfig  # every run's config but the seed
    study: str  # the arm's grid study: folder and MLflow experiment <study>-confirm-<label>


@dataclass
class ConfirmPlan:
    study: str
    folder: Path
    uri: str
    metric: str
    mode: str
    seeds: list[int]
    search_seeds: list[int]
    backend: str
    arms: list[Arm]
    configurations: list[dict[str, Any]]  # label, baseline, values, search_value, trial_id, run_id
    baseline_values: dict[str, Any]  # the switches that turn the method off


@dataclass
class ConfirmResult:
    confirmation: Confirmation
    markdown: str
    files: list[Path]
    trained: int  # runs trained by this call (0 when everything was already done)
    elapsed_s: float


def parse_seeds(seeds: int | str | list[int]) -> int | list[int]:
    """``5`` -> 5 fresh seeds; ``"10,11,12"`` (or a list) -> those seeds. One line naming ``--seeds`` otherwise."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        count: int | list[int] = seeds
    elif isinstance(seeds, list):
        count = [int(s) for s in seeds]
    else:
        text = str(seeds).strip()
        try:
            count = [int(s) for s in text.split(",")] if "," in text else int(text)
        except ValueError:
            raise ConfigError(f"--seeds: expected a number of fresh seeds (5) or a list of seeds (10,11,12), "
                              f"got {seeds!r}") from None
    n = count if isinstance(count, int) else len(count)
    if n < 2:
        raise ConfigError(f"--seeds: expected at least 2 seeds (a confidence interval needs two), got {seeds!r}")
    if isinstance(count, list):
        if len(set(count)) != len(count):
            raise ConfigError(f"--seeds: a seed is named twice in {seeds!r}")
        if min(count) < 0:
            raise ConfigError(f"--seeds: seeds are non-negative integers, got {seeds!r}")
    return count


def method_off(cfg: RunConfig) -> dict[str, Any]:
    """The dotted values that turn the config's method off (the baseline): MSSD's two switches, else method none."""
    if cfg.losses.method == "mssd":
        return {"losses.mssd.enabled": False, "losses.mad.enabled": False}
    return {"losses.method": "none"}


def is_method_key(key: str) -> bool:
    """A searched key that only the method reads: every ``losses.*`` key but L_gt's own (``losses.gt.*``)."""
    return key.startswith("losses.") and not key.startswith("losses.gt.")


def baseline_config(base: RunConfig, values: dict[str, Any]) -> RunConfig:
    """A configuration's baseline: the base config with the trial's searched values that are not the method's
    (an lr, an img_size, L_gt's settings), then the method off. Trials that differ only in the method's
    settings therefore share one baseline."""
    recipe = {k: v for k, v in values.items() if not is_method_key(k)}
    cfg = parse_config(apply_params(config_to_dict(base), recipe))
    return parse_config(apply_params(config_to_dict(cfg), method_off(cfg)))


def plan_confirm(options: ConfirmOptions) -> ConfirmPlan:
    """Every check of ``mssd confirm``; nothing written (module docstring, step 1 and 2)."""
    if options.top < 1:
        raise ConfigError(f"--top: expected at least 1, got {options.top}")
    seeds_arg = parse_seeds(options.seeds)
    backend = resolve_backend(options.grid.backend)
    _check_grid(options.grid)
    meta = load_study_meta(options.workdir, options.study)
    folder = study_dir(options.workdir, options.study)
    uri = study_tracking_uri(options.workdir, meta)  # refuses a moved or copied study
    tracking.check_tracking(uri)
    metric, mode = meta["metric"], meta["mode"]
    records = tracking.study_trials(uri, options.study)
    if parent_run_status(uri, options.study) == "RUNNING":
        raise StudyError(f"study {options.study!r} is still marked running in MLflow (a sweep in progress, or "
                         f"one killed before it closed): let it finish, or `mssd tune --resume --name "
                         f"{options.study}`, then confirm")
    ranked = [r for r in rank_trials(records, metric, mode) if r.status == "completed"]
    if not ranked:
        raise StudyError(f"study {options.study!r} has no completed trial with a finite {metric}: nothing to confirm")
    base = load_saved_config(folder / BASE_CONFIG)  # perhaps written by an older release
    search_seeds = sorted({int(r.params["seed"]) for r in records if r.params.get("seed", "").lstrip("-").isdigit()}
                          | {base.seed})
    if isinstance(seeds_arg, int):
        seeds = list(range(max(search_seeds) + 1, max(search_seeds) + 1 + seeds_arg))
    else:
        shared = sorted(set(seeds_arg) & set(search_seeds))
        if shared:
            raise ConfigError(f"--seeds: seed {shared[0]} was used by the search of study {options.study!r} (its "
                              f"seeds: {', '.join(map(str, search_seeds))}); a confirmation needs fresh seeds")
        seeds = sorted(seeds_arg)
    chosen = top_configurations(ranked, metric, mode, options.top)
    arms, configurations, off = _plan_arms(options.study, base, chosen, metric)
    if backend == "ray":
        for arm in arms:
            _check_ray_arm(options.workdir, uri, arm, seeds)
    return ConfirmPlan(options.study, folder, uri, metric, mode, seeds, search_seeds, backend, arms,
                       configurations, off)


def _check_grid(grid: GridOptions) -> None:
    """The Ray resources, checked here too: a refusal inside the second arm's study would come too late."""
    if grid.max_concurrent is not None and grid.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent: expected at least 1, got {grid.max_concurrent}")
    if not grid.cpus_per_trial > 0:
        raise ConfigError(f"--cpus-per-trial: expected a number > 0, got {grid.cpus_per_trial:g}")
    if grid.gpus_per_trial < 0 or (grid.gpus_per_trial > 1 and grid.gpus_per_trial != int(grid.gpus_per_trial)):
        raise ConfigError(f"--gpus-per-trial: expected 0, a fraction below 1 or a whole number, got "
                          f"{grid.gpus_per_trial:g}")


def _plan_arms(study: str, base: RunConfig, chosen: list[tuple[tracking.TrialRecord, float]], metric: str
               ) -> tuple[list[Arm], list[dict[str, Any]], dict[str, Any]]:
    """One arm per distinct config: the chosen trials and their baselines (equal configs share an arm)."""
    arms: dict[str, Arm] = {}
    by_config: dict[str, str] = {}  # the config's YAML -> its arm's label

    def arm_for(label: str, cfg: RunConfig) -> str:
        key = config_to_yaml(cfg)
        if key not in by_config:
            by_config[key] = label
            arms[label] = Arm(label, cfg, f"{study}-confirm-{label}")
        return by_config[key]

    base_dict = config_to_dict(base)
    off: dict[str, Any] = {}  # the top configuration's baseline as dotted values over the base config
    configurations = []
    for record, search_value in chosen:
        label = (record.name.split() or [record.trial_id])[0]
        if label in arms or label == BASELINE or not label:
            label = record.trial_id
        values = {k: yaml.safe_load(record.params[k]) for k in record.searched if k in record.params and k != "seed"}
        cfg = parse_config(apply_params(base_dict, values))
        baseline_cfg = baseline_config(base, values)
        if not off:
            off = {**{k: v for k, v in values.items() if not is_method_key(k)}, **method_off(base)}
        baseline = arm_for(BASELINE if BASELINE not in arms else f"{BASELINE}-{label}", baseline_cfg)
        label = arm_for(label, cfg)
        configurations.append({"label": label, "baseline": baseline, "values": values,
                               "search_value": search_value, "trial_id": record.trial_id,
                               "run_id": record.run_id})
    return list(arms.values()), configurations, off


def _check_ray_arm(workdir: str, uri: str, arm: Arm, seeds: list[int]) -> None:
    """A Ray arm that already has a Tune experiment is resumed, which runs only its own grid of seeds: every
    seed still to train must be in it (it is, when the same command is run again)."""
    folder = study_dir(workdir, arm.study)
    if not ((folder / META_FILE).is_file() and any(folder.glob("experiment_state*.json"))):
        return
    earlier = yaml.safe_load((folder / SEARCH_SPACE).read_text())["params"]["seed"]["values"]
    missing = [s for s in seeds if s not in _done_seeds(uri, arm)]
    outside = [s for s in missing if s not in earlier]
    if outside:
        raise ConfigError(f"--seeds: {arm.study} was started on seeds {', '.join(map(str, earlier))}, not "
                          f"{', '.join(map(str, outside))}; confirm on the same seeds, or run the new ones with "
                          "--backend local")


# ---------------------------------------------------------------------------------------------
# the runs


def run_confirm(options: ConfirmOptions) -> ConfirmResult:
    started = time.monotonic()
    plan = plan_confirm(options)
    trained = 0
    with _store(plan.uri, options.workdir):
        for arm in plan.arms:
            trained += _run_arm(plan, arm, options)
    arms = {arm.label: _arm_runs(plan.uri, arm, plan.seeds) for arm in plan.arms}
    confirmation = summarise(plan.study, plan.metric, plan.mode, plan.seeds, plan.search_seeds,
                             plan.configurations, arms)
    title = (f"mssd confirm {plan.study}: top {len(plan.configurations)} of the search against the baseline on "
             f"fresh seeds {', '.join(map(str, plan.seeds))}")
    files = write_outputs(confirmation, plan.folder / CONFIRM_DIR, title)
    record = _record(plan, confirmation)
    files.append(write_record(plan.folder, record))
    tracking.log_parent_artifacts(plan.uri, plan.study, files, CONFIRM_DIR)
    set_parent_tags(plan.uri, plan.study, confirm_tags(record))
    return ConfirmResult(confirmation, files[0].read_text(), files, trained, time.monotonic() - started)


@contextlib.contextmanager
def _store(uri: str, workdir: str) -> Iterator[None]:
    """The arms' studies resolve their store as every command does (config > $MLFLOW_TRACKING_URI > default);
    where that is not the study's own store (one the study recorded), point them at it for the runs."""
    cfg_free = tracking.resolve_tracking_uri(None, workdir)
    if cfg_free == uri or os.environ.get("MLFLOW_TRACKING_URI"):
        yield
        return
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def _done_seeds(uri: str, arm: Arm) -> dict[int, tracking.TrialRecord]:
    """Seed -> the arm's ended run on it (a completed one preferred), from MLflow; empty before its first run."""
    try:
        records = tracking.study_trials(uri, arm.study)
    except tracking.TrackingError:
        return {}
    done: dict[int, tracking.TrialRecord] = {}
    for r in records:
        seed = r.params.get("seed", "")
        if r.status in TERMINAL and seed.isdigit() and (int(seed) not in done or r.status == "completed"):
            done[int(seed)] = r
    return done


def _run_arm(plan: ConfirmPlan, arm: Arm, options: ConfirmOptions) -> int:
    """Train the arm's seeds that have not ended yet; the number trained. Raises when one is still unfinished
    afterwards (Tune stops quietly on Ctrl-C): no verdict is written from a partial confirmation."""
    missing = [s for s in plan.seeds if s not in _done_seeds(plan.uri, arm)]
    if not missing:
        print(f"confirm {arm.label}: seeds {', '.join(map(str, plan.seeds))} already done ({arm.study})", flush=True)
    else:
        _train_seeds(plan, arm, options, missing)
        unfinished = [s for s in missing if s not in _done_seeds(plan.uri, arm)]
        if unfinished:
            raise StudyError(f"confirm {plan.study}: {arm.label} ({arm.study}) did not finish seed(s) "
                             f"{', '.join(map(str, unfinished))} (interrupted?); run the same command again to "
                             "continue")
    return len(missing)


def _train_seeds(plan: ConfirmPlan, arm: Arm, options: ConfirmOptions, missing: list[int]) -> None:
    seeds_text = ", ".join(map(str, plan.seeds))
    print(f"confirm {arm.label}: training seeds {', '.join(map(str, missing))} of {seeds_text} ({arm.study}, "
          f"{plan.backend})", flush=True)
    folder = study_dir(options.workdir, arm.study)
    space_text = seed_space(arm, missing)
    if plan.backend == "ray" and (folder / META_FILE).is_file() and any(folder.glob("experiment_state*.json")):
        from study.tune import StudyOptions, run_study

        run_study(StudyOptions(config=str(folder / BASE_CONFIG), space=str(folder / SEARCH_SPACE), name=arm.study,
                               workdir=options.workdir, resume=True, address=options.grid.address,
                               verbose=options.grid.verbose))
        return
    if plan.backend == "ray" and (folder / META_FILE).is_file():
        # Interrupted after the arm's files were written but before Tune recorded anything: start it afresh.
        for name in (META_FILE, BASE_CONFIG, SEARCH_SPACE):
            (folder / name).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / f"{arm.label}.yaml"
        config.write_text(config_to_yaml(arm.cfg))

        def local_runs() -> list[LocalRun]:
            return [LocalRun(f"seed{s}", f"{arm.label} seed={s}", parse_config(apply_params(config_to_dict(arm.cfg),
                                                                                           {"seed": s})), ["seed"])
                    for s in missing]

        run_grid(options.grid, plan.backend, config=str(config), overrides=[], name=arm.study,
                 workdir=options.workdir, base=arm.cfg, space_text=space_text, searched=["seed"],
                 local_runs=local_runs)


def seed_space(arm: Arm, seeds: list[int]) -> str:
    return (f"# generated by `mssd confirm`: arm {arm.label} on fresh seeds\n"
            f"description: mssd confirm, arm {arm.label}\n"
            f"params:\n  seed: {{distribution: grid, values: [{', '.join(map(str, seeds))}]}}\n")


def _arm_runs(uri: str, arm: Arm, seeds: list[int]) -> ArmRuns:
    done = _done_seeds(uri, arm)
    return ArmRuns(arm.label,
                   metrics={s: r.metrics for s, r in done.items() if s in seeds and r.status == "completed"},
                   failed=sorted(s for s, r in done.items() if s in seeds and r.status != "completed"))


def _record(plan: ConfirmPlan, c: Confirmation) -> ConfirmRecord:
    row = c.best_row
    common = {"study": plan.study, "metric": plan.metric, "mode": plan.mode, "seeds": plan.seeds,
              "baseline_values": plan.baseline_values}
    if row is None:
        return ConfirmRecord(best=BASELINE, **common)
    chosen = next(x for x in plan.configurations if x["label"] == row.label)
    s = row.summaries[plan.metric]
    return ConfirmRecord(best=row.label, trial_id=chosen["trial_id"], run_id=chosen["run_id"], values=row.values,
                         delta=s.mean, ci_low=s.ci_low, ci_high=s.ci_high, **common)


def confirm_tags(record: ConfirmRecord) -> dict[str, str]:
    """The parent run's tags; a baseline verdict has no delta or interval (``none``)."""
    def num(v: float | None) -> str:
        return "none" if v is None else f"{v:.6g}"

    return {"mssd.confirm.best": record.best, "mssd.confirm.best_delta": num(record.delta),
            "mssd.confirm.ci_low": num(record.ci_low), "mssd.confirm.ci_high": num(record.ci_high),
            "mssd.confirm.seeds": ",".join(map(str, record.seeds))}


def check_confirm_arguments(top: int, seeds: int | str) -> None:
    """``mssd tune --confirm K --confirm-seeds N``: the numbers checked before the sweep starts."""
    if top < 1:
        raise ConfigError(f"--confirm: expected at least 1, got {top}")
    try:
        parse_seeds(seeds)
    except MSSDError as exc:
        raise ConfigError(str(exc).replace("--seeds", "--confirm-seeds", 1)) from None


