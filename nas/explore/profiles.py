"""Which device profile a predicted latency comes from, and where that profile's numbers come from.

A prediction is only as good as its profile: this CPU's micro-benchmarked profile is several
times optimistic until it is calibrated, a published one uses spec-sheet peaks. `predictor`
picks the best profile the app can have without writing anything (a calibrated profile saved
on this machine, else one fitted here on the study's own clean CPU measurements when that fit
predicts held-out measurements better) and names its source, so every figure and label built
from it can say so. Predictions are cached per architecture and per profile *content* (its
`Predictor.key`), never per device name, so a newer calibration is never hidden by an old value.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from ..latency import DeviceProfile, calibrate, load_cpu_profile, predict_kernel_rows, resolve_profile
from ..resolution import Resolution, canonical_resolution, format_resolution, parse_resolution
from . import warm as W

__all__ = ["MIN_CALIBRATION", "MAX_CALIBRATION", "Predictor", "clean_cpu_measurements", "predict_one", "predict_rows",
           "predictor", "reference_latencies", "warm_up", "reference_predictor"]

MIN_CALIBRATION = 8  # clean measurements before the app fits this CPU's profile (as the search's gate does)
MAX_CALIBRATION = 400  # newest clean measurements a fit uses: a big CPU study stays quick to calibrate


@dataclass(frozen=True)
class Predictor:
    """A device profile to predict with, identified by its content, with a one-line account of its source."""

    device: str
    key: str  # digest of the profile's parameters
    source: str  # where the numbers come from, one line
    short: str  # the same in a few words, for axis titles and legends
    profile: DeviceProfile = field(compare=False, hash=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.device} profile: {self.source}"


def _key(profile: DeviceProfile) -> str:
    return hashlib.sha1(json.dumps(profile.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _short(profile: DeviceProfile) -> str:
    n = (profile.calibration or {}).get("configs")
    if n:
        return f"calibrated on {n}"
    if profile.provenance.get("profiled"):  # nas.latency.profile_device: micro-benchmarks and small networks here
        return "micro-benchmarked here"
    return "micro-benchmark, not calibrated" if profile.name == "cpu" else "spec sheet, not calibrated"


def clean_cpu_measurements(df: pd.DataFrame) -> pd.DataFrame:
    """Rows measured on this kind of CPU in eager PyTorch (what the CPU profile models) and not disturbed,
    oldest first: what a CPU profile can be fitted on."""
    if df.empty:
        return df
    ok = ((df["latency_source"] == "measured") & (df["latency_device"] == "cpu") & ~df["latency_disturbed"]
          & (df["latency_runtime"] == "eager") & df["latency_ms"].gt(0) & (df["config"] != ""))
    return df.loc[ok].sort_values(["study", "number"])


def predictor(device: str, measurements: pd.DataFrame | None = None) -> Predictor:
    """The profile the app predicts ``device`` with (see the module docstring), and its source.

    ``measurements``: `clean_cpu_measurements` of the studies shown; with at least
    `MIN_CALIBRATION` of them, ``cpu`` is refitted on them (nothing is saved) and the fit is
    used only if it predicts the newest held-out ones better than the profile it started from.
    """
    if device != "cpu":
        profile = resolve_profile(device)
        return Predictor(profile.name, _key(profile), profile.source, _short(profile), profile)
    loaded = load_cpu_profile()
    base = loaded.profile
    source = base.source + (f" ({loaded.warning})" if loaded.warning else "")
    if measurements is not None and len(measurements) >= MIN_CALIBRATION:
        fit = _fit(base, measurements.tail(MAX_CALIBRATION))
        if fit is not None and fit.accepted:
            p = fit.profile
            err = f"held-out error {100 * fit.fitted_error:.0f}% vs {100 * fit.base_error:.0f}%" \
                if fit.fitted_error is not None and fit.base_error is not None else "validated on held-out ones"
            return Predictor("cpu", _key(p), f"calibrated here on {fit.fit_count} clean measurements of the studies "
                             f"shown ({err} for the profile it started from: {_short(base)})",
                             f"calibrated here on {fit.fit_count}", p)
        if fit is not None:
            source += f"; refitting on the {len(measurements)} clean measurements shown was not better ({fit.reason})"
    return Predictor("cpu", _key(base), source, _short(base), base)


def _fit(base: DeviceProfile, rows: pd.DataFrame):
    """`nas.latency.calibrate` of ``base`` on the rows' measurements at their most common input shape."""
    from .analysis import arch_config

    shape = rows.groupby(["resolution", "batch", "precision"]).size().idxmax()
    sub = rows[(rows["resolution"] == shape[0]) & (rows["batch"] == shape[1]) & (rows["precision"] == shape[2])]
    if len(sub) < MIN_CALIBRATION:
        return None
    sub = sub.drop_duplicates("arch_id", keep="last")
    try:
        return calibrate([arch_config(c) for c in sub["config"]], [float(x) for x in sub["latency_ms"]], base,
                         resolution=shape[0], batch=int(shape[1]), precision=str(shape[2]), save=False)
    except ValueError:  # fewer than calibrate needs once duplicates are gone, or an invalid shape
        return None


