"""Search settings: parsed and validated once, recorded with the study for reproducibility."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import check_choice, check_int
from ..latency.devices import PRECISIONS
from ..latency.profiles import list_profiles, resolve_profile
from ..latency.runtimes import MEASURE_RUNTIMES
from ..resolution import canonical_resolution

__all__ = ["MAX_BUDGET_MS", "OBJECTIVES", "SAMPLERS", "VOLATILE", "SearchSettings", "check_study_name", "parse_budget", "parse_latency",
           "parse_objectives"]

#: objective name -> Optuna direction
OBJECTIVES: dict[str, str] = {
    "accuracy": "maximize",
    "latency": "minimize",
    "cio": "minimize",
    "macs": "minimize",
    "params": "minimize",
}
SAMPLERS = ("tpe", "nsga2", "random", "evolution", "budget", "hvi")
"""``--sampler``: Optuna's TPE, NSGA-II and random; seed-aware evolution and random proposals, both
steered to the budget edge by the latency predictor (`nas.search.evolution`); proposals ranked by
optimistic hypervolume improvement per training second (`nas.search.frontier`)."""
VOLATILE = ("trials", "timeout_s", "workers", "backend", "gpus_per_trial", "fidelity", "sampler")
"""Settings a resumed study may change: how long, where and how the next trials run and are proposed."""
_UNITS = {"ms": 1.0, "s": 1000.0, "us": 0.001}
MAX_BUDGET_MS = 3_600_000.0
"""One hour: a latency budget above it is a typo (and ``1e999ms`` would be infinite)."""
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def parse_budget(text: str) -> float:
    """``30ms``, ``0.03s`` or ``30000us`` -> milliseconds; finite, above zero and at most one hour."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(ms|s|us)\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"budget: {text!r} is not allowed; expected a positive latency with a unit, "
                         "e.g. 30ms, 0.03s or 30000us")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value <= 0:
        raise ValueError(f"budget: {text!r} is not allowed; expected a latency above zero, e.g. 30ms")
    if not value <= MAX_BUDGET_MS:
        raise ValueError(f"budget: {text!r} is not allowed; expected a latency above zero and at most 1 hour "
                         "(3600s), e.g. 30ms")
    return value


def check_study_name(name: str) -> str:
    """A study name is also the folder ``runs/<name>``: 1-100 letters, digits, ``.``, ``_``, ``+`` or ``-``.

    It starts with a letter or digit and holds no ``..``, so it can never leave ``runs/``.
    """
    if not isinstance(name, str) or not _STUDY_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"study-name: {name!r} is not allowed; expected 1-100 letters, digits, '.', '_', '+' or "
                         "'-', starting with a letter or digit and without '..' (it names the folder runs/<study>)")
    return name


def parse_latency(text: str) -> tuple[str, str | None]:
    """``measured`` or ``predicted:<device profile>``."""
    if text == "measured":
        return "measured", None
    if text.startswith("predicted:") and text.split(":", 1)[1]:
        device = text.split(":", 1)[1]
        resolve_profile(device) if device != "cpu" else None  # validates the name
        return "predicted", device
    raise ValueError(f"latency: {text!r} is not allowed; expected measured or predicted:<device> "
                     f"with device one of {', '.join(list_profiles())}")


def parse_objectives(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in OBJECTIVES]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(f"objectives: {text!r} is not allowed; expected a comma-separated list of distinct "
                         f"names among {', '.join(OBJECTIVES)}")
    if "accuracy" not in names:
        raise ValueError(f"objectives: {text!r} is not allowed; accuracy must be one of the objectives")
    return names


