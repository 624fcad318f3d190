"""Early stopping on the per-epoch reports (nas.search.fidelity): median and successive halving."""

from __future__ import annotations

import optuna
import pytest

from nas.search.fidelity import rungs, stop_rule
from nas.search.settings import SearchSettings


def _study(curves: list[tuple[list[float], float]], state=optuna.trial.TrialState.COMPLETE) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for curve, lat in curves:
        study.add_trial(optuna.trial.create_trial(
            state=state, values=[curve[-1], lat] if state == optuna.trial.TrialState.COMPLETE else None,
            user_attrs={"accuracy_curve": curve, "latency_ms": lat}))
    return study


def test_rungs_are_powers_of_eta_below_the_full_proxy():
    assert rungs(4) == [1, 3] and rungs(1) == [] and rungs(10) == [1, 3, 9] and rungs(2.5) == [1]


def test_halving_keeps_the_top_third_of_a_rung_among_candidates_within_the_budget():
    s = SearchSettings(budget_ms=10.0, proxy_epochs=4, fidelity="halving")
    fits = [([a, a, a, a], 5.0) for a in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)]
    study = _study(fits + [([0.99] * 4, 50.0)])  # a baseline over the budget is no yardstick for the ranking
    stop = stop_rule(study, s)
    assert stop(1, 0.45) and not stop(1, 0.55)  # top 6 // 3 = 2 go on: 0.6 and 0.5
    assert not stop(2, 0.0)  # epoch 2 is no rung
    assert stop(3, 0.49) and not stop(3, 0.5)


def test_halving_lets_everyone_through_until_a_rung_holds_eta_trials():
    s = SearchSettings(budget_ms=10.0, proxy_epochs=4, fidelity="halving")
    study = _study([([0.9, 0.9], 5.0), ([0.8, 0.8], 5.0)], state=optuna.trial.TrialState.PRUNED)
    assert not stop_rule(study, s)(1, 0.0)


def test_median_stops_below_the_median_of_five_completed():
    s = SearchSettings(budget_ms=10.0, proxy_epochs=4)
    study = _study([([a] * 4, 5.0) for a in (0.1, 0.2, 0.3, 0.4, 0.5)])
    stop = stop_rule(study, s)
    assert stop(2, 0.25) and not stop(2, 0.35)


def test_a_bad_fidelity_is_one_line():
    with pytest.raises(ValueError, match="fidelity: 'asha' is not allowed; expected median or halving"):
        SearchSettings(fidelity="asha")
