"""Rank statistics used by the benchmarks and the app: SciPy's, with the package's conventions.

All take two equal-length sequences of at least 2 values (else a one-line `ValueError`) and
return 0.0, not NaN, when either side is constant (no ranking to agree with). `bootstrap_tau` adds
a seeded percentile interval (networks resampled with replacement). `tau_ceiling` is the most a
noisy score can be expected to agree with a noisy reference, from each one's seed agreement.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from scipy import stats

__all__ = ["bootstrap_tau", "kendall_tau", "spearman_rho", "tau_ceiling"]


def _check(name: str, x: Sequence[float], y: Sequence[float]) -> None:
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"{name}: need two sequences of equal length >= 2, got {len(x)} and {len(y)}")


def _value(result: float) -> float:
    return 0.0 if math.isnan(result) else float(result)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (`scipy.stats.kendalltau`): rank agreement in [-1, 1], ties handled."""
    _check("kendall_tau", x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SciPy warns on constant input; that is the 0.0 case
        return _value(stats.kendalltau(x, y).statistic)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (`scipy.stats.spearmanr`: Pearson correlation of average ranks)."""
    _check("spearman_rho", x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _value(stats.spearmanr(x, y).statistic)


def _tau_b_batch(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair of two ``(B, n)`` arrays (0.0 where a side is constant)."""
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    num = (sx * sy).sum((1, 2))
    den = np.sqrt((sx * sx).sum((1, 2)) * (sy * sy).sum((1, 2)))
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def bootstrap_tau(x: Sequence[float], y: Sequence[float], *, resamples: int = 1000, seed: int = 0,
                  level: float = 0.95) -> tuple[float, float, float]:
    """Kendall's tau-b and its percentile bootstrap interval: ``(tau, low, high)``, pairs resampled, seeded."""
    _check("bootstrap_tau", x, y)
    if not 0 < level < 1 or resamples < 1:
        raise ValueError(f"bootstrap_tau: level {level!r} / resamples {resamples!r} are not allowed; expected "
                         "0 < level < 1 and resamples >= 1")
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    idx = np.random.default_rng(seed).integers(0, len(xa), size=(resamples, len(xa)))
    taus = np.concatenate([_tau_b_batch(xa[idx[i:i + 200]], ya[idx[i:i + 200]]) for i in range(0, resamples, 200)])
    low, high = np.quantile(taus, [(1 - level) / 2, (1 + level) / 2])
    return kendall_tau(x, y), float(low), float(high)


def tau_ceiling(agreement: float, reference_agreement: float = 1.0, seeds: int = 1) -> float:
    """The highest expected tau between the mean of ``seeds`` seeds of a score whose two seeds agree at
    ``agreement`` and a reference whose two seeds agree at ``reference_agreement`` (Gaussian noise: Greiner's
    r = sin(pi tau / 2) is each one's reliability, Spearman-Brown's k r / (1 + (k - 1) r) that of a k-seed mean,
    and the correlation of two noisy copies of one truth is at most the root of their product)."""
    if not (isinstance(seeds, int) and seeds >= 1):
        raise ValueError(f"tau_ceiling: seeds {seeds!r} is not allowed; expected an integer >= 1")
    one = math.sin(math.pi * max(agreement, 0.0) / 2)
    mean = seeds * one / (1 + (seeds - 1) * one)
    r = mean * math.sin(math.pi * max(reference_agreement, 0.0) / 2)
    return 2 / math.pi * math.asin(math.sqrt(r))
