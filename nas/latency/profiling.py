"""`profile_device`: micro-benchmark the local device into a calibrated latency profile.

One code path for a CUDA GPU and for this CPU, in a fixed time budget:

1. **Base**: the published spec of the GPU when its name matches a packaged profile (peaks,
   bandwidth, SMs, its family's efficiencies as the prior); otherwise peaks measured here (a large
   matmul per precision, a large copy for bandwidth) and default efficiencies.
2. **Kernels**: one torch op per sample, a few shapes per kernel class (`KERNEL_CLASSES`: 3x3 and
   1x1 convs, strided and depthwise convs, a linear layer, memory-bound adds and copies) and a
   one-element op for the per-kernel overhead; each becomes the same `Kernel` record the predictor
   uses (`conv_kernel`, `linear_kernel`, `memory_kernel`), timed as the fastest run on a CPU (the
   one no other process slowed) and the median of CUDA-event timings on a GPU.
3. **Networks**: while the budget lasts, a few canonical networks at a small input, so the fit sees
   whole forward passes too (framework gaps between kernels, concatenations).
4. **Fit**: `fit_profile` fits every class efficiency, the tensor-core factor and the overhead to
   all samples at once (robust, bounded, pulled gently towards the prior).

On a CPU, other processes' load is sampled throughout; a profile taken while the machine was busy
says so in ``provenance["disturbed"]`` and is never saved (it would inflate every prediction).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..errors import check_choice
from .devices import PRECISIONS, device_name, fingerprint, resolve_device, resolve_precision
from .fit import fit_profile
from .interference import ForeignLoad, InterferencePolicy
from .kernels import Kernel, conv_kernel, kernels_ms, kernels_of, linear_kernel, memory_kernel
from .measure import _cpu_threads
from .profiles import DEFAULT_EFFICIENCIES, PROFILES, DeviceProfile, check_profile, save_profile, saved_profiles

__all__ = ["ProfileSample", "local_profile", "match_published", "profile_device"]

log = logging.getLogger("nas.latency")

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: (cin, cout, kernel, stride, groups, size) of the convs timed, per class; batch 1
_CONVS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (64, 64, 3, 1, 1, 56), (128, 128, 3, 1, 1, 28), (256, 256, 3, 1, 1, 14), (512, 512, 3, 1, 1, 7),  # conv3x3
    (256, 64, 1, 1, 1, 56), (512, 128, 1, 1, 1, 28), (1024, 256, 1, 1, 1, 14), (2048, 512, 1, 1, 1, 7),  # conv1x1
    (64, 128, 3, 2, 1, 56), (128, 256, 3, 2, 1, 28), (256, 512, 1, 2, 1, 28),  # strided
    (128, 128, 3, 1, 128, 56), (256, 256, 3, 1, 256, 28), (512, 512, 3, 2, 512, 14),  # depthwise
)
_LINEARS: tuple[tuple[int, int], ...] = ((2048, 1000), (1024, 1000))
#: elements of each tensor of the memory-bound samples (an add reads two, writes one; a copy one and one)
_MEMORY: tuple[int, ...] = (2**16, 2**20, 2**22)
#: canonical networks timed at a small input while the budget lasts (fastest first)
_NETWORKS: tuple[str, ...] = ("hardnet39ds", "resnet50", "hardnet68")


@dataclass(frozen=True)
class ProfileSample:
    """One timed op or network: its kernels as the predictor sees them and the measured ms."""

    name: str
    kernels: tuple[Kernel, ...]
    ms: float
    precision: str
    network: bool = False


class _Add(nn.Module):
    def __init__(self, other: torch.Tensor) -> None:
        super().__init__()
        self.other = other

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.other


class _Cat(nn.Module):
    """Concatenation copies, as a HarDNet block performs them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x], 1)


