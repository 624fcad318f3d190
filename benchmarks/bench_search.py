"""Search strategies at equal wall-clock time: hypervolume against random, and time to beat the best baseline.

    python benchmarks/bench_search.py [--seconds 600] [--seeds 3 | --seed-list 0,2] [--proxy train|zero-cost]
        [--data ../shared/data/cifar10-jpg.tar.gz] [--proxy-epochs 4] [--budget 5] [--latency predicted:1080ti]
        [--strategies random,tpe,nsga2,halving,evolution,budget,hvi,default] [--results FILE] [--runs DIR]
    python benchmarks/bench_search.py --report-only --results FILE

With ``--results FILE`` every finished (strategy, seed) run is appended to FILE as one JSON line
(its feasible records and timings), a rerun skips the runs FILE already holds, and the table is
computed from everything in FILE. So several processes can share one benchmark (give each a part of
``--strategies`` or ``--seed-list``, the same ``--results`` and ``--runs``), and a killed run loses only
the run in progress.

Every strategy gets the same wall-clock time per seed (``--timeout``, with no trial cap), on the
same data, proxy and latency (predicted for a published GPU profile: deterministic). Strategies:
``random``, ``tpe``, ``nsga2`` (Optuna's samplers), ``budget`` (random proposals steered to the
budget edge by the latency predictor), ``evolution`` (seed-aware one-field mutations that fit the budget),
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
import fcntl
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from nas.search import run_search
from nas.search.results import hypervolume, trial_records, unit_scale
from nas.search.settings import SearchSettings

optuna.logging.set_verbosity(optuna.logging.WARNING)

STRATEGIES = {  # name -> (sampler, fidelity)
    "random": ("random", "median"), "tpe": ("tpe", "median"), "nsga2": ("nsga2", "median"),
    "budget": ("budget", "median"), "evolution": ("evolution", "median"), "halving": ("evolution", "halving"),
    "hvi": ("hvi", "median"),
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
    everything = [r for recs in runs.values() for r in recs]
    if not everything:
        return {key: 0.0 for key in runs}
    point = unit_scale(everything, ("accuracy", "latency_ms", "cio"), (1, -1, -1))
    return {key: hypervolume([point(r) for r in recs], [1.1, 1.1, 1.1]) for key, recs in runs.items()}


def _seed_list(text: str) -> list[int]:
    """``0,2`` is seeds 0 and 2."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; expected seeds separated by commas (0,2)")
    return seeds


def _load(path: Path | None) -> dict[tuple[str, int], dict[str, Any]]:
    """The runs a results file holds, by (strategy, seed); the last line of a run wins."""
    if path is None or not path.exists():
        return {}
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            run = json.loads(line)
            key = (str(run["strategy"]), int(run["seed"]))
            if not isinstance(run["records"], list) or not isinstance(run["candidates"], int) or "dominated_s" not in run:
                raise TypeError
        except (ValueError, KeyError, TypeError):
            print(f"bench_search: {path}:{n} is not a run this benchmark wrote; expected one JSON object per line "
                  "with strategy, seed, candidates, dominated_s and records", file=sys.stderr)
            raise SystemExit(2) from None
        out[key] = run
    return out


