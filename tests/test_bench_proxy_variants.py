"""benchmarks/bench_proxy_variants.py: the noise ceiling it prints matches simulated noisy rankings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from nas.stats import kendall_tau

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_proxy_variants", ROOT / "benchmarks" / "bench_proxy_variants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ceiling_bounds(bench):
    assert bench.tau_ceiling(1.0) == pytest.approx(1.0) and bench.tau_ceiling(0.0) == 0.0
    assert bench.tau_ceiling(-0.2) == 0.0
    values = [bench.tau_ceiling(a) for a in (0.2, 0.4, 0.6, 0.8)]
    assert values == sorted(values) and all(a < c < 1 for a, c in zip((0.2, 0.4, 0.6, 0.8), values))
    assert bench.tau_ceiling(0.6, 0.6) == pytest.approx(0.6)  # two equally noisy copies agree as two seeds do


@pytest.mark.parametrize("proxy_noise, reference_noise", [(0.8, 0.0), (0.8, 0.5), (0.4, 0.9)])
def test_ceiling_matches_simulated_noisy_copies_of_one_truth(bench, proxy_noise, reference_noise):
    rng = np.random.default_rng(0)
    n, trials = 400, 20
    seen, predicted = [], []
    for _ in range(trials):
        truth = rng.normal(size=n)
        proxy = [truth + proxy_noise * rng.normal(size=n) for _ in range(2)]
        ref = [truth + reference_noise * rng.normal(size=n) for _ in range(2)]
        seen.append(kendall_tau(proxy[0], ref[0]))
        predicted.append(bench.tau_ceiling(kendall_tau(*proxy), kendall_tau(*ref)))
    assert np.mean(seen) == pytest.approx(np.mean(predicted), abs=0.02)


def test_seed_twins(bench):
    assert bench._seed_twin("seed1") == "default" and bench._seed_twin("img20k-1ep-seed2") == "img20k-1ep"
    assert bench._seed_twin("reference-seed1") == "reference" and bench._seed_twin("batch64") is None


@pytest.mark.parametrize("seeds", [2, 3])
def test_the_ceiling_of_a_seed_mean_matches_simulated_means(bench, seeds):
    rng = np.random.default_rng(1)
    n, trials, noise = 400, 20, 0.8
    seen, predicted = [], []
    for _ in range(trials):
        truth = rng.normal(size=n)
        copies = [truth + noise * rng.normal(size=n) for _ in range(seeds + 1)]
        seen.append(kendall_tau(np.mean(copies[:seeds], axis=0), truth))
        predicted.append(bench.tau_ceiling(kendall_tau(copies[0], copies[-1]), seeds=seeds))
    assert np.mean(seen) == pytest.approx(np.mean(predicted), abs=0.02)
    assert bench.tau_ceiling(0.6, seeds=seeds) > bench.tau_ceiling(0.6)


@pytest.mark.parametrize("agreement, reference, seeds", [(0.6, 0.5, 3), (0.73, 0.6, 1), (0.4, 0.9, 2)])
def test_the_reference_floor_inverts_the_ceiling(bench, agreement, reference, seeds):
    tau = bench.tau_ceiling(agreement, reference, seeds)
    assert bench.reference_agreement_floor(tau, agreement, seeds) == pytest.approx(reference)
    assert bench.reference_agreement_floor(tau - 0.1, agreement, seeds) < reference  # a biased proxy: lower bound
    assert bench.reference_agreement_floor(1.0, agreement, seeds) == 1.0