def match_published(gpu_name: str) -> DeviceProfile | None:
    """The packaged profile whose name is contained in ``gpu_name`` (``NVIDIA H200`` -> ``h200``), the
    longest such name winning (``GTX 1080 Ti`` -> ``gtx1080ti``, not ``gtx1080``); None if none."""
    squashed = re.sub(r"[^a-z0-9]", "", gpu_name.lower())
    hits = [n for n in PROFILES if re.sub(r"[^a-z0-9]", "", n) in squashed]
    return PROFILES[max(hits, key=len)] if hits else None


class _Clock:
    """Times ``fn`` on one device: CUDA events in bursts, or perf_counter on a CPU."""

    def __init__(self, dev: torch.device) -> None:
        self.dev = dev
        self.cuda = dev.type == "cuda"

    def runs(self, fn: Callable[[], Any], n: int) -> list[float]:
        if self.cuda:
            events = []
            for _ in range(n):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                events.append((start, end))
            torch.cuda.synchronize(self.dev)
            return [s.elapsed_time(e) for s, e in events]
        out = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            fn()
            out.append((time.perf_counter_ns() - t0) / 1e6)
        return out

    def time(self, fn: Callable[[], Any], seconds: float) -> float:
        """A GPU: the median of the runs. A CPU: the fastest run, the one no other process slowed
        (shared CPUs slow runs, never speed them up; the median of a busy spell is 10x off)."""
        for _ in range(2):
            fn()
        if self.cuda:
            torch.cuda.synchronize(self.dev)
        t0 = time.perf_counter()
        times = self.runs(fn, 3)
        per_window = max(3, min(200, int(seconds / 5 / max(1e-6, statistics.median(times) / 1e3))))
        while len(times) < 5 * per_window and time.perf_counter() - t0 < seconds:
            times += self.runs(fn, per_window)
        return statistics.median(times) if self.cuda else min(times)


def _threads(dev: torch.device, threads: int | None) -> contextlib.AbstractContextManager[None]:
    return _cpu_threads(threads) if dev.type == "cpu" and threads else contextlib.nullcontext()


@dataclass(frozen=True)
class _Probe:
    """Something to time: a forward call, and the kernels the predictor sees in it."""

    name: str
    run: Callable[[], Any]
    kernels: tuple[Kernel, ...]
    precision: str
    network: bool = False


def _op_probes(dev: torch.device, precision: str, fmt: torch.memory_format) -> Iterator[_Probe]:
    """One torch op per probe, a few shapes per kernel class, the classes taken in turn (so a short
    budget still sees every class); each op is built only when it is its turn."""
    dtype = _DTYPES[precision]

    def probe(name: str, module: nn.Module, x: torch.Tensor, kernels: Sequence[Kernel]) -> _Probe:
        module = module.to(dev, dtype=dtype).eval()
        return _Probe(name, lambda: module(x), tuple(kernels), precision)

    def conv(cin: int, cout: int, k: int, stride: int, groups: int, size: int) -> _Probe:
        module = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False).to(memory_format=fmt)
        x = torch.randn(1, cin, size, size, device=dev, dtype=dtype).to(memory_format=fmt)
        return probe(f"conv{k}x{k} s{stride} g{groups} {cin}->{cout} @{size}", module, x,
                     [conv_kernel(cin, cout, k, stride, groups, size, size, 1, precision)])

    def linear(features: int, out: int) -> _Probe:
        return probe(f"linear {features}->{out}", nn.Linear(features, out),
                     torch.randn(1, features, device=dev, dtype=dtype), [linear_kernel(features, out, 1, precision)])

    def add(n: int) -> _Probe:
        return probe(f"add {n}", _Add(torch.randn(n, device=dev, dtype=dtype)), torch.randn(n, device=dev, dtype=dtype),
                     [memory_kernel(3 * n, precision, outputs=n)])

    def cat(n: int) -> _Probe:
        return probe(f"cat {n}", _Cat(), torch.randn(1, n, 1, 1, device=dev, dtype=dtype),
                     [memory_kernel(4 * n, precision, outputs=2 * n)])

    def tiny() -> _Probe:
        return probe("tiny relu", nn.ReLU(), torch.randn(1, device=dev, dtype=dtype),
                     [memory_kernel(2, precision, outputs=1)])

    by_class: dict[str, list[Callable[[], _Probe]]] = {}
    for shape in _CONVS:
        cin, cout, k, stride, groups, _ = shape
        cls = conv_kernel(cin, cout, k, stride, groups, 8, 8).kernel_class
        by_class.setdefault(cls, []).append(lambda shape=shape: conv(*shape))
    by_class["linear"] = [lambda f=f, o=o: linear(f, o) for f, o in _LINEARS]
    largest_first = [f for n in reversed(_MEMORY) for f in (lambda n=n: add(n), lambda n=n: cat(n))]
    by_class["memory"] = [largest_first[0], tiny, *largest_first[1:]]
    for turn in itertools.zip_longest(*by_class.values()):
        for make in turn:
            if make is not None:
                yield make()


