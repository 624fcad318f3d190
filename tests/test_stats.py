from __future__ import annotations

import numpy as np
import pytest

from nas.stats import kendall_tau, spearman_rho, tau_ceiling


def test_kendall_tau_known_values():
    assert kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # SciPy: kendalltau([1,2,3,4,5],[3,1,2,5,4]).statistic == 0.4
    assert kendall_tau([1, 2, 3, 4, 5], [3, 1, 2, 5, 4]) == pytest.approx(0.4)
    # with ties (tau-b), as scipy.stats.kendalltau gives
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9128709291752769)


def test_spearman_known_values():
    assert spearman_rho([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman_rho([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)
    with pytest.raises(ValueError):
        spearman_rho([1], [1])


def test_ceiling_bounds():
    assert tau_ceiling(1.0) == pytest.approx(1.0) and tau_ceiling(0.0) == 0.0
    assert tau_ceiling(-0.2) == 0.0
    values = [tau_ceiling(a) for a in (0.2, 0.4, 0.6, 0.8)]
    assert values == sorted(values) and all(a < c < 1 for a, c in zip((0.2, 0.4, 0.6, 0.8), values))
    assert tau_ceiling(0.6, 0.6) == pytest.approx(0.6)  # two equally noisy copies agree as two seeds do
    with pytest.raises(ValueError, match="seeds 0 is not allowed"):
        tau_ceiling(0.6, seeds=0)


@pytest.mark.parametrize("proxy_noise, reference_noise", [(0.8, 0.0), (0.8, 0.5), (0.4, 0.9)])
def test_ceiling_matches_simulated_noisy_copies_of_one_truth(proxy_noise, reference_noise):
    rng = np.random.default_rng(0)
    n, trials = 400, 20
    seen, predicted = [], []
    for _ in range(trials):
        truth = rng.normal(size=n)
        proxy = [truth + proxy_noise * rng.normal(size=n) for _ in range(2)]
        ref = [truth + reference_noise * rng.normal(size=n) for _ in range(2)]
        seen.append(kendall_tau(proxy[0], ref[0]))
        predicted.append(tau_ceiling(kendall_tau(*proxy), kendall_tau(*ref)))
    assert np.mean(seen) == pytest.approx(np.mean(predicted), abs=0.02)


@pytest.mark.parametrize("seeds", [2, 3])
def test_the_ceiling_of_a_seed_mean_matches_simulated_means(seeds):
    rng = np.random.default_rng(1)
    n, trials, noise = 400, 20, 0.8
    seen, predicted = [], []
    for _ in range(trials):
        truth = rng.normal(size=n)
        copies = [truth + noise * rng.normal(size=n) for _ in range(seeds + 1)]
        seen.append(kendall_tau(np.mean(copies[:seeds], axis=0), truth))
        predicted.append(tau_ceiling(kendall_tau(copies[0], copies[-1]), seeds=seeds))
    assert np.mean(seen) == pytest.approx(np.mean(predicted), abs=0.02)
    assert tau_ceiling(0.6, seeds=seeds) > tau_ceiling(0.6)
