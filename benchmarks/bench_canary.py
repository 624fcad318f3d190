"""Does this machine slow down under sustained work? The canary in bursts vs after seconds of load.

    python benchmarks/bench_canary.py [--seconds 8] [--threads 2]

The guard (`nas.latency.interference`) calls a measurement disturbed when a canary check is over
1.25x its baseline, the lowest checks seen. On a host that runs bursts faster than sustained work
(frequency boost, CPU quota, noisy neighbours), an idle machine can read as busy. This prints, in
one run: the canary at the start of a sustained phase, at its end, the ratio, the CPU time other
processes used meanwhile (so foreign load is ruled out or in), and the stored baseline.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from nas.latency.devices import fingerprint
from nas.latency.interference import ForeignLoad, load_baseline, make_canary, time_canary_cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0, help="length of each sustained phase")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--phases", type=int, default=2, help="sustained phases, 5 s idle between them")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    canary = make_canary(torch.device("cpu"))
    base = load_baseline(fingerprint(torch.device("cpu"), args.threads))
    base_ms = base.ms if base else None
    print(f"== canary (ms per run, median of 20 checks of 4 runs), {args.threads} threads; stored baseline: "
          + (f"{base_ms:.3f} ms" if base_ms else "none (run a measurement first)"))
    with torch.inference_mode():
        for phase in range(args.phases):
            foreign = ForeignLoad()
            medians, t0 = [], time.time()
            while time.time() - t0 < args.seconds:
                medians.append(statistics.median(time_canary_cpu(canary, 4) for _ in range(20)))
            cores = foreign() or 0.0
            first, last = medians[0], statistics.median(medians[-5:])
            vs = f", end / baseline {last / base_ms:.2f}x" if base_ms else ""
            print(f"  phase {phase}: start {first:.3f} ms, end {last:.3f} ms, end / start {last / first:.2f}x{vs}; "
                  f"other processes used {cores:.2f} cores")
            time.sleep(5)


if __name__ == "__main__":
    main()
