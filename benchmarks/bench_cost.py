"""Analytic cost model vs building the model and running thop, side by side in one run.

    python benchmarks/bench_cost.py [--configs 40] [--resolution 224]

Prints configs/s for `nas.analyze` (fresh configs, nothing cached) and for build + thop.profile +
CIO forward hooks over the same configs, checks params and CIO agree exactly, and prints the
ratio. Then the build time of every canonical model.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import nas  # noqa: E402
from nas.cost import analyze, thop_profile  # noqa: E402
from nas.sampling import random_config  # noqa: E402
from helpers import hook_counts  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", type=int, default=40)
    p.add_argument("--resolution", type=int, default=224)
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    cfgs = [random_config(s, max_width=128, max_depth=16).replace(name=f"r{s}") for s in range(args.configs)]
    cfgs += [nas.get_config(n) for n in nas.list_models()]
    res = [max(c.reduction, args.resolution // c.reduction * c.reduction) for c in cfgs]

    # both sides are timed with the garbage collector paused (as timeit does): otherwise one
    # full collection of the heap torch's import built (~0.1 s) lands on whichever side it hits
    analyze.cache_clear()
    gc.collect()
    gc.disable()
    t0 = time.perf_counter()
    reports = [analyze(c, r) for c, r in zip(cfgs, res)]
    t_analytic = time.perf_counter() - t0

    measured, t_build_thop, t_hooks = [], 0.0, 0.0
    for c, r in zip(cfgs, res):
        t0 = time.perf_counter()
        model = nas.build_model(c)
        macs, params = thop_profile(model, r)
        t1 = time.perf_counter()
        cio = sum(v["cio"] for v in hook_counts(model, torch.zeros(1, c.in_channels, r, r)).values())
        t_build_thop += t1 - t0
        t_hooks += time.perf_counter() - t1
        measured.append((params, macs, cio))
    t_thop = t_build_thop + t_hooks
    gc.enable()

    agree = all((rep.params, rep.thop_macs, rep.cio) == m for rep, m in zip(reports, measured))
    n = len(cfgs)
    print(f"configs: {n} ({args.configs} random + {n - args.configs} canonical) at ~{args.resolution}px, "
          f"torch threads {torch.get_num_threads()}")
    print(f"analytic nas.analyze      : {n / t_analytic:10.1f} configs/s  ({t_analytic * 1e3 / n:.2f} ms each)")
    print(f"build + thop + CIO hooks  : {n / t_thop:10.2f} configs/s  ({t_thop * 1e3 / n:.0f} ms each)")
    print(f"speed-up analytic / thop  : {t_thop / t_analytic:10.0f}x   params, thop MACs and CIO identical: {agree}")
    print(f"build + thop alone (no CIO): {n / t_build_thop:9.2f} configs/s  ({t_build_thop * 1e3 / n:.0f} ms each), "
          f"speed-up {t_build_thop / t_analytic:.0f}x (thop gives no CIO: the hooks are a second forward pass)")

    print("\nbuild time of canonical models (median of 3, ms):")
    for name in nas.list_models():
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            nas.create_model(name)
            times.append((time.perf_counter() - t0) * 1e3)
        print(f"  {name:<12} {statistics.median(times):8.1f}")


if __name__ == "__main__":
    main()
