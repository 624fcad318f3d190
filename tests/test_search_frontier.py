"""Proposals ranked by optimistic hypervolume improvement per training second (nas.search.frontier)."""

from __future__ import annotations

import math
import random

import numpy as np
import optuna
import pytest
from helpers import drive_ray

from nas.latency.predict import predict_ms
from nas.latency.profiles import resolve_profile
from nas.search import run_search
from nas.search.frontier import Candidate, FrontierSampler, _added_volume, fit_accuracy, fit_train_seconds
from nas.search.lifecycle import make_sampler
from nas.search.results import hypervolume, trial_records
from nas.search.settings import SearchSettings
from nas.space import load_space

SPACE = load_space("hardnet")
SETTINGS = SearchSettings(budget_ms=3.0, latency="predicted:1080ti", proxy="zero-cost", sampler="hvi")


def _row(size: float, accuracy: float | None = None) -> dict[str, float]:
    row = {"params": 1e6 * size, "macs": 1e8 * size, "cio": 1e7 * size, "latency_ms": 1.0 + size}
    return row if accuracy is None else row | {"accuracy": accuracy}


def test_the_accuracy_model_interpolates_its_data_and_is_unsure_far_from_it():
    trained = [_row(s, 0.3 + 0.02 * s) for s in (1, 2, 3, 4, 5)]
    mu, sd = fit_accuracy(trained, [_row(3), _row(3.2), _row(400)])
    assert abs(mu[0] - 0.36) < 0.01
    assert sd[0] < sd[2] and sd[1] < sd[2]
    assert abs(mu[2] - np.mean([r["accuracy"] for r in trained])) < 0.01  # far away: the data's mean


def test_without_trainings_every_proposal_is_equally_uncertain():
    mu, sd = fit_accuracy([], [_row(1), _row(2)])
    assert list(mu) == [0.0, 0.0] and list(sd) == [1.0, 1.0]


def test_the_training_time_law_is_fitted_to_the_study_s_own_trainings():
    rows = [{"macs": m, "proxy_wall_s": 3e-7 * m ** 0.8} for m in (1e8, 4e8, 2e9)]
    a, b = fit_train_seconds(rows)
    assert abs(b - 0.8) < 1e-6 and math.isclose(a, 3e-7, rel_tol=1e-6)
    assert fit_train_seconds(rows[:1]) == (math.exp(math.log(rows[0]["proxy_wall_s"]) - math.log(1e8)), 1.0)
    assert fit_train_seconds([]) == (1.0, 1.0)


def _sampler() -> FrontierSampler:
    sampler = make_sampler(SETTINGS, 0)
    assert isinstance(sampler, FrontierSampler)
    return sampler


def test_a_point_the_front_dominates_adds_nothing_and_one_beyond_it_adds_volume():
    front = [_row(2, 0.40), _row(4, 0.45)]
    gain = _sampler()._improvement(front, [_row(3, 0.40), _row(1, 0.40), _row(3, 0.50)])
    assert gain[0] == 0.0 and gain[1] > 0.0 and gain[2] > 0.0


def test_the_added_volume_is_the_hypervolume_difference_exactly():
    rng = random.Random(1)
    for _ in range(200):
        d = rng.choice([2, 3])
        front = [[rng.random() for _ in range(d)] for _ in range(rng.randint(0, 12))]
        p = [rng.random() for _ in range(d)]
        direct = hypervolume(front + [p], [1.1] * d) - hypervolume(front, [1.1] * d)
        assert _added_volume(p, front, 1.1) == pytest.approx(direct, abs=1e-12)