def reference_predictor(measured_devices: Sequence[str], cpu: Predictor | None,
                        runtimes: Sequence[str] = ("eager",)) -> tuple[Predictor | None, str]:
    """The profile for reference lines in measured mode: this CPU's when everything was measured on a CPU in
    eager PyTorch (``runtimes``: the runtime names measured under; the profile models eager kernels).

    Returns (predictor or None, why none) — a GPU without a profile gets no predicted lines.
    """
    devices = sorted({d for d in measured_devices if d})
    other = sorted({r for r in runtimes if r} - {"eager"})
    if devices and all(d == "cpu" for d in devices) and other:
        return None, f"no reference lines: measured under {', '.join(other)}, which the cpu profile (eager PyTorch) does not model"
    if devices and all(d == "cpu" for d in devices):
        return cpu, ""
    return None, (f"no reference lines: measured on {', '.join(devices)}, which has no device profile"
                  if devices else "no reference lines: nothing was measured")


def reference_latencies(names: Sequence[str], pred: Predictor,
                        shapes: Sequence[tuple[Resolution, int, str]]) -> dict[str, float]:
    """Predicted latency of canonical models (by registry name) at each input shape of the studies shown, each
    at its study's own HxW: ``{"resnet50 (predicted)": ms}``, or ``{"resnet50 @224x224 (predicted)": ms,
    "resnet50 @1080x1920 (predicted)": ms}`` when the studies differ in input size (batch and precision join
    the label when those differ)."""
    from ..registry import get_config

    shapes = sorted(set((parse_resolution(r), int(b), str(p)) for r, b, p in shapes))
    vary = [len({s[i] for s in shapes}) > 1 for i in range(3)]
    out = {}
    for name in names:
        config = get_config(name).to_json(indent=None)
        for hw, b, p in shapes:
            tag = " ".join(t for t, v in ((f"@{format_resolution(hw)}", vary[0]), (f"batch {b}", vary[1]),
                                          (p, vary[2])) if v)
            out[f"{name}{' ' + tag if tag else ''} (predicted)"] = predict_one(config, pred, canonical_resolution(hw), b, p)
    return out


#: (config JSON, profile key, input size, batch, precision) -> ms; cleared when it outgrows `_MEMO_MAX`
_MEMO: dict[tuple, float] = {}
_MEMO_MAX = 200_000
_WARMING: list[threading.Thread] = []  # the latest warm-up (`warm_up`)


def predict_rows(configs: Sequence[str], pred: Predictor, resolution: Resolution = 224, batch: int = 1,
                 precision: str = "fp32") -> np.ndarray:
    """`nas.latency.predict_many` of stored configs with ``pred``'s profile (NaN where one cannot be predicted),
    memoised per config and profile content: a rerun, or a device switched back to, costs a lookup. The kernel
    rows come from `nas.explore.warm` (built ahead of time by `warm_up`, or now)."""
    shape = (canonical_resolution(resolution), int(batch), str(precision))
    keys = [(c, pred.key) + shape for c in configs]
    todo = sorted({k[0] for k in keys if k not in _MEMO})
    if todo:
        if len(_MEMO) + len(todo) > _MEMO_MAX:
            _MEMO.clear()
        values = np.full(len(todo), math.nan)
        rows = W.rows_for(todo, shape)
        at = [i for i, r in enumerate(rows) if r is not None]
        if at:
            try:
                values[at] = predict_kernel_rows([rows[i] for i in at], pred.profile, shape[2])
            except ValueError:  # an input shape the predictor does not take
                pass
        _MEMO.update({(c, pred.key) + shape: float(v) for c, v in zip(todo, values)})
    return np.array([_MEMO[k] for k in keys], float)


def warm_up(df: pd.DataFrame, in_thread: bool = False) -> threading.Thread | None:
    """Build the kernel rows a prediction of ``df``'s rows for any device needs, in the background (`nas.explore.warm`).

    A first switch to another device then costs a vectorised evaluation instead of a parse and a
    cost trace per architecture (~0.25 ms each: over a second for a 5,000-trial study). Where a
    child process can be forked (`warm.FORKS`) the call with ``in_thread`` false starts one: make it
    before the page is drawn, the child works beside it. Elsewhere the call with ``in_thread`` true
    starts a thread: make it after the page is drawn, a thread would slow the drawing. The other call
    does nothing, as does any while a warm-up runs or when nothing is left to build; else returns the
    thread that ends once the rows are kept.
    """
    if in_thread != (not W.FORKS) or (_WARMING and _WARMING[-1].is_alive()) or df.empty:
        return None
    rows = df[((df["state"] == "COMPLETE") | df["baseline"]) & (df["config"] != "")]
    jobs = []
    for (r, b, p), g in rows.groupby(["resolution", "batch", "precision"], sort=False):
        shape = (canonical_resolution(r), int(b), str(p))
        configs = list(dict.fromkeys(g["config"].tolist()))  # in the order `latency_column` predicts them
        jobs.append(([c for c, done in zip(configs, W.kept(configs, shape)) if not done], shape))
    started = W.warm(jobs)
    if started is not None:
        _WARMING[:] = [started]
    return started


def predict_one(config_json: str, pred: Predictor, resolution: Resolution = 224, batch: int = 1,
                precision: str = "fp32") -> float:
    """`predict_rows` of one stored config."""
    return float(predict_rows([config_json], pred, resolution, batch, precision)[0])
