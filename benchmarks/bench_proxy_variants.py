"""Proxy schedules side by side against one kept fidelity study's reference (only the proxies are trained).

    python benchmarks/bench_proxy_variants.py [--out benchmarks/results/fidelity-hybrid-cifar10.json]
        [--variants default,seed1,seed2,eval10k,batch64] [--threads 1] [--report-only]

The study file's reference results are reused; each variant's proxy results go into the same file
(kept per proxy budget, like `python -m nas.proxy fidelity`), so a rerun trains nothing it has and
several runners may share the work. Printed per variant: Kendall tau against the reference with a
bootstrap 95 % interval on all networks, tau on the even-numbered networks (the half a choice
between variants may look at) and on the odd-numbered ones (the half it must not), and the proxy's
total wall seconds, and tau of the negated last training loss (a continuous score). ``seed1`` is the default with another seed: its tau against the default is the
proxy's own noise floor.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
from pathlib import Path
from typing import Callable

import torch

from nas.data import load_dataset
from nas.proxy import ProxyBudget
from nas.proxy.fidelity import FidelityCache, StudySettings, run_study, study_networks
from nas.proxy.fidelity_report import fidelity_report
from nas.space import load_space
from nas.stats import bootstrap_tau, kendall_tau, tau_ceiling

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
DEFAULT_STUDY = ROOT / "benchmarks" / "results" / "fidelity-hybrid-cifar10.json"

VARIANTS: dict[str, dict] = {
    "default": {},
    "seed1": {"seed": 1},
    "seed2": {"seed": 2},
    "eval10k": {"max_eval_samples": None},
    "batch64": {"batch_size": 64},
    "batch32": {"batch_size": 32, "lr": 0.05},
    "batch64-eval10k": {"batch_size": 64, "max_eval_samples": None},
    "img20k-1ep": {"max_train_samples": 20000, "epochs": 1.0},
    "img10k-2ep": {"max_train_samples": 10000, "epochs": 2.0},
    "img20k-1ep-seed1": {"max_train_samples": 20000, "epochs": 1.0, "seed": 1},
    "img20k-1ep-seed2": {"max_train_samples": 20000, "epochs": 1.0, "seed": 2},
    "reference-seed1": {"epochs": 10.0, "max_train_samples": None, "max_eval_samples": None, "seed": 1},
}
"""Changes to the default `ProxyBudget`; each costs about as much as the default (same images seen), except
``reference-seed1``: the reference schedule with another seed (its agreement with the reference is the
ceiling any proxy is judged against)."""


def _variant_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; expected names from {', '.join(VARIANTS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(DEFAULT_STUDY), help="the kept study (default: the CIFAR-10 one)")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--variants", type=_variant_list, default=list(VARIANTS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cheapest", type=int, default=None, metavar="N",
                   help="train only the N networks with the fewest trained MACs (the report covers what is there)")
    p.add_argument("--report-only", action="store_true", help="train nothing; report what the file holds")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = Path(args.out)
    if not path.is_file():
        print(f"bench_proxy_variants: --out {str(path)!r} does not exist; expected a study file "
              "`python -m nas.proxy fidelity` wrote", file=sys.stderr)
        return 2
    kept = json.loads(path.read_text())["settings"]
    space, ds = load_space(kept["space"]), load_dataset(args.data, seed=kept["seed"])
    reference = ProxyBudget(**kept["reference"])
    base = ProxyBudget(width_mult=reference.width_mult, batch_size=reference.batch_size, seed=reference.seed)
    settings = StudySettings.make(space, ds, reference, seed=kept["seed"], scale=kept["scale"],
                                  max_macs=kept["max_macs"], device="cpu")
    cache = FidelityCache(path, settings)  # refuses a file whose settings differ (another space or data)
    networks = study_networks(space, len(cache.networks), seed=kept["seed"], scale=kept["scale"],
                              max_macs=kept["max_macs"], ds=ds, width_mult=base.width_mult)
    order = {cfg.name: i for i, cfg in enumerate(networks)}
    if args.cheapest is not None:
        networks = sorted(networks, key=lambda c: cache.networks[c.name]["macs"])[:max(args.cheapest, 0)]
    budgets = {v: dataclasses.replace(base, **VARIANTS[v]) for v in args.variants}
    if not args.report_only:
        for v, budget in budgets.items():
            print(f"== {v}: {budget}", flush=True)
            run_study(cache, networks, ds, budget, log=lambda line: print(line, flush=True),
                      label=f"seed {budget.seed}" if v.startswith("reference") else "proxy")
    cache.reload()
    report_of = functools.lru_cache(maxsize=None)(lambda budget: fidelity_report(cache, budget, "cpu"))
    default = {r["name"]: r["proxy"] for r in report_of(base)["rows"]}
    print(f"\n{'variant':<16} {'n':>3}  {'tau [95 % interval]':<22} {'even half':>9} {'odd half':>9}"
          f" {'tau vs default':>14} {'-train loss':>11} {'proxy s':>8}")
    for v, budget in budgets.items():
        report = report_of(budget)  # the networks both trained, tau with its interval
        rows = {r["name"]: r for r in report["rows"]}
        if len(rows) < 4:
            print(f"{v:<16} {len(rows):>3}  (too few networks yet)")
            continue
        tau, loss = report["tau"]["proxy"], report["tau"]["proxy_train_loss"]
        half = {k: [r for n, r in rows.items() if order[n] % 2 == k] for k in (0, 1)}
        halves = [kendall_tau([r["proxy"] for r in half[k]], [r["reference"] for r in half[k]]) for k in (0, 1)]
        shared = [n for n in rows if n in default]
        vs = kendall_tau([rows[n]["proxy"] for n in shared], [default[n] for n in shared]) if v != "default" else 1.0
        wall = sum(r["proxy_wall_s"] or 0.0 for r in rows.values())
        print(f"{v:<16} {len(rows):>3}  {tau['tau']:.3f} [{tau['low']:.2f}, {tau['high']:.2f}]     "
              f"{halves[0]:>9.3f} {halves[1]:>9.3f} {vs:>14.3f} {loss['tau']:>11.3f} {wall:>8.0f}")
    _print_ceilings(report_of, budgets)
    return 0


def reference_agreement_floor(tau: float, agreement: float, seeds: int = 1) -> float:
    """The reference's own seed agreement implied when a ``seeds``-seed mean (single seeds agreeing at
    ``agreement``) reaches ``tau`` against it and all of the shortfall is the reference's noise; a lower bound,
    since a proxy's bias lowers tau too (`tau_ceiling` solved for ``reference_agreement``)."""
    full = math.sin(math.pi * tau_ceiling(agreement, seeds=seeds) / 2) ** 2
    r = min(math.sin(math.pi * max(tau, 0.0) / 2) ** 2 / full, 1.0) if full > 0 else 0.0
    return 2 / math.pi * math.asin(r)


