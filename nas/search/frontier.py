"""``--sampler hvi``: each trial is the proposal that would grow the front most per second of training.

Every objective but accuracy is known before training: latency from the (calibrated) predictor
the gate uses, CIO, MACs and params from the cost model. So for a pool of new proposals that fit
the budget (random draws and one-field mutations of the seeds and the front, as `EvolutionSampler`
makes them) the sampler

1. estimates the proxy accuracy with a small Gaussian process over size features (log params,
   log MACs, log CIO, predicted latency) fitted to the study's trained trials, and takes an
   optimistic value, mean + ``beta`` x standard deviation;
2. computes the hypervolume that point would add to the current feasible front (objectives
   normalised over the front and the pool);
3. divides by the predicted training time, a power law in MACs fitted to the study's own
   trainings (``proxy_wall_s``), so that of two equally promising networks the cheaper one is
   tried first.

With measured latency the predictions are scaled by the study's own median measured / predicted
ratio, and a proposal up to ``MEASURED_SLACK`` over the budget still counts as fitting (the
measurement decides). It keeps the proposal with the highest ratio; with probability ``explore``
a random one that fits.
When no proposal would add anything (even optimistically), the most optimistic accuracy per
second wins. Seeded by ``--seed``; both backends use it like any Optuna sampler.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from ..config import ArchConfig
from ..cost import analyze
from ..latency.predict import predict_ms
from ..space import InvalidCandidate, SearchSpace
from .evaluate import METRIC_OF
from .evolution import EvolutionSampler, mutate
from .results import hypervolume, measured_cleanly, nondominated, unit_scale
from .settings import SearchSettings

__all__ = ["Candidate", "FrontierSampler", "fit_accuracy", "fit_train_seconds"]

POOL = 160
"""Proposals scored per trial (each costs a few ms: the cost model and the latency predictor)."""
MEASURED_SLACK = 1.15
"""With measured latency, a proposal predicted up to this factor over the budget may still fit it."""
FEATURES = ("params", "macs", "cio", "latency_ms")
GP_POINTS = 400
"""The accuracy model learns from the latest this many trainings (its cost grows with their cube)."""


class Candidate:
    """A proposal with every metric known before training."""

    def __init__(self, config: ArchConfig, params: dict[str, Any], s: SearchSettings, latency_ms: float) -> None:
        cost = analyze(config, s.resolution, s.batch)
        self.config, self.params = config, params
        self.metrics: dict[str, float] = {"params": float(cost.params), "macs": float(cost.macs), "cio": float(cost.cio),
                                          "latency_ms": latency_ms}


def _features(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    return np.array([[math.log(max(float(r[k]), 1e-9)) if k != "latency_ms" else float(r[k]) for k in FEATURES]
                     for r in rows], dtype=float).reshape(len(rows), len(FEATURES))


def fit_accuracy(trained: Sequence[dict[str, Any]], queries: Sequence[dict[str, Any]],
                 lengthscale: float = 1.0, noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the accuracy at ``queries`` (dicts of `FEATURES`), from a Gaussian
    process on ``trained`` (dicts with the features and ``accuracy``): constant mean, RBF kernel on
    standardised features, the signal variance of the data and ``noise`` of it as noise."""
    if not trained:
        return np.zeros(len(queries)), np.ones(len(queries))
    x, q = _features(trained), _features(queries)
    y = np.array([float(r["accuracy"]) for r in trained])
    both = np.vstack([x, q])
    centre, scale = both.mean(axis=0), both.std(axis=0)
    scale[scale == 0] = 1.0
    x, q = (x - centre) / scale, (q - centre) / scale
    mean, var = float(y.mean()), max(float(y.var()), 1e-4)

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1)
        return var * np.exp(-0.5 * d2 / lengthscale ** 2)

    k = kernel(x, x) + noise * var * np.eye(len(x))
    kq = kernel(q, x)
    chol = np.linalg.cholesky(k)
    alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, y - mean))
    v = np.linalg.solve(chol, kq.T)
    mu = mean + kq @ alpha
    sd = np.sqrt(np.clip(var - (v ** 2).sum(axis=0), 1e-12, None))
    return mu, sd


