from __future__ import annotations

import pytest

from nas.stats import kendall_tau, spearman_rho


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