def _network_probes(dev: torch.device, precision: str, resolution: int, fmt: torch.memory_format) -> Iterator[_Probe]:
    from ..model import build_model
    from ..registry import get_config

    for name in _NETWORKS:
        config = get_config(name)
        model = build_model(config).to(dev, memory_format=fmt).eval()
        x = torch.randn(1, config.in_channels, resolution, resolution, device=dev).to(memory_format=fmt)

        def run(model: nn.Module = model, x: torch.Tensor = x) -> Any:
            if precision == "fp32":
                return model(x)
            with torch.autocast(dev.type, dtype=_DTYPES[precision]):
                return model(x)

        yield _Probe(f"{name} at {resolution}", run, tuple(kernels_of(config, resolution, 1, precision)), precision,
                     network=True)


def _peak_gflops(dev: torch.device, dtype: torch.dtype, clock: _Clock, seconds: float) -> float:
    n = 2048 if dev.type == "cuda" else 512
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    with torch.inference_mode():
        ms = clock.time(lambda: a @ b, seconds)
    return 2 * n**3 / (ms / 1e3) / 1e9


def _bandwidth_gbs(dev: torch.device, clock: _Clock, seconds: float) -> float:
    n = 2**26 if dev.type == "cuda" else 2**23
    a = torch.randn(n, device=dev)
    out = torch.empty_like(a)
    ms = clock.time(lambda: out.copy_(a), seconds)
    return 2 * n * 4 / (ms / 1e3) / 1e9


