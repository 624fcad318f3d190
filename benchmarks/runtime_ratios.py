"""The runtime tables `bench_export.py --runtimes` and `bench_latency.py --runtimes` print: each runtime's
figures as ratios to eager, and each model's over a reference model per runtime. Prints, asserts nothing."""

from __future__ import annotations

import os
import statistics
from typing import Mapping, Sequence

from nas.resolution import format_resolution

__all__ = ["load_average", "print_model_ratios", "print_runtime_table", "spread"]


def spread(xs: Sequence[float]) -> tuple[float, float, float]:
    """(median, p10, p90) of ``xs``, within its range (a few rounds never extrapolate past the extremes)."""
    q = statistics.quantiles(xs, n=10, method="inclusive") if len(xs) > 1 else [xs[0]] * 9
    return statistics.median(xs), q[0], q[-1]


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def print_runtime_table(times: Mapping[str, Sequence[float]], base: str = "eager",
                        extra: Mapping[str, str] | None = None, extra_title: str = "") -> dict[str, float]:
    """One line per runtime: median, p10, p90 (ms), the median of its paired (same-round) ratios to ``base``
    with their p10-p90, the ratio of medians and of p10s, and ``extra`` text; returns the medians."""
    ref = times[base]
    print(f"  {'runtime':<28}{'median ms':>10}{'p10':>9}{'p90':>9}{'/ ' + base:>9}{'(p10-p90)':>16}"
          f"  ratio of medians, of p10s{'; ' + extra_title if extra_title else ''}")
    medians = {}
    for n, ts in times.items():
        med, p10, p90 = spread(ts)
        pairs = [a / b for a, b in zip(ts, ref)]
        pr, pr10, pr90 = spread(pairs) if pairs else (float("nan"),) * 3
        medians[n] = med
        tail = f", {extra[n]}" if extra and n in extra else ""
        print(f"  {n:<28}{med:10.2f}{p10:9.2f}{p90:9.2f}{pr:9.3f}   ({pr10:.3f}-{pr90:.3f})  "
              f"{med / spread(ref)[0]:.3f}, {p10 / spread(ref)[1]:.3f}{tail}")
    return medians


def print_model_ratios(medians: Mapping[tuple[str, str], Mapping[str, float]], sizes: Sequence[str],
                       models: Sequence[str]) -> None:
    """Each model's median latency over the last model's, per runtime, at each size (same run)."""
    if len(models) < 2:
        return
    ref = models[-1]
    print(f"\n== each model's median latency over {ref}'s, per runtime (same size, same run)")
    for size in sizes:
        for name in models[:-1]:
            a, b = medians.get((size, name), {}), medians.get((size, ref), {})
            cells = ", ".join(f"{n} {a[n] / b[n]:.2f}" for n in a if n in b)
            print(f"  {format_resolution(size)}  {name} / {ref}: {cells or 'no runtime ran both'}")
