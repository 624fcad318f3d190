"""Latency: measured on the device at hand, predicted for devices you don't have.

* `measure` times a model or config on CPU or CUDA (warm-up, synchronisation, medians, spread).
* `predict` estimates latency on a device profile with a per-kernel-class model (`kernels`).
* `kernels_of` / `conv_kernel` / `linear_kernel` / `memory_kernel` give the `Kernel` records the
  predictor times (`kernels_ms`); `fit_profile` fits a profile's efficiencies to measured kernels.
* `calibrate` fits a profile's efficiencies to undisturbed measured latencies, robustly and within
  physical bounds, and accepts the fit only if it predicts held-out measurements better.
* `profile_device` micro-benchmarks the local GPU or CPU into a calibrated profile (``python -m
  nas.latency --profile``); `local_profile` is that profile, saved or made once.
* `LatencyCache` keeps measurements in SQLite so nothing is measured twice.

Every `LatencyResult` says whether it is ``measured`` or ``predicted``; a measured one timed while
the device was busy says ``disturbed`` (with ``canary_slowdown``).
"""

from .cache import LatencyCache
from .devices import PRECISIONS
from .fit import fit_profile
from .interference import InterferencePolicy
from .kernels import (KERNEL_CLASSES, RUNTIMES, Kernel, conv_kernel, kernel_rows, kernels_ms, kernels_of,
                      linear_kernel, memory_kernel)
from .measure import measure
from .predict import CalibrationResult, calibrate, predict, predict_kernel_rows, predict_many, predict_ms, warm_tables
from .profiles import (BOUNDS, PROFILES, DeviceProfile, ProfileLoad, check_profile, cpu_profile, list_profiles,
                       load_cpu_profile, resolve_profile, save_profile, user_profiles_dir)
from .profiling import local_profile, match_published, profile_device
from .result import LatencyResult

__all__ = [
    "BOUNDS",
    "CalibrationResult",
    "DeviceProfile",
    "InterferencePolicy",
    "KERNEL_CLASSES",
    "Kernel",
    "LatencyCache",
    "LatencyResult",
    "PRECISIONS",
    "PROFILES",
    "ProfileLoad",
    "RUNTIMES",
    "calibrate",
    "check_profile",
    "conv_kernel",
    "cpu_profile",
    "fit_profile",
    "kernel_rows",
    "kernels_ms",
    "kernels_of",
    "linear_kernel",
    "list_profiles",
    "load_cpu_profile",
    "local_profile",
    "match_published",
    "measure",
    "memory_kernel",
    "predict",
    "predict_kernel_rows",
    "predict_many",
    "predict_ms",
    "profile_device",
    "resolve_profile",
    "save_profile",
    "user_profiles_dir",
    "warm_tables",
]
