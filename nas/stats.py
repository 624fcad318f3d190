"""Rank statistics used by the benchmarks and the app: SciPy's, with the package's conventions.

Both take two equal-length sequences of at least 2 values (else a one-line `ValueError`) and
return 0.0, not NaN, when either side is constant (no ranking to agree with).
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

from scipy import stats

__all__ = ["kendall_tau", "spearman_rho"]


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
