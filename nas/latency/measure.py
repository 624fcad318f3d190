"""Honest latency measurement on the device at hand.

CPU: a fixed thread count, ``torch.inference_mode``, warm-up, the garbage collector off while
timing, ``perf_counter_ns`` around each forward. CUDA: ``cudnn.benchmark``, warm-up, CUDA
events recorded around each forward and read after a synchronisation, autocast for fp16/bf16,
channels_last. Both repeat until the relative interquartile range of the runs is at most
``target_rel_iqr`` or ``max_seconds`` is spent; a result that hit the cap says so.

Interference guard (on by default, `nas.latency.interference`): a fixed canary is timed between
windows of runs; windows timed while the canary was slower than its quiet baseline are left out,
busy spells are waited out (bounded), and a figure that stays disturbed is flagged
(``disturbed``, ``canary_slowdown``) instead of passed off as the device's latency.

Runtimes (`nas.latency.runtimes`): ``eager`` PyTorch, ``compile`` (torch.compile, inductor) or
``onnxruntime`` (the exported graph, all ORT graph optimisations on); the result's context and
the cache key record the runtime and its version, and preparing it (compiling, exporting) happens
before warm-up, outside the timed runs.

A candidate that fails (out of memory, a shape error, a runtime that cannot run it...) becomes a
result with ``error`` set; measurement never raises for a bad model. Bad *arguments* (unknown
device or runtime, fp16 on CPU, a resolution the network cannot take) raise `ValueError`, since
those are the caller's to fix.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from typing import Any, Iterator

import torch
from torch import nn

from ..config import ArchConfig
from ..errors import check_choice, check_int, failure_reason
from ..fuse import fuse_model
from ..model import build_model
from ..resolution import Resolution, canonical_resolution, parse_resolution
from . import interference as guard
from .cache import LatencyCache, cache_key
from .devices import device_name, fingerprint, resolve_device, resolve_precision
from .interference import GuardedTiming, InterferencePolicy
from .result import LatencyResult
from .runtimes import MEASURE_RUNTIMES, prepare, runtime_version

__all__ = ["measure"]

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _quantiles(times_ms: list[float]) -> tuple[float, float, float, float]:
    """median, p10, p90, IQR"""
    q = statistics.quantiles(times_ms, n=20, method="inclusive") if len(times_ms) > 1 else [times_ms[0]] * 19
    med = statistics.median(times_ms)
    return med, q[1], q[17], q[14] - q[4]


def _median_ci(times_ms: list[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free ~95 % confidence interval of the median: the order statistics
    ``n/2 -+ z sqrt(n)/2`` of the sorted runs (binomial, normal approximation; for a handful of
    runs it widens to min..max). Timing noise is skewed and bursty, so no normal model of the
    runs themselves is assumed."""
    xs = sorted(times_ms)
    n = len(xs)
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half))
    hi = min(n - 1, math.ceil(n / 2 + half) - 1)
    return xs[lo], xs[hi]


@contextlib.contextmanager
def _cpu_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Timer:
    """Adaptive repetition shared by both device paths."""

    def __init__(self, target_rel_iqr: float, max_seconds: float, min_runs: int, max_runs: int) -> None:
        self.target, self.max_seconds, self.min_runs, self.max_runs = target_rel_iqr, max_seconds, min_runs, max_runs
        self.times_ms: list[float] = []
        self.start = time.perf_counter()
        self.capped = False

    def settled(self) -> bool:
        n = len(self.times_ms)
        if n >= self.min_runs:
            med, _, _, iqr = _quantiles(self.times_ms)
            if med > 0 and iqr / med <= self.target:
                return True
        if n >= self.max_runs:
            return True
        if time.perf_counter() - self.start > self.max_seconds and n >= min(3, self.min_runs):
            self.capped = True
            return True
        return False


def _time_cpu(model: nn.Module, x: torch.Tensor, precision: str, warmup: int, timer: _Timer) -> None:
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        for _ in range(warmup):
            model(x)
        with _gc_paused():
            timer.start = time.perf_counter()
            while True:
                t0 = time.perf_counter_ns()
                model(x)
                timer.times_ms.append((time.perf_counter_ns() - t0) / 1e6)
                if timer.settled():
                    break


