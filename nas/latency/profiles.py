"""Device profiles for the latency predictor: published GPUs as data, user files, and this CPU.

A `DeviceProfile` holds peak compute per precision, memory bandwidth, SM count, one efficiency
per kernel class (`nas.latency.kernels.KERNEL_CLASSES`), the tensor-core factor, per-kernel
overheads per runtime, and where every number comes from (``source``, one line, and
``provenance``).

* **Published GPUs** (`PROFILES`): spec peaks from ``data/devices.yaml`` (each entry names the
  vendor document) combined with the efficiencies of the device's architecture family from
  ``data/families.yaml`` (fitted on the published tables by `nas.latency.families`; a family
  without fitting data borrows from the neighbour ``devices.yaml`` names, and says so).
* **Your own GPU**: a YAML file ``runs/profiles/<name>.yaml`` (same keys as a ``devices.yaml``
  entry; read with the safe loader, checked against `BOUNDS`); its name then works wherever a
  device profile is taken (``--latency predicted:<name>``, ``--predict <name>``, the app).
* **This CPU** (``cpu``): a micro-benchmark, replaced by `nas.latency.calibrate`'s fit when one
  was saved.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from ..errors import check_size, parse_reason, read_text
from ..paths import runs_dir
from .devices import fingerprint
from .kernels import KERNEL_CLASSES, RUNTIMES

__all__ = ["BOUNDS", "DEFAULT_EFFICIENCIES", "EFFICIENCY_FIELDS", "PROFILES", "DeviceProfile", "ProfileLoad",
           "check_profile", "cpu_profile", "family_efficiencies", "list_profiles", "load_cpu_profile",
           "profile_from_spec", "resolve_profile", "save_profile", "user_profiles_dir"]

log = logging.getLogger("nas.latency")

DATA = Path(__file__).parent / "data"

#: Physically plausible ranges (inclusive) of every fitted or measured profile parameter. A profile
#: outside them is refused by `save_profile`, rebuilt when loaded and rejected from a user file.
BOUNDS: dict[str, tuple[float, float]] = {
    "conv3x3_eff": (0.01, 3.0),  # effective share of peak: Winograd needs fewer multiplies than counted
    "conv1x1_eff": (0.01, 1.0),  # share of the peak a dense conv of its class reaches
    "conv_strided_eff": (0.01, 1.0),
    "dwconv_eff": (0.001, 1.0),
    "linear_eff": (0.001, 1.0),
    "memory_eff": (0.01, 1.0),  # share of the bandwidth a memory-bound kernel reaches
    "tensor_eff": (0.05, 1.0),  # extra factor on the tensor-core peak (it is harder to reach)
    "overhead_us": (0.1, 500.0),  # per kernel launched by eager PyTorch
    "engine_overhead_us": (0.1, 500.0),  # per kernel of a compiled engine (TensorRT)
    "peak_gflops": (0.1, 1e7),  # every precision's peak
    "bandwidth_gbs": (0.1, 1e5),
    "sm_count": (0, 1000),  # 0: no wave model (a CPU)
    "channel_block": (1, 128),
}
#: kernel class -> its efficiency field
EFFICIENCY_FIELDS: dict[str, str] = {c: f"{c}_eff" for c in KERNEL_CLASSES}
#: the parameters `fit_profile` may fit (efficiencies, tensor factor, overheads)
FITTABLE: tuple[str, ...] = (*EFFICIENCY_FIELDS.values(), "tensor_eff", *(r.overhead for r in RUNTIMES.values()))
#: efficiencies of a profile nothing was fitted for (the prior of every fit)
DEFAULT_EFFICIENCIES: dict[str, float] = {
    "conv3x3_eff": 1.0, "conv1x1_eff": 0.6, "conv_strided_eff": 0.5, "dwconv_eff": 0.1, "linear_eff": 0.3,
    "memory_eff": 0.7, "tensor_eff": 0.5, "overhead_us": 10.0, "engine_overhead_us": 5.0,
}
assert set(DEFAULT_EFFICIENCIES) == set(FITTABLE)


@dataclass(frozen=True)
class DeviceProfile:
    """Parameters of the latency model for one device (`nas.latency.kernels` says how they are used)."""

    name: str
    description: str
    peak_gflops: dict[str, float]  # precision (fp32, tf32, fp16, bf16) -> GFLOP/s (one MAC = 2 FLOPs)
    bandwidth_gbs: float
    overhead_us: float = DEFAULT_EFFICIENCIES["overhead_us"]
    conv3x3_eff: float = DEFAULT_EFFICIENCIES["conv3x3_eff"]
    conv1x1_eff: float = DEFAULT_EFFICIENCIES["conv1x1_eff"]
    conv_strided_eff: float = DEFAULT_EFFICIENCIES["conv_strided_eff"]
    dwconv_eff: float = DEFAULT_EFFICIENCIES["dwconv_eff"]
    linear_eff: float = DEFAULT_EFFICIENCIES["linear_eff"]
    memory_eff: float = DEFAULT_EFFICIENCIES["memory_eff"]
    tensor_eff: float = DEFAULT_EFFICIENCIES["tensor_eff"]
    engine_overhead_us: float = DEFAULT_EFFICIENCIES["engine_overhead_us"]
    sm_count: int = 0  # streaming multiprocessors (0: no wave model)
    tensor_cores: bool = False
    channel_block: int = 1  # channel counts are padded to this multiple off tensor cores (CPU: SIMD lanes)
    family: str = ""
    source: str = "published spec sheet; default efficiencies, not calibrated"
    provenance: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)

    def peak(self, precision: str) -> float:
        return self.peak_gflops.get(precision, self.peak_gflops["fp32"])

    @property
    def fitted_to_networks(self) -> bool:
        """Whether `nas.latency.calibrate` fitted it to whole networks measured on the device (not only kernels)."""
        return bool(self.calibration.get("configs"))

    def efficiency(self, kernel_class: str) -> float:
        return getattr(self, EFFICIENCY_FIELDS[kernel_class])

    def overhead(self, runtime: str) -> float:
        """Per-kernel overhead in µs under ``runtime`` (a `nas.latency.kernels.RUNTIMES` name)."""
        return getattr(self, RUNTIMES[runtime].overhead)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DeviceProfile":
        """A profile from `to_dict`'s output; one saved before issue 14 (one ``conv_eff`` for every
        dense conv) is read with that value for each dense class."""
        data = dict(data)
        legacy = data.pop("conv_eff", None)
        if legacy is not None:
            for name in ("conv3x3_eff", "conv1x1_eff", "conv_strided_eff", "linear_eff"):
                data.setdefault(name, legacy)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _show(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else repr(value)


def _within(value: Any, lo: float, hi: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and lo <= value <= hi


def check_profile(profile: DeviceProfile) -> list[str]:
    """What is physically implausible about a profile (empty when every parameter is within `BOUNDS`)."""
    problems = []
    for name in (*FITTABLE, "bandwidth_gbs", "sm_count", "channel_block"):
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


# --- published GPUs: spec data + family efficiencies ----------------------------------------------

_SPEC_KEYS = {"name", "description", "family", "aliases", "sm_count", "peak_tflops", "bandwidth_gbs", "source",
              *FITTABLE}
_PEAK_KEYS = ("fp32", "tf32", "fp16", "bf16")
_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's safe loader when present: same rules, faster


def _yaml(path: Path, what: str) -> Any:
    text = read_text(path, what, "a YAML file")
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER)
    except (yaml.YAMLError, RecursionError, ValueError) as err:
        raise ValueError(f"{what} {str(path)!r}: not valid YAML ({parse_reason(err)}); expected a YAML mapping") from None
    return check_size(data, f"{what} {str(path)!r}", "a small YAML mapping")


@lru_cache(maxsize=1)
def _families() -> dict[str, dict[str, Any]]:
    return _yaml(DATA / "devices.yaml", "device data")["families"]


@lru_cache(maxsize=1)
def _fitted_families() -> dict[str, dict[str, Any]]:
    path = DATA / "families.yaml"
    return _yaml(path, "family efficiencies")["families"] if path.exists() else {}


def family_efficiencies(family: str, fitted: Mapping[str, Mapping[str, Any]] | None = None
                        ) -> tuple[dict[str, float], dict[str, Any]]:
    """(efficiency parameters, provenance) of an architecture family: its own fit, else the first
    neighbour (``devices.yaml``) that has one, else the pooled fit of all families, else
    `DEFAULT_EFFICIENCIES`. ``fitted`` defaults to the shipped families.yaml."""
    families = _families()
    fitted = _fitted_families() if fitted is None else fitted
    seen, current = [], family
    while current and current not in seen:
        seen.append(current)
        if current in fitted:
            prov = {"family": family, "efficiencies_from": current, "fit": fitted[current].get("fit", "")}
            if current != family:
                prov["borrowed"] = (f"{family} has no fitting data; borrows {current}'s efficiencies "
                                    f"(neighbour chain {' -> '.join(seen)})")
            return {k: float(fitted[current][k]) for k in FITTABLE}, prov
        current = families.get(current, {}).get("neighbour")
    if "pooled" in fitted:
        return {k: float(fitted["pooled"][k]) for k in FITTABLE}, {
            "family": family, "efficiencies_from": "pooled", "fit": fitted["pooled"].get("fit", ""),
            "borrowed": f"{family} and its neighbours have no fitting data; the pooled fit of all families"}
    return dict(DEFAULT_EFFICIENCIES), {"family": family, "efficiencies_from": "defaults",
                                        "fit": "none: default efficiencies, not fitted"}


def _fail(where: str, key: str, value: Any, expected: str) -> None:
    raise ValueError(f"{where}: {key} {value!r} is not allowed; expected {expected}")


def _number(where: str, key: str, value: Any, lo: float, hi: float) -> float:
    if not _within(value, lo, hi):
        _fail(where, key, value, f"a number in [{lo:g}, {hi:g}]")
    return float(value)


def profile_from_spec(name: str, spec: Mapping[str, Any], where: str,
                      efficiencies: Mapping[str, float] | None = None) -> DeviceProfile:
    """A profile from a ``devices.yaml``-style entry (a package device or a user file), validated:
    every failure is one line naming ``where``, the key and what is allowed."""
    if not isinstance(spec, Mapping):
        _fail(where, "the file", type(spec).__name__, "a YAML mapping of " + ", ".join(sorted(_SPEC_KEYS)))
    unknown = sorted(set(map(str, spec)) - _SPEC_KEYS)
    if unknown:
        _fail(where, "key", unknown[0], "one of " + ", ".join(sorted(_SPEC_KEYS)))
    for key in ("peak_tflops", "bandwidth_gbs", "source"):
        if key not in spec:
            raise ValueError(f"{where}: {key} is missing; expected it (peak_tflops: {{fp32: ...}}, bandwidth_gbs, "
                             "source: where the numbers come from)")
    families = _families()
    family = spec.get("family", "")
    if not isinstance(family, str) or (family and family not in families):
        _fail(where, "family", family, "one of " + ", ".join(families))
    peaks = spec["peak_tflops"]
    if not isinstance(peaks, Mapping) or "fp32" not in peaks:
        _fail(where, "peak_tflops", peaks, "a mapping with an fp32 entry (and optionally tf32, fp16, bf16)")
    for precision in peaks:
        if precision not in _PEAK_KEYS:
            _fail(where, "peak_tflops key", precision, "one of " + ", ".join(_PEAK_KEYS))
    lo, hi = BOUNDS["peak_gflops"]
    gflops = {str(p): _number(where, f"peak_tflops.{p}", v, lo / 1e3, hi / 1e3) * 1e3 for p, v in peaks.items()}
    bandwidth = _number(where, "bandwidth_gbs", spec["bandwidth_gbs"], *BOUNDS["bandwidth_gbs"])
    sm = spec.get("sm_count", 0)
    if isinstance(sm, bool) or not isinstance(sm, int) or not BOUNDS["sm_count"][0] <= sm <= BOUNDS["sm_count"][1]:
        _fail(where, "sm_count", sm, "an integer in [0, 1000] (0: no wave model)")
    source = spec["source"]
    if not isinstance(source, str) or not source.strip():
        _fail(where, "source", source, "a non-empty line naming the datasheet or measurement")
    values, prov = family_efficiencies(family) if family else (dict(DEFAULT_EFFICIENCIES), {
        "family": "", "efficiencies_from": "defaults", "fit": "none: no family given"})
    values.update(efficiencies or {})
    own = {k: _number(where, k, spec[k], *BOUNDS[k]) for k in FITTABLE if k in spec}
    values.update(own)
    if own:
        prov["own"] = f"{', '.join(sorted(own))} given in {where}"
    prov["spec"] = source
    eff_line = (prov.get("borrowed") or (f"efficiencies of {family}: {prov['fit']}" if family else prov["fit"]))
    description = spec.get("description", name)
    if not isinstance(description, str):
        _fail(where, "description", description, "a line of text")
    return DeviceProfile(
        name=name, description=description, peak_gflops=gflops, bandwidth_gbs=bandwidth, sm_count=sm,
        tensor_cores=bool(families.get(family, {}).get("tensor_cores", False)), family=family,
        source=f"published spec ({source}); {eff_line}" + (f"; {prov['own']}" if own else ""),
        provenance=prov, **values)


@lru_cache(maxsize=1)
def _package_devices() -> tuple[dict[str, DeviceProfile], dict[str, str]]:
    profiles, aliases = {}, {}
    for name, spec in _yaml(DATA / "devices.yaml", "device data")["devices"].items():
        profiles[name] = profile_from_spec(name, spec, f"devices.yaml {name}")
        for alias in spec.get("aliases", ()):
            aliases[str(alias)] = name
    return profiles, aliases


def _refresh() -> None:
    """Forget the cached data files (after `nas.latency.families` rewrote families.yaml)."""
    for cached in (_families, _fitted_families, _package_devices):
        cached.cache_clear()
    PROFILES.clear()
    PROFILES.update(_package_devices()[0])


PROFILES: dict[str, DeviceProfile] = {}
_refresh()


# --- user profiles: runs/profiles/<name>.yaml ------------------------------------------------------


def user_profiles_dir() -> Path:
    """Where a user's own profiles live: ``runs/profiles/`` (``$HARDNAS_RUNS/profiles``)."""
    return runs_dir(create=False) / "profiles"


