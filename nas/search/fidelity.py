"""When a proxy training stops early (Optuna backend; Ray Tune's ASHA scheduler does this for Ray).

Optuna's pruners do not support multi-objective studies, so the rules run on the per-epoch
accuracy curves that finished trials record, ranking only candidates within the budget:

* ``median`` (the default): after epoch e, stop below the median of the completed trials at e
  (once 5 have one);
* ``halving``: asynchronous successive halving: at the rungs 1, eta, eta^2... epochs, a training
  goes on only when its accuracy is in the top 1/eta of the trials that reached that rung, so many
  candidates get a cheap look and only the promising ones the full proxy.

Baselines are never stopped (`evaluate`), so each has its full-proxy accuracy.
"""

from __future__ import annotations

import math
import statistics
from typing import Callable

import optuna
from optuna.trial import TrialState

from .lifecycle import stop_requested
from .settings import SearchSettings

__all__ = ["ETA", "FIDELITIES", "rungs", "stop_rule"]

FIDELITIES = ("median", "halving")
ETA = 3
"""Successive halving keeps the top 1/ETA at each rung."""


def rungs(epochs: float, eta: int = ETA) -> list[int]:
    """The epochs after which successive halving decides: 1, eta, eta^2... below the full proxy."""
    out, e = [], 1
    while e < math.ceil(epochs):
        out.append(e)
        e *= eta
    return out


def _curves(study: optuna.Study, s: SearchSettings, states: tuple[TrialState, ...]) -> list[list[float]]:
    """Accuracy curves of finished trials whose latency is within the budget."""
    return [t.user_attrs.get("accuracy_curve") or [] for t in study.get_trials(deepcopy=False, states=states)
            if t.user_attrs.get("latency_ms", math.inf) <= s.budget_ms]


def stop_rule(study: optuna.Study, s: SearchSettings) -> Callable[[int, float], bool]:
    """The ``on_epoch`` callback of a proxy training under ``s.fidelity`` (True: stop it)."""
    at_rung = set(rungs(s.proxy_epochs))

    def median(epoch: int, acc: float) -> bool:
        at = [c[epoch - 1] for c in _curves(study, s, (TrialState.COMPLETE,)) if len(c) >= epoch]
        return len(at) >= 5 and acc < statistics.median(at)

    def halving(epoch: int, acc: float) -> bool:
        if epoch not in at_rung:
            return False
        at = sorted((c[epoch - 1] for c in _curves(study, s, (TrialState.COMPLETE, TrialState.PRUNED))
                     if len(c) >= epoch), reverse=True)
        keep = len(at) // ETA  # the top 1/eta of the rung go on; with fewer than eta there, everyone does
        return len(at) >= ETA and acc < at[keep - 1]

    rule = halving if s.fidelity == "halving" else median

    def stop(epoch: int, acc: float) -> bool:
        return stop_requested() or rule(epoch, acc)

    return stop
