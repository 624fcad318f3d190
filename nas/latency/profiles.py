"""Device profiles for the roofline predictor: published specs, and this CPU by micro-benchmark.

A profile holds peak compute per precision, memory bandwidth, a per-kernel overhead and the
efficiencies the predictor applies (the share of peak a dense conv, a depthwise conv and a
memory-bound op reach). Published profiles carry spec-sheet peaks with default efficiencies;
`nas.latency.calibrate` fits the efficiencies to measured latencies. Every profile says where
its numbers come from in ``source``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..paths import runs_dir
from .devices import fingerprint

__all__ = ["BOUNDS", "PROFILES", "DeviceProfile", "ProfileLoad", "check_profile", "cpu_profile", "list_profiles",
           "load_cpu_profile", "resolve_profile", "save_profile"]

log = logging.getLogger("nas.latency")

#: Physically plausible ranges (inclusive) of every fitted or measured profile parameter. A profile
#: outside them is refused by `save_profile` and rebuilt when loaded (see docs/latency.md).
BOUNDS: dict[str, tuple[float, float]] = {
    "conv_eff": (0.01, 1.0),  # share of the peak a dense conv reaches
    "dwconv_eff": (0.001, 1.0),  # share of the peak a depthwise conv reaches
    "memory_eff": (0.01, 1.0),  # share of the bandwidth a memory-bound op reaches
    "overhead_us": (0.1, 500.0),  # per kernel launched
    "peak_gflops": (0.1, 1e7),  # every precision's peak
    "bandwidth_gbs": (0.1, 1e5),
}


@dataclass(frozen=True)
class DeviceProfile:
    """Roofline parameters of one device."""

    name: str
    description: str
    peak_gflops: dict[str, float]  # precision -> GFLOP/s (one MAC = 2 FLOPs)
    bandwidth_gbs: float
    overhead_us: float  # per kernel launched (framework + launch cost)
    conv_eff: float = 0.5
    dwconv_eff: float = 0.1
    memory_eff: float = 0.7
    channel_block: int = 8  # channel counts are padded to this multiple (SIMD width / tensor-core tile)
    source: str = "published spec sheet; default efficiencies, not calibrated"
    fingerprint: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)

    def peak(self, precision: str) -> float:
        return self.peak_gflops.get(precision, self.peak_gflops["fp32"])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DeviceProfile":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _show(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else repr(value)


def _within(value: Any, lo: float, hi: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and lo <= value <= hi


def check_profile(profile: DeviceProfile) -> list[str]:
    """What is physically implausible about a profile (empty when every parameter is within `BOUNDS`)."""
    problems = []
    for name in ("conv_eff", "dwconv_eff", "memory_eff", "overhead_us", "bandwidth_gbs"):
        lo, hi = BOUNDS[name]
        value = getattr(profile, name)
        if not _within(value, lo, hi):
            problems.append(f"{name} {_show(value)} outside [{lo:g}, {hi:g}]")
    lo, hi = BOUNDS["peak_gflops"]
    peaks = profile.peak_gflops if isinstance(profile.peak_gflops, dict) else {}
    if "fp32" not in peaks:
        problems.append("peak_gflops has no fp32 entry")
    for precision, value in peaks.items():
        if not _within(value, lo, hi):
            problems.append(f"peak_gflops[{precision}] {_show(value)} outside [{lo:g}, {hi:g}]")
    return problems


def _gpu(name: str, description: str, fp32: float, fp16: float, bf16: float | None, bw: float, overhead: float,
         conv_eff: float = 0.5) -> DeviceProfile:
    peaks = {"fp32": fp32, "fp16": fp16}
    if bf16:
        peaks["bf16"] = bf16
    return DeviceProfile(name, description, peaks, bw, overhead, conv_eff=conv_eff, dwconv_eff=0.05, memory_eff=0.7)


# Spec-sheet peaks in GFLOP/s and GB/s. fp16 on Pascal consumer cards runs at fp32 rate in
# cuDNN (storage-only halving), so it gets the fp32 peak. Ampere/Hopper "fp32" convs use TF32
# tensor cores by default in PyTorch (cudnn.allow_tf32), hence the TF32 peak there.
PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        _gpu("gtx1080", "NVIDIA GeForce GTX 1080 (Pascal GP104)", 8_873, 8_873, None, 320, 10),
        _gpu("gtx1080ti", "NVIDIA GeForce GTX 1080 Ti (Pascal GP102)", 11_340, 11_340, None, 484, 10),
        _gpu("titanv", "NVIDIA TITAN V (Volta GV100)", 14_900, 110_000, None, 653, 10),
        _gpu("v100", "NVIDIA Tesla V100 SXM2 (Volta)", 15_700, 125_000, None, 900, 10),
        _gpu("a100", "NVIDIA A100 SXM4 40GB (Ampere); fp32 convs as TF32", 156_000, 312_000, 312_000, 1_555, 8),
        _gpu("h100", "NVIDIA H100 SXM5 (Hopper); fp32 convs as TF32", 494_700, 989_400, 989_400, 3_350, 6),
        _gpu("jetson_nano", "NVIDIA Jetson Nano (Maxwell, 128 cores, shared LPDDR4)", 236, 472, None, 25.6, 40),
    )
}
_ALIASES = {"1080": "gtx1080", "1080ti": "gtx1080ti", "gtx_1080": "gtx1080", "gtx_1080ti": "gtx1080ti",
            "gtx_1080_ti": "gtx1080ti", "titan_v": "titanv", "nano": "jetson_nano", "jetson": "jetson_nano"}


def list_profiles() -> list[str]:
    """Names `resolve_profile` accepts (aliases aside): ``cpu`` (this machine) and the published ones."""
    return ["cpu", *PROFILES]


def _profiles_file() -> Path:
    return runs_dir() / "device_profiles.json"


def _load_saved() -> dict[str, Any]:
    path = _profiles_file()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def save_profile(profile: DeviceProfile) -> Path:
    """Persist a measured/calibrated profile under its fingerprint (or its name) in runs/.

    Raises ValueError for a profile outside `BOUNDS`: nothing absurd is ever written."""
    problems = check_profile(profile)
    if problems:
        raise ValueError(f"save_profile: {profile.name} not saved, implausible: {'; '.join(problems)}")
    data = _load_saved()
    data[profile.fingerprint or profile.name] = profile.to_dict()
    path = _profiles_file()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def _min_seconds(fn: Any, repeats: int) -> float:
    """The fastest of ``repeats`` runs: a quiet estimate even when other processes compete."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _micro_benchmark(threads: int) -> DeviceProfile:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            conv = torch.nn.Conv2d(128, 128, 3, padding=1, bias=False)
            x = torch.randn(1, 128, 56, 56)
            conv(x)
            t_conv = _min_seconds(lambda: conv(x), 7)
            gflops = 2 * 128 * 128 * 9 * 56 * 56 / t_conv / 1e9
            a, b = torch.randn(8 * 2**20), torch.randn(8 * 2**20)
            out = torch.empty_like(a)
            torch.add(a, b, out=out)
            t_add = _min_seconds(lambda: torch.add(a, b, out=out), 9)
            bandwidth = 3 * a.numel() * 4 / t_add / 1e9
            relu = torch.nn.ReLU()
            tiny = torch.randn(1)
            t_op = _min_seconds(lambda: [relu(tiny) for _ in range(200)], 5) / 200
    finally:
        torch.set_num_threads(before)
    fp = fingerprint(torch.device("cpu"), threads)
    return DeviceProfile(
        name="cpu", description=f"this CPU, {threads} threads", peak_gflops={"fp32": gflops, "bf16": gflops},
        bandwidth_gbs=bandwidth, overhead_us=t_op * 1e6, conv_eff=1.0, dwconv_eff=0.1, memory_eff=1.0,
        channel_block=_simd_channels(),
        source="micro-benchmark (3x3 conv GFLOP/s, tensor-add bandwidth, tiny-op overhead); not calibrated",
        fingerprint=fp,
    )


