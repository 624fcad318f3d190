"""Latency benchmarks on this machine, all measured in one run.

    python benchmarks/bench_latency.py [--configs 40] [--quick] [--threads N]

1. Repeatability: HarDNet68 at 224 measured five times in one process; spread of the medians.
2. Cost of one measurement (wall seconds, HarDNet68 at 224).
3. Predictor fidelity: random configs + the canonical ones, measured in interleaved rounds (the
   median over rounds is the reference; two rounds give the noise floor); the CPU profile is
   calibrated on one half and judged on the other (Kendall tau, share within +-10%).
4. The HarDNet thesis here: rank correlation of measured latency with CIO, MACs and params.
5. The seed claim: HarDNet68 / ResNet-50 latency ratio at 224, 512, 1024, eager and deploy.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

import nas
from nas.latency import calibrate, cpu_profile, measure, predict_ms
from nas.sampling import random_config
from nas.stats import kendall_tau, spearman_rho


def section(title: str) -> None:
    print(f"\n== {title}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", type=int, default=40, help="random configs for the fidelity study")
    p.add_argument("--max-seconds", type=float, default=2.0, help="time cap per measurement")
    p.add_argument("--quick", action="store_true", help="skip the 1024px seed-claim runs")
    p.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds in the fidelity study (>= 2)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for every measurement (default: torch's)")
    args = p.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads: {args.threads} is not allowed; expected an integer >= 1")
        torch.set_num_threads(args.threads)
    if args.rounds < 2:
        p.error(f"--rounds: {args.rounds} is not allowed; expected an integer >= 2")
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, device cpu ({nas.latency.devices.device_name(torch.device('cpu'))})")
    h68, r50 = nas.get_config("hardnet68"), nas.get_config("resnet50")

    section("1-2. repeatability and cost of one measurement (HarDNet68, 224, fp32, batch 1)")
    medians, walls, cis = [], [], []
    for _ in range(5):
        t0 = time.perf_counter()
        r = measure(h68, device="cpu", max_seconds=args.max_seconds)
        walls.append(time.perf_counter() - t0)
        medians.append(r.median_ms)
        cis.append((r.ci_low_ms, r.ci_high_ms))
        print(f"  median {r.median_ms:7.2f} ms  (95% CI {r.ci_low_ms:.1f}-{r.ci_high_ms:.1f})  IQR {100 * r.rel_iqr:5.1f}%  "
              f"runs {r.runs:3d}  capped {r.capped}  wall {walls[-1]:.2f} s")
    spread = (max(medians) - min(medians)) / statistics.median(medians)
    print(f"  spread of the 5 medians (max-min)/median: {100 * spread:.1f}%  (target <= 3%)")
    apart = sum(a[1] < b[0] or b[1] < a[0] for i, a in enumerate(cis) for b in cis[i + 1:])
    print(f"  pairs of measurements whose median CIs do not overlap: {apart} of 10 (each CI covers its own window's "
          f"median; disjoint CIs mean the machine's speed changed between windows, which more runs cannot fix)")
    print(f"  wall time per measurement: median {statistics.median(walls):.2f} s (target <= 3 s)")

    section(f"3-4. predictor fidelity and the CIO thesis ({args.configs} random configs + canonical, 224)")
    rng = random.Random(0)
    cfgs = [random_config(rng, max_width=128, max_depth=16, num_classes=1000) for _ in range(args.configs)]
    cfgs += [nas.get_config(n) for n in nas.list_models()]
    # rounds interleave the networks (round-robin), so a burst of host noise is spread over all of
    # them instead of landing on a few; the reference latency of a network is its median over rounds
    rounds, t0 = [], time.perf_counter()
    for _ in range(args.rounds):
        rounds.append([measure(c, device="cpu", max_seconds=args.max_seconds).median_ms for c in cfgs])
    measured = [statistics.median(values) for values in zip(*rounds)]
    print(f"  measured {len(cfgs)} configs x {args.rounds} interleaved rounds in {time.perf_counter() - t0:.0f} s; "
          f"latency range {min(measured):.2f}-{max(measured):.1f} ms")
    diffs = [abs(b / a - 1) for a, b in zip(rounds[0], rounds[1])]
    print(f"  noise floor: round 2's measurement of a network is within +-10% of round 1's for "
          f"{100 * sum(d <= 0.10 for d in diffs) / len(diffs):.0f}% of them (median difference "
          f"{100 * statistics.median(diffs):.1f}%)")
    single = [abs(r / m - 1) for r, m in zip(rounds[0], measured)]
    print(f"  a single measurement is within +-10% of the {args.rounds}-round median for "
          f"{100 * sum(d <= 0.10 for d in single) / len(single):.0f}% of the networks: the ceiling for any "
          f"predictor judged against that median here")
    order = list(range(len(cfgs)))
    random.Random(1).shuffle(order)
    half = len(order) // 2
    fit_idx, test_idx = order[:half], order[half:]
    base = cpu_profile(refresh=True)
    fitted = calibrate([cfgs[i] for i in fit_idx], [measured[i] for i in fit_idx], base)
    for label, prof in (("micro-benchmark profile (uncalibrated)", base), ("calibrated on the other half", fitted)):
        pred = [predict_ms(cfgs[i], prof) for i in test_idx]
        meas = [measured[i] for i in test_idx]
        within = sum(abs(p_ / m - 1) <= 0.10 for p_, m in zip(pred, meas)) / len(meas)
        errs = sorted(abs(p_ / m - 1) for p_, m in zip(pred, meas))
        print(f"  {label:<40} tau {kendall_tau(pred, meas):.3f}  within +-10%: {100 * within:.0f}%  "
              f"median |err| {100 * statistics.median(errs):.1f}%  (held-out n={len(meas)})")
    print(f"  fitted efficiencies: conv {fitted.conv_eff:.2f}, depthwise {fitted.dwconv_eff:.3f}, "
          f"memory {fitted.memory_eff:.2f}, overhead {fitted.overhead_us:.1f} us/kernel")
    reports = [nas.analyze(c) for c in cfgs]
    for name, values in (("CIO", [r.cio for r in reports]), ("MACs", [r.macs for r in reports]),
                         ("params", [r.params for r in reports])):
        print(f"  latency vs {name:<7} Kendall tau {kendall_tau(values, measured):.3f}   "
              f"Spearman rho {spearman_rho(values, measured):.3f}")

    section("5. seed claim: HarDNet68 / ResNet-50 latency (paper: 0.70 on a GTX1080 at 1024; README: 0.73 on a 1080Ti)")
    for res in (224, 512) + (() if args.quick else (1024,)):
        for deploy in (False, True):
            cap = args.max_seconds * (res / 224) ** 2
            a = measure(h68, device="cpu", resolution=res, deploy=deploy, max_seconds=cap, min_runs=3, warmup=1)
            b = measure(r50, device="cpu", resolution=res, deploy=deploy, max_seconds=cap, min_runs=3, warmup=1)
            mode = "deploy" if deploy else "eager "
            print(f"  {res:4d}px {mode}  HarDNet68 {a.median_ms:8.1f} ms  ResNet-50 {b.median_ms:8.1f} ms  "
                  f"ratio {a.median_ms / b.median_ms:.2f}  (IQR {100 * a.rel_iqr:.0f}% / {100 * b.rel_iqr:.0f}%)")


if __name__ == "__main__":
    main()
