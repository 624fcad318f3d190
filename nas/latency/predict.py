"""Roofline latency prediction from the analytic cost, and calibration against measurements.

Every op of `nas.analyze`'s per-layer report becomes one kernel:

* a conv / linear layer takes ``max(FLOPs / (peak x eff), bytes / (bandwidth x mem_eff))``
  with ``eff`` the dense or depthwise efficiency and bytes = (CIO + weights) x element size;
  FLOPs are counted on channel counts padded to the profile's ``channel_block`` (SIMD lanes on
  a CPU, tensor-core tiles on a GPU): HarDNet's 14- or 40-channel layers compute like 16 or 48;
* a memory-bound op (norm, activation, concat, add, pool, SE gate) takes
  ``bytes / (bandwidth x mem_eff)``; BatchNorm disappears in deploy mode (folded);
* each kernel adds the profile's launch overhead.

The result is labelled ``source="predicted"`` and names the profile and where its numbers come
from. `calibrate` fits the three efficiencies and the overhead of a profile to measured
latencies (soft-L1 robust least squares on the log ratio, bounded to `BOUNDS`, on undisturbed
measurements only) and accepts the fit only if it predicts held-out measurements better.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy.optimize import least_squares

from ..config import ArchConfig
from ..cost import analyze
from ..errors import check_choice, check_int
from ..tracer import KINDS
from .devices import PRECISIONS, bytes_per_element
from .profiles import BOUNDS, DeviceProfile, check_profile, resolve_profile, save_profile
from .result import LatencyResult

__all__ = ["CalibrationResult", "calibrate", "predict", "predict_ms"]

log = logging.getLogger("nas.latency")

#: the tracer's kernel kinds -> roofline class (0 dense compute, 1 depthwise compute, 2 memory-bound)
_KIND_CLASS = {"conv": 0, "depthwise": 1, "matmul": 0, "memory": 2, "norm": 2}
assert set(_KIND_CLASS) == set(KINDS), "every kernel kind needs a roofline class"


@dataclass(frozen=True)
class _Features:
    """Per-kernel arrays for one config at one shape: FLOPs, bytes, and the kernel class."""

    flops: np.ndarray
    bytes: np.ndarray
    kind: np.ndarray  # 0 dense compute, 1 depthwise compute, 2 memory-bound

    def time_ms(self, peak_gflops: float, bandwidth_gbs: float, overhead_us: float, conv_eff: float,
                dwconv_eff: float, memory_eff: float) -> float:
        eff = np.where(self.kind == 0, conv_eff, dwconv_eff)
        t_compute = np.where(self.kind == 2, 0.0, self.flops / (peak_gflops * 1e9 * eff))
        t_memory = self.bytes / (bandwidth_gbs * 1e9 * memory_eff)
        return float((np.maximum(t_compute, t_memory).sum() + overhead_us * 1e-6 * len(self.kind)) * 1e3)


def _padding(channels: int, block: int) -> float:
    return -(-channels // block) * block / channels


@lru_cache(maxsize=4096)
def _features(config: ArchConfig, resolution: int, batch: int, precision: str, deploy: bool,
              channel_block: int = 1) -> _Features:
    report = analyze(config, resolution, batch, bytes_per_element(precision))
    flops, nbytes, kind = [], [], []
    for r in report.layers:  # the tracer recorded each kernel's kind and bytes
        if deploy and r.kind == "norm":
            continue
        if r.kind in ("conv", "depthwise"):
            cin, cout = r.in_shape[1], r.out_shape[1]
            pad = _padding(cout, channel_block) * (1.0 if r.kind == "depthwise" else _padding(cin, channel_block))
            flops.append(2 * r.macs * pad)
        else:
            flops.append(2 * r.macs)
        nbytes.append(r.bytes)
        kind.append(_KIND_CLASS[r.kind])
    return _Features(np.asarray(flops, float), np.asarray(nbytes, float), np.asarray(kind))


def _check(precision: str, batch: int) -> None:
    check_choice("precision", precision, PRECISIONS)
    check_int("batch", batch)


def predict_ms(config: ArchConfig, profile: DeviceProfile, resolution: int = 224, batch: int = 1,
               precision: str = "fp32", deploy: bool = False) -> float:
    """The predicted latency in ms (the number alone; `predict` wraps it with its context)."""
    _check(precision, batch)
    f = _features(config, resolution, batch, precision, deploy, profile.channel_block)
    return f.time_ms(profile.peak(precision), profile.bandwidth_gbs, profile.overhead_us, profile.conv_eff,
                     profile.dwconv_eff, profile.memory_eff)


def predict(config: ArchConfig, device: str | DeviceProfile = "cpu", resolution: int = 224, batch: int = 1,
            precision: str = "fp32", deploy: bool = False) -> LatencyResult:
    """Predicted latency of ``config`` on a device profile (``cpu`` = this machine, or a published one)."""
    profile = resolve_profile(device)
    ms = predict_ms(config, profile, resolution, batch, precision, deploy)
    context = {"profile": profile.name, "profile_source": profile.source, "precision": precision,
               "resolution": resolution, "batch": batch, "deploy": deploy}
    return LatencyResult(ms, "predicted", profile.name, arch_id=config.arch_id, context=context)


_FITTED = ("overhead_us", "conv_eff", "dwconv_eff", "memory_eff")


@dataclass(frozen=True)
class CalibrationResult:
    """The outcome of `calibrate`: use ``profile`` (the fit when ``accepted``, else the one it would
    have replaced); ``reason`` is one printable line saying why."""

    accepted: bool
    reason: str
    profile: DeviceProfile
    base: DeviceProfile
    fitted: DeviceProfile | None = None
    fit_count: int = 0  # measurements fitted on
    held_out: int = 0  # newest measurements kept aside to validate the fit
    excluded: int = 0  # disturbed, failed or predicted figures left out
    base_error: float | None = None  # median |relative error| on the held-out measurements
    fitted_error: float | None = None
    saved: bool = False

    def __str__(self) -> str:
        return self.reason


def _stack(feats: Sequence[_Features]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All configs' kernels in one array set (``owner`` maps each kernel to its config)."""
    flops = np.concatenate([f.flops for f in feats])
    nbytes = np.concatenate([f.bytes for f in feats])
    kind = np.concatenate([f.kind for f in feats])
    owner = np.concatenate([np.full(len(f.kind), i) for i, f in enumerate(feats)])
    counts = np.array([len(f.kind) for f in feats], float)
    return flops, nbytes, kind, owner, counts