def _append(path: Path, run: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # processes sharing one benchmark append whole lines
        f.write(json.dumps(run) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _report(runs: dict[tuple[str, int], dict[str, Any]]) -> None:
    names = [n for n in STRATEGIES if any(k[0] == n for k in runs)]
    seeds = sorted({k[1] for k in runs if k[0] == "random"})
    if not seeds:
        print("  (no random run yet: nothing to compare with)")
        return
    hv = _normalised_hv({k: r["records"] for k, r in runs.items()})
    print("\n  hypervolume / random's (per seed) | mean | seconds to dominate the best fitting baseline (per seed)"
          " | candidates (per seed)")
    for name in names:
        got = [s for s in seeds if (name, s) in runs]
        ratios = [hv[(name, s)] / hv[("random", s)] if hv[("random", s)] else float("inf") for s in got]
        times = ["-" if runs[(name, s)]["dominated_s"] is None else f"{runs[(name, s)]['dominated_s']:.0f}" for s in got]
        counts = [str(runs[(name, s)]["candidates"]) for s in got]
        print(f"  {name:<9} {' '.join(f'{r:5.2f}' for r in ratios)} | {statistics.mean(ratios):5.2f} | "
              f"{' '.join(times)} | {' '.join(counts)}" + ("" if len(got) == len(seeds) else
                                                          f"  (seeds {got} of {seeds})"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600.0, help="wall-clock time per strategy and seed")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    p.add_argument("--seed-list", type=_seed_list, help="these seeds instead (0,2): to split a benchmark")
    p.add_argument("--proxy", default="train", choices=("train", "zero-cost"))
    p.add_argument("--proxy-epochs", type=float, default=4.0)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"))
    p.add_argument("--device", default="auto")
    p.add_argument("--budget", type=float, default=5.0, help="ms; on a 1080 Ti HarDNet68/68DS fit 5 ms, HarDNet85 not")
    p.add_argument("--latency", default="predicted:1080ti")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--results", type=Path, help="append each finished run here (JSON lines) and skip the runs it holds")
    p.add_argument("--runs", type=Path, help="folder for the studies and the baseline cache (default: a temporary one)")
    p.add_argument("--report-only", action="store_true", help="print the table of --results; run nothing")
    p.add_argument("--baselines-only", action="store_true",
                   help="evaluate the baselines of --seeds into the --runs cache and stop (to split a benchmark)")
    args = p.parse_args()
    if args.seeds < 1:
        p.error(f"--seeds: {args.seeds} is not allowed; expected a positive number of seeds")
    args.seeds = args.seed_list or list(range(args.seeds))
    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    bad = [n for n in names if n not in STRATEGIES]
    if bad or not names:
        p.error(f"strategies: {args.strategies!r} is not allowed; expected any of {', '.join(STRATEGIES)}")
    if args.report_only:
        if args.results is None or not args.results.exists():
            p.error(f"--report-only needs an existing --results file; got {args.results}")
        _report(_load(args.results))
        return
    if args.results is None and "random" not in names:
        p.error(f"strategies: {args.strategies!r} has no random run to compare with; add random or pass --results")
    done = _load(args.results)
    seed_text = ",".join(map(str, args.seeds))
    print(f"== search strategies at {args.seconds:g} s each, seeds {seed_text}, proxy {args.proxy} "
          f"({args.proxy_epochs:g} epochs on {Path(args.data).name})" if args.proxy == "train" else
          f"== search strategies at {args.seconds:g} s each, seeds {seed_text}, proxy zero-cost naswot on "
          f"{Path(args.data).name}", f", latency {args.latency}, budget {args.budget:g} ms; default = "
          f"{'+'.join(STRATEGIES['default'])}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        folder = args.runs.resolve() if args.runs else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["HARDNAS_RUNS"] = str(folder)  # studies, caches and outputs stay out of the user's runs/
        storage = f"sqlite:///{folder / f'bench-{os.getpid()}.db'}"  # one per process: SQLite locks
        runs = dict(done)
        for seed in args.seeds:
            todo = [] if args.baselines_only else [n for n in names if (n, seed) not in done]
            if not todo and not args.baselines_only:
                continue
            base = _warm_baselines(args, storage, seed)
            fitting = [b for b in base if b["feasible"] and b.get("accuracy") is not None]
            best = max(fitting, key=lambda b: b["accuracy"]) if fitting else None
            print(f"  seed {seed}: best fitting baseline "
                  + (f"{best['seed']} {best['accuracy']:.3f} at {best['latency_ms']:.2f} ms" if best else "none"),
                  flush=True)
            for name in todo:
                sampler, fidelity = STRATEGIES[name]
                study_name = f"{name}-{seed}-{int(time.time())}"  # a rerun after a kill starts its run afresh
                start = time.time()
                study = run_search(_settings(args, seed, sampler, fidelity, timeout_s=args.seconds), storage, study_name)
                recs = trial_records(study)
                for r, t in zip(recs, study.get_trials(deepcopy=False)):
                    r["completed"] = t.datetime_complete.timestamp() if t.datetime_complete else float("inf")
                feasible = [{k: r[k] for k in ("arch_id", "accuracy", "latency_ms", "cio")} | {"at_s": r["completed"] - start}
                            for r in recs if r["feasible"] and r.get("accuracy") is not None]
                run = {"strategy": name, "seed": seed, "seconds": args.seconds, "proxy": args.proxy,
                       "proxy_epochs": args.proxy_epochs, "data": Path(args.data).name, "latency": args.latency,
                       "budget_ms": args.budget, "sampler": sampler, "fidelity": fidelity,
                       "candidates": sum(1 for r in recs if r["state"] in ("COMPLETE", "PRUNED", "FAIL")),
                       "dominated_s": _time_to_dominate(recs, best, start), "records": feasible,
                       "best_baseline": best and {k: best[k] for k in ("seed", "accuracy", "latency_ms")},
                       "wall_s": time.time() - start, "load_average": os.getloadavg()[0]}
                runs[(name, seed)] = run
                if args.results is not None:
                    _append(args.results, run)
                d = run["dominated_s"]
                print(f"    {name:<9} {run['candidates']:4d} candidates, {len(feasible):3d} feasible, "
                      f"beats the best baseline after {'-' if d is None else f'{d:.0f} s'}", flush=True)
        if not args.baselines_only:
            _report(runs)


if __name__ == "__main__":
    main()
