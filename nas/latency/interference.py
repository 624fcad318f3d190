"""Interference guard: a fixed canary workload timed between a candidate's runs.

The candidate's runs are grouped into windows of about ``window_s``; a short fixed *canary*
(a small conv stack whose quiet per-run time is recorded per device fingerprint in
``runs/canary_baselines.json``) is timed before and after every window. A window is disturbed
when a bracketing canary check is more than ``threshold`` times slower than its quiet baseline,
or when the window's own median is more than ``threshold`` times the fastest window's. When the
canary says the device is busy the measurement backs off (sleeps, doubling, within
``max_wait_s``) and tries again; the figure is the median of the clean windows' runs, and a
measurement with too few clean runs is returned flagged ``disturbed`` with its canary slowdown.

The logic (`guarded_timing`) only sees callables (a run, a canary check, a clock, a sleep), so
it is the same for CPU and CUDA and testable without either. Baselines are measured, never
hard-coded: the lowest canary checks seen (a low quantile, so a baseline first taken on a busy
machine still approaches the quiet figure) and lowered whenever a faster check appears.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..paths import runs_dir

__all__ = ["CanaryBaseline", "ForeignLoad", "GuardedTiming", "InterferencePolicy", "guarded_timing", "load_baseline",
           "make_canary", "save_baseline"]

CANARY_VERSION = 1
"""Bumped whenever the canary workload changes: old baselines then no longer apply."""

_KEEP_LOWS = 8  # lowest canary checks kept per fingerprint
_BASELINE_RANK = 2  # the baseline is the 3rd-lowest kept check: robust to one or two freak fast ones
_MAX_AGE_S = 7 * 24 * 3600  # a kept check older than this expires (the machine may have changed)
_KEEP_SPREADS = 32  # rel IQRs of recent clean measurements, for the device's usual spread


@dataclass(frozen=True)
class InterferencePolicy:
    """How `measure` detects a busy device and what it does about it (see docs/latency.md)."""

    enabled: bool = True
    threshold: float = 1.25  # canary (or window) slower than its quiet reference by more: disturbed
    window_s: float = 0.2  # candidate runs between two canary checks (at least one run)
    check_ms: float = 4.0  # length one canary check is sized to when its baseline is established
    max_wait_s: float = 2.0  # total back-off one measurement may spend waiting for quiet
    first_wait_s: float = 0.1  # first back-off; doubles after each busy check
    baseline_checks: int = 15  # canary checks taken to establish a missing baseline
    spread_factor: float = 4.0  # clean runs' rel IQR above this x the device's usual one: disturbed
    spread_floor: float = 0.15  # ... and above this absolute rel IQR
    min_clean: int = 3  # clean runs needed for a clean figure
    foreign_cores: float = 0.35  # CPU time other processes used during a window, in cores: above it, disturbed


@dataclass
class CanaryBaseline:
    """Quiet canary time of one device fingerprint: the lowest checks seen, and the usual spread."""

    key: str
    reps: int
    lows: list[tuple[float, float]] = field(default_factory=list)  # (ms per canary run, unix time)
    rel_iqrs: list[float] = field(default_factory=list)

    @property
    def ms(self) -> float | None:
        """The quiet per-run canary time: a low quantile of the checks seen."""
        if not self.lows:
            return None
        values = sorted(v for v, _ in self.lows)
        return values[min(_BASELINE_RANK, len(values) - 1)]

    @property
    def usual_rel_iqr(self) -> float | None:
        """Median rel IQR of recent clean measurements (None until 5 are recorded)."""
        return statistics.median(self.rel_iqrs) if len(self.rel_iqrs) >= 5 else None

    def observe(self, checks_ms: list[float], now: float | None = None) -> bool:
        """Keep the lowest checks (a faster one lowers the baseline); True if anything changed."""
        now = time.time() if now is None else now
        before = list(self.lows)
        fresh = [(v, t) for v, t in self.lows if now - t <= _MAX_AGE_S]
        fresh += [(float(v), now) for v in checks_ms if v > 0 and math.isfinite(v)]
        self.lows = sorted(fresh)[:_KEEP_LOWS]
        return self.lows != before

    def expired(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return sum(now - t <= _MAX_AGE_S for _, t in self.lows) <= _BASELINE_RANK

    def to_dict(self) -> dict[str, Any]:
        return {"version": CANARY_VERSION, "reps": self.reps, "lows": [list(x) for x in self.lows],
                "rel_iqrs": self.rel_iqrs[-_KEEP_SPREADS:]}


def _baselines_file() -> Path:
    return runs_dir() / "canary_baselines.json"


def _read_all() -> dict[str, Any]:
    try:
        data = json.loads(_baselines_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def load_baseline(key: str) -> CanaryBaseline | None:
    """The stored baseline of a fingerprint, or None (missing, another canary version, unreadable)."""
    raw = _read_all().get(key)
    try:
        if not raw or raw.get("version") != CANARY_VERSION:
            return None
        lows = [(float(v), float(t)) for v, t in raw["lows"] if float(v) > 0 and math.isfinite(float(v))]
        return CanaryBaseline(key, max(1, int(raw["reps"])), sorted(lows)[:_KEEP_LOWS],
                              [float(x) for x in raw.get("rel_iqrs", [])][-_KEEP_SPREADS:])
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


def save_baseline(baseline: CanaryBaseline) -> None:
    """Write one fingerprint's baseline into runs/canary_baselines.json (atomic replace)."""
    data = _read_all()
    data[baseline.key] = baseline.to_dict()
    path = _baselines_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{id(baseline)}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


