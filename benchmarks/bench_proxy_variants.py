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
import json
import sys
from pathlib import Path

import torch

from nas.data import load_dataset
from nas.proxy import ProxyBudget
from nas.proxy.fidelity import FidelityCache, StudySettings, iter_rows, proxy_key, run_study, study_networks
from nas.space import load_space
from nas.stats import bootstrap_tau, kendall_tau

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
}
"""Changes to the default `ProxyBudget`; each costs about as much as the default (same images seen)."""


def _variant_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; expected names from {', '.join(VARIANTS)}")
    return names


def accuracies(cache: FidelityCache, budget: ProxyBudget) -> dict[str, tuple[float, float, float]]:
    """name -> (reference accuracy, proxy accuracy, proxy's last training loss) of every network both finished."""
    out = {}
    for name, entry, px in iter_rows(cache, budget, "cpu"):
        ref = entry["reference"]
        if ref.get("status") == "ok" and px.get("status") == "ok":
            out[name] = (ref["accuracy"], px["accuracy"], px["loss_curve"][-1])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(DEFAULT_STUDY), help="the kept study (default: the CIFAR-10 one)")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--variants", type=_variant_list, default=list(VARIANTS))
    p.add_argument("--threads", type=int, default=1)
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
    budgets = {v: dataclasses.replace(base, **VARIANTS[v]) for v in args.variants}
    if not args.report_only:
        for v, budget in budgets.items():
            print(f"== {v}: {budget}", flush=True)
            run_study(cache, networks, ds, budget, log=lambda line: print(line, flush=True))
    cache.reload()
    default = accuracies(cache, base)
    print(f"\n{'variant':<16} {'n':>3}  {'tau [95 % interval]':<22} {'even half':>9} {'odd half':>9}"
          f" {'tau vs default':>14} {'-train loss':>11} {'proxy s':>8}")
    for v, budget in budgets.items():
        acc = accuracies(cache, budget)
        names = sorted(acc, key=order.get)
        if len(names) < 4:
            print(f"{v:<16} {len(names):>3}  (too few networks yet)")
            continue
        ref, prx = [acc[n][0] for n in names], [acc[n][1] for n in names]
        tau, low, high = bootstrap_tau(prx, ref, resamples=1000, seed=0)
        half = {k: [n for n in names if order[n] % 2 == k] for k in (0, 1)}
        halves = [kendall_tau([acc[n][1] for n in half[k]], [acc[n][0] for n in half[k]]) for k in (0, 1)]
        shared = [n for n in names if n in default]
        vs = kendall_tau([acc[n][1] for n in shared], [default[n][1] for n in shared]) if v != "default" else 1.0
        results = cache.data["proxies"][proxy_key(budget, "cpu")]["results"]
        wall = sum(results[n].get("wall_s", 0.0) for n in names)
        loss_tau = kendall_tau([-acc[n][2] for n in names], ref)
        print(f"{v:<16} {len(names):>3}  {tau:.3f} [{low:.2f}, {high:.2f}]     {halves[0]:>9.3f} {halves[1]:>9.3f}"
              f" {vs:>14.3f} {loss_tau:>11.3f} {wall:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
