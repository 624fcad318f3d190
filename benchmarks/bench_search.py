"""Search strategies at equal wall-clock time: hypervolume against random, and time to beat the best baseline.

    python benchmarks/bench_search.py [--seconds 600] [--seeds 3] [--proxy train|zero-cost]
        [--data ../shared/data/cifar10-jpg.tar.gz] [--proxy-epochs 4] [--budget 5] [--latency predicted:1080ti]
        [--strategies random,tpe,nsga2,halving,evolution,budget,default]

Every strategy gets the same wall-clock time per seed (``--timeout``, with no trial cap), on the
same data, proxy and latency (predicted for a published GPU profile: deterministic). Strategies:
``random``, ``tpe``, ``nsga2`` (Optuna's samplers), ``budget`` (random proposals steered to the
budget edge by the latency predictor), ``evolution`` (seed-aware one-field mutations, budget-steered),
``halving`` (evolution with successive halving on the per-epoch proxy reports; only differs with
``--proxy train``), and ``default`` (whatever ``python -m nas.search`` uses).

The canonical baselines are evaluated once before any timed run (their proxy figures are cached by
arch_id + proxy + data + seed, as in a real search), so no strategy pays for them.

Printed per seed: the hypervolume of the feasible front (accuracy up, latency down, CIO down,
normalised with the min/max over every run together, reference 1.1) relative to random's, and the
seconds until the front first holds an architecture that dominates the best canonical config that
fits the budget (higher proxy accuracy at no more latency); "-" if it never did.
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
from nas.search.results import hypervolume, trial_records
from nas.search.settings import SearchSettings

optuna.logging.set_verbosity(optuna.logging.WARNING)

STRATEGIES = {  # name -> (sampler, fidelity)
    "random": ("random", "median"), "tpe": ("tpe", "median"), "nsga2": ("nsga2", "median"),
    "budget": ("budget", "median"), "evolution": ("evolution", "median"), "halving": ("evolution", "halving"),
    "default": (SearchSettings().sampler, SearchSettings().fidelity),
}


def _settings(args: argparse.Namespace, seed: int, sampler: str = "random", fidelity: str = "median",
              timeout_s: float | None = None, trials: int = 100_000) -> SearchSettings:
    return SearchSettings(budget_ms=args.budget, trials=trials, timeout_s=timeout_s, seed=seed, sampler=sampler,
                          fidelity=fidelity, latency=args.latency, proxy=args.proxy, proxy_epochs=args.proxy_epochs,
                          data=args.data, device=args.device)


def _warm_baselines(args: argparse.Namespace, storage: str, seed: int) -> list[dict[str, Any]]:
    """Evaluate the canonical configs once (cached for every timed run); their records."""
    study = run_search(_settings(args, seed, trials=4), storage, f"baselines-{seed}")
    return [r for r in trial_records(study) if r.get("seed")]


def _time_to_dominate(recs: list[dict[str, Any]], best: dict[str, Any] | None, start: float) -> float | None:
    if best is None:
        return None
    times = [r["completed"] - start for r in recs if r["feasible"] and not r.get("seed")
             and r.get("accuracy") is not None and r["accuracy"] > best["accuracy"]
             and r["latency_ms"] <= best["latency_ms"]]
    return min(times) if times else None


def _normalised_hv(runs: dict[tuple[str, int], list[dict[str, Any]]]) -> dict[tuple[str, int], float]:
    keys = ("accuracy", "latency_ms", "cio")
    everything = [r for recs in runs.values() for r in recs]
    lo = {k: min(r[k] for r in everything) for k in keys}
    hi = {k: max(r[k] for r in everything) for k in keys}
    span = {k: (hi[k] - lo[k]) or 1.0 for k in keys}

    def point(r: dict[str, Any]) -> list[float]:
        return [(hi["accuracy"] - r["accuracy"]) / span["accuracy"], (r["latency_ms"] - lo["latency_ms"]) / span["latency_ms"],
                (r["cio"] - lo["cio"]) / span["cio"]]

    return {key: hypervolume([point(r) for r in recs], [1.1, 1.1, 1.1]) for key, recs in runs.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600.0, help="wall-clock time per strategy and seed")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--proxy", default="train", choices=("train", "zero-cost"))
    p.add_argument("--proxy-epochs", type=float, default=4.0)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"))
    p.add_argument("--device", default="auto")
    p.add_argument("--budget", type=float, default=5.0, help="ms; on a 1080 Ti HarDNet68/68DS fit 5 ms, HarDNet85 not")
    p.add_argument("--latency", default="predicted:1080ti")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    args = p.parse_args()
    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    bad = [n for n in names if n not in STRATEGIES]
    if bad or "random" not in names:
        p.error(f"strategies: {args.strategies!r} is not allowed; expected random and any of {', '.join(STRATEGIES)}")
    print(f"== search strategies at {args.seconds:g} s each, seeds 0..{args.seeds - 1}, proxy {args.proxy} "
          f"({args.proxy_epochs:g} epochs on {Path(args.data).name})" if args.proxy == "train" else
          f"== search strategies at {args.seconds:g} s each, seeds 0..{args.seeds - 1}, proxy zero-cost naswot on "
          f"{Path(args.data).name}", f", latency {args.latency}, budget {args.budget:g} ms; default = "
          f"{'+'.join(STRATEGIES['default'])}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        os.environ["HARDNAS_RUNS"] = tmp  # studies, caches and outputs stay out of the user's runs/
        storage = f"sqlite:///{Path(tmp) / 'bench.db'}"
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        dominated: dict[tuple[str, int], float | None] = {}
        counts: dict[tuple[str, int], int] = {}
        for seed in range(args.seeds):
            base = _warm_baselines(args, storage, seed)
            fitting = [b for b in base if b["feasible"] and b.get("accuracy") is not None]
            best = max(fitting, key=lambda b: b["accuracy"]) if fitting else None
            print(f"  seed {seed}: best fitting baseline "
                  + (f"{best['seed']} {best['accuracy']:.3f} at {best['latency_ms']:.2f} ms" if best else "none"),
                  flush=True)
            for name in names:
                sampler, fidelity = STRATEGIES[name]
                start = time.time()
                study = run_search(_settings(args, seed, sampler, fidelity, timeout_s=args.seconds), storage,
                                   f"{name}-{seed}")
                recs = trial_records(study)
                for r, t in zip(recs, study.get_trials(deepcopy=False)):
                    r["completed"] = t.datetime_complete.timestamp() if t.datetime_complete else float("inf")
                runs[(name, seed)] = [r for r in recs if r["feasible"] and r.get("accuracy") is not None]
                dominated[(name, seed)] = _time_to_dominate(recs, best, start)
                counts[(name, seed)] = sum(1 for r in recs if r["state"] in ("COMPLETE", "PRUNED", "FAIL"))
                d = dominated[(name, seed)]
                print(f"    {name:<9} {counts[(name, seed)]:4d} candidates, {len(runs[(name, seed)]):3d} feasible, "
                      f"beats the best baseline after {'-' if d is None else f'{d:.0f} s'}", flush=True)
        hv = _normalised_hv(runs)
        print("\n  hypervolume / random's (per seed) | mean | seconds to dominate the best fitting baseline (per seed)")
        for name in names:
            ratios = [hv[(name, s)] / hv[("random", s)] if hv[("random", s)] else float("inf") for s in range(args.seeds)]
            times = ["-" if dominated[(name, s)] is None else f"{dominated[(name, s)]:.0f}" for s in range(args.seeds)]
            print(f"  {name:<9} {' '.join(f'{r:5.2f}' for r in ratios)} | {statistics.mean(ratios):5.2f} | "
                  f"{' '.join(times)}")


if __name__ == "__main__":
    main()
