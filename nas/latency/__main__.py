"""``python -m nas.latency NAME|CONFIG [...]``: measure (or predict) one network's latency.

Examples::

    python -m nas.latency hardnet68                       # measured on this machine
    python -m nas.latency hardnet68 --deploy --resolution 512
    python -m nas.latency hardnet68 --deploy --runtime onnxruntime --resolution 1080x1920
    python -m nas.latency hardnet68 --predict 1080ti --resolution 1024
    python -m nas.latency hardnet39ds --predict jetson_nano --resolution 320 --runtime tensorrt
    python -m nas.latency --profile --device cuda          # calibrate this GPU's profile (<= 60 s)
    python -m nas.latency --list                            # the device profiles --predict takes
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

import torch

from ..cli import ArgumentParser, resolve_config, run
from ..errors import check_int
from ..paths import runs_dir
from ..resolution import resolution_arg
from .cache import LatencyCache
from .devices import PRECISIONS
from .kernels import KERNEL_CLASSES, RUNTIMES
from .measure import measure
from .predict import predict
from .profiles import list_profiles, resolve_profile
from .profiling import profile_device
from .runtimes import MEASURE_RUNTIMES


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m nas.latency", description=__doc__.splitlines()[0])
    p.add_argument("model", metavar="NAME|CONFIG", nargs="?", help="canonical model name or JSON/YAML config file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--resolution", type=resolution_arg, default=224,
                   help="input size: 224 (square) or HxW, height x width, e.g. 1080x1920 (default 224)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--precision", default="fp32", help=f"one of {', '.join(PRECISIONS)} (default fp32)")
    p.add_argument("--deploy", action="store_true", help="fold BatchNorm into the convs first")
    p.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                   help="channels_last memory format (default: on for CUDA, off for CPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default)")
    p.add_argument("--max-seconds", type=float, default=2.0, help="time cap for the timed runs (default 2)")
    p.add_argument("--predict", metavar="DEVICE", default=None,
                   help=f"predict instead of measuring, for one of: {', '.join(list_profiles())}")
    p.add_argument("--runtime", default=None,
                   help=f"measured: {', '.join(MEASURE_RUNTIMES)} (default eager; compile: torch.compile with inductor; "
                        f"onnxruntime: the exported graph, all graph optimisations on); with --predict: "
                        f"{' or '.join(RUNTIMES)} (default pytorch: eager, every op a kernel; tensorrt: norms folded, "
                        "activations/adds fused, concatenations in place)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write runs/latency.db")
    p.add_argument("--no-guard", action="store_true",
                   help="time without the interference canary (figures are then never flagged disturbed)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--profile", action="store_true",
                   help="micro-benchmark --device into a calibrated profile, saved for predictions and the search's gate")
    p.add_argument("--budget-s", dest="budget_s", type=float, default=60.0,
                   help="time budget of --profile in seconds (default 60)")
    p.add_argument("--list", action="store_true", help="list the device profiles --predict accepts, with their sources")
    args = p.parse_args(argv)
    logging.basicConfig(format="nas.latency: warning: %(message)s", level=logging.WARNING)
    if args.list:
        return _list()
    if args.profile:
        return _profile(args)
    if args.model is None:
        p.error("NAME|CONFIG is required unless --profile or --list is given")
    allowed = tuple(RUNTIMES) if args.predict else tuple(MEASURE_RUNTIMES)
    runtime = args.runtime or allowed[0]
    if runtime not in allowed:
        p.error(f"argument --runtime: {runtime!r} is not allowed {'with --predict' if args.predict else 'for a measurement'}; "
                f"expected one of {', '.join(allowed)}")
    config = resolve_config(args.model)
    if args.threads is not None:
        check_int("threads", args.threads)
    if args.predict:
        result = predict(config, args.predict, args.resolution, args.batch, args.precision, args.deploy,
                         runtime=runtime)
    else:
        cache = None if args.no_cache else LatencyCache(runs_dir() / "latency.db")
        result = measure(config, device=args.device, resolution=args.resolution, batch=args.batch,
                         precision=args.precision, channels_last=args.channels_last, deploy=args.deploy,
                         threads=args.threads, max_seconds=args.max_seconds, cache=cache,
                         interference=not args.no_guard, runtime=runtime)
    line = result.describe()
    print(json.dumps(result.to_dict(), indent=2) if args.json else f"{config.name or args.model} {line}")
    if not result.ok:
        print(f"nas.latency: error: {result.error}", file=sys.stderr)
        return 1
    if result.disturbed:
        print(f"nas.latency: warning: disturbed measurement, not a quiet figure: {result.interference}", file=sys.stderr)
    return 0


def _list() -> int:
    for name in list_profiles():
        profile = resolve_profile(name) if name != "cpu" else None
        print(f"{name:14s} {profile.source if profile else 'this CPU: micro-benchmarked, calibrated by the search'}")
    return 0


def _profile(args: argparse.Namespace) -> int:
    if args.threads is not None:
        check_int("threads", args.threads)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    profile = profile_device(device, args.budget_s, save=True, threads=args.threads)
    if args.json:
        print(json.dumps(profile.to_dict(), indent=2))
        return 0
    print(f"{profile.name}: {profile.source}")
    effs = ", ".join(f"{c} {profile.efficiency(c):.2f}" for c in KERNEL_CLASSES)
    print(f"  efficiencies: {effs}; overhead {profile.overhead_us:.1f} us/kernel")
    for row in profile.provenance.get("samples", []):
        if row["network"]:
            print(f"  {row['name']:22s} {row['precision']}: measured {row['measured_ms']:.2f} ms, "
                  f"profile predicts {row['fitted_ms']:.2f} ms")
    if profile.provenance.get("disturbed"):
        print(f"nas.latency: warning: other processes used {profile.provenance['foreign_cores']:.2f} cores while "
              "profiling; the profile was not saved (rerun on a quiet machine)", file=sys.stderr)
        return 3
    return 0


def cli() -> None:
    """Console-script entry point."""
    run(main, "nas.latency")


if __name__ == "__main__":
    cli()
