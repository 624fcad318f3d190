"""Latency: measured on the device at hand, predicted for devices you don't have.

* `measure` times a model or config on CPU or CUDA (warm-up, synchronisation, medians, spread).
* `predict` estimates latency on a device profile with a per-layer roofline model.
* `calibrate` fits a profile's efficiencies to measured latencies.
* `LatencyCache` keeps measurements in SQLite so nothing is measured twice.

Every `LatencyResult` says whether it is ``measured`` or ``predicted``.
"""

from .cache import LatencyCache
from .devices import PRECISIONS
from .measure import measure
from .predict import calibrate, predict, predict_ms
from .profiles import PROFILES, DeviceProfile, cpu_profile, list_profiles, resolve_profile
from .result import LatencyResult

__all__ = [
    "PRECISIONS",
    "PROFILES",
    "DeviceProfile",
    "LatencyCache",
    "LatencyResult",
    "calibrate",
    "cpu_profile",
    "list_profiles",
    "measure",
    "predict",
    "predict_ms",
    "resolve_profile",
]
