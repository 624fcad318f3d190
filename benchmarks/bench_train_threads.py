"""Proxy training on a busy CPU: torch's threads fixed at the cores vs capped by `FairThreads`, side by side.

    python benchmarks/bench_train_threads.py [--hogs N] [--rounds 3] [--model hardnet39ds] [--epochs 1]

Starts N busy processes (default: one per usable core; they end with the benchmark), then trains the
same network on the embedded digits alternately with the pool fixed at the cores (what torch does by
itself) and with hardnas's cap, and prints each run's wall seconds, the other processes' load, the
threads used and the median ratio. CPU figures of this machine; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time

import torch

import nas
import nas.proxy.train as train_module
from nas.latency.interference import ForeignLoad
from nas.proxy import ProxyBudget, train_eval
from nas.proxy.threads import FairThreads, usable_cores

HOG = "import time\nt = time.time()\nwhile time.time() - t < 3600: pass"


class _Fixed(contextlib.nullcontext):
    """The pool left as set: torch's own behaviour."""

    def __init__(self) -> None:
        super().__init__()
        self.base = self.fewest = torch.get_num_threads()

    def check(self) -> None:
        pass


def _run(model: str, epochs: float, fair: bool) -> tuple[float, float | None, dict | None, str]:
    train_module.FairThreads = FairThreads if fair else _Fixed
    load = ForeignLoad()
    t = time.perf_counter()
    r = train_eval(nas.get_config(model), None, ProxyBudget(epochs=epochs), device="cpu")
    return time.perf_counter() - t, load(), r.proxy.get("threads"), r.status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hogs", type=int, default=usable_cores(), help="busy processes to start (default: the cores)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", default="hardnet39ds")
    p.add_argument("--epochs", type=float, default=1.0)
    args = p.parse_args(argv)
    if args.hogs < 0 or args.rounds < 1:
        print(f"bench_train_threads: --hogs {args.hogs} / --rounds {args.rounds} are not allowed; expected "
              "--hogs >= 0 and --rounds >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(usable_cores())
    print(f"{usable_cores()} usable cores, torch threads {torch.get_num_threads()}, {args.hogs} busy processes, "
          f"{args.model} {args.epochs:g} epoch(s) on digits")
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
    seconds: dict[str, list[float]] = {"fixed": [], "fair": []}
    try:
        time.sleep(1)
        for i in range(args.rounds):
            for name in (("fixed", "fair") if i % 2 == 0 else ("fair", "fixed")):
                s, load, threads, status = _run(args.model, args.epochs, name == "fair")
                seconds[name].append(s)
                shown = "?" if load is None else f"{load:.2f}"
                print(f"  round {i + 1} {name:<5} {s:6.1f} s  other processes {shown} cores  threads {threads}  "
                      f"{status}", flush=True)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    fixed, fair = statistics.median(seconds["fixed"]), statistics.median(seconds["fair"])
    print(f"median: fixed {fixed:.1f} s, fair {fair:.1f} s, fixed / fair {fixed / fair:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
