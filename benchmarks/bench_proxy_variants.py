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
from nas.proxy.fidelity import FidelityCache, StudySettings, run_study, study_networks
from nas.proxy.fidelity_report import fidelity_report
from nas.space import load_space
from nas.stats import kendall_tau

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
    default = {r["name"]: r["proxy"] for r in fidelity_report(cache, base, "cpu")["rows"]}
    print(f"\n{'variant':<16} {'n':>3}  {'tau [95 % interval]':<22} {'even half':>9} {'odd half':>9}"
          f" {'tau vs default':>14} {'-train loss':>11} {'proxy s':>8}")
    for v, budget in budgets.items():
        report = fidelity_report(cache, budget, "cpu")  # the networks both trained, tau with its interval
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