def _log_pred(theta: np.ndarray, stacked: tuple, peak: float, bw: float, n: int) -> np.ndarray:
    flops, nbytes, kind, owner, counts = stacked
    ovh, ce, de, me = np.exp(theta)
    eff = np.where(kind == 0, ce, de)
    t_compute = np.where(kind == 2, 0.0, flops / (peak * 1e9 * eff))
    t_memory = nbytes / (bw * 1e9 * me)
    total = np.bincount(owner, weights=np.maximum(t_compute, t_memory), minlength=n) + ovh * 1e-6 * counts
    return np.log(total * 1e3)


def _median_rel_error(profile: DeviceProfile, configs: Sequence[ArchConfig], ms: np.ndarray, shape: dict) -> float:
    pred = np.array([predict_ms(c, profile, **shape) for c in configs])
    return float(np.median(np.abs(pred / ms - 1)))


def _clean_inputs(configs: Sequence[ArchConfig], measured: Sequence[float | LatencyResult],
                  disturbed: Sequence[bool] | None) -> tuple[list[ArchConfig], list[float], int]:
    if disturbed is not None and len(disturbed) != len(configs):
        raise ValueError(f"calibrate: {len(disturbed)} disturbed flags for {len(configs)} configs; expected equal counts")
    keep_c, keep_ms, excluded = [], [], 0
    for i, (c, m) in enumerate(zip(configs, measured)):
        if isinstance(m, LatencyResult):
            if not m.clean or m.source != "measured":
                excluded += 1
                continue
            m = float(m.median_ms)
        elif isinstance(m, bool) or not (isinstance(m, numbers.Real) and m > 0 and math.isfinite(m)):
            raise ValueError("calibrate: measured latencies must be positive finite milliseconds")
        if disturbed is not None and disturbed[i]:
            excluded += 1
            continue
        keep_c.append(c)
        keep_ms.append(float(m))
    return keep_c, keep_ms, excluded


