"""``python -m nas.latency NAME|CONFIG [...]``: measure (or predict) one network's latency.

Examples::

    python -m nas.latency hardnet68                       # measured on this machine
    python -m nas.latency hardnet68 --deploy --resolution 512
    python -m nas.latency hardnet68 --predict 1080ti --resolution 1024
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Sequence

from ..cli import ArgumentParser, resolve_config, run
from ..errors import check_int
from ..paths import runs_dir
from .cache import LatencyCache
from .devices import PRECISIONS
from .measure import measure
from .predict import predict
from .profiles import list_profiles


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m nas.latency", description=__doc__.splitlines()[0])
    p.add_argument("model", metavar="NAME|CONFIG", help="canonical model name or JSON/YAML config file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--precision", default="fp32", help=f"one of {', '.join(PRECISIONS)} (default fp32)")
    p.add_argument("--deploy", action="store_true", help="fold BatchNorm into the convs first")
    p.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                   help="channels_last memory format (default: on for CUDA, off for CPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default)")
    p.add_argument("--max-seconds", type=float, default=2.0, help="time cap for the timed runs (default 2)")
    p.add_argument("--predict", metavar="DEVICE", default=None,
                   help=f"predict instead of measuring, for one of: {', '.join(list_profiles())}")
    p.add_argument("--no-cache", action="store_true", help="do not read or write runs/latency.db")
    p.add_argument("--no-guard", action="store_true",
                   help="time without the interference canary (figures are then never flagged disturbed)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(format="nas.latency: warning: %(message)s", level=logging.WARNING)
    config = resolve_config(args.model)
    if args.threads is not None:
        check_int("threads", args.threads)
    if args.predict:
        result = predict(config, args.predict, args.resolution, args.batch, args.precision, args.deploy)
    else:
        cache = None if args.no_cache else LatencyCache(runs_dir() / "latency.db")
        result = measure(config, device=args.device, resolution=args.resolution, batch=args.batch,
                         precision=args.precision, channels_last=args.channels_last, deploy=args.deploy,
                         threads=args.threads, max_seconds=args.max_seconds, cache=cache,
                         interference=not args.no_guard)
    line = result.describe()
    print(json.dumps(result.to_dict(), indent=2) if args.json else f"{config.name or args.model} {line}")
    if not result.ok:
        print(f"nas.latency: error: {result.error}", file=sys.stderr)
        return 1
    if result.disturbed:
        print(f"nas.latency: warning: disturbed measurement, not a quiet figure: {result.interference}", file=sys.stderr)
    return 0


def cli() -> None:
    """Console-script entry point."""
    run(main, "nas.latency")


if __name__ == "__main__":
    cli()
