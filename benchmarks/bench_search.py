"""Search quality, baselines and throughput, measured in one run.

    python benchmarks/bench_search.py [--trials 20] [--seeds 3] [--proxy zero-cost|train]
                                      [--throughput-trials 10] [--skip-throughput]

1. Quality: hypervolume of the feasible front after N evaluated trials, the project's sampler
   (TPE, constrained, multivariate) vs random sampling of the same space with the same N, for
   several seeds. Objectives accuracy-proxy up, latency down, CIO down; the three are normalised
   with the min/max over every run together and the reference point sits at 1.1 in each. Latency
   is predicted for a GTX 1080 Ti so the comparison is deterministic and cheap; the accuracy
   objective is the zero-cost proxy by default (minutes) or the trained proxy (`--proxy train`,
   about an hour on 2 cores).
2. Baselines: for the default command (`--budget 30ms`, measured CPU latency, trained proxy), is
   there a front member that dominates (higher proxy accuracy at <= latency) the best canonical
   config that fits the budget? The same question at a budget where a canonical config fits.
3. Throughput of the default command: evaluated trials per hour, and the share of candidates the
   cheap gate rejects before anything is built or measured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from nas.search import run_search
from nas.search.results import hypervolume, pareto_front, trial_records
from nas.search.settings import SearchSettings

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _feasible(study: optuna.Study) -> list[dict[str, Any]]:
    return [r for r in trial_records(study) if r["feasible"] and r.get("accuracy") is not None]


def _normalised_hv(runs: dict[tuple[str, int], list[dict[str, Any]]]) -> dict[tuple[str, int], float]:
    everything = [r for recs in runs.values() for r in recs]
    keys = ("accuracy", "latency_ms", "cio")
    lo = {k: min(r[k] for r in everything) for k in keys}
    hi = {k: max(r[k] for r in everything) for k in keys}

    def point(r: dict[str, Any]) -> list[float]:
        span = {k: (hi[k] - lo[k]) or 1.0 for k in keys}
        return [(hi["accuracy"] - r["accuracy"]) / span["accuracy"],  # maximised: distance from the best
                (r["latency_ms"] - lo["latency_ms"]) / span["latency_ms"],
                (r["cio"] - lo["cio"]) / span["cio"]]

    return {key: hypervolume([point(r) for r in recs], [1.1, 1.1, 1.1]) for key, recs in runs.items()}


def quality(args: argparse.Namespace, storage: str) -> None:
    print(f"== 1. search quality: {args.sampler} vs random, {args.trials} evaluated trials, seeds 0..{args.seeds - 1}, "
          f"proxy {args.proxy}, latency predicted:1080ti, budget {args.quality_budget:g} ms")
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for seed in range(args.seeds):
        for sampler in (args.sampler, "random"):
            s = SearchSettings(budget_ms=args.quality_budget, trials=args.trials, seed=seed, sampler=sampler,
                               latency="predicted:1080ti", proxy=args.proxy, proxy_epochs=args.proxy_epochs)
            t0 = time.perf_counter()
            study = run_search(s, storage, f"quality-{sampler}-{seed}")
            runs[(sampler, seed)] = _feasible(study)
            print(f"  {sampler:<7} seed {seed}: {len(study.trials):3d} trials, {len(runs[(sampler, seed)]):3d} "
                  f"feasible, {time.perf_counter() - t0:6.1f} s", flush=True)
    hv = _normalised_hv(runs)
    ours = [hv[(args.sampler, s)] for s in range(args.seeds)]
    rand = [hv[("random", s)] for s in range(args.seeds)]
    for seed in range(args.seeds):
        print(f"  seed {seed}: hypervolume {args.sampler} {ours[seed]:.4f}  random {rand[seed]:.4f}  "
              f"ratio {ours[seed] / rand[seed]:.2f}")
    ratio = statistics.mean(ours) / statistics.mean(rand)
    wins = sum(o > r for o, r in zip(ours, rand))
    print(f"  mean hypervolume {args.sampler} {statistics.mean(ours):.4f} vs random {statistics.mean(rand):.4f} "
          f"-> ratio {ratio:.2f} (target >= 1.2); {args.sampler} ahead on {wins}/{args.seeds} seeds")


def _dominance(study: optuna.Study, budget_ms: float) -> None:
    recs = trial_records(study)
    base = [r for r in recs if r.get("seed") and r["feasible"] and r.get("accuracy") is not None]
    front = pareto_front(recs, objectives=("accuracy", "latency_ms"))
    print(f"  budget {budget_ms:g} ms: front of {len(front)} (accuracy, latency): "
          + ", ".join(f"{r['accuracy']:.3f}@{r['latency_ms']:.1f}ms" for r in front))
    if not base:
        names = sorted({r["seed"] for r in recs if r.get("seed")})
        print(f"    no canonical config fits {budget_ms:g} ms on this device ({', '.join(names)} measured or "
              f"predicted above it) -> nothing to dominate")
        return
    best = max(base, key=lambda r: r["accuracy"])
    better = [r for r in front if not r.get("seed") and r["accuracy"] > best["accuracy"]
              and r["latency_ms"] <= best["latency_ms"]]
    print(f"    best fitting canonical config: {best['seed']} accuracy {best['accuracy']:.3f} at "
          f"{best['latency_ms']:.1f} ms -> dominated by a searched architecture: {'YES' if better else 'NO'}"
          + (f" ({better[0]['arch_id']}: {better[0]['accuracy']:.3f} at {better[0]['latency_ms']:.1f} ms)"
             if better else ""))


def default_command(args: argparse.Namespace, storage: str) -> None:
    print(f"\n== 2./3. the default command (measured CPU latency, trained proxy on digits), "
          f"{args.throughput_trials} evaluated trials per budget")
    for budget in (30.0, args.fitting_budget):
        s = SearchSettings(budget_ms=budget, trials=args.throughput_trials)
        t0 = time.perf_counter()
        study = run_search(s, storage, f"default-{budget:g}ms")
        wall = time.perf_counter() - t0
        recs = trial_records(study)
        gate = sum(1 for r in recs if str(r.get("reason") or "").startswith("gate:"))
        over = sum(1 for r in recs if str(r.get("reason") or "").startswith("over budget"))
        evaluated = len(recs) - gate - over
        print(f"  budget {budget:g} ms: {len(recs)} candidates in {wall / 60:.1f} min: {gate} rejected by the gate "
              f"({gate / len(recs):.0%}), {over} measured over budget ({over / len(recs):.0%}), {evaluated} trained "
              f"-> {evaluated / wall * 3600:.0f} evaluated trials/hour, {len(recs) / wall * 3600:.0f} candidates/hour")
        _dominance(study, budget)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20, help="evaluated trials per quality run")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--sampler", default="tpe", help="the sampler compared against random (tpe or nsga2)")
    p.add_argument("--proxy", default="zero-cost", choices=("zero-cost", "train"))
    p.add_argument("--proxy-epochs", type=float, default=2.0, help="for --proxy train")
    p.add_argument("--quality-budget", type=float, default=5.0, help="ms on a 1080 Ti (HarDNet68 fits, HarDNet85 not)")
    p.add_argument("--throughput-trials", type=int, default=10)
    p.add_argument("--fitting-budget", type=float, default=40.0, help="a CPU budget where a canonical config fits")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        os.environ["HARDNAS_RUNS"] = tmp  # studies, caches and outputs stay out of the user's runs/
        storage = f"sqlite:///{Path(tmp) / 'bench.db'}"
        if not args.skip_quality:
            quality(args, storage)
        if not args.skip_throughput:
            default_command(args, storage)


if __name__ == "__main__":
    main()