def _cuda_burst(model: nn.Module, x: torch.Tensor, stream: Any) -> list[float]:
    """Five runs, each bracketed by events; one synchronisation per burst keeps the launch queue
    full (like deployment) while every run is timed on the GPU."""
    events = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        model(x)
        end.record(stream)
        events.append((start, end))
    torch.cuda.synchronize(x.device)
    return [s.elapsed_time(e) for s, e in events]


def _time_cuda(model: nn.Module, x: torch.Tensor, precision: str, warmup: int, timer: _Timer) -> None:
    dtype = _DTYPES.get(precision)
    autocast = torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    stream = torch.cuda.current_stream(x.device)
    with torch.inference_mode(), autocast:
        for _ in range(warmup):
            model(x)
        torch.cuda.synchronize(x.device)
        with _gc_paused():
            timer.start = time.perf_counter()
            while True:
                timer.times_ms.extend(_cuda_burst(model, x, stream))
                if timer.settled():
                    break


def _time_guarded(model: nn.Module, x: torch.Tensor, precision: str, warmup: int, policy: InterferencePolicy,
                  key: str, limits: dict[str, Any]) -> GuardedTiming:
    """Warm up, then time the candidate in windows bracketed by canary checks (CPU or CUDA alike)."""
    dev = x.device
    cuda = dev.type == "cuda"
    dtype = _DTYPES.get(precision) if cuda else (torch.bfloat16 if precision == "bf16" else None)
    autocast = torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    canary = guard.make_canary(dev)

    def timed_check(reps: int) -> float:  # the canary always runs in fp32, whatever the candidate's precision
        with torch.autocast(dev.type, enabled=False):
            if cuda:
                return guard.time_canary_cuda(canary, reps, dev)
            return guard.time_canary_cpu(canary, reps)

    with torch.inference_mode():
        base = guard.establish(key, timed_check, policy, guard.load_baseline(key))
        with autocast:
            for _ in range(warmup):
                model(x)
            if cuda:
                torch.cuda.synchronize(dev)
                stream = torch.cuda.current_stream(dev)
                run_once = lambda: _cuda_burst(model, x, stream)  # noqa: E731
            else:
                def run_once() -> list[float]:
                    t0 = time.perf_counter_ns()
                    model(x)
                    return [(time.perf_counter_ns() - t0) / 1e6]
            with _gc_paused():
                timing = guard.guarded_timing(run_once, lambda: timed_check(base.reps), base.ms, policy,
                                              usual_rel_iqr=base.usual_rel_iqr,
                                              foreign=None if cuda else guard.ForeignLoad(), **limits)
    guard.record(base, timing)
    return timing


def measure(
    model_or_config: nn.Module | ArchConfig,
    *,
    device: str | torch.device = "auto",
    resolution: Resolution = 224,
    batch: int = 1,
    precision: str = "fp32",
    channels_last: bool | None = None,
    deploy: bool = False,
    runtime: str = "eager",
    threads: int | None = None,
    target_rel_iqr: float = 0.02,
    max_seconds: float = 2.0,
    min_runs: int = 5,
    max_runs: int = 2000,
    warmup: int = 3,
    cache: LatencyCache | None = None,
    interference: InterferencePolicy | bool = True,
) -> LatencyResult:
    """Median forward latency of a model (or of the network a config describes) on ``device``.

    ``resolution`` is 224 or "HxW" (height x width). ``runtime`` is ``eager``, ``compile`` or
    ``onnxruntime`` (`MEASURE_RUNTIMES`). ``channels_last`` defaults to True on CUDA and for a
    ``deploy`` model, False for the trained model on CPU (ONNX Runtime picks its own layout: always
    False there). ``deploy`` folds BatchNorm into the convs first (what ``nas.export --deploy``
    ships: channels_last, BatchNorm folded). With a ``cache``, a measurement of the same architecture on the same device
    fingerprint, shape, precision, layout, deploy flag, runtime and versions is reused (only
    clean, guarded figures are cached). ``interference`` (default on) times a canary between the
    runs; a result timed on a busy device says so in ``disturbed`` and ``canary_slowdown``.
    """
    policy = interference if isinstance(interference, InterferencePolicy) else InterferencePolicy(enabled=bool(interference))
    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)
    check_int("batch", batch)
    check_choice("runtime", runtime, MEASURE_RUNTIMES)
    config = model_or_config if isinstance(model_or_config, ArchConfig) else getattr(model_or_config, "config", None)
    if isinstance(config, ArchConfig):
        config.check_resolution(resolution)
    resolution = canonical_resolution(resolution)
    if channels_last is None or runtime == "onnxruntime":
        channels_last = (dev.type == "cuda" or deploy) and runtime != "onnxruntime"
    threads = threads or torch.get_num_threads()
    arch_id = config.arch_id if isinstance(config, ArchConfig) else None
    context: dict[str, Any] = {
        "device_name": device_name(dev), "fingerprint": fingerprint(dev, threads), "torch": torch.__version__,
        "threads": threads, "precision": precision, "resolution": resolution, "batch": batch,
        "channels_last": channels_last, "deploy": deploy, "cached": False,
        "runtime": runtime, "runtime_version": runtime_version(runtime),
    }
    key = None
    if cache is not None and arch_id is not None:
        key = cache_key(arch_id, context)
        hit = cache.get(key)
        if hit is not None:
            return LatencyResult.from_dict({**hit.to_dict(), "context": {**hit.context, "cached": True}})

    in_ch = config.in_channels if isinstance(config, ArchConfig) else 3
    limits = dict(target_rel_iqr=target_rel_iqr, max_seconds=max_seconds, min_runs=min_runs, max_runs=max_runs)
    result = _run(model_or_config, dev, in_ch, resolution, batch, precision, channels_last, deploy, threads,
                  limits, policy, warmup, arch_id, context, runtime)
    if key is not None and result.clean and result.guarded:
        cache.put(key, arch_id, context["fingerprint"], result)
    return result