def test_of_two_equally_promising_proposals_the_cheaper_to_train_wins():
    sampler = _sampler()
    study = optuna.create_study(directions=SETTINGS.directions, sampler=sampler)
    for size in (1.0, 1.5, 2.0):  # equally accurate whatever their size, 10 s per 1e8 MACs
        trial = study.ask()
        for k, v in (_row(size, 0.4) | {"proxy_wall_s": 10.0 * size}).items():
            trial.set_user_attr(k, v)
        study.tell(trial, [0.4, 1.0 + size, 1e7 * size])
    configs = [SPACE.seeds()[n] for n in ("hardnet39ds", "hardnet68ds")]
    pool = [Candidate(c, {}, SETTINGS, 0.5) for c in configs]
    for c in pool:  # the same objectives, only the MACs (the training time) differ
        c.metrics.update(cio=1e6, params=1e5)
    pool[1].metrics["macs"] = 4 * pool[0].metrics["macs"]
    scores = sampler.scores(study.get_trials(deepcopy=False), pool)
    assert scores[0] > 3.5 * scores[1]


def test_every_proposal_fits_the_budget_is_new_and_is_reproducible():
    profile = resolve_profile("1080ti")

    def proposals() -> list[tuple[str, float]]:
        study = optuna.create_study(directions=SETTINGS.directions, sampler=make_sampler(SETTINGS, 0))
        out = []
        for _ in range(6):
            trial = study.ask()
            cfg = SPACE.sample(trial)
            trial.set_user_attr("arch_id", cfg.arch_id)
            out.append((cfg.arch_id, predict_ms(cfg, profile, SETTINGS.resolution, SETTINGS.batch, SETTINGS.precision)))
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return out

    first = proposals()
    assert all(ms <= SETTINGS.budget_ms for _, ms in first), first
    assert len({a for a, _ in first}) == len(first)
    assert proposals() == first


@pytest.mark.parametrize("backend", ["optuna", "ray"])
def test_a_search_with_it_trains_only_candidates_that_fit(tmp_path, monkeypatch, backend):
    monkeypatch.setenv("HARDNAS_RUNS", str(tmp_path))
    s = SearchSettings(budget_ms=3.0, resolution=64, latency="predicted:1080ti", proxy="zero-cost", sampler="hvi",
                       trials=6, backend=backend)  # at 64x64 about 40 % of random configs fit 3 ms
    url = f"sqlite:///{tmp_path / 'hvi.db'}"
    if backend == "ray":  # what Tune does with Ray's public searcher API, without starting Ray
        drive_ray(s, url, "hvi")
        study = optuna.load_study(study_name="hvi", storage=url)
    else:
        study = run_search(s, url, "hvi")
    candidates = [r for r in trial_records(study) if not r.get("seed")]  # drive_ray queues no seeds
    assert len(candidates) >= 2
    assert all(r["status"] == "ok" and r["latency_ms"] <= 3.0 for r in candidates), candidates


def test_with_measured_latency_predictions_are_scaled_to_the_study_s_own_measurements(tmp_path, monkeypatch):
    monkeypatch.setenv("HARDNAS_RUNS", str(tmp_path))
    s = SearchSettings(budget_ms=30.0, latency="measured", device="cpu", proxy="zero-cost", sampler="hvi")
    sampler = make_sampler(s, 0)
    assert isinstance(sampler, FrontierSampler) and sampler.limit_ms > s.budget_ms  # the measurement decides
    study = optuna.create_study(directions=s.directions, sampler=sampler)
    assert sampler.latency_scale(study.get_trials(deepcopy=False)) == 1.0
    for name, ratio, disturbed in (("hardnet39ds", 2.0, False), ("hardnet68", 2.0, False), ("hardnet85", 9.0, True)):
        config = SPACE.seeds()[name]
        predicted = predict_ms(config, sampler.profile, s.resolution, s.batch, s.precision)
        trial = study.ask()
        for k, v in {"config": config.to_json(indent=None), "latency_source": "measured",
                     "latency_ms": ratio * predicted, "latency_disturbed": disturbed}.items():
            trial.set_user_attr(k, v)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert sampler.latency_scale(study.get_trials(deepcopy=False)) == pytest.approx(2.0)  # the disturbed one left out
