"""Proposals that start where the published networks are and aim at the latency budget.

* `EvolutionSampler` (``--sampler evolution``): each trial is a mutation of one field (k, m, link
  rule, depth, SE, stem, layout...) of a parent: a canonical seed evaluated in this study or a
  member of the current front (non-dominated among completed trials within the budget).
  Fields the parent lacks (a new stage, another block type) are drawn at random.
* Budget-aware: several proposals are drawn and the calibrated latency predictor
  (`evaluate.gate_profile`) keeps one that fits the budget, instead of only rejecting afterwards.
  ``evolution`` keeps the first that fits; ``--sampler budget`` (random proposals) the one closest
  to the budget edge. Architectures the study already holds are not proposed again while a new one
  can be.

Both are Optuna samplers, so the Optuna and Ray backends use them alike; seeded by ``--seed``.
"""

from __future__ import annotations

import math
import random
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from ..config import ArchConfig
from ..latency.predict import predict_ms
from ..space import InvalidCandidate, SearchSpace
from .evaluate import gate_profile
from .results import nondominated
from .settings import SearchSettings

__all__ = ["EvolutionSampler", "Proposal", "mutate"]

PROPOSALS = 24
"""Proposals drawn per trial; the latency predictor keeps one (each costs a few ms)."""


class Proposal:
    """Stands in for an Optuna trial while `SearchSpace.sample` draws one architecture offline.

    A parameter of ``parent`` is kept, except ``mutate`` (a different value, a neighbour for
    numbers); any other parameter is drawn at random.
    """

    def __init__(self, rng: random.Random, parent: dict[str, Any] | None = None, mutate: str | None = None) -> None:
        self.rng, self.parent, self.target = rng, parent or {}, mutate
        self.params: dict[str, Any] = {}

    def _pick(self, name: str, dist: BaseDistribution) -> Any:
        if name in self.parent and name != self.target and dist._contains(dist.to_internal_repr(self.parent[name])):
            value = self.parent[name]
        elif name == self.target and name in self.parent:
            value = _neighbour(self.rng, dist, self.parent[name])
        else:
            value = _uniform(self.rng, dist)
        self.params[name] = value
        return value

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self._pick(name, CategoricalDistribution(choices))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return self._pick(name, IntDistribution(low, high, step=step, log=log))

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        return self._pick(name, FloatDistribution(low, high, step=step, log=log))


def _uniform(rng: random.Random, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return rng.choice(dist.choices)
    if isinstance(dist, IntDistribution):
        if dist.log:
            return int(min(dist.high, max(dist.low, round(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))))))
        return rng.randrange(dist.low, dist.high + 1, dist.step)
    assert isinstance(dist, FloatDistribution)
    if dist.step:
        n = int(round((dist.high - dist.low) / dist.step))
        return dist.low + dist.step * rng.randint(0, n)
    if dist.log:
        return math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
    return rng.uniform(dist.low, dist.high)


def _neighbour(rng: random.Random, dist: BaseDistribution, value: Any) -> Any:
    """A different value near ``value``: another choice, or one or two steps (a tenth of the range) away."""
    if isinstance(dist, CategoricalDistribution):
        others = [c for c in dist.choices if c != value]
        return rng.choice(others) if others else value
    step = dist.step or (dist.high - dist.low) / 10
    moved = value + rng.choice([-2, -1, 1, 2]) * step
    moved = min(dist.high, max(dist.low, moved))
    if isinstance(dist, IntDistribution):
        return int(dist.low + round((moved - dist.low) / dist.step) * dist.step)
    return dist.low + round((moved - dist.low) / dist.step) * dist.step if dist.step else moved


def mutate(space: SearchSpace, rng: random.Random, parent: dict[str, Any] | None) -> tuple[ArchConfig, dict[str, Any]]:
    """One architecture (and its trial parameters): ``parent`` with one field changed, or a random one."""
    target = rng.choice(sorted(parent)) if parent else None
    p = Proposal(rng, parent, target)
    return space.sample(p), p.params


class EvolutionSampler(optuna.samplers.BaseSampler):
    """Seed-aware evolution (``evolve=True``) or random proposals; kept if they fit the budget (``edge``: nearest its edge)."""

    def __init__(self, space: SearchSpace, s: SearchSettings, seed: int, evolve: bool = True, edge: bool = False,
                 proposals: int = PROPOSALS, explore: float = 0.1) -> None:
        self.space, self.s, self.evolve, self.edge = space, s, evolve, edge
        self.proposals, self.explore = proposals, explore
        self.rng = random.Random(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self.profile = gate_profile(s)
        self._plans: dict[int, dict[str, Any]] = {}

    def reseed_rng(self) -> None:
        self.rng = random.Random()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if "fixed_params" not in trial.system_attrs:  # an enqueued trial (a seed, a re-run) keeps its parameters
            self._plans[trial.number] = self.propose(study.get_trials(deepcopy=False))

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        plan = self._plans.get(trial.number, {})
        if param_name in plan and param_distribution._contains(param_distribution.to_internal_repr(plan[param_name])):
            return plan[param_name]
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: list[float] | None) -> None:
        self._plans.pop(trial.number, None)

    # -- proposing ----------------------------------------------------------------------------------

    def parents(self, trials: list[FrozenTrial]) -> list[dict[str, Any]]:
        """The seeds evaluated here (also over the budget) and the current feasible front, as parameters."""
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.params]
        seeds = [t.params for t in done if t.user_attrs.get("seed")]
        feasible = [t for t in done if t.user_attrs.get("latency_ms", math.inf) <= self.s.budget_ms]
        front = [feasible[i].params for i in nondominated([t.values for t in feasible], self.s.signs)] if feasible else []
        return seeds + front

    def propose(self, trials: list[FrozenTrial]) -> dict[str, Any]:
        """The parameters of the next trial: the first new one of `proposals` candidates that fits the budget
        (with ``edge``: the one nearest the edge)."""
        have = {t.user_attrs.get("arch_id") for t in trials}
        parents = self.parents(trials) if self.evolve else []
        best: tuple[float, dict[str, Any]] | None = None
        for _ in range(self.proposals):
            parent = self.rng.choice(parents) if parents and self.rng.random() >= self.explore else None
            try:
                config, params = mutate(self.space, self.rng, parent)
            except InvalidCandidate:
                continue
            score = self._score(config) - (10.0 if config.arch_id in have else 0.0)
            if best is None or score > best[0]:
                best = (score, params)
            if (self.profile is None or not self.edge) and config.arch_id not in have and score >= 0.0:
                break  # the first new proposal that fits (or nothing to steer with)
        return best[1] if best is not None else {}

    def _score(self, config: ArchConfig) -> float:
        """Higher is better: within the budget ≥ 0 (with ``edge``, closer to it); over it, the less over the better."""
        if self.profile is None:
            return 0.0
        ratio = predict_ms(config, self.profile, self.s.resolution, self.s.batch, self.s.precision) / self.s.budget_ms
        if not self.edge:
            return 0.0 if ratio <= 1.0 else -ratio
        jitter = self.rng.uniform(0.0, 0.15)  # proposals within 15 % of the edge are equally good
        return min(1.0, ratio + jitter) if ratio <= 1.0 else -ratio