def _seed_twin(name: str) -> str | None:
    """The variant ``name`` repeats with another seed (``seed1`` -> ``default``, ``X-seed1`` -> ``X``)."""
    if name in ("seed1", "seed2"):
        return "default"
    if name == "reference-seed1":
        return "reference"
    base, _, seed = name.rpartition("-")
    return base if seed.startswith("seed") and base in VARIANTS else None


Reports = Callable[[ProxyBudget], dict]


def _print_ceilings(report_of: Reports, budgets: dict[str, ProxyBudget]) -> None:
    pairs = [(v, _seed_twin(v)) for v in budgets if _seed_twin(v)]
    if not pairs:
        return
    agreements: dict[str, tuple[float, int]] = {}
    for v, twin in pairs:
        rows = report_of(budgets[v])["rows"]
        a = {r["name"]: r["proxy"] for r in rows}
        if twin == "reference":
            b = {r["name"]: r["reference"] for r in rows}
        else:
            b = {r["name"]: r["proxy"] for r in report_of(dataclasses.replace(budgets[v], seed=0))["rows"]}
        shared = [n for n in a if n in b]
        if len(shared) >= 4:
            agreements[v] = (kendall_tau([a[n] for n in shared], [b[n] for n in shared]), len(shared))
    if not agreements:
        return
    print("\nseed agreement (the same schedule, another seed) and the expected tau it allows at most against a "
          "noiseless reference:")
    for v, (agree, n) in agreements.items():
        print(f"  {v:<16} vs {_seed_twin(v):<12} n={n:>3}  agreement {agree:.3f}  ceiling {tau_ceiling(agree):.3f}")
    _print_seed_means(report_of, budgets, agreements)
    if "reference-seed1" in budgets:
        _print_against_both_references(report_of, budgets)


