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
latencies (least squares on log latency, Nelder-Mead in four log-parameters).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from ..config import ArchConfig
from ..cost import analyze
from .devices import PRECISIONS, bytes_per_element
from .profiles import DeviceProfile, resolve_profile, save_profile
from .result import LatencyResult

__all__ = ["calibrate", "predict", "predict_ms"]

_MEMORY_OPS = {"bn", "act", "concat", "add", "mul", "reduce", "maxpool", "avgpool", "global_pool", "space_to_depth"}


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
    bpe = bytes_per_element(precision)
    report = analyze(config, resolution, batch)
    flops, nbytes, kind = [], [], []
    for r in report.layers:
        if r.op in ("conv", "blur"):
            cin, cout = r.in_shape[1], r.out_shape[1]
            pad = _padding(cout, channel_block) * (1.0 if r.groups > 1 else _padding(cin, channel_block))
            flops.append(2 * r.macs * pad)
            nbytes.append((r.cio + r.params) * bpe)
            kind.append(1 if r.groups > 1 else 0)
        elif r.op == "linear":
            flops.append(2 * r.macs)
            nbytes.append((math.prod(r.in_shape) + math.prod(r.out_shape) + r.params) * bpe)
            kind.append(0)
        elif r.op in _MEMORY_OPS:
            if deploy and r.op == "bn":
                continue
            flops.append(0)
            nbytes.append(r.mem * bpe)
            kind.append(2)
        else:  # a new op kind must be classified here, not silently ignored
            raise ValueError(f"latency predictor: op {r.op!r} of {r.name} has no roofline class")
    return _Features(np.asarray(flops, float), np.asarray(nbytes, float), np.asarray(kind))


def _check(precision: str, batch: int) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not allowed; expected one of {', '.join(PRECISIONS)}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: {batch!r} is not allowed; expected an integer >= 1")


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


def _nelder_mead(fn, x0: np.ndarray, steps: float = 0.5, iters: int = 600, tol: float = 1e-10) -> np.ndarray:
    n = len(x0)
    simplex = [x0] + [x0 + steps * np.eye(n)[i] for i in range(n)]
    values = [fn(x) for x in simplex]
    for _ in range(iters):
        order = np.argsort(values)
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        if values[-1] - values[0] < tol:
            break
        centroid = np.mean(simplex[:-1], axis=0)
        reflected = centroid + (centroid - simplex[-1])
        fr = fn(reflected)
        if fr < values[0]:
            expanded = centroid + 2 * (centroid - simplex[-1])
            fe = fn(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = centroid + 0.5 * (simplex[-1] - centroid)
            fc = fn(contracted)
            if fc < values[-1]:
                simplex[-1], values[-1] = contracted, fc
            else:
                simplex = [simplex[0] + 0.5 * (s - simplex[0]) for s in simplex]
                values = [fn(s) for s in simplex]
    return simplex[int(np.argmin(values))]


def calibrate(configs: Sequence[ArchConfig], measured_ms: Sequence[float], device: str | DeviceProfile = "cpu", *,
              resolution: int = 224, batch: int = 1, precision: str = "fp32", deploy: bool = False,
              save: bool = False) -> DeviceProfile:
    """Fit a profile's efficiencies and per-kernel overhead to measured latencies of ``configs``.

    Returns a new profile (``source`` says how many configs it was fitted on and the fit's
    median absolute error); ``save=True`` stores it in runs/ so later predictions use it.
    """
    if len(configs) != len(measured_ms) or len(configs) < 4:
        raise ValueError(f"calibrate: {len(configs)} configs and {len(measured_ms)} latencies given; "
                         "expected equal counts, at least 4")
    if any(not (m > 0 and math.isfinite(m)) for m in measured_ms):
        raise ValueError("calibrate: measured latencies must be positive finite milliseconds")
    base = resolve_profile(device)
    feats = [_features(c, resolution, batch, precision, deploy, base.channel_block) for c in configs]
    target = np.log(np.asarray(measured_ms, float))
    peak, bw = base.peak(precision), base.bandwidth_gbs

    def unpack(theta: np.ndarray) -> tuple[float, float, float, float]:
        return (float(np.exp(theta[0])), float(np.exp(theta[1])), float(np.exp(theta[2])), float(np.exp(theta[3])))

    def loss(theta: np.ndarray) -> float:
        ovh, ce, de, me = unpack(theta)
        pred = np.log([f.time_ms(peak, bw, ovh, ce, de, me) for f in feats])
        return float(np.mean((pred - target) ** 2))

    theta0 = np.log([max(base.overhead_us, 1e-3), base.conv_eff, base.dwconv_eff, base.memory_eff])
    best = _nelder_mead(loss, theta0)
    best = _nelder_mead(loss, best, steps=0.1)  # restart from the optimum: Nelder-Mead stalls otherwise
    ovh, ce, de, me = unpack(best)
    pred = np.array([f.time_ms(peak, bw, ovh, ce, de, me) for f in feats])
    rel = np.abs(pred / np.asarray(measured_ms) - 1)
    fitted = dataclasses.replace(
        base, overhead_us=ovh, conv_eff=ce, dwconv_eff=de, memory_eff=me,
        source=f"calibrated on {len(configs)} measured configs (median |error| {100 * np.median(rel):.1f}%)",
        calibration={"configs": len(configs), "resolution": resolution, "batch": batch, "precision": precision,
                     "deploy": deploy, "median_abs_rel_error": float(np.median(rel))},
    )
    if save:
        save_profile(fitted)
    return fitted