def _run(model_or_config: nn.Module | ArchConfig, dev: torch.device, in_ch: int, resolution: int | str, batch: int,
         precision: str, channels_last: bool, deploy: bool, threads: int, limits: dict[str, Any],
         policy: InterferencePolicy, warmup: int, arch_id: str | None, context: dict[str, Any],
         runtime: str = "eager") -> LatencyResult:
    name = str(dev) if dev.type == "cpu" else f"{dev} ({context['device_name']})"
    try:
        model = build_model(model_or_config) if isinstance(model_or_config, ArchConfig) else model_or_config
        model = fuse_model(model) if deploy else model
        was_training = model.training
        model.eval()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.randn(batch, in_ch, *parse_resolution(resolution)).to(dev, memory_format=fmt)
        model = model.to(dev, memory_format=fmt)
        with _cpu_threads(threads) if dev.type == "cpu" else contextlib.nullcontext():
            runner = prepare(runtime, model, x, threads, precision)
        timer = _Timer(**limits)
        timing: GuardedTiming | None = None
        try:
            if dev.type == "cuda":
                prev = torch.backends.cudnn.benchmark
                torch.backends.cudnn.benchmark = True
                try:
                    if policy.enabled:
                        timing = _time_guarded(runner, x, precision, warmup, policy, context["fingerprint"], limits)
                    else:
                        _time_cuda(runner, x, precision, warmup, timer)
                finally:
                    torch.backends.cudnn.benchmark = prev
            else:
                with _cpu_threads(threads):
                    if policy.enabled:
                        timing = _time_guarded(runner, x, precision, warmup, policy, context["fingerprint"], limits)
                    else:
                        _time_cpu(runner, x, precision, warmup, timer)
        finally:
            model.train(was_training)
    except Exception as err:  # a failing candidate is a result, never a crash of the caller
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        return LatencyResult(None, "measured", name, error=failure_reason(err),
                             arch_id=arch_id, context=context)
    times, capped = (timer.times_ms, timer.capped) if timing is None else (timing.times_ms, timing.capped)
    med, p10, p90, iqr = _quantiles(times)
    ci_low, ci_high = _median_ci(times)
    extra: dict[str, Any] = {}
    if timing is not None:
        extra = dict(disturbed=timing.disturbed, canary_slowdown=timing.slowdown, discarded_runs=timing.discarded,
                     waited_s=round(timing.waited_s, 3), interference=timing.reason)
    return LatencyResult(med, "measured", name, p10, p90, iqr, len(times), capped, None, arch_id, context,
                         ci_low_ms=ci_low, ci_high_ms=ci_high, **extra)