def fit_train_seconds(trained: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """``(a, b)`` of ``seconds = a * macs ** b`` fitted (least squares in logs) to trainings' ``proxy_wall_s``;
    ``b`` is 1 (time proportional to MACs) until two trainings of different size exist."""
    pts = [(math.log(r["macs"]), math.log(r["proxy_wall_s"])) for r in trained
           if r.get("proxy_wall_s") and r["proxy_wall_s"] > 0 and r.get("macs") and r["macs"] > 0]
    if not pts:
        return 1.0, 1.0
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    if len(pts) < 2 or float(xs.std()) < 1e-6:
        return float(math.exp(ys.mean() - xs.mean())), 1.0
    b = float(np.clip(np.polyfit(xs, ys, 1)[0], 0.2, 2.0))  # a few points: keep the exponent physical
    return float(math.exp(ys.mean() - b * xs.mean())), b


class FrontierSampler(EvolutionSampler):
    """Proposals ranked by optimistic hypervolume improvement per predicted training second."""

    def __init__(self, space: SearchSpace, s: SearchSettings, seed: int, pool: int = POOL, beta: float = 1.0,
                 explore: float = 0.1) -> None:
        super().__init__(space, s, seed, evolve=True, edge=False, explore=explore)
        self.pool, self.beta = pool, beta
        self.limit_ms = s.budget_ms * (MEASURED_SLACK if s.latency_kind == "measured" else 1.0)
        self._predicted: dict[int, float] = {}  # trial number -> this sampler's prediction of its architecture

    def latency_scale(self, trials: list[FrozenTrial]) -> float:
        """Median measured / predicted latency over the study's clean measurements; 1 without any."""
        ratios = []
        for t in trials:
            a = t.user_attrs
            if not measured_cleanly(a) or not a.get("latency_ms") or not a.get("config"):
                continue
            if t.number not in self._predicted:
                self._predicted[t.number] = predict_ms(ArchConfig.from_json(a["config"]), self.profile,
                                                       self.s.resolution, self.s.batch, self.s.precision)
            ratios.append(float(a["latency_ms"]) / self._predicted[t.number])
        return statistics.median(ratios) if ratios else 1.0

    def propose(self, trials: list[FrozenTrial]) -> dict[str, Any]:
        have = {t.user_attrs.get("arch_id") for t in trials}
        parents = self.parents(trials)
        explore = self.rng.random() < self.explore
        scale = self.latency_scale(trials)
        pool: list[Candidate] = []
        for _ in range(self.pool):
            parent = self.rng.choice(parents) if parents and self.rng.random() >= 0.5 else None
            try:
                config, params = mutate(self.space, self.rng, parent)
            except InvalidCandidate:
                continue
            if config.arch_id in have:
                continue
            latency = scale * predict_ms(config, self.profile, self.s.resolution, self.s.batch, self.s.precision)
            if latency > self.limit_ms:
                continue
            if explore:
                return params  # the first new proposal that fits
            have.add(config.arch_id)
            pool.append(Candidate(config, params, self.s, latency))
        if not pool:
            return super().propose(trials)
        return pool[int(np.argmax(self.scores(trials, pool)))].params

    def scores(self, trials: list[FrozenTrial], pool: list[Candidate]) -> np.ndarray:
        """Each proposal's optimistic hypervolume improvement per predicted training second."""
        trained = _trained(trials)
        recent = trained[-GP_POINTS:]
        mu, sd = fit_accuracy(recent, [c.metrics for c in pool])
        optimistic = mu + self.beta * sd
        a, b = fit_train_seconds(recent)
        seconds = np.array([a * c.metrics["macs"] ** b for c in pool])
        feasible = [r for r in trained if r["latency_ms"] <= self.s.budget_ms]
        gain = self._improvement(feasible, [c.metrics | {"accuracy": float(o)} for c, o in zip(pool, optimistic)])
        if not np.any(gain > 0):
            return optimistic / seconds
        return gain / seconds

    def _improvement(self, front: list[dict[str, Any]], points: list[dict[str, Any]]) -> np.ndarray:
        """The hypervolume each point adds to ``front``, objectives scaled to [0, 1] over both, reference 1.1."""
        keys, signs = [METRIC_OF[o] for o in self.s.objectives], self.s.signs
        scaled = unit_scale(front + points, keys, signs)
        base = [scaled(front[i]) for i in nondominated([[r[k] for k in keys] for r in front], signs)] if front else []
        return np.array([_added_volume(scaled(p), base, 1.1) for p in points])


def _added_volume(p: list[float], front: list[list[float]], ref: float) -> float:
    """The hypervolume ``p`` adds to ``front`` (all minimised, reference ``ref`` in every objective).

    Only the part of p's box that no front point covers counts: the box's volume less the volume
    of the front clipped to it (each point's componentwise max with p), whose non-dominated part is
    usually small, so this stays fast on fronts of hundreds of points."""
    box = math.prod(ref - v for v in p)
    if box <= 0.0 or any(all(a <= b for a, b in zip(q, p)) for q in front):  # outside, or covered already
        return 0.0
    clipped = [[max(a, b) for a, b in zip(q, p)] for q in front]
    clipped = [c for c in clipped if all(v < ref for v in c)]
    if not clipped:
        return box
    keep = nondominated(clipped, [-1] * len(p))
    return max(0.0, box - hypervolume([clipped[i] for i in keep], [ref] * len(p)))


def _trained(trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """The metrics of every trial with a proxy accuracy (a stopped training's too: its last figure)."""
    out = []
    for t in trials:
        u = t.user_attrs
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and u.get("accuracy") is not None \
                and all(u.get(k) is not None for k in FEATURES) and u.get("remeasure_of") is None \
                and u.get("duplicate_of") is None:
            out.append({k: u[k] for k in (*FEATURES, "accuracy")} | {"proxy_wall_s": u.get("proxy_wall_s")})
    return out
