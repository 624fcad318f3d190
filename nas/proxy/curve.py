"""Learning-curve extrapolation: where a short run's accuracy curve is heading, with nothing fitted across networks.

The held-out error of the epochs done is fitted by a power law in the epoch, ``err(t) = c * t**s``
(least squares on log-log, the form learning curves follow over most of training), and read off at
``horizon`` times the epochs done. A curve that does not improve keeps its last accuracy; the result
never falls below the last accuracy nor exceeds 1. It corrects the short proxy's bias against networks
that learn more slowly but keep learning (bigger ones), and costs nothing beyond the per-epoch curve.
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["HORIZON", "extrapolate_accuracy"]

HORIZON = 10.0
"""The default reading point: ten times the epochs done (the reference of the fidelity study is ~10x)."""


def extrapolate_accuracy(curve: Sequence[float], horizon: float = HORIZON) -> float | None:
    """The power-law extrapolation of ``curve`` (accuracy per epoch) to ``horizon`` x its length; None if empty."""
    if not curve:
        return None
    last = float(curve[-1])
    pts = [(math.log(t), math.log(1.0 - a)) for t, a in enumerate(curve, 1) if 0.0 < 1.0 - a < 1.0]
    if len(pts) < 2:
        return last
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    if not slope < 0:
        return last
    err = math.exp(my + slope * (math.log(horizon * len(curve)) - mx))
    return min(1.0, max(last, 1.0 - err))
