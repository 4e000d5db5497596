"""What a finished study's trials can say beyond its ranking: factor effects and early-stopping bias.

Two sections of ``mssd report`` (``effects.md``, ``early_ranking.md`` in ``<study>/report/``):

- **Factor effects** (grid studies). In a factorial grid every value of a factor meets every
  combination of the others, so each cell of the other factors pairs a trial at value v with the trial
  at the factor's first value: the paired deltas' mean and 95 % CI (``study.paired_stats``) estimate
  the factor's main effect averaged over the others. With one seed per cell, seed noise sits inside
  the deltas and widens the interval honestly. In a ``one_at_a_time`` design the cells are the crossed
  params' values (the seeds): each variant pairs with the reference on the same seed; crossed params are
  blocks, not factors, and get no row.
- **Early ranking** (any study whose trials ran every epoch): how well a trial's metric at an early
  epoch predicts its final one (Spearman's rank correlation), and the trials that an ASHA rung at that
  epoch (keeping the top 1/eta) would have stopped although they finished among the best third. A
  method that starts slowly and finishes ahead shows up here; ASHA-stopped studies cannot answer it
  (their losers have no final value), so run the check on a ``--no-asha`` study.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from study.paired_stats import PairedSummary, format_delta, paired_summary


@dataclass(frozen=True)
class Effect:
    factor: str
    value: str  # the value compared with ``reference``
    reference: str
    summary: PairedSummary  # of value minus reference, paired over the other factors' cells


def factor_effects(points: Sequence[tuple[dict[str, str], float]], factors: Sequence[str],
                   blocks: Sequence[str] = ()) -> list[Effect]:
    """Main effects of a grid: ``points`` are ``(params, metric)`` of completed trials, ``factors`` the
    grid keys in the space's order; each factor's later values against its first (by appearance).
    ``blocks`` (a one_at_a_time design's crossed params, e.g. the seed) are part of every cell but get
    no effect of their own."""
    effects = []
    for factor in factors:
        values = list(dict.fromkeys(p[factor] for p, _ in points if factor in p))
        if len(values) < 2:
            continue
        others = [f for f in factors if f != factor] + list(blocks)
        cells: dict[tuple, dict[str, list[float]]] = {}
        for params, metric in points:
            if factor in params:
                cell = tuple(params.get(f) for f in others)
                cells.setdefault(cell, {}).setdefault(params[factor], []).append(metric)
        reference = values[0]
        for value in values[1:]:
            deltas = [_mean(c[value]) - _mean(c[reference]) for c in cells.values() if value in c and reference in c]
            effects.append(Effect(factor, value, reference, paired_summary(deltas)))
    return effects


def effects_markdown(effects: Sequence[Effect], metric: str) -> str:
    if not effects:
        return "No factor has two values with paired cells: nothing to estimate.\n"
    lines = [f"Main effect of each factor on {metric} (x100), paired over the other factors' cells; 95 % CI (paired t).",
             "", "| factor | value vs reference | delta [95 % CI] | p | pairs |", "| --- | --- | --- | --- | --- |"]
    for e in effects:
        s = e.summary
        mark = " *" if s.excludes_zero else ""
        p = "-" if s.p_value is None else f"{s.p_value:.3f}"
        lines.append(f"| {e.factor} | {e.value} vs {e.reference} | {format_delta(s)}{mark} | {p} | {s.n} |")
    lines += ["", "\\* the 95 % CI excludes 0."]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class EarlyRanking:
    epoch: int
    spearman: float | None  # rank correlation of the metric at ``epoch`` with the final metric
    cut_but_top: list[str]  # trials a rung at ``epoch`` would stop that finish in the best third
    trials: int


def early_ranking(curves: dict[str, list[tuple[int, float]]], rungs: Sequence[int], eta: float,
                  mode: str = "max") -> list[EarlyRanking]:
    """``curves``: trial label -> ``[(epoch, metric), ...]`` of trials that ran every epoch."""
    finals = {label: points[-1][1] for label, points in curves.items() if points}
    sign = 1.0 if mode == "max" else -1.0
    best_third = set(sorted(finals, key=lambda k: -sign * finals[k])[: max(1, math.ceil(len(finals) / 3))])
    results = []
    for epoch in rungs:
        early = {label: dict(points).get(epoch) for label, points in curves.items()}
        labels = [k for k in finals if early.get(k) is not None and math.isfinite(early[k])]
        if len(labels) < 3:
            continue
        kept = sorted(labels, key=lambda k: -sign * early[k])[: max(1, math.floor(len(labels) / eta))]
        cut = sorted(k for k in labels if k not in kept and k in best_third)
        results.append(EarlyRanking(epoch, spearman([early[k] for k in labels], [finals[k] for k in labels]),
                                    cut, len(labels)))
    return results


def early_ranking_markdown(results: Sequence[EarlyRanking], metric: str, eta: float) -> str:
    if not results:
        return "Fewer than 3 trials ran every epoch: no early-ranking check.\n"
    lines = [f"Does {metric} at an early epoch predict the final one? A rung there keeping the top 1/{eta:g} would "
             "stop the trials listed, although they finish in the best third.", "",
             "| epoch | trials | Spearman (early vs final) | stopped at this rung but finish in the best third |",
             "| --- | --- | --- | --- |"]
    for r in results:
        rho = "-" if r.spearman is None else f"{r.spearman:+.2f}"
        lines.append(f"| {r.epoch} | {r.trials} | {rho} | {', '.join(r.cut_but_top) or 'none'} |")
    return "\n".join(lines) + "\n"


def asha_rungs(grace_period: int, eta: float, epochs: int) -> list[int]:
    """ASHA's rung epochs: grace, grace * eta, ... below the last epoch."""
    rungs, epoch = [], float(max(1, grace_period))
    while epoch < epochs:
        rungs.append(int(round(epoch)))
        epoch *= eta
    return rungs


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho (average ranks for ties); None when either side is constant."""
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = _mean(ra), _mean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return None if va == 0 or vb == 0 else cov / math.sqrt(va * vb)


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)



def write_evidence(out, records, space, metric: str, mode: str, options: dict, epochs: int,
                   history) -> list:
    """Write ``effects.md`` (grid studies) and ``early_ranking.md`` (trials that ran every epoch) into
    ``out``; ``history(run_id)`` gives a trial's metric per epoch. Returns the files written."""
    from pathlib import Path

    out = Path(out)
    written = []
    done = [r for r in records if r.status == "completed" and metric in r.metrics
            and math.isfinite(r.metrics[metric])]
    if space.is_grid:
        points = [({k: r.params.get(k, "") for k in space.keys}, r.metrics[metric]) for r in done]
        blocks = [k for k in space.keys if k not in space.varied_keys]
        path = out / "effects.md"
        path.write_text(effects_markdown(factor_effects(points, space.varied_keys, blocks), metric))
        written.append(path)
    full = [r for r in done if int(r.metrics.get("epoch", 0)) >= epochs]
    eta = float(options.get("reduction_factor") or 2.0)
    curves = {(r.name.split(" ", 1)[0] if r.name else r.trial_id): history(r.run_id) for r in full}
    grace = options.get("grace_period") or max(1, epochs // 4)  # the study's, else tune's default
    results = early_ranking(curves, asha_rungs(int(grace), eta, epochs), eta, mode)
    path = out / "early_ranking.md"
    path.write_text(early_ranking_markdown(results, metric, eta))
    written.append(path)
    return written
