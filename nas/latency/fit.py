"""`fit_profile`: fit a profile's efficiencies and overheads to measured latencies of kernel lists.

The one fit behind `nas.latency.calibrate` (this CPU, from measured networks), the family fit of
`nas.latency.families` (published tables) and micro-benchmark profiling (one torch op per sample):
robust least squares (soft-L1 on the log ratio: quadratic within ~10 %, linear beyond, so a few
wild figures pull little), every parameter bounded to `BOUNDS`, from the base profile and a few
seeded starting points (the model's max() makes the loss piecewise). Parameters the samples
cannot see (a kernel class none of them launches, the tensor factor without tensor-core kernels,
the overhead of a runtime not measured) are left as they are. With ``prior_weight`` > 0 each
fitted parameter is also pulled towards ``prior``'s value (a ridge on the log scale), so a
handful of figures refine a profile instead of overfitting it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Sequence

import numpy as np
from scipy.optimize import least_squares

from .kernels import KERNEL_CLASSES, RUNTIMES, Kernel, Prepared, evaluate, prepare_samples
from .profiles import BOUNDS, FITTABLE, DeviceProfile

__all__ = ["fit_profile", "identifiable"]

_OVERHEAD_OF = {r.name: r.overhead for r in RUNTIMES.values()}


def identifiable(prepared: Prepared, samples: Sequence[tuple[Sequence[Kernel], float]]) -> list[str]:
    """The parameters of `FITTABLE` that change the predicted time of at least one sample."""
    p = prepared
    names = set()
    for i, cls in enumerate(KERNEL_CLASSES):
        on = p.cls == i
        if cls == "memory":
            if p.memory_s.sum() > 0:
                names.add("memory_eff")
        elif np.any(p.work_s[on] > 0):
            names.add(f"{cls}_eff")
    if np.any(p.tensor & (p.work_s > 0)):
        names.add("tensor_eff")
    names |= {_OVERHEAD_OF[k.runtime] for ks, _ in samples for k in ks}
    return [n for n in FITTABLE if n in names]


def _check_samples(samples: Sequence[tuple[Sequence[Kernel], float]]) -> np.ndarray:
    if not samples:
        raise ValueError("fit_profile: no samples; expected (kernels, measured ms) pairs")
    ms = []
    for kernels, m in samples:
        if isinstance(m, bool) or not (isinstance(m, numbers.Real) and m > 0 and math.isfinite(m)):
            raise ValueError(f"fit_profile: measured {m!r} ms is not allowed; expected positive finite milliseconds")
        if not kernels:
            raise ValueError("fit_profile: a sample has no kernels; expected at least one per measured figure")
        ms.append(float(m))
    return np.array(ms)


def fit_profile(base: DeviceProfile, samples: Sequence[tuple[Sequence[Kernel], float]], precision: str | None = None,
                *, fitted: Sequence[str] | None = None, prior: DeviceProfile | None = None,
                prior_weight: float = 0.0, starts: int = 3, seed: int = 0, source: str | None = None,
                weights: Sequence[float] | None = None,
                devices: Sequence[DeviceProfile] | None = None) -> DeviceProfile:
    """``base`` with its efficiencies/overheads fitted so that the kernels of each sample take its
    measured milliseconds (robust, bounded to `BOUNDS`; see the module docstring).

    ``fitted`` names the parameters to fit (default: every one the samples can see); ``prior`` (default
    ``base``) and ``prior_weight`` set the ridge; ``weights`` weigh each sample's log residual
    (default 1); ``devices`` the profile each sample was measured on (its peaks, bandwidth, SMs;
    default ``base`` for all), the fitted parameters being shared by all of them (a family fit).
    ``precision``, when given, must be every kernel's. The result's ``calibration``
    records the fit (samples, parameters, median |relative error|); ``source`` replaces its source line.
    """
    ms = _check_samples(samples)
    if precision is not None:
        other = {k.precision for ks, _ in samples for k in ks} - {precision}
        if other:
            raise ValueError(f"fit_profile: precision {precision!r} does not match the kernels' {', '.join(sorted(other))}")
    if devices is not None and len(devices) != len(samples):
        raise ValueError(f"fit_profile: {len(devices)} devices for {len(samples)} samples; expected one each")
    prepared = prepare_samples([ks for ks, _ in samples], devices or [base] * len(samples))
    names = list(identifiable(prepared, samples) if fitted is None else fitted)
    unknown = [n for n in names if n not in FITTABLE]
    if unknown:
        raise ValueError(f"fit_profile: parameter {unknown[0]!r} is not allowed; expected one of {', '.join(FITTABLE)}")
    if not names:
        return base
    if prior_weight < 0 or not math.isfinite(prior_weight):
        raise ValueError(f"fit_profile: prior_weight {prior_weight!r} is not allowed; expected a finite number >= 0")
    w = np.ones(len(ms)) if weights is None else np.sqrt(np.asarray(weights, float))
    if len(w) != len(ms) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("fit_profile: weights must be one finite number >= 0 per sample")
    values = {n: float(getattr(base, n)) for n in FITTABLE}
    lo = np.log([BOUNDS[n][0] for n in names])
    hi = np.log([BOUNDS[n][1] for n in names])
    center = np.clip(np.log([max(getattr(prior or base, n), 1e-12) for n in names]), lo, hi)
    target = np.log(ms)
    ridge = math.sqrt(prior_weight)
    eff_idx = [FITTABLE.index(f"{c}_eff") for c in KERNEL_CLASSES]
    ovh_idx = [FITTABLE.index(o) for o in _OVERHEAD_OF.values()]
    tensor_idx = FITTABLE.index("tensor_eff")
    pos = [FITTABLE.index(n) for n in names]
    full = np.array([values[n] for n in FITTABLE])

    def predicted(theta: np.ndarray) -> np.ndarray:
        params = full.copy()
        params[pos] = np.exp(theta)
        return evaluate(prepared, params[eff_idx], params[tensor_idx], params[ovh_idx])

    def residuals(theta: np.ndarray) -> np.ndarray:
        r = w * (np.log(predicted(theta)) - target)
        return np.concatenate([r, ridge * (theta - center)]) if ridge else r

    rng = np.random.default_rng(seed)
    x0s = [np.clip(np.log([max(values[n], 1e-12) for n in names]), lo, hi), center]
    x0s += [lo + (hi - lo) * rng.uniform(0.2, 0.8, size=len(names)) for _ in range(starts)]
    best = min((least_squares(residuals, x0, bounds=(lo, hi), loss="soft_l1", f_scale=0.1, x_scale=1.0)
                for x0 in x0s), key=lambda r: r.cost)
    fit = {n: float(np.clip(math.exp(v), *BOUNDS[n])) for n, v in zip(names, best.x)}
    rel = np.abs(predicted(np.log([fit[n] for n in names])) / ms - 1)
    calibration = {"samples": len(ms), "fitted": names, "prior_weight": prior_weight,
                   "median_abs_rel_error": float(np.median(rel)), "max_abs_rel_error": float(np.max(rel))}
    out = dataclasses.replace(base, **fit, calibration=calibration)
    return dataclasses.replace(out, source=source) if source is not None else out