class ForeignLoad:
    """CPU time used by other processes between two calls, in cores (Linux ``/proc/stat`` minus this
    process's own CPU time); None where ``/proc/stat`` cannot be read. Needs no baseline."""

    def __init__(self) -> None:
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                fields = f.readline().split()
            ticks = [int(v) for v in fields[1:9]]
        except (OSError, ValueError):
            return None
        if len(ticks) < 8 or fields[0] != "cpu":
            return None
        busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]  # user nice system irq softirq steal
        return busy / os.sysconf("SC_CLK_TCK"), time.process_time(), time.perf_counter()

    def age(self) -> float | None:
        """Seconds since the last reading (or since it was made); None where ``/proc/stat`` cannot be read."""
        return None if self._last is None else time.perf_counter() - self._last[2]

    def __call__(self) -> float | None:
        now, last = self._sample(), self._last
        self._last = now
        if now is None or last is None or now[2] <= last[2]:
            return None
        return max(0.0, (now[0] - last[0]) - (now[1] - last[1])) / (now[2] - last[2])


@dataclass
class GuardedTiming:
    """What `guarded_timing` saw: the runs the figure uses, the discarded ones, and the verdict."""

    times_ms: list[float]  # the runs the figure is computed from
    discarded: int  # runs timed in disturbed windows and left out
    disturbed: bool
    slowdown: float | None  # median canary slowdown over the windows used
    capped: bool
    waited_s: float
    waits: int
    reason: str | None
    checks_ms: list[float]  # every canary check (ms per canary run)
    foreign_cores: float | None = None  # median CPU use of other processes over the windows, in cores


