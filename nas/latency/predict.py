"""Latency prediction from the analytic cost (no model built), and calibration against measurements.

`predict` turns a config into its kernels (`nas.latency.kernels.kernels_of`, from the cost
tracer's records) and times them on a device profile with the per-kernel-class model of
`nas.latency.kernels`: one efficiency per kernel class (3x3 / 1x1 / strided / depthwise convs,
linear, memory-bound ops), tensor-core alignment and the tensor factor for fp16/bf16/TF32, wave
quantisation and occupancy on GPUs, and a per-kernel overhead of the runtime (eager ``pytorch``
or a fused ``tensorrt`` engine). The result is labelled ``source="predicted"`` and its context
names the profile, where its numbers come from and the runtime.

`calibrate` fits a profile's efficiencies and overheads to measured latencies (`fit_profile`:
soft-L1 robust least squares on the log ratio, bounded to `BOUNDS`, on undisturbed measurements
only) and accepts the fit only if it predicts held-out measurements better.
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

from ..config import ArchConfig
from ..errors import check_choice, check_int
from ..resolution import Resolution, canonical_resolution
from .devices import PRECISIONS
from .fit import fit_profile
from .kernels import RUNTIMES, evaluate, kernel_rows, kernels_of, prepare, profile_parameters, rows_table
from .profiles import DeviceProfile, check_profile, resolve_profile, save_profile
from .result import LatencyResult

__all__ = ["CalibrationResult", "calibrate", "predict", "predict_kernel_rows", "predict_many", "predict_ms",
           "warm_tables"]

log = logging.getLogger("nas.latency")


def _check(precision: str, batch: int, runtime: str = "pytorch") -> None:
    check_choice("precision", precision, PRECISIONS)
    check_int("batch", batch)
    check_choice("runtime", runtime, tuple(RUNTIMES))


def predict_ms(config: ArchConfig, profile: DeviceProfile, resolution: Resolution = 224, batch: int = 1,
               precision: str = "fp32", deploy: bool = False, runtime: str = "pytorch") -> float:
    """The predicted latency in ms (the number alone; `predict` wraps it with its context)."""
    _check(precision, batch, runtime)
    rows = _rows(config, canonical_resolution(resolution), batch, precision, deploy, runtime)
    return float(predict_kernel_rows([rows], profile, precision, runtime)[0])


def predict_kernel_rows(rows: Sequence[np.ndarray], profile: DeviceProfile, precision: str = "fp32",
                        runtime: str = "pytorch") -> np.ndarray:
    """Milliseconds of each config whose `kernel_rows` (at ``precision`` under ``runtime``) are ``rows[i]``, in one
    vectorised evaluation: the second half of `predict_many`, for kernel rows built elsewhere."""
    return evaluate(prepare(rows_table(rows, precision, runtime), profile, len(rows)), *profile_parameters(profile))


def _rows_of(configs: Sequence[ArchConfig], resolution: Resolution, batch: int, precision: str, deploy: bool,
             runtime: str) -> tuple[list[np.ndarray], list[int]]:
    """The cached kernel rows of ``configs`` in order, and the positions they belong to (a config the input size
    does not fit has none)."""
    _check(precision, batch, runtime)
    size = canonical_resolution(resolution)
    rows, where = [], []
    for i, config in enumerate(configs):
        try:
            rows.append(_rows(config, size, batch, precision, deploy, runtime))
        except ValueError:  # e.g. an input smaller than the network's stride allows
            continue
        where.append(i)
    return rows, where


def predict_many(configs: Sequence[ArchConfig], profile: DeviceProfile, resolution: Resolution = 224, batch: int = 1,
                 precision: str = "fp32", deploy: bool = False, runtime: str = "pytorch") -> np.ndarray:
    """`predict_ms` of many configs in one vectorised evaluation; NaN for a config the input size does not fit."""
    rows, where = _rows_of(configs, resolution, batch, precision, deploy, runtime)
    out = np.full(len(configs), np.nan)
    if rows:
        out[where] = predict_kernel_rows(rows, profile, precision, runtime)
    return out


def warm_tables(configs: Sequence[ArchConfig], resolution: Resolution = 224, batch: int = 1, precision: str = "fp32",
                deploy: bool = False, runtime: str = "pytorch") -> int:
    """Build and keep the kernel rows `predict_many` of ``configs`` will need, last config first.

    They do not depend on the device, so a warm-up run ahead of time (in a background thread,
    say) makes a later prediction for any profile a vectorised evaluation. Going through the
    configs backwards, a warm-up and a `predict_many` over the same list meet in the middle
    instead of building the same rows twice. Returns how many configs have rows.
    """
    return len(_rows_of(list(reversed(configs)), resolution, batch, precision, deploy, runtime)[0])


#: an architecture's kernel rows are few (~4 KB for 50 kernels) and cost a cost trace to build:
#: this many keep a 5,000-trial study's rows at two input shapes
@lru_cache(maxsize=12_288)
def _rows(config: ArchConfig, resolution: int | str, batch: int, precision: str, deploy: bool, runtime: str) -> np.ndarray:
    rows = kernel_rows(config, resolution, batch, precision, deploy, runtime)
    rows.flags.writeable = False  # shared by every later prediction
    return rows


def predict(config: ArchConfig, device: str | DeviceProfile = "cpu", resolution: Resolution = 224, batch: int = 1,
            precision: str = "fp32", deploy: bool = False, *, runtime: str = "pytorch") -> LatencyResult:
    """Predicted latency of ``config`` on a device profile (``cpu`` = this machine, or a published
    GPU) under ``runtime`` (eager ``pytorch``, or a ``tensorrt`` engine)."""
    profile = resolve_profile(device)
    ms = predict_ms(config, profile, resolution, batch, precision, deploy, runtime)
    context = {"profile": profile.name, "profile_source": profile.source, "profile_provenance": profile.provenance,
               "precision": precision, "resolution": canonical_resolution(resolution), "batch": batch,
               "deploy": deploy, "runtime": runtime}
    return LatencyResult(ms, "predicted", profile.name, arch_id=config.arch_id, context=context)


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
              device: str | DeviceProfile = "cpu", *, resolution: Resolution = 224, batch: int = 1, precision: str = "fp32",
              deploy: bool = False, disturbed: Sequence[bool] | None = None, holdout: float = 0.25,
              save: bool = False) -> CalibrationResult:
    """Fit a profile's efficiencies and per-kernel overhead (`fit_profile`) to measured latencies,
    robustly and within `BOUNDS`, and accept the fit only if it predicts the newest held-out
    measurements better.

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
    samples = [(kernels_of(c, resolution, batch, precision, deploy), m) for c, m in zip(fit_c, fit_ms)]
    fitted = fit_profile(base, samples, precision)
    fit_rel = np.array([abs(predict_ms(c, fitted, **shape) / m - 1) for c, m in zip(fit_c, fit_ms)])
    outliers = int(np.sum(fit_rel > 0.5))
    fitted = dataclasses.replace(
        fitted,
        source=f"calibrated on {len(fit_c)} measured configs (median |error| {100 * np.median(fit_rel):.1f}%, "
               f"validated on {n_hold} held out)",
        provenance={**base.provenance, "fit": f"calibrate() on {len(fit_c)} measured configs of this device"},
        calibration={"configs": len(fit_c), "held_out": n_hold, "excluded": excluded, "outliers": outliers,
                     "resolution": resolution, "batch": batch, "precision": precision, "deploy": deploy,
                     "fitted": fitted.calibration.get("fitted", []),
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
