"""`LatencyResult`: one latency figure with its spread, its source and its full context."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LatencyResult"]


@dataclass(frozen=True)
class LatencyResult:
    """A latency in milliseconds that always says where it came from.

    ``source`` is ``"measured"`` (timed on ``device``) or ``"predicted"`` (roofline model of a
    device profile). A failed measurement has ``error`` set and ``median_ms`` None.
    """

    median_ms: float | None
    source: str
    device: str
    p10_ms: float | None = None
    p90_ms: float | None = None
    iqr_ms: float | None = None
    runs: int = 0
    capped: bool = False
    error: str | None = None
    arch_id: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    #: distribution-free 95 % confidence interval of the median (order statistics of the runs)
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    #: interference guard: True when the device stayed busy (the canary ran slow) and the figure is
    #: not the device's quiet latency; ``canary_slowdown`` is the canary's time over its quiet
    #: baseline (~1.0 when clean; None when measured without the guard, or predicted)
    disturbed: bool = False
    canary_slowdown: float | None = None
    discarded_runs: int = 0  # runs timed in disturbed windows and left out of a clean figure
    waited_s: float = 0.0  # time spent waiting for the device to calm down
    interference: str | None = None  # why the result is disturbed, one line

    @property
    def guarded(self) -> bool:
        """Measured with the interference guard (a canary was timed alongside)."""
        return self.canary_slowdown is not None

    @property
    def clean(self) -> bool:
        """A usable figure: no error and not disturbed (a prediction is clean by this definition)."""
        return self.ok and not self.disturbed

    @property
    def ok(self) -> bool:
        return self.error is None and self.median_ms is not None

    @property
    def rel_iqr(self) -> float | None:
        """Interquartile range over the median: the spread of the timed runs."""
        if self.iqr_ms is None or not self.median_ms:
            return None
        return self.iqr_ms / self.median_ms

    @property
    def rel_ci(self) -> float | None:
        """Half-width of the median's 95 % confidence interval over the median: how precisely
        this window pinned the median (`rel_iqr` is the spread of the runs themselves)."""
        if self.ci_low_ms is None or self.ci_high_ms is None or not self.median_ms:
            return None
        return (self.ci_high_ms - self.ci_low_ms) / 2 / self.median_ms

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencyResult":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def describe(self) -> str:
        """One line a human can read."""
        ctx = self.context
        res = ctx.get("resolution", "?")
        hw = res if isinstance(res, str) and "x" in res else f"{res}x{res}"
        shape = f"{ctx.get('batch', '?')}x{hw}"
        where = f"{self.device}, {ctx.get('precision', 'fp32')}, batch x res {shape}"
        if ctx.get("deploy"):
            where += ", BN folded"
        if ctx.get("runtime", "pytorch") not in ("pytorch", "eager"):
            version = f" {ctx['runtime_version']}" if ctx.get("runtime_version") else ""
            where += f", {ctx['runtime']}{version} engine" if self.source == "predicted" else f", {ctx['runtime']}{version}"
        if not self.ok:
            return f"{self.arch_id or 'model'}: {self.source} latency failed on {where}: {self.error}"
        if self.source == "predicted":
            return f"{self.arch_id or 'model'}: {self.median_ms:.3f} ms predicted for {where} (roofline model, not measured)"
        spread = f"p10-p90 {self.p10_ms:.3f}-{self.p90_ms:.3f} ms, IQR {100 * (self.rel_iqr or 0):.1f}%"
        if self.ci_low_ms is not None and self.ci_high_ms is not None:
            spread += f", median 95% CI {self.ci_low_ms:.3f}-{self.ci_high_ms:.3f} ms"
        cap = ", time cap hit before the spread settled" if self.capped else ""
        cached = ", from cache" if ctx.get("cached") else ""
        guard = ""
        if self.disturbed:
            guard = f"; DISTURBED: {self.interference or 'the device was busy'}; not a quiet figure"
        elif self.canary_slowdown is not None:
            guard = f", canary {self.canary_slowdown:.2f}x quiet"
            if self.discarded_runs:
                guard += f", {self.discarded_runs} runs timed while busy left out"
            if self.waited_s:
                guard += f", waited {self.waited_s:.1f} s for quiet"
        return (f"{self.arch_id or 'model'}: {self.median_ms:.3f} ms measured median on {where} "
                f"({self.runs} runs, {spread}{cap}{cached}{guard})")