def _user_files() -> dict[str, Path]:
    folder = user_profiles_dir()
    if not folder.is_dir():
        return {}
    return {p.stem.lower(): p for p in sorted(folder.iterdir()) if p.suffix in (".yaml", ".yml") and p.is_file()}


def _load_user(name: str, path: Path) -> DeviceProfile:
    where = f"profile file {str(path)!r}"
    if not _NAME.fullmatch(name):
        _fail(where, "name", path.stem, "lower-case letters, digits and _ (the file's stem)")
    if name in PROFILES or name == "cpu" or name in _package_devices()[1]:
        _fail(where, "name", name, "a name no packaged profile or alias has (see python -m nas.latency --list)")
    spec = _yaml(path, "profile file")
    if isinstance(spec, Mapping) and "name" in spec and spec["name"] != name:
        _fail(where, "name", spec["name"], f"the file's stem {name!r}")
    if isinstance(spec, Mapping) and "aliases" in spec:
        _fail(where, "key", "aliases", "no aliases in a user profile (its name is the file's stem)")
    profile = profile_from_spec(name, spec, where)
    return dataclasses.replace(profile, source=profile.source.replace("published spec", f"user profile {path.name}", 1),
                               provenance={**profile.provenance, "file": str(path)})


# --- saved (measured / calibrated) profiles in runs/device_profiles.json ---------------------------


