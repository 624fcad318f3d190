"""What the GPU check's sections share: the plan of a mode, the measurements handed on, and one
guarded `measure` call recorded as an item of its section."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

import nas
from nas.config import ArchConfig
from nas.latency import PRECISIONS, DeviceProfile, InterferencePolicy, LatencyResult, measure
from nas.latency.devices import device_name, resolve_precision
from nas.stats import kendall_tau

from .harness import Report, Section, failure_line

__all__ = ["Measured", "Plan", "Shared", "fidelity", "package_root", "precision_problem", "timed"]


@dataclass(frozen=True)
class Plan:
    """What every section does in one mode (full on a GPU, or --quick)."""

    models: tuple[str, ...]
    resolution: int
    large_resolution: int
    seed_resolutions: tuple[int, ...]
    random_configs: int
    random_caps: dict[str, int]
    search_trials: int
    search_budget_factor: float  # the search's budget: this many times HarDNet68's measured latency
    proxy_epochs: float
    max_seconds: float  # timing cap of one measurement
    profile_budget_s: float
    deadline_s: float
    export_rounds: int
    warmup: int  # untimed forwards before each measurement
    policy: InterferencePolicy = field(default_factory=InterferencePolicy)


@dataclass
class Measured:
    """One clean-or-not measurement the predictor is later judged on."""

    name: str
    kind: str  # canonical or random
    config: ArchConfig
    precision: str
    resolution: int
    result: LatencyResult


@dataclass
class Shared:
    """What the sections hand on to each other."""

    device: torch.device
    plan: Plan
    data: str | None
    out: Path
    report: Report
    measured: list[Measured] = field(default_factory=list)
    local_profile: DeviceProfile | None = None
    _support: dict[str, str | None] | None = None
    _models: dict[str, torch.nn.Module] = field(default_factory=dict)

    def model(self, name: str) -> torch.nn.Module:
        """A canonical network, built once and measured at every precision and resolution."""
        if name not in self._models:
            self._models[name] = nas.build_model(nas.get_config(name))
        return self._models[name]

    def support(self) -> dict[str, str | None]:
        """precision -> None when measurable here, else why not (``not supported on cpu``...)."""
        if self._support is None:
            self._support = {p: precision_problem(self.device, p) for p in PRECISIONS}
        return self._support


# -- helpers -------------------------------------------------------------------------------------


def _bf16_native(dev: torch.device) -> bool:
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch has no emulation flag
        return torch.cuda.is_bf16_supported()


def precision_problem(dev: torch.device, precision: str) -> str | None:
    """None when ``measure`` can time ``precision`` on ``dev`` (a tiny conv under autocast runs), else why not."""
    try:
        resolve_precision(precision, dev)
    except ValueError:
        return f"not supported on {dev.type}"
    if precision == "fp32":
        return None
    where = device_name(dev) if dev.type == "cuda" else "cpu"
    if dev.type == "cuda" and precision == "bf16" and not _bf16_native(dev):
        return f"not supported on {where} (no native bf16)"
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    try:
        conv = torch.nn.Conv2d(8, 8, 3, padding=1).to(dev)
        with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype):
            y = conv(torch.randn(1, 8, 16, 16, device=dev))
        if y.dtype != dtype or not bool(torch.isfinite(y).all()):
            return f"not supported on {where} (autocast gave {y.dtype})"
    except Exception as err:
        return f"not supported on {where} ({failure_line(err)})"
    return None


def latency_item(r: LatencyResult, labels: dict[str, Any]) -> dict[str, Any]:
    item = {**labels, "median_ms": r.median_ms, "p10_ms": r.p10_ms, "p90_ms": r.p90_ms, "rel_iqr": r.rel_iqr,
            "runs": r.runs, "capped": r.capped, "disturbed": r.disturbed, "canary_slowdown": r.canary_slowdown}
    if r.error:
        item["error"] = r.error
    if r.interference and r.disturbed:
        item["interference"] = r.interference
    return item


def _label(labels: dict[str, Any]) -> str:
    return " ".join(str(v) for v in labels.values())


def timed(sec: Section, sh: Shared, labels: dict[str, Any], target: Any, items_left: int, key: str = "items",
          **kw: Any) -> LatencyResult | None:
    """`measure` one network within the section's box and record it; None when out of time or refused."""
    if not sec.has_time():
        return None
    cap = min(sh.plan.max_seconds, max(0.05, sec.left() / max(1, items_left) / 2))
    try:
        r = measure(target, device=sh.device, max_seconds=cap, warmup=sh.plan.warmup, interference=sh.plan.policy,
                    **kw)
    except Exception as err:  # bad arguments raise; a failing network is a result
        reason = failure_line(err)
        sec.add(key, {**labels, "error": reason})
        sec.item(False, f"{_label(labels)}: {reason}")
        sec.log(f"{_label(labels)}: {reason}")
        return None
    sec.add(key, latency_item(r, labels))
    sec.item(r.ok, None if r.ok else f"{_label(labels)}: {r.error}")
    if r.ok:
        flag = " DISTURBED" if r.disturbed else ""
        sec.log(f"{_label(labels)}: {r.median_ms:.3f} ms (IQR {100 * (r.rel_iqr or 0):.1f}%, {r.runs} runs){flag}")
    else:
        sec.log(f"{_label(labels)}: failed: {r.error}")
    return r


def fidelity(pred: Sequence[float], meas: Sequence[float]) -> dict[str, Any]:
    """Kendall tau, share within +-10 % / +-25 %, median |error| and median predicted/measured."""
    n = len(meas)
    if not n:
        return {"n": 0}
    ratios = [p / m for p, m in zip(pred, meas)]
    errs = [abs(r - 1) for r in ratios]
    return {"n": n, "kendall_tau": kendall_tau(pred, meas) if n >= 3 else None,
            "within_10": sum(e <= 0.10 for e in errs) / n, "within_25": sum(e <= 0.25 for e in errs) / n,
            "median_abs_err": statistics.median(errs), "median_ratio": statistics.median(ratios)}


def package_root() -> str:
    """The folder holding the ``nas`` this process imported (the search subprocess must import the same)."""
    return str(Path(nas.__file__).resolve().parent.parent)


def model_with_nontrivial_bn(cfg: ArchConfig) -> torch.nn.Module:
    """The network ``cfg`` describes, freshly initialised (seed 0), with BatchNorm scales and variances
    drawn in [0.5, 1.5) so that folding them is not a no-op; in eval mode."""
    torch.manual_seed(0)
    model = nas.build_model(cfg).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model
