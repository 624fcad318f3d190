"""``python -m nas.proxy fidelity --space S --data D --networks N``: does the proxy rank like real training here?

Trains N networks of the space (its canonical seeds, then seeded random points, width x --scale) with
a reference schedule (default 10 epochs over the whole training set) and with the default proxy, one
network at a time into a resumable JSON cache (``runs/fidelity/<space>-<data>-<hash>.json``; rerun the
same command to resume), then writes the report (Kendall tau of the proxy, the corrected proxies, the
zero-cost proxies, params and MACs against the reference, with bootstrap 95 % intervals) to
``<cache>.report.json`` and prints it. ``--reference-seeds K`` then trains the reference again with
K - 1 other seeds: the report adds the reference's agreement with itself, the tau that allows, and
every score against the seeds' mean. Exit codes: 0 done, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import torch

from ..cli import ArgumentParser, quiet_swallowed_interrupt, run
from ..data import load_dataset
from ..export.files import write_atomic
from ..latency.devices import resolve_device
from ..space import load_space
from .fidelity import (MAX_REFERENCE_SEEDS, FidelityCache, StudySettings, default_cache_path, reference_budget,
                       run_study, study_networks)
from .fidelity_report import fidelity_report, format_report
from .train import ProxyBudget


def _number(kind: type, low: float, what: str):
    def parse(text: str) -> float:
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is None or not v >= low or v != v or v == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; expected {what}")
        return v
    return parse


_count = _number(int, 1, "a positive integer")


def _reference_seed_count(text: str) -> int:
    v = _number(int, 1, f"an integer in [1, {MAX_REFERENCE_SEEDS}]")(text)
    if v > MAX_REFERENCE_SEEDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; expected an integer in [1, {MAX_REFERENCE_SEEDS}]")
    return int(v)
_positive = _number(float, 1e-12, "a positive number")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m nas.proxy", description="Proxy tools.")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fidelity", help="rank agreement of the proxy with a long reference training",
                       description=__doc__.splitlines()[0])
    f.error = p.error  # type: ignore[method-assign]  # one line, exit 2
    f.add_argument("--space", default="hybrid", help="hardnet, tresnet, hybrid or a YAML space file (default hybrid)")
    f.add_argument("--data", default="digits", help="digits, cifar10, cifar100, an ImageFolder or a .tar.gz of one "
                                                    "(default digits)")
    f.add_argument("--networks", type=_number(int, 2, "an integer >= 2 (a ranking needs two networks)"), default=30,
                   help="networks in the study (default 30)")
    f.add_argument("--reference-epochs", type=_positive, default=10.0, help="epochs of the reference (default 10)")
    f.add_argument("--reference-images", type=_count, default=None,
                   help="training images of the reference (default: the whole training set)")
    f.add_argument("--reference-seeds", type=_reference_seed_count, default=1, metavar="K",
                   help="train the reference with K seeds (after every proxy): the report adds how far the "
                        "reference agrees with itself, the tau that allows, and every score against the seeds' mean "
                        f"(1-{MAX_REFERENCE_SEEDS}, default 1; each seed costs what the reference does)")
    f.add_argument("--proxy-epochs", type=_positive, default=ProxyBudget.epochs, help="epochs of the proxy (default 4)")
    f.add_argument("--proxy-images", type=_count, default=ProxyBudget.max_train_samples,
                   help="training images of the proxy (default 5000)")
    f.add_argument("--width", type=_positive, default=ProxyBudget.width_mult,
                   help="width multiplier both trainings use (default 0.5)")
    f.add_argument("--batch-size", type=_count, default=ProxyBudget.batch_size, help="batch size (default 128)")
    f.add_argument("--scale", type=_positive, default=0.25, help="width of the study's networks (default 0.25)")
    f.add_argument("--max-macs", type=_positive, default=None,
                   help="leave out networks whose trained MACs exceed this (e.g. 2e6; default: no cap)")
    f.add_argument("--seed", type=_number(int, 0, "an integer >= 0"), default=0)
    f.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    f.add_argument("--threads", type=_count, default=None, help="torch CPU threads (default: torch's; use 1 on a shared machine)")
    f.add_argument("--out", default=None, help="the cache file (default runs/fidelity/<space>-<data>-<hash>.json)")
    f.add_argument("--report", default=None, help="the report file (default <cache>.report.json)")
    f.add_argument("--report-only", action="store_true", help="report what the cache holds; train nothing")
    f.add_argument("--resamples", type=_count, default=1000, help="bootstrap resamples (default 1000)")
    return p


def fidelity(args: argparse.Namespace) -> int:
    if args.width > 4 or args.scale > 4:
        raise ValueError(f"--width {args.width} / --scale {args.scale}: not allowed; expected numbers in (0, 4]")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device).type
    space = load_space(args.space)
    t0 = time.perf_counter()
    ds = load_dataset(args.data, seed=args.seed)
    proxy = ProxyBudget(epochs=args.proxy_epochs, max_train_samples=args.proxy_images, width_mult=args.width,
                        batch_size=args.batch_size, seed=args.seed)
    reference = reference_budget(proxy, args.reference_epochs, args.reference_images)
    settings = StudySettings.make(space, ds, reference, seed=args.seed, scale=args.scale,
                                   max_macs=args.max_macs, device=args.device)
    path = Path(args.out) if args.out else default_cache_path(settings)
    if args.report_only and not path.exists():
        raise ValueError(f"--report-only: no study file {str(path)!r}; expected one a run with the same settings wrote")
    cache = FidelityCache(path, settings)
    if not args.report_only:
        with cache.lock():  # an unwritable --out fails here, before an hour of training
            pass
    print(f"data {ds.name}: {len(ds.train_y)} train / {len(ds.test_y)} held-out images, loaded in "
          f"{time.perf_counter() - t0:.1f} s; torch threads {torch.get_num_threads()}; device {device}")
    n = len(ds.train_y)
    print(f"reference: {reference.epochs:g} epochs x {min(reference.max_train_samples or n, n)} images; proxy: "
          f"{proxy.epochs:g} epochs x {min(proxy.max_train_samples or n, n)} images; width x{proxy.width_mult:g}, "
          f"networks at x{args.scale:g}" + (f", at most {args.max_macs:g} MACs" if args.max_macs else ""))
    print(f"cache {path}")
    if not args.report_only:
        networks = study_networks(space, args.networks, seed=args.seed, scale=args.scale, max_macs=args.max_macs,
                                  ds=ds, width_mult=proxy.width_mult)
        log = functools.partial(print, flush=True)
        run_study(cache, networks, ds, proxy, device=args.device, log=log, should_stop=_STOP.is_set)
        for again in settings.reference_seed_budgets(args.reference_seeds)[1:]:
            print(f"reference seed {again.seed} ({args.reference_seeds} seeds)", flush=True)
            run_study(cache, networks, ds, again, device=args.device, log=log, should_stop=_STOP.is_set,
                      label=f"seed {again.seed}")
    report = fidelity_report(cache, proxy, device, reference_seeds=args.reference_seeds, resamples=args.resamples,
                             seed=args.seed)
    out = Path(args.report) if args.report else path.with_name(path.name.removesuffix(".json") + ".report.json")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"report: cannot write {str(out)!r} ({err.strerror or type(err).__name__}); "
                         "expected a writable path (the study file is kept)") from None
    write_atomic(out, json.dumps(report, indent=1, allow_nan=False).encode(), force=True)  # runners may race here
    print(format_report(report))
    print(f"report {out}")
    return 0


_STOP = threading.Event()


def _interrupt(_signum: int, _frame: object) -> None:
    """Ctrl-C and SIGTERM end the run: one line, exit 130, the cache as last saved. The flag ends it at
    the next network even when Python swallowed this interrupt inside a garbage-collection callback."""
    _STOP.set()
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is not threading.main_thread():
        return fidelity(args)
    _STOP.clear()
    saved = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), sys.unraisablehook)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    sys.unraisablehook = quiet_swallowed_interrupt(_STOP.is_set)
    try:
        return fidelity(args)
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
        sys.unraisablehook = saved[2]


if __name__ == "__main__":
    run(main, "python -m nas.proxy", sys.argv[1:])
