"""The fidelity report of a study cache: Kendall tau against the reference, with bootstrap intervals.

Scores, each higher = predicted better: the proxy's accuracy (``proxy``), its learning curve
extrapolated (``proxy_extrapolated``, `curve.py`, nothing fitted), its last epoch's training loss and
held-out loss, negated (``proxy_train_loss``, ``proxy_eval_loss``: continuous, so less noisy than a
count of right answers), each zero-cost proxy, params, MACs,
and ``proxy_fitted``: a ridge model on standardised features (proxy accuracy, extrapolated accuracy,
late slope of the curve, log params) fitted **only on a training split** of the networks. It is
judged by repeated k-fold: each network's score is the mean of the predictions of the models that did
not see it, and per held-out fold the fitted and the plain proxy's tau are compared.
Works with any number of finished networks (n is reported); columns need n >= 2, the fit n >= 6.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..stats import bootstrap_tau, kendall_tau, tau_ceiling
from .curve import extrapolate_accuracy
from .fidelity import FidelityCache, StudySettings, iter_rows
from .train import ProxyBudget
from .zero_cost import ZERO_COST_PROXIES

__all__ = ["FEATURES", "REPORT_FORMAT", "cross_validate", "fidelity_report", "format_report", "ridge_fit"]

REPORT_FORMAT = "hardnas-fidelity-report/1"
FEATURES: tuple[str, ...] = ("proxy", "proxy_extrapolated", "late_slope", "log_params")
COLUMNS: tuple[str, ...] = ("proxy", "proxy_extrapolated", "proxy_train_loss", "proxy_eval_loss", "proxy_fitted",
                            *ZERO_COST_PROXIES, "params", "macs")
MIN_FIT = 6

Fit = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    """Ridge regression of ``y`` on ``x`` standardised with the training rows' own mean and spread."""
    mean, std = x.mean(0), x.std(0)
    std[std == 0] = 1.0
    z = (x - mean) / std
    ym = y.mean()
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - ym))
    return lambda xt: ((xt - mean) / std) @ w + ym


def _ranks(v: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(v, kind="stable"), kind="stable") / max(1, len(v) - 1)