def _print_seed_means(report_of: Reports, budgets: dict[str, ProxyBudget],
                      agreements: dict[str, tuple[float, int]]) -> None:
    """Each schedule's seeds averaged: tau against the reference beside the ceiling averaging promises. When the
    mean gains far less than its ceiling, the proxy's own noise is not what holds tau down."""
    groups: dict[str, list[str]] = {}
    for v in budgets:
        twin = _seed_twin(v)
        if twin and twin != "reference" and twin in budgets and v in agreements:
            groups.setdefault(twin, [twin]).append(v)
    lines = []
    for base, members in groups.items():
        scores = [{r["name"]: r["proxy"] for r in report_of(budgets[v])["rows"]} for v in members]
        reference = {r["name"]: r["reference"] for r in report_of(budgets[base])["rows"]}
        names = [n for n in reference if all(n in s for s in scores)]
        if len(names) < 4:
            continue
        mean = [sum(s[n] for s in scores) / len(scores) for n in names]
        tau, low, high = bootstrap_tau(mean, [reference[n] for n in names])
        agree = sum(agreements[v][0] for v in members[1:]) / (len(members) - 1)
        lines.append(f"  {base:<16} {len(members)} seeds n={len(names):>3}  tau {tau:.3f} [{low:.2f}, {high:.2f}]"
                     f"  ceiling {tau_ceiling(agree):.3f} -> {tau_ceiling(agree, seeds=len(members)):.3f}"
                     f"  reference agreement >= {reference_agreement_floor(tau, agree, len(members)):.2f}")
    if lines:
        print("\nseeds averaged (cost times the seeds): tau against the reference, and the ceiling of one seed -> "
              "of the mean against a noiseless reference, and the reference's own seed agreement that tau implies at least:")
        print("\n".join(lines))


def _print_against_both_references(report_of: Reports, budgets: dict[str, ProxyBudget]) -> None:
    """On the networks the reference trained twice: its own agreement beside each variant's tau against either
    seed of it and against their mean (the same networks for every line, so the figures compare)."""
    twice = {r["name"]: (r["reference"], r["proxy"]) for r in report_of(budgets["reference-seed1"])["rows"]}
    if len(twice) < 4:
        return
    names = sorted(twice)
    first, second = [twice[n][0] for n in names], [twice[n][1] for n in names]
    print(f"\non the {len(names)} networks the reference trained with two seeds: the reference agrees with itself at "
          f"{kendall_tau(first, second):.3f}; each variant against seed 0 / seed 1 / their mean:")
    for v, budget in budgets.items():
        if v == "reference-seed1":
            continue
        score = {r["name"]: r["proxy"] for r in report_of(budget)["rows"]}
        if any(n not in score for n in names):
            continue
        x = [score[n] for n in names]
        print(f"  {v:<16} {kendall_tau(x, first):.3f} / {kendall_tau(x, second):.3f} / "
              f"{kendall_tau(x, [(a + b) / 2 for a, b in zip(first, second)]):.3f}")


if __name__ == "__main__":
    sys.exit(main())
