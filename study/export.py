"""Best-config export: the best trial(s) of a study, read from MLflow, as configs ``mssd train`` runs.

``export_best_configs(workdir, study, out, top_k=1, epochs=None, overrides=())`` ranks the study's
trials by its metric (``study.json``), taking trials that trained all their epochs (``completed``);
only when none did are ASHA-stopped ones considered, and trials that failed, crashed or went
non-finite are never chosen. Each config is the study's base config with the trial's searched values
(read back from the trial's MLflow params), optionally ``train.epochs = epochs`` and ``--set``
overrides; it is validated by the same loader ``mssd train`` uses, starts with provenance comments
(study, trial, run id, metric value, store), and is logged to the parent run under ``export/``.

When ``mssd confirm`` has re-tested the study on fresh seeds (``<study>/confirm/confirm.json``), its
verdict comes first: the confirmed best trial is rank 1 (its header gives the seeds and the paired delta
with its 95 % CI); when no configuration beat the baseline beyond seed noise, rank 1 is the baseline
(the base config with the method off) and says so, and the search's trials follow. Without a
confirmation every header says the trial is a single-seed search result.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from detectors.config import config_to_dict
from detectors.errors import MSSDError
from study import tracking
from study.config import apply_overrides, load_config, load_saved_config, parse_override, save_config
from study.confirm_record import ConfirmRecord, read_record
from study.study_files import load_study_meta as study_meta  # noqa: F401  (also read by study.report)
from study.study_files import study_dir, study_tracking_uri


class ExportError(MSSDError):
    """Nothing can be exported (no such study, no eligible trial)."""


@dataclass(frozen=True)
class ExportedConfig:
    path: Path
    trial_id: str
    run_id: str
    value: float
    trial: str = ""  # the study's name for the trial (t03), as the tune summary and report print it
    provenance: str = ""  # confirmed on fresh seeds, the confirmation's baseline, or a single-seed search result


def rank_trials(records: list[tracking.TrialRecord], metric: str, mode: str) -> list[tracking.TrialRecord]:
    """Eligible trials, best first: completed ones; ASHA-stopped ones only when nothing completed.

    The study's one ranking: ``mssd tune``'s summary line, the parent run's ``mssd.best_trial`` tag,
    ``mssd export`` and ``mssd report`` all call it, so they name the same best trial. Equal values go to
    the earlier trial (the lower trial number, ``t03`` before ``t07``; unnumbered records keep their
    order, which ``tracking.study_trials`` makes the start order)."""
    def ok(r: tracking.TrialRecord) -> bool:
        return tracking.is_finite_number(r.metrics.get(metric))

    pool = [r for r in records if r.status == "completed" and ok(r)]
    if not pool:
        pool = [r for r in records if r.status == "early_stopped" and ok(r)]
    sign = -1.0 if mode == "max" else 1.0
    return sorted(pool, key=lambda r: (sign * r.metrics[metric], _trial_number(r)))


def top_configurations(ranked: list[tracking.TrialRecord], metric: str, mode: str, top: int
                       ) -> list[tuple[tracking.TrialRecord, float]]:
    """The ``top`` best configurations of ``ranked`` (``rank_trials``' order), each as its best trial and its
    search value. Trials that differ only in their seed (a study that crosses each configuration with seeds,
    such as a ``one_at_a_time`` screen) are one configuration, valued at its mean over those seeds: it is
    re-tested once, and ranked by all its seeds rather than its luckiest. With one seed per configuration
    this is ``ranked[:top]`` and each trial's own value."""
    groups: dict[tuple, list[tracking.TrialRecord]] = {}
    for record in ranked:
        key = tuple(sorted((k, record.params[k]) for k in record.searched if k in record.params and k != "seed"))
        groups.setdefault(key, []).append(record)
    sign = -1.0 if mode == "max" else 1.0
    scored = [(statistics.fmean(r.metrics[metric] for r in group), order, group[0])
              for order, group in enumerate(groups.values())]  # order: the best trial's rank breaks ties
    scored.sort(key=lambda item: (sign * item[0], item[1]))
    return [(best, value) for value, _, best in scored[:top]]


def _trial_number(record: tracking.TrialRecord) -> float:
    """``t03 gamma=0.05`` -> 3 (the study's trial names, ``mlflow_view.trial_run_name``); inf when unnamed."""
    match = re.match(r"t(\d+)\b", record.name or "")
    return int(match.group(1)) if match else math.inf


def _confirmed_first(ranked: list[tracking.TrialRecord], confirmation: ConfirmRecord | None
                     ) -> list[tracking.TrialRecord | None]:
    """The export order: the confirmation's verdict first (a trial, or None for the baseline), then the
    search's ranking."""
    if confirmation is None:
        return list(ranked)
    if confirmation.baseline_wins:
        return [None, *ranked]
    best = next(r for r in ranked if r.run_id == confirmation.run_id)
    return [best, *(r for r in ranked if r is not best)]


def _param_value(text: str):
    return yaml.safe_load(text)


def export_best_configs(workdir: str | Path, study: str, out: str | Path, *, top_k: int = 1,
                        epochs: int | None = None, overrides: list[str] | tuple[str, ...] = ()) -> list[ExportedConfig]:
    if top_k < 1:
        raise ExportError(f"--top-k: expected at least 1, got {top_k}")
    if epochs is not None and epochs < 1:
        raise ExportError(f"--epochs: expected at least 1, got {epochs}")
    meta = study_meta(workdir, study)
    folder = study_dir(workdir, study)
    uri = study_tracking_uri(workdir, meta)
    tracking.check_tracking(uri)
    metric, mode = meta["metric"], meta["mode"]
    ranked = rank_trials(tracking.study_trials(uri, study), metric, mode)
    if not ranked:
        raise ExportError(f"study {study!r} has no finished trial with a finite {metric} to export")
    base = load_saved_config(folder / "base-config.yaml")  # perhaps written by an older release
    out = Path(out)
    confirmation = read_record(folder)
    if confirmation and not confirmation.baseline_wins and confirmation.run_id not in {r.run_id for r in ranked}:
        confirmation = None  # it names a trial the study no longer ranks: the search alone speaks
    chosen = _confirmed_first(ranked, confirmation)[:top_k]
    exported = []
    for rank, record in enumerate(chosen, start=1):
        data = config_to_dict(base)
        if record is None:  # the confirmation's verdict: the baseline
            values = dict(confirmation.baseline_values)
            note = confirmation.provenance()
        else:
            values = {key: _param_value(record.params[key]) for key in record.searched if key in record.params}
            note = (confirmation.provenance() if confirmation and record.run_id == confirmation.run_id else
                    f"best single-seed search trial, not confirmed on fresh seeds (`mssd confirm {study}` re-tests it)"
                    if rank == 1 else "single-seed search trial, not confirmed on fresh seeds")
        apply_overrides(data, values)
        if epochs is not None:
            apply_overrides(data, {"train.epochs": epochs})
        apply_overrides(data, dict(map(parse_override, overrides)))
        path = out if len(chosen) == 1 else out.with_name(f"{out.stem}-{rank}{out.suffix or '.yaml'}")
        header = [
            f"Exported by `mssd export` from study {study!r} on {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
            note,
            *([] if record is None else [
                f"search rank {ranked.index(record) + 1} of {len(ranked)} eligible trials by {metric} ({mode}): "
                f"trial {record.trial_id}, {metric} = {record.metrics[metric]:.6g} ({record.status})",
                f"MLflow run {record.run_id} in {tracking.redact_uri(uri)}"]),
            ("set: " if record is None else "searched: ") + (", ".join(f"{k}={values[k]!r}" for k in values) or "(none)"),
        ]
        if epochs is not None:
            header.append(f"train.epochs set to {epochs} (the sweep ran {base.train.epochs})")
        from detectors.config import parse_config

        cfg = parse_config(data)
        save_config(cfg, path, header)
        load_config(path)  # what `mssd train` will do: must pass unchanged
        if record is None:
            exported.append(ExportedConfig(path, "baseline", "", math.nan, "baseline", note))
            continue
        value = record.metrics[metric]
        exported.append(ExportedConfig(path, record.trial_id, record.run_id, value if math.isfinite(value) else 0.0,
                                       record.name.split(" ", 1)[0] if record.name else record.trial_id, note))
    tracking.log_parent_artifacts(uri, study, [e.path for e in exported], "export")
    return exported