@dataclass(frozen=True)
class SearchSettings:
    """Everything that defines a search; the study records it and a resume must match it."""

    budget_ms: float = 30.0
    space: str = "hardnet"
    trials: int = 20
    timeout_s: float | None = None
    seed: int = 0
    device: str = "auto"
    resolution: int | str = 224  # canonical: 224 (square) or "HxW" (height x width)
    batch: int = 1
    precision: str = "fp32"
    latency: str = "measured"
    proxy: str = "train"
    zero_cost_metric: str = "naswot"
    data: str = "digits"
    proxy_epochs: float = 4.0
    objectives: tuple[str, ...] = ("accuracy", "latency", "cio")
    sampler: str = "hvi"
    gate_factor: float = 2.0
    backend: str = "optuna"
    workers: int = 1
    gpus_per_trial: float | None = None
    runtime: str = "eager"  # what measured latencies run under (nas.latency.runtimes)
    fidelity: str = "median"

    def __post_init__(self) -> None:
        check_choice("precision", self.precision, PRECISIONS)
        object.__setattr__(self, "resolution", canonical_resolution(self.resolution))
        check_choice("runtime", self.runtime, MEASURE_RUNTIMES)
        if self.runtime != "eager" and self.latency != "measured":
            raise ValueError(f"runtime: {self.runtime!r} is not allowed with --latency {self.latency}; expected it "
                             "only with measured latencies (a prediction models eager PyTorch)")
        for name in ("trials", "batch", "workers"):
            check_int(name, getattr(self, name), expected="a positive integer")
        if self.timeout_s is not None and not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise ValueError(f"timeout: {self.timeout_s!r} is not allowed; expected a positive, finite number of seconds")
        if not (self.budget_ms > 0 and self.budget_ms <= MAX_BUDGET_MS):
            raise ValueError(f"budget_ms: {self.budget_ms!r} is not allowed; expected a latency above zero and at "
                             f"most {MAX_BUDGET_MS:g} ms")
        if self.proxy not in ("train", "zero-cost"):
            raise ValueError(f"proxy: {self.proxy!r} is not allowed; expected train or zero-cost")
        if self.zero_cost_metric not in ("synflow", "naswot", "grad_norm"):
            raise ValueError(f"zero_cost_metric: {self.zero_cost_metric!r} is not allowed; expected synflow, naswot or grad_norm")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler: {self.sampler!r} is not allowed; expected one of {', '.join(SAMPLERS)}")
        if self.fidelity not in ("median", "halving"):
            raise ValueError(f"fidelity: {self.fidelity!r} is not allowed; expected median or halving")
        if self.backend not in ("optuna", "ray"):
            raise ValueError(f"backend: {self.backend!r} is not allowed; expected optuna or ray")
        self._check_ray_devices()
        if not (self.gate_factor >= 1 and math.isfinite(self.gate_factor)):
            raise ValueError(f"gate_factor: {self.gate_factor!r} is not allowed; expected a finite number >= 1")
        if not (self.proxy_epochs > 0 and math.isfinite(self.proxy_epochs)):
            raise ValueError(f"proxy_epochs: {self.proxy_epochs!r} is not allowed; expected a positive, finite number")
        parse_latency(self.latency)

    def _check_ray_devices(self) -> None:
        """``--gpus-per-trial`` (Ray only, not on cpu): a fraction of one GPU or a whole number of them."""
        g = self.gpus_per_trial
        if g is not None:
            if isinstance(g, bool) or not isinstance(g, (int, float)) or not (0 < g and math.isfinite(g)) \
                    or (g > 1 and g != int(g)):
                raise ValueError(f"gpus_per_trial: {g!r} is not allowed; expected a fraction of one GPU (0 < g <= 1) "
                                 "or a whole number of GPUs")
            if self.backend != "ray":
                raise ValueError(f"gpus_per_trial: {g!r} is not allowed with --backend {self.backend}; expected it "
                                 "only with --backend ray")
            if self.device == "cpu":
                raise ValueError(f"gpus_per_trial: {g!r} is not allowed with --device cpu; expected --device cuda "
                                 "or auto")
        if self.backend == "ray" and re.fullmatch(r"cuda:\d+", str(self.device)):
            raise ValueError(f"device: {self.device!r} is not allowed with --backend ray; expected cuda (Ray gives "
                             "each trial its own GPU), cpu or auto")

    @property
    def latency_kind(self) -> str:
        return parse_latency(self.latency)[0]

    @property
    def latency_device(self) -> str | None:
        return parse_latency(self.latency)[1]

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    @property
    def signs(self) -> list[int]:
        """+1 for each maximised objective, -1 for each minimised one (as `results.nondominated` takes them)."""
        return [1 if d == "maximize" else -1 for d in self.directions]

    def identity(self) -> dict[str, Any]:
        """The settings that change what a trial's numbers mean (a resumed study must match them)."""
        d = dataclasses.asdict(self)
        for volatile in VOLATILE:
            d.pop(volatile)
        if d["runtime"] == "eager":  # what every study measured before runtimes existed: resumes still match
            d.pop("runtime")
        d["objectives"] = list(self.objectives)
        return d

    def default_study_name(self) -> str:
        budget = f"{self.budget_ms:g}ms"
        where = "measured" if self.latency_kind == "measured" else self.latency_device
        space, data = Path(self.space).stem, Path(self.data).name.split(".")[0]
        name = re.sub(r"[^A-Za-z0-9._+-]", "_", f"{space}-{budget}-{where}-{self.proxy}-{data}")
        return check_study_name(re.sub(r"\.{2,}", ".", name.lstrip("._+-"))[:100] or "study")