def list_profiles() -> list[str]:
    """Names `resolve_profile` accepts (aliases aside): ``cpu`` (this machine), the packaged GPUs and
    the user's ``runs/profiles/*.yaml``."""
    return ["cpu", *PROFILES, *(n for n in _user_files() if n not in PROFILES)]


def _profiles_file() -> Path:
    return runs_dir() / "device_profiles.json"


def saved_profiles() -> dict[str, Any]:
    """The measured/calibrated profiles saved here, by fingerprint, as plain data ({} if none)."""
    return _load_saved()


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


# --- this CPU -------------------------------------------------------------------------------------


#: seconds the automatic CPU profile may take (``python -m nas.latency --profile`` takes longer, and better)
AUTO_CPU_BUDGET_S = 4.0
_UNSAVED: dict[str, DeviceProfile] = {}  # runs folder|fingerprint -> profiled in this process, not saved (busy CPU)


@dataclass(frozen=True)
class ProfileLoad:
    """The CPU profile and how it was obtained; ``warning`` says why a saved one was rebuilt."""

    profile: DeviceProfile
    origin: str  # "saved", "micro-benchmark" (none saved / refresh) or "rebuilt" (the saved one was unusable)
    warning: str | None = None


def load_cpu_profile(threads: int | None = None, refresh: bool = False) -> ProfileLoad:
    """This CPU's profile: the saved one (calibrated, or profiled before) when plausible, else
    `nas.latency.profiling.profile_device` in `AUTO_CPU_BUDGET_S` (saved unless other processes
    competed for the CPU; ``warning`` says why a saved one was rebuilt or a new one not saved)."""
    from .profiling import profile_device  # profiling builds on this module

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
    memo = f"{_profiles_file()}|{fp}"
    if memo in _UNSAVED and not refresh:
        return ProfileLoad(_UNSAVED[memo], "micro-benchmark", "profiled while the CPU was busy; not saved")
    profile = profile_device("cpu", AUTO_CPU_BUDGET_S, save=False, threads=threads, resolution=64)
    problems = check_profile(profile)
    if profile.provenance.get("disturbed") or problems:
        why = "; ".join(problems) or f"other processes used {profile.provenance['foreign_cores']:.2f} cores"
        note = f"CPU profile not saved ({why}); used for this process only"
        log.warning("%s", note)
        _UNSAVED[memo] = profile
        return ProfileLoad(profile, "rebuilt" if warning else "micro-benchmark", warning or note)
    save_profile(profile)
    _UNSAVED.pop(memo, None)
    return ProfileLoad(profile, "rebuilt" if warning else "micro-benchmark", warning)


def cpu_profile(threads: int | None = None, refresh: bool = False) -> DeviceProfile:
    """This CPU's profile: calibrated if `calibrate(..., save=True)` ran here, else profiled (a few seconds, saved)."""
    return load_cpu_profile(threads, refresh).profile


def resolve_profile(name: str | DeviceProfile) -> DeviceProfile:
    """A profile by name (``cpu``, ``gtx1080ti``, ``1080ti``, ``v100``, ``h200``, a ``runs/profiles``
    file's stem, ...) or a profile itself."""
    if isinstance(name, DeviceProfile):
        return name
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key == "cpu":
        return cpu_profile()
    aliases = _package_devices()[1]
    key = aliases.get(key, key)
    if key in PROFILES:
        return PROFILES[key]
    users = _user_files()
    if key in users:
        return _load_user(key, users[key])
    raise ValueError(f"device profile: {name!r} is not known; known: {', '.join(list_profiles())} "
                     f"(aliases: {', '.join(sorted(aliases))}; add your own as {user_profiles_dir()}/<name>.yaml)")