def cross_validate(x: np.ndarray, target: np.ndarray, plain: np.ndarray, *, fit: Fit = ridge_fit, folds: int = 5,
                   repeats: int = 10, seed: int = 0) -> dict[str, Any]:
    """Repeated k-fold: ``fit`` sees only the training folds (target as ranks within them).

    Returns the per-network out-of-fold score (mean over repeats) and, per held-out fold, the tau of
    the fitted score and of ``plain`` against ``target``.
    """
    n = len(target)
    k = max(2, min(folds, n // 3))
    rng = np.random.default_rng(seed)
    oof = np.zeros((repeats, n))
    fitted_taus, plain_taus = [], []
    for r in range(repeats):
        perm = rng.permutation(n)
        for f in range(k):
            test = np.sort(perm[f::k])
            train = np.setdiff1d(np.arange(n), test)
            predict = fit(x[train], _ranks(target[train]))
            oof[r, test] = predict(x[test])
            fitted_taus.append(kendall_tau(oof[r, test], target[test]))
            plain_taus.append(kendall_tau(plain[test], target[test]))
    ft, pt = np.asarray(fitted_taus), np.asarray(plain_taus)
    return {"folds": k, "repeats": repeats, "seed": seed, "score": oof.mean(0),
            "fitted_tau_mean": float(ft.mean()), "plain_tau_mean": float(pt.mean()),
            "fitted_better_fraction": float((ft > pt).mean()), "fitted_not_worse_fraction": float((ft >= pt).mean())}


def _late_slope(curve: Sequence[float]) -> float:
    """Accuracy gained per epoch over the second half of the curve."""
    if len(curve) < 2:
        return 0.0
    h = len(curve) // 2
    return (curve[-1] - curve[h - 1]) / (len(curve) - h)


def _negated_last(curve: Sequence[float] | None) -> float | None:
    return -float(curve[-1]) if curve else None


def _rows(cache: FidelityCache, proxy: ProxyBudget, device: str) -> tuple[list[dict[str, Any]], list[str]]:
    rows, failed = [], []
    for name, entry, px in iter_rows(cache, proxy, device):
        ref = entry["reference"]
        if ref.get("status") != "ok" or px.get("status") != "ok" or "error" in entry:
            failed.append(name)
            continue
        curve = px.get("accuracy_curve") or []
        z = entry.get("zero_cost", {})
        rows.append({"name": name, "reference": ref["accuracy"], "proxy": px["accuracy"],
                     "proxy_extrapolated": extrapolate_accuracy(curve), "late_slope": _late_slope(curve),
                     "proxy_train_loss": _negated_last(px.get("loss_curve")),
                     "proxy_eval_loss": _negated_last(px.get("eval_loss_curve")),
                     **{k: z.get(k) for k in ZERO_COST_PROXIES}, "params": entry["params"], "macs": entry["macs"],
                     "log_params": math.log10(max(1, entry["params"])), "proxy_curve": curve,
                     "reference_curve": ref.get("accuracy_curve"), "reference_wall_s": ref.get("wall_s"),
                     "proxy_wall_s": px.get("wall_s")})
    return rows, failed


def _tau_entry(rows: list[dict[str, Any]], col: str, resamples: int, seed: int,
               target: str = "reference") -> dict[str, Any]:
    pairs = [(r[col], r[target]) for r in rows if r.get(col) is not None and math.isfinite(r[col])]
    if len(pairs) < 2:
        return {"n": len(pairs), "tau": None, "low": None, "high": None}
    tau, low, high = bootstrap_tau([p[0] for p in pairs], [p[1] for p in pairs], resamples=resamples, seed=seed)
    return {"n": len(pairs), "tau": tau, "low": low, "high": high}


def _reference_seeds(cache: FidelityCache, rows: list[dict[str, Any]], seeds: int, device: str, resamples: int,
                     seed: int) -> dict[str, Any]:
    """On the networks every reference seed finished: the seeds' agreement, the most any score can be expected
    to reach against one seed and against their mean (`tau_ceiling`), and every score against the mean."""
    extra = [cache.proxy_results(b, device) for b in StudySettings(**cache.settings).reference_seed_budgets(seeds)[1:]]
    full = [r for r in rows if all(e.get(r["name"], {}).get("status") == "ok" for e in extra)]
    for r in full:
        r["reference_seeds"] = [r["reference"], *(e[r["name"]]["accuracy"] for e in extra)]
        r["reference_mean"] = float(np.mean(r["reference_seeds"]))
    section: dict[str, Any] = {"seeds": seeds, "n": len(full)}
    if len(full) < 2:
        return section | {"skipped": f"{len(full)} networks have every reference seed; the figures need >= 2"}
    runs = list(zip(*(r["reference_seeds"] for r in full)))
    pairs = [kendall_tau(runs[i], runs[j]) for i in range(seeds) for j in range(i + 1, seeds)]
    agreement = float(np.mean(pairs))
    _, low, high = bootstrap_tau(runs[0], runs[1], resamples=resamples, seed=seed)
    return section | {
        "agreement": {"tau": agreement, "pairs": pairs, "low_first_pair": low, "high_first_pair": high},
        "ceiling_one_seed": tau_ceiling(1.0, agreement), "ceiling_mean": tau_ceiling(agreement, seeds=seeds),
        "tau": {c: _tau_entry(full, c, resamples, seed, target="reference_mean") for c in COLUMNS}}


def fidelity_report(cache: FidelityCache, proxy: ProxyBudget, device: str, *, reference_seeds: int = 1,
                    resamples: int = 1000, seed: int = 0, folds: int = 5, repeats: int = 10,
                    fit: Fit = ridge_fit) -> dict[str, Any]:
    """The report of every network of ``cache`` with a reference and a ``proxy`` result (JSON-ready); with
    ``reference_seeds`` > 1, a ``reference_seeds`` section judges against the mean of that many references."""
    rows, failed = _rows(cache, proxy, device)
    held_out: dict[str, Any] = {"features": list(FEATURES), "model": "ridge (alpha 1) on standardised features, "
                                "target the reference accuracy's rank within the training folds"}
    if len(rows) >= MIN_FIT:
        x = np.array([[r[f] for f in FEATURES] for r in rows], float)
        cv = cross_validate(x, np.array([r["reference"] for r in rows]), np.array([r["proxy"] for r in rows]),
                            fit=fit, folds=folds, repeats=repeats, seed=seed)
        for r, s in zip(rows, cv.pop("score")):
            r["proxy_fitted"] = float(s)
        held_out |= cv
    else:
        held_out["skipped"] = f"{len(rows)} networks; the fit needs >= {MIN_FIT}"
    taus = {c: _tau_entry(rows, c, resamples, seed) for c in COLUMNS}
    extra = {} if reference_seeds == 1 else {
        "reference_seeds": _reference_seeds(cache, rows, reference_seeds, device, resamples, seed)}
    return {"format": REPORT_FORMAT, "cache": str(cache.path), "settings": cache.settings,
            "proxy": dataclasses.asdict(proxy), "device": device, "n": len(rows), "networks": len(cache.networks),
            "failed": failed, "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95},
            "tau": taus, "held_out": held_out, **extra, "rows": rows}


def format_report(report: Mapping[str, Any]) -> str:
    """The printed table: tau [95 % interval] per score, then the held-out comparison."""
    lines = [f"Kendall tau against the reference (n={report['n']} networks, {len(report['failed'])} failed; "
             f"95 % bootstrap interval over networks, {report['bootstrap']['resamples']} resamples):"]
    for col, t in report["tau"].items():
        if t["tau"] is None:
            lines.append(f"  {col:<20} -      (n={t['n']})")
        else:
            lines.append(f"  {col:<20} {t['tau']:6.3f}  [{t['low']:6.3f}, {t['high']:6.3f}]  n={t['n']}")
    h = report["held_out"]
    if "skipped" in h:
        lines.append(f"  held-out fit: skipped ({h['skipped']})")
    else:
        lines.append(f"  held-out folds ({h['repeats']} x {h['folds']}-fold): mean tau fitted "
                     f"{h['fitted_tau_mean']:.3f} vs plain proxy {h['plain_tau_mean']:.3f}; fitted better in "
                     f"{100 * h['fitted_better_fraction']:.0f} % of folds")
    return "\n".join(lines + _format_reference_seeds(report.get("reference_seeds")))


def _format_reference_seeds(section: Mapping[str, Any] | None) -> list[str]:
    if not section:
        return []
    if "skipped" in section:
        return [f"reference seeds: {section['seeds']}; {section['skipped']}"]
    a = section["agreement"]
    lines = [f"reference seeds: {section['seeds']} on n={section['n']} networks; they agree with each other at tau "
             f"{a['tau']:.3f} (first pair [{a['low_first_pair']:.3f}, {a['high_first_pair']:.3f}]), so no score can be "
             f"expected above {section['ceiling_one_seed']:.3f} against one seed, {section['ceiling_mean']:.3f} "
             "against their mean. Against their mean:"]
    for col, t in section["tau"].items():
        if t["tau"] is not None:
            lines.append(f"  {col:<20} {t['tau']:6.3f}  [{t['low']:6.3f}, {t['high']:6.3f}]  n={t['n']}")
    return lines
