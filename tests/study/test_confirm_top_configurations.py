"""Which configurations ``mssd confirm --top K`` re-tests: a configuration crossed with seeds counts once,
valued at its mean over the search's seeds; a study of one seed per configuration keeps the trial ranking."""

from __future__ import annotations

from study.export import rank_trials, top_configurations
from study.tracking import TrialRecord


def _trial(number: int, value: float, seed: int, **params: str) -> TrialRecord:
    searched = ["seed", *params]
    return TrialRecord(run_id=f"run{number}", trial_id=f"id{number}", name=f"t{number:02d}", status="completed",
                       params={"seed": str(seed), **params}, metrics={"map": value}, searched=searched,
                       artifact_uri="")


def test_a_configuration_crossed_with_seeds_is_one_candidate_valued_at_its_mean():
    trials = [
        _trial(0, 0.30, 1, gamma="0.05"), _trial(1, 0.20, 2, gamma="0.05"),   # mean 0.25, one lucky seed
        _trial(2, 0.28, 1, gamma="0.5"), _trial(3, 0.27, 2, gamma="0.5"),     # mean 0.275: the best
        _trial(4, 0.10, 1, gamma="5"), _trial(5, 0.12, 2, gamma="5"),
    ]
    chosen = top_configurations(rank_trials(trials, "map", "max"), "map", "max", 2)
    assert [(r.name, round(v, 4)) for r, v in chosen] == [("t02", 0.275), ("t00", 0.25)]
    # Lower is better: the order turns over, each configuration still once.
    lowest = top_configurations(rank_trials(trials, "map", "min"), "map", "min", 3)
    assert [r.params["gamma"] for r, _ in lowest] == ["5", "0.05", "0.5"]


def test_one_seed_per_configuration_keeps_the_trial_ranking_and_its_values():
    trials = [_trial(i, v, 0, lr=str(i)) for i, v in enumerate([0.2, 0.4, 0.4, 0.1])]
    ranked = rank_trials(trials, "map", "max")
    chosen = top_configurations(ranked, "map", "max", 3)
    assert [r for r, _ in chosen] == ranked[:3]  # ties: the earlier trial first, as rank_trials
    assert [v for _, v in chosen] == [0.4, 0.4, 0.2]