def _rel_iqr(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    q = statistics.quantiles(xs, n=4, method="inclusive")
    med = statistics.median(xs)
    return (q[2] - q[0]) / med if med > 0 else 0.0


def guarded_timing(run_once: Callable[[], list[float]], check: Callable[[], float], baseline_ms: float,
                   policy: InterferencePolicy, *, target_rel_iqr: float, max_seconds: float, min_runs: int,
                   max_runs: int, usual_rel_iqr: float | None = None,
                   clock: Callable[[], float] = time.perf_counter,
                   sleep: Callable[[float], None] = time.sleep,
                   foreign: Callable[[], float | None] | None = None) -> GuardedTiming:
    """Time windows of ``run_once`` bracketed by canary ``check``s; wait out busy spells; judge.

    ``run_once`` returns the times (ms) of one run or one burst; ``check`` one canary check's time
    per canary run (ms), compared with ``baseline_ms``; ``foreign`` (optional, e.g. `ForeignLoad`)
    the cores other processes used since its previous call. Device-independent.
    """
    thr, max_load = policy.threshold, policy.foreign_cores
    windows: list[tuple[list[float], float, float]] = []  # (runs, canary ratio, foreign cores)
    checks: list[float] = []

    def ratio() -> float:
        c = check()
        checks.append(c)
        return c / baseline_ms

    def load() -> float:
        v = foreign() if foreign is not None else None
        return 0.0 if v is None else v

    timed = waited = 0.0
    waits, next_wait, n_runs = 0, policy.first_wait_s, 0
    capped = False
    prev, busy = ratio(), 0.0
    while True:
        while (prev > thr or busy > max_load) and waited + next_wait <= policy.max_wait_s:  # back off, look again
            load()
            sleep(next_wait)
            busy = load()  # what the others did while this process slept
            waited += next_wait
            waits += 1
            next_wait *= 2
            prev = ratio()
        load()
        t0, runs = clock(), []
        while True:
            runs.extend(run_once())
            if clock() - t0 >= policy.window_s or n_runs + len(runs) >= max_runs:
                break
        timed += clock() - t0
        busy = load()
        n_runs += len(runs)
        nxt = ratio()
        windows.append((runs, max(prev, nxt), busy))
        prev = nxt
        clean = [t for w, r, f in windows if r <= thr and f <= max_load for t in w]
        if len(clean) >= max(min_runs, policy.min_clean) and _rel_iqr(clean) <= target_rel_iqr:
            break
        if n_runs >= max_runs:
            break
        if timed >= max_seconds:
            out_of_waits = waited + next_wait > policy.max_wait_s
            if len(clean) >= policy.min_clean or out_of_waits or timed >= 2 * max_seconds:
                capped = True
                break
    return _judge(windows, checks, policy, capped, waited, waits, usual_rel_iqr)


def _judge(windows: list[tuple[list[float], float, float]], checks: list[float], policy: InterferencePolicy,
           capped: bool, waited: float, waits: int, usual_rel_iqr: float | None) -> GuardedTiming:
    thr, max_load = policy.threshold, policy.foreign_cores
    fastest = min(statistics.median(w) for w, _, _ in windows)
    ok = [(w, r, f) for w, r, f in windows if r <= thr and f <= max_load and statistics.median(w) <= thr * fastest]
    clean = [t for w, _, _ in ok for t in w]
    every = [t for w, _, _ in windows for t in w]
    if len(clean) >= policy.min_clean:
        slowdown = statistics.median(r for _, r, _ in ok)
        load = statistics.median(f for _, _, f in ok)
        spread = _rel_iqr(clean)
        if usual_rel_iqr is not None and spread > max(policy.spread_factor * usual_rel_iqr, policy.spread_floor):
            reason = (f"run-to-run spread {100 * spread:.0f}% is over {policy.spread_factor:g}x this device's "
                      f"usual {100 * usual_rel_iqr:.1f}%")
            return GuardedTiming(every, 0, True, slowdown, capped, waited, waits, reason, checks, load)
        return GuardedTiming(clean, len(every) - len(clean), False, slowdown, capped, waited, waits, None, checks,
                             load)
    slowdown = statistics.median(r for _, r, _ in windows)
    load = statistics.median(f for _, _, f in windows)
    slow = sum(r > thr for _, r, _ in windows)
    loaded = sum(f > max_load for _, _, f in windows)
    reason = (f"canary {slowdown:.2f}x slower than its quiet baseline ({slow} of {len(windows)} windows over the "
              f"{thr:g}x threshold), other processes used {load:.2f} cores ({loaded} windows over {max_load:g}); "
              f"{len(clean)} clean runs after {waits} waits ({waited:.1f} s)")
    return GuardedTiming(every, 0, True, slowdown, capped, waited, waits, reason, checks, load)


# --- the canary workload -------------------------------------------------------------------------


def make_canary(device: torch.device) -> Callable[[], Any]:
    """The fixed canary of a device type: a small seeded conv stack and its input (one call = one run)."""
    gen = torch.Generator().manual_seed(CANARY_VERSION)
    ch, size, batch = (32, 32, 1) if device.type == "cpu" else (64, 64, 8)
    layers: list[nn.Module] = []
    for _ in range(4):
        conv = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.05)
        layers += [conv, nn.ReLU()]
    stack = nn.Sequential(*layers).eval().to(device)
    x = torch.randn(batch, ch, size, size, generator=gen).to(device)
    return lambda: stack(x)


def time_canary_cpu(canary: Callable[[], Any], reps: int) -> float:
    """One canary check on CPU: ``reps`` back-to-back runs, ms per run."""
    t0 = time.perf_counter_ns()
    for _ in range(reps):
        canary()
    return (time.perf_counter_ns() - t0) / 1e6 / reps


def time_canary_cuda(canary: Callable[[], Any], reps: int, device: torch.device) -> float:
    """One canary check on CUDA: ``reps`` runs between two events on the current stream, ms per run."""
    stream = torch.cuda.current_stream(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record(stream)
    for _ in range(reps):
        canary()
    end.record(stream)
    torch.cuda.synchronize(device)
    return start.elapsed_time(end) / reps


def establish(key: str, timed_check: Callable[[int], float], policy: InterferencePolicy,
              stored: CanaryBaseline | None) -> CanaryBaseline:
    """A usable baseline: the stored one, or ``policy.baseline_checks`` fresh checks (lowest kept)."""
    if stored is not None and not stored.expired():
        return stored
    single = min(timed_check(1) for _ in range(5))  # also warms the canary up
    reps = stored.reps if stored is not None else max(1, min(256, math.ceil(policy.check_ms / max(single, 1e-3))))
    base = stored or CanaryBaseline(key, reps)
    base.observe([timed_check(base.reps) for _ in range(policy.baseline_checks)])
    save_baseline(base)
    return base


def record(base: CanaryBaseline, timing: GuardedTiming) -> None:
    """Lower the baseline with this measurement's faster checks and note a clean run spread; save if changed."""
    changed = base.observe(timing.checks_ms)
    if not timing.disturbed and len(timing.times_ms) >= 5:
        base.rel_iqrs = (base.rel_iqrs + [_rel_iqr(timing.times_ms)])[-_KEEP_SPREADS:]
        changed = True
    if changed:
        try:
            save_baseline(base)
        except OSError:  # a read-only runs/ must not fail a measurement
            pass
