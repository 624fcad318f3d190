"""Latency benchmarks on this machine, all measured in one run.

    python benchmarks/bench_latency.py [--configs 40] [--quick] [--threads N]
    python benchmarks/bench_latency.py --interference [--rounds 1] [--max-seconds 2]

1. Repeatability: HarDNet68 at 224 measured five times in one process; spread of the medians.
2. Cost of one measurement (wall seconds, HarDNet68 at 224).
3. Predictor fidelity: random configs + the canonical ones, measured in interleaved rounds (the
   median over rounds is the reference; two rounds give the noise floor); the CPU profile is
   calibrated on one half and judged on the other (Kendall tau, share within +-10%).
4. The HarDNet thesis here: rank correlation of measured latency with CIO, MACs and params.
5. The seed claim: HarDNet68 / ResNet-50 latency ratio at 224, 512, 1024, eager and deploy.

``--interference`` runs only this section instead:

6. Interference: the 8 canonical networks at 224 measured with and without the canary guard,
   interleaved, with no extra load, then under 1 and 2 busy processes (``python -c "while True:
   pass"``, killed by pid); side by side, the share within +-10 % / +-15 % of the no-load median,
   how many the guard flagged, and the wall time per measurement. Prints figures, asserts nothing.

``--runtimes`` runs only this section instead:

7. The library's own measure path per runtime: ``nas.latency.measure(..., runtime=...)`` of each
   ``--models`` at each ``--sizes`` (224 and 1080x1920 by default; batch 1, fp32, ``--threads``)
   under eager, compile and onnxruntime, as the search measures a candidate (the model as trained,
   each window prepared afresh: compiling and exporting are outside the timed runs). The
   measurements are interleaved (every round measures every model and size under every runtime, the
   runtime order rotating), and each runtime is a ratio to eager: the median over rounds of the
   paired (same-round) ratios, and the ratio of medians; then each model over the last one given
   (HarDNet68 / ResNet-50) per runtime. `bench_export.py --runtimes` times the deploy model under
   the same runtimes forward by forward.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time

import torch

import nas
from nas.latency import KERNEL_CLASSES, calibrate, measure, predict_ms
from nas.latency.profiles import load_cpu_profile
from nas.latency.runtimes import MEASURE_RUNTIMES, runtime_version
from nas.resolution import format_resolution, parse_resolution
from nas.sampling import random_config
from nas.stats import kendall_tau, spearman_rho

from runtime_ratios import load_average, print_model_ratios, print_runtime_table  # benchmarks/ is the script's folder


def section(title: str) -> None:
    print(f"\n== {title}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", type=int, default=40, help="random configs for the fidelity study")
    p.add_argument("--max-seconds", type=float, default=2.0, help="time cap per measurement")
    p.add_argument("--quick", action="store_true", help="skip the 1024px seed-claim runs")
    p.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds in the fidelity study (>= 2)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for every measurement (default: torch's)")
    p.add_argument("--interference", action="store_true",
                   help="only the interference section: canonical networks quiet vs under 1 and 2 busy processes")
    p.add_argument("--runtimes", action="store_true",
                   help="only the runtime section: nas.latency.measure under eager, compile and onnxruntime")
    p.add_argument("--models", default="hardnet68,hardnet39ds,tresnet_m,resnet50",
                   help="with --runtimes: canonical models, the last one is the reference of the ratios")
    p.add_argument("--sizes", default="224,1080x1920", help="with --runtimes: input sizes, 224 or HxW (height x width)")
    p.add_argument("--runtime-list", default=",".join(MEASURE_RUNTIMES),
                   help=f"with --runtimes: runtimes to measure, eager first (default {','.join(MEASURE_RUNTIMES)})")
    args = p.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads: {args.threads} is not allowed; expected an integer >= 1")
        torch.set_num_threads(args.threads)
    if args.rounds < (1 if args.interference or args.runtimes else 2):
        p.error(f"--rounds: {args.rounds} is not allowed; expected an integer >= 2 (>= 1 with --interference "
                "or --runtimes)")
    runtimes = [r for r in args.runtime_list.split(",") if r]
    bad = [r for r in runtimes if r not in MEASURE_RUNTIMES]
    if bad or not runtimes or runtimes[0] != "eager":
        p.error(f"--runtime-list: {args.runtime_list!r} is not allowed; expected eager first, then any of "
                f"{', '.join(MEASURE_RUNTIMES)}")
    for size in args.sizes.split(","):
        try:
            parse_resolution(size, "--sizes")
        except ValueError as err:
            p.error(str(err))
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, device cpu ({nas.latency.devices.device_name(torch.device('cpu'))})")
    if args.interference:
        interference_section(args.max_seconds, args.rounds)
        return
    if args.runtimes:
        runtimes_section([m for m in args.models.split(",") if m], [s for s in args.sizes.split(",") if s], runtimes,
                         args.rounds, args.max_seconds, threads)
        return
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
    base = load_cpu_profile(refresh=True).profile
    cal = calibrate([cfgs[i] for i in fit_idx], [measured[i] for i in fit_idx], base)
    print(f"  {cal.reason}")
    fitted = cal.fitted or cal.profile
    for label, prof in (("micro-benchmark profile (uncalibrated)", base), ("calibrated on the other half", fitted)):
        pred = [predict_ms(cfgs[i], prof) for i in test_idx]
        meas = [measured[i] for i in test_idx]
        within = sum(abs(p_ / m - 1) <= 0.10 for p_, m in zip(pred, meas)) / len(meas)
        errs = sorted(abs(p_ / m - 1) for p_, m in zip(pred, meas))
        print(f"  {label:<40} tau {kendall_tau(pred, meas):.3f}  within +-10%: {100 * within:.0f}%  "
              f"median |err| {100 * statistics.median(errs):.1f}%  (held-out n={len(meas)})")
    effs = ", ".join(f"{c} {fitted.efficiency(c):.3g}" for c in KERNEL_CLASSES)
    print(f"  fitted efficiencies: {effs}; overhead {fitted.overhead_us:.1f} us/kernel")
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


def runtimes_section(models: list[str], sizes: list[str], runtimes: list[str], rounds: int, max_seconds: float,
                     threads: int) -> None:
    """`measure` under each runtime, interleaved over rounds, as ratios to eager (see the module docstring)."""
    versions = ", ".join(f"{r} {runtime_version(r) or '(not installed)'}" for r in runtimes)
    section(f"7. nas.latency.measure per runtime: cpu, {threads} threads, batch 1, fp32, the model as trained; "
            f"{versions}; {rounds} interleaved round(s); CPU figures")
    configs = {m: nas.get_config(m) for m in models}
    times = {(s, m): {r: [] for r in runtimes} for s in sizes for m in models}
    walls = {(s, m): {r: [] for r in runtimes} for s in sizes for m in models}
    failed: dict[tuple[str, str, str], str] = {}
    disturbed = 0
    load = load_average()
    for i in range(rounds):
        for size in sizes:
            cap = max_seconds * max(1.0, parse_resolution(size)[0] * parse_resolution(size)[1] / 224 ** 2) ** 0.5
            for m in models:
                for rt in runtimes[i % len(runtimes):] + runtimes[:i % len(runtimes)]:
                    if (size, m, rt) in failed:
                        continue
                    t0 = time.perf_counter()
                    r = measure(configs[m], device="cpu", resolution=size, runtime=rt, threads=threads,
                                max_seconds=cap, min_runs=3, warmup=1)
                    if not r.ok:
                        failed[(size, m, rt)] = r.error or "failed"
                        print(f"  {m} at {format_resolution(size)} under {rt}: cannot run here: {r.error}")
                        continue
                    disturbed += bool(r.disturbed)
                    times[(size, m)][rt].append(r.median_ms)
                    walls[(size, m)][rt].append(time.perf_counter() - t0)
        print(f"  round {i + 1} of {rounds} done, load average {load_average():.2f}")
    medians = {}
    for size in sizes:
        for m in models:
            done = {rt: ts for rt, ts in times[(size, m)].items() if ts}
            if "eager" not in done:
                continue
            n = min(len(ts) for ts in done.values())
            print(f"\n{m} at {format_resolution(size)} (height x width), {n} round(s)")
            medians[(size, m)] = print_runtime_table(
                {rt: ts[:n] for rt, ts in done.items()}, extra_title="wall s per measurement (preparing included)",
                extra={rt: f"{statistics.median(walls[(size, m)][rt]):.1f}" for rt in done})
    print_model_ratios(medians, sizes, models)
    end = load_average()
    note = f"; {disturbed} measurement(s) flagged DISTURBED by the canary" if disturbed else ""
    print(f"\n  load average {load:.2f} at start, {end:.2f} at the end on {os.cpu_count()} cores{note}: "
          "with other work on the machine, read the paired ratios")


def _hogs(n: int) -> list[subprocess.Popen]:
    """``n`` busy processes that also end themselves after 30 minutes, whatever happens here."""
    code = "import time\nend = time.time() + 1800\nwhile time.time() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def _within(values: list[float], ref: float, tol: float) -> int:
    return sum(abs(v / ref - 1) <= tol for v in values)


def interference_section(max_seconds: float, rounds: int) -> None:
    """Quiet vs 1 and 2 busy processes, with and without the canary guard, side by side."""
    section(f"6. interference: 8 canonical networks at 224, guard on vs off, {rounds} round(s) per load")
    names = nas.list_models()
    models = {n: nas.build_model(nas.get_config(n)) for n in names}
    rows: dict[int, dict[str, list]] = {}
    for hogs in (0, 1, 2):
        procs = _hogs(hogs)
        try:
            time.sleep(0.5 if hogs else 0)
            load = os.getloadavg()[0]
            res: dict[str, list] = {"off": [], "on": []}
            for _ in range(rounds):
                for n in names:  # interleaved: a burst of host noise hits both modes alike
                    for mode in ("off", "on"):
                        t0 = time.perf_counter()
                        r = measure(models[n], device="cpu", max_seconds=max_seconds, interference=mode == "on")
                        res[mode].append((n, r, time.perf_counter() - t0))
            rows[hogs] = res
        finally:
            for proc in procs:
                proc.kill()
            for proc in procs:
                proc.wait()
        flagged = sum(r.disturbed for _, r, _ in res["on"])
        print(f"  {hogs} busy processes: load average at start {load:.1f}; guard flagged {flagged} of {len(res['on'])}")
    # the quiet reference: per network, the median of the no-load figures (both modes; clean ones when any)
    ref = {}
    for n in names:
        figs = [r.median_ms for mode in ("off", "on") for m, r, _ in rows[0][mode] if m == n and r.clean]
        ref[n] = statistics.median(figs or [r.median_ms for mode in ("off", "on") for m, r, _ in rows[0][mode] if m == n])
    n_clean = sum(any(m == n and r.clean for mode in ("off", "on") for m, r, _ in rows[0][mode]) for n in names)
    print(f"  no-load reference medians (ms): " + ", ".join(f"{n} {ref[n]:.0f}" for n in names))
    if n_clean < len(names):
        print(f"  WARNING: only {n_clean} of {len(names)} references rest on a clean (unflagged, guarded) figure: "
              f"the machine was already busy without the extra processes, so 'within X%' compares with busy figures")
    print(f"  {'load':<12} {'mode':<24} {'within 10%':>10} {'within 15%':>10} {'flagged':>8} {'ok@15% (near or flagged)':>25}"
          f" {'s/measurement':>14}")
    for hogs, res in rows.items():
        for mode in ("off", "on"):
            items = res[mode]
            total = len(items)
            used = [(n, r) for n, r, _ in items if not r.disturbed]  # the figures a search would use
            w10 = sum(abs(r.median_ms / ref[n] - 1) <= 0.10 for n, r in used)
            w15 = sum(abs(r.median_ms / ref[n] - 1) <= 0.15 for n, r in used)
            flagged = total - len(used)
            ok15 = w15 + flagged
            wall = statistics.median(w for _, _, w in items)
            label = "guard off (no detection)" if mode == "off" else "guard on (canary)"
            print(f"  {str(hogs) + ' busy':<12} {label:<24} {w10:>4}/{total:<5} {w15:>4}/{total:<5} {flagged:>8} "
                  f"{100 * ok15 / total:>23.0f}%  {wall:>12.2f}")
    print("  within X%: unflagged figures within X% of the no-load median, over all measurements; "
          "ok@15%: within 15% or flagged disturbed (target under 2 busy processes: >= 90%)")


if __name__ == "__main__":
    main()