def _simd_channels() -> int:
    """fp32 lanes of the widest vector unit (oneDNN blocks channels by this)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8
    return 16 if "avx512f" in flags else 8


def _cuda_base(dev: torch.device, precisions: Sequence[str], clock: _Clock, seconds: float, fp: str) -> DeviceProfile:
    """The published spec when the GPU is known, else peaks and bandwidth measured here."""
    name = device_name(dev)
    published = match_published(name)
    if published is not None:
        return dataclasses.replace(published, name=f"local:{published.name}", fingerprint=fp,
                                   description=f"{name} (this machine)")
    props = torch.cuda.get_device_properties(dev)
    tensor_cores = props.major >= 7
    with _tf32(False):
        peaks = {"fp32": _peak_gflops(dev, torch.float32, clock, seconds)}
    if tensor_cores:
        with _tf32(True):
            peaks["tf32"] = _peak_gflops(dev, torch.float32, clock, seconds)
    for p in precisions:
        if p != "fp32":
            peaks[p] = _peak_gflops(dev, _DTYPES[p], clock, seconds)
    source = f"measured peaks and bandwidth of an unlisted GPU ({name})"
    return DeviceProfile(name="local:cuda", description=f"{name} (this machine)", peak_gflops=peaks,
                         bandwidth_gbs=_bandwidth_gbs(dev, clock, seconds), sm_count=props.multi_processor_count,
                         tensor_cores=tensor_cores, source=source, provenance={"spec": source}, fingerprint=fp,
                         **DEFAULT_EFFICIENCIES)


def _cpu_base(samples: Sequence[ProfileSample], threads: int, fp: str) -> DeviceProfile:
    """This CPU's roofs as the best it showed: the fastest dense op's GFLOP/s and memory op's GB/s,
    so every fitted efficiency is a share of something this machine really reached."""
    dense = [k.flops / s.ms / 1e6 for s in samples if not s.network for k in s.kernels if k.flops > 0
             and k.kernel_class in ("conv3x3", "conv1x1", "conv_strided", "linear")]
    memory = [k.bytes / s.ms / 1e6 for s in samples if not s.network for k in s.kernels
              if k.kernel_class == "memory" and k.bytes >= 2**16]
    if not dense or not memory:
        raise RuntimeError("profile_device: too few ops finished to estimate this CPU's peaks; expected a larger budget_s")
    gflops, bandwidth = max(dense), max(memory)
    source = "this CPU: peak = the fastest op's GFLOP/s, bandwidth = the fastest large add/copy"
    return DeviceProfile(name="cpu", description=f"this CPU ({device_name(torch.device('cpu'))}), {threads} threads",
                         peak_gflops={"fp32": gflops, "bf16": gflops}, bandwidth_gbs=bandwidth,
                         channel_block=_simd_channels(), source=source, provenance={"spec": source}, fingerprint=fp,
                         **{**DEFAULT_EFFICIENCIES, "conv3x3_eff": 0.8, "conv1x1_eff": 0.8, "conv_strided_eff": 0.6,
                            "linear_eff": 0.5, "memory_eff": 0.8})


@contextlib.contextmanager
def _tf32(on: bool) -> Iterator[None]:
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _precisions(dev: torch.device, precisions: Sequence[str] | None) -> list[str]:
    if precisions is None:
        if dev.type == "cpu":
            return ["fp32"]
        out = ["fp32", "fp16"]
        if torch.cuda.is_bf16_supported():
            out.append("bf16")
        return out
    for p in precisions:
        check_choice("precision", p, PRECISIONS)
        resolve_precision(p, dev)
    return list(dict.fromkeys(precisions))


Timer = Callable[[_Probe, float], float]


def profile_device(device: str | torch.device = "cuda", budget_s: float = 60.0, save: bool = True, *,
                   threads: int | None = None, precisions: Sequence[str] | None = None,
                   networks: bool = True, resolution: int = 128, timer: Timer | None = None) -> DeviceProfile:
    """Micro-benchmark ``device`` (``cuda``, ``cuda:N`` or ``cpu``) within about ``budget_s`` seconds
    into a calibrated profile, saved under its fingerprint when ``save`` (and the device stayed quiet).

    The profile's ``calibration`` records the fit; ``provenance["samples"]`` every timed op and
    network with its measured and fitted ms, and ``provenance["disturbed"]`` whether other processes
    competed for the CPU while it ran. ``timer(probe, seconds) -> ms`` replaces the clock (tests)."""
    if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)) or not 1 <= budget_s <= 600:
        raise ValueError(f"budget_s: {budget_s!r} is not allowed; expected seconds in [1, 600]")
    dev = resolve_device(device)
    precs = _precisions(dev, precisions)
    threads = threads or torch.get_num_threads()
    fp = fingerprint(dev, threads)
    clock = _Clock(dev)
    time_probe = timer or (lambda probe, seconds: clock.time(probe.run, seconds))
    start = time.perf_counter()
    deadline = start + budget_s
    foreign = ForeignLoad() if dev.type == "cpu" else None
    loads: list[float] = []
    fmt = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    samples: list[ProfileSample] = []

    def run(probes: Iterator[_Probe], seconds: float) -> None:
        for probe in probes:
            if time.perf_counter() + seconds > deadline:
                return
            with torch.inference_mode():
                ms = time_probe(probe, seconds)
            samples.append(ProfileSample(probe.name, probe.kernels, ms, probe.precision, probe.network))
            if foreign is not None and (load := foreign()) is not None:
                loads.append(load)

    with _threads(dev, threads), _cudnn_benchmark(dev):
        base = _cuda_base(dev, precs, clock, min(2.0, budget_s * 0.03), fp) if dev.type == "cuda" else None
        n_ops = (len(_CONVS) + len(_LINEARS) + 2 * len(_MEMORY) + 1) * len(precs)
        per_op = max(0.02, (deadline - time.perf_counter()) * (0.55 if networks else 0.9) / n_ops)
        for p in precs:
            run(_op_probes(dev, p, fmt), per_op)
        if networks:
            per_net = max(0.05, (deadline - time.perf_counter()) * 0.9 / (len(_NETWORKS) * len(precs)))
            for p in precs:
                run(_network_probes(dev, p, resolution, fmt), per_net)
    if not samples:
        raise RuntimeError(f"profile_device: no sample finished within budget_s {budget_s:g}; expected a larger budget")
    base = base or _cpu_base(samples, threads, fp)
    elapsed = time.perf_counter() - start
    busy = statistics.median(loads) if loads else None
    disturbed = busy is not None and busy > InterferencePolicy().foreign_cores
    timed = len(samples)
    if disturbed and any(not s.network for s in samples):
        # a whole forward pass has no undisturbed run on a busy CPU (a 1 ms op has): fit the ops alone
        samples = [s for s in samples if not s.network]
    n_net = sum(s.network for s in samples)
    # whole networks are what the profile predicts: together they weigh as much as all the single ops
    weights = [(len(samples) - n_net) / n_net if s.network and n_net else 1.0 for s in samples]
    fitted = fit_profile(base, [(s.kernels, s.ms) for s in samples], prior=base, prior_weight=0.02, weights=weights)
    rows = [{"name": s.name, "precision": s.precision, "network": s.network, "measured_ms": round(s.ms, 5),
             "fitted_ms": round(kernels_ms(s.kernels, fitted), 5)} for s in samples]
    nets = [r for r in rows if r["network"]]
    net_err = statistics.median(abs(r["fitted_ms"] / r["measured_ms"] - 1) for r in nets) if nets else None
    what = f"{len(samples) - len(nets)} ops and {len(nets)} networks in {elapsed:.0f} s ({', '.join(precs)})"
    if timed > len(samples):
        what += f"; {timed - len(samples)} networks timed but left out (the CPU was busy)"
    net_line = f"; networks' median |error| {100 * net_err:.1f}%" if net_err is not None else ""
    source = (f"profiled here ({device_name(dev)}): {what}; fit median |error| "
              f"{100 * fitted.calibration['median_abs_rel_error']:.1f}%{net_line}; base: {base.source}")
    provenance = {**base.provenance, "profiled": what, "samples": rows, "foreign_cores": busy, "disturbed": disturbed,
                  "network_median_abs_rel_error": net_err, "budget_s": budget_s, "torch": torch.__version__}
    profile = dataclasses.replace(fitted, source=source, provenance=provenance)
    problems = check_profile(profile)
    if save and not problems and not disturbed:
        save_profile(profile)
    elif save:
        why = "; ".join(problems) if problems else f"other processes used {busy:.2f} cores while it ran"
        log.warning("profile of %s not saved: %s", device_name(dev), why)
    return profile


@contextlib.contextmanager
def _cudnn_benchmark(dev: torch.device) -> Iterator[None]:
    if dev.type != "cuda":
        yield
        return
    prev = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = prev


def local_profile(device: str | torch.device = "cuda", budget_s: float = 60.0, refresh: bool = False) -> DeviceProfile:
    """The saved profile of this machine's ``device`` (by fingerprint) when plausible, else a fresh
    `profile_device` (saved unless the device was busy): what the search's gate predicts with."""
    dev = resolve_device(device)
    if dev.type == "cpu":
        from .profiles import cpu_profile

        return cpu_profile(refresh=refresh)
    saved = None if refresh else _saved(fingerprint(dev))
    return saved or profile_device(dev, budget_s)


def _saved(fp: str) -> DeviceProfile | None:
    data = saved_profiles().get(fp)
    if not data:
        return None
    try:
        profile = DeviceProfile.from_dict(data)
    except (TypeError, AttributeError, ValueError):
        return None
    return None if check_profile(profile) else profile