def calibrate(configs: Sequence[ArchConfig], measured_ms: Sequence[float | LatencyResult],
              device: str | DeviceProfile = "cpu", *, resolution: int = 224, batch: int = 1, precision: str = "fp32",
              deploy: bool = False, disturbed: Sequence[bool] | None = None, holdout: float = 0.25,
              save: bool = False) -> CalibrationResult:
    """Fit a profile's efficiencies and per-kernel overhead to measured latencies, robustly and within
    `BOUNDS`, and accept the fit only if it predicts the newest held-out measurements better.

    ``measured_ms`` holds milliseconds or `LatencyResult`s (disturbed, failed or predicted ones are
    left out, as are those flagged in ``disturbed``). ``save=True`` stores an accepted fit in runs/.
    """
    if len(configs) != len(measured_ms) or len(configs) < 4:
        raise ValueError(f"calibrate: {len(configs)} configs and {len(measured_ms)} latencies given; "
                         "expected equal counts, at least 4")
    if not 0 < holdout < 1:
        raise ValueError(f"calibrate: holdout {holdout!r} is not allowed; expected a share in (0, 1)")
    _check(precision, batch)
    base = resolve_profile(device)
    cfgs, ms, excluded = _clean_inputs(configs, measured_ms, disturbed)
    n_hold = max(2, round(holdout * len(cfgs)))
    left_out = f"{excluded} disturbed/failed left out" if excluded else "none left out"
    if len(cfgs) - n_hold < 4:
        return CalibrationResult(False, f"calibration rejected: only {len(cfgs)} undisturbed measurements "
                                        f"({left_out}); need {4 + n_hold} (4 to fit, {n_hold} to validate)",
                                 base, base, excluded=excluded)
    fit_c, fit_ms, hold_c, hold_ms = cfgs[:-n_hold], np.array(ms[:-n_hold]), cfgs[-n_hold:], np.array(ms[-n_hold:])
    shape = dict(resolution=resolution, batch=batch, precision=precision, deploy=deploy)
    feats = [_features(c, resolution, batch, precision, deploy, base.channel_block) for c in fit_c]
    stacked = _stack(feats)
    peak, bw, target = base.peak(precision), base.bandwidth_gbs, np.log(fit_ms)
    lo = np.log([BOUNDS[k][0] for k in _FITTED])
    hi = np.log([BOUNDS[k][1] for k in _FITTED])

    def residuals(theta: np.ndarray) -> np.ndarray:
        return _log_pred(theta, stacked, peak, bw, len(feats)) - target

    # soft-L1 on the log ratio: quadratic within ~10 %, linear beyond, so a few wild figures pull little
    starts = [np.clip(np.log([max(getattr(base, k), 1e-12) for k in _FITTED]), lo, hi)]
    rng = np.random.default_rng(0)
    starts += [lo + (hi - lo) * rng.uniform(0.2, 0.8, size=4) for _ in range(3)]
    best = min((least_squares(residuals, x0, bounds=(lo, hi), loss="soft_l1", f_scale=0.1, x_scale=1.0)
                for x0 in starts), key=lambda r: r.cost)
    values = dict(zip(_FITTED, (float(np.clip(v, BOUNDS[k][0], BOUNDS[k][1])) for k, v in zip(_FITTED, np.exp(best.x)))))
    fit_rel = np.abs(np.exp(residuals(np.log(list(values.values())))) - 1)
    outliers = int(np.sum(fit_rel > 0.5))
    fitted = dataclasses.replace(
        base, **values,
        source=f"calibrated on {len(fit_c)} measured configs (median |error| {100 * np.median(fit_rel):.1f}%, "
               f"validated on {n_hold} held out)",
        calibration={"configs": len(fit_c), "held_out": n_hold, "excluded": excluded, "outliers": outliers,
                     "resolution": resolution, "batch": batch, "precision": precision, "deploy": deploy,
                     "median_abs_rel_error": float(np.median(fit_rel))},
    )
    base_err = _median_rel_error(base, hold_c, hold_ms, shape)
    fit_err = _median_rel_error(fitted, hold_c, hold_ms, shape)
    problems = check_profile(fitted)
    counts = f"fitted on {len(fit_c)}, {n_hold} newest held out, {left_out}, {outliers} fit outliers over 50%"
    if problems:
        accepted, reason = False, f"calibration rejected: fit implausible ({'; '.join(problems)}); {counts}"
    elif fit_err < base_err:
        accepted, reason = True, (f"calibration accepted: held-out median error {100 * fit_err:.1f}% vs "
                                  f"{100 * base_err:.1f}% for the current profile; {counts}")
    else:
        accepted, reason = False, (f"calibration rejected: held-out median error {100 * fit_err:.1f}% is not below "
                                   f"the current profile's {100 * base_err:.1f}%; {counts}")
    saved = False
    if accepted and save:
        save_profile(fitted)
        saved = True
    if not accepted:
        log.info("%s", reason)
    return CalibrationResult(accepted, reason, fitted if accepted else base, base, fitted, len(fit_c), n_hold,
                             excluded, base_err, fit_err, saved)