def _simd_channels() -> int:
    """fp32 lanes of the widest vector unit (oneDNN blocks channels by this)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8
    return 16 if "avx512f" in flags else 8


@dataclass(frozen=True)
class ProfileLoad:
    """The CPU profile and how it was obtained; ``warning`` says why a saved one was rebuilt."""

    profile: DeviceProfile
    origin: str  # "saved", "micro-benchmark" (none saved / refresh) or "rebuilt" (the saved one was unusable)
    warning: str | None = None


def load_cpu_profile(threads: int | None = None, refresh: bool = False) -> ProfileLoad:
    """This CPU's profile, with absurd saved values detected: such a profile is replaced by a fresh
    micro-benchmark (saved over it) and ``warning`` gives the one-line reason."""
    threads = threads or torch.get_num_threads()
    fp = fingerprint(torch.device("cpu"), threads)
    saved = _load_saved().get(fp)
    warning = None
    if saved and not refresh:
        try:
            profile = DeviceProfile.from_dict(saved)
            problems = check_profile(profile)
        except (TypeError, AttributeError, ValueError) as err:
            problems = [f"unreadable ({type(err).__name__})"]
        if not problems:
            return ProfileLoad(profile, "saved")
        warning = (f"saved CPU profile in {_profiles_file()} is implausible ({'; '.join(problems)}); "
                   "rebuilt from a fresh micro-benchmark")
        log.warning("%s", warning)
    profile = _micro_benchmark(threads)
    try:
        save_profile(profile)
    except ValueError as err:  # a micro-benchmark outside the bounds is used but never saved
        log.warning("%s", err)
    return ProfileLoad(profile, "rebuilt" if warning else "micro-benchmark", warning)


def cpu_profile(threads: int | None = None, refresh: bool = False) -> DeviceProfile:
    """This CPU's profile: calibrated if `calibrate(..., save=True)` ran here, else micro-benchmarked (~1 s, cached)."""
    return load_cpu_profile(threads, refresh).profile


def resolve_profile(name: str | DeviceProfile) -> DeviceProfile:
    """A profile by name (``cpu``, ``gtx1080ti``, ``1080ti``, ``v100``, ...) or a profile itself."""
    if isinstance(name, DeviceProfile):
        return name
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key == "cpu":
        return cpu_profile()
    key = _ALIASES.get(key, key)
    if key not in PROFILES:
        raise ValueError(f"device profile: {name!r} is not known; known: {', '.join(list_profiles())} "
                         f"(aliases: {', '.join(sorted(_ALIASES))})")
    return PROFILES[key]
