"""Export benchmarks for HarDNet68, all measured in one run.

    python benchmarks/bench_export.py [--seconds 60] [--threads N] [--repeat 3]
    python benchmarks/bench_export.py --runtimes [--models hardnet68,resnet50] [--sizes 224,1080x1920]

1. Export time per format (``export_bytes``; onnx and torchscript include their built-in checks
   against PyTorch), median of ``--repeat`` runs.
2. Inference latency on this CPU (batch 1, 224x224, fp32) of the exported standalone ``.py`` vs the
   in-package model (target ratio ~1.0), and of the ``--deploy`` export (BatchNorm folded; target
   <= 0.9), all with the same weights, plus the in-package model with BN folded for reference.
   The models are timed side by side, interleaved forward by forward with the method of
   `nas.latency.measure`; ratios of medians, medians of paired (same-round) ratios and ratios of
   the 10th percentiles are printed. Nothing here asserts on wall time: it prints figures.

``--runtimes`` runs this section instead:

3. Deploy runtimes side by side, per model and input size (batch 1, fp32, ``--threads``): eager
   PyTorch (the model as trained), and the deploy model (BatchNorm folded) in eager PyTorch,
   in channels_last, as a frozen TorchScript graph, under ``torch.compile`` (inductor) and in ONNX
   Runtime (all graph optimisations), interleaved forward by forward; each as a ratio to eager
   (median of paired ratios, with their p10-p90 spread), then each model's ratio to the last model
   given (HarDNet68 / ResNet-50 by default) under each runtime.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import nas
from nas.export import export_bytes
from nas.fuse import fuse_model
from nas.latency.devices import device_name
from nas.latency.runtimes import prepare
from nas.resolution import format_resolution, parse_resolution

from gpu_check_lib.common import model_with_nontrivial_bn  # benchmarks/ is the script's folder
from runtime_ratios import load_average, print_model_ratios, print_runtime_table


def section(title: str) -> None:
    print(f"\n== {title}")


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def interleaved(models: dict[str, Any], x: torch.Tensor, threads: int, seconds: float,
                max_rounds: int, inputs: dict[str, torch.Tensor] | None = None,
                min_rounds: int = 11, warmup: int = 3) -> dict[str, list[float]]:
    """Forward times in ms, one forward of each model per round, the order rotating each round.

    The method of `nas.latency.measure` (fixed threads, inference mode, warm-up, GC off,
    ``perf_counter_ns`` around each forward), but interleaved run by run: on a shared machine the
    load changes from second to second, and models timed one after the other see different loads,
    while run-by-run interleaving gives every model the same conditions.
    """
    names = list(models)
    out: dict[str, list[float]] = {n: [] for n in names}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            inputs = inputs or {}
            for n, m in models.items():
                if isinstance(m, torch.nn.Module):
                    m.eval()
                for _ in range(warmup):
                    m(inputs.get(n, x))
            gc.collect()
            gc.disable()
            start = time.perf_counter()
            for r in range(max_rounds):
                for n in names[r % len(names):] + names[:r % len(names)]:
                    t0 = time.perf_counter_ns()
                    models[n](inputs.get(n, x))
                    out[n].append((time.perf_counter_ns() - t0) / 1e6)
                if r + 1 >= min_rounds and time.perf_counter() - start > seconds:
                    break
    finally:
        gc.enable()
        torch.set_num_threads(before)
    return out


def deploy_runners(cfg: nas.ArchConfig, x: torch.Tensor, threads: int,
                   skip: set[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, float]]:
    """Eager and every deploy runtime of ``cfg`` on ``x``: callables, their own inputs, preparation seconds."""
    torch.manual_seed(0)
    eager = nas.build_model(cfg).eval()
    fused = fuse_model(eager)
    runners: dict[str, Any] = {"eager": eager, "deploy": fused}
    inputs: dict[str, torch.Tensor] = {}
    prep: dict[str, float] = {}
    with torch.inference_mode():
        if "channels_last" not in skip:
            runners["deploy, channels_last"] = fuse_model(eager).to(memory_format=torch.channels_last)
            inputs["deploy, channels_last"] = x.contiguous(memory_format=torch.channels_last)
        if "torchscript" not in skip:
            t0 = time.perf_counter()
            runners["deploy, torchscript frozen"] = torch.jit.freeze(torch.jit.script(fuse_model(eager)))
            prep["deploy, torchscript frozen"] = time.perf_counter() - t0
    for name in ("compile", "onnxruntime"):
        if name in skip:
            continue
        t0 = time.perf_counter()
        model = fuse_model(eager)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                run = prepare(name, model, x, threads, "fp32")
                run(x)  # compiles here, not in the timed rounds
        except Exception as err:  # one line, and the other runtimes still run
            print(f"  deploy, {name}: cannot run here: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
            continue
        finally:
            torch.set_num_threads(before)
        runners[f"deploy, {name}"] = run
        prep[f"deploy, {name}"] = time.perf_counter() - t0
    return runners, inputs, prep


def check_outputs(runners: dict[str, Any], inputs: dict[str, torch.Tensor], x: torch.Tensor) -> None:
    with torch.inference_mode():
        ref = runners["eager"](x)
        for n, run in runners.items():
            if n == "eager":
                continue
            out = run(inputs.get(n, x))
            out = torch.as_tensor(out[0]) if isinstance(out, (list, tuple)) else out
            err = float((out.float() - ref).abs().max()) / max(1.0, float(ref.abs().max()))
            print(f"  {n:<28} max |difference| to eager {err:.1e} of the largest output (documented tolerance 1e-4)")


def runtimes_section(args: argparse.Namespace) -> None:
    threads = args.threads or torch.get_num_threads()
    skip = set(filter(None, args.skip.split(",")))
    sizes = [s for s in args.sizes.split(",") if s]
    models = [m for m in args.models.split(",") if m]
    section(f"3. deploy runtimes vs eager: cpu ({device_name(torch.device('cpu'))}), {threads} threads, batch 1, "
            f"fp32; interleaved forward by forward; CPU figures")
    medians: dict[tuple[str, str], dict[str, float]] = {}
    for size in sizes:
        h, w = parse_resolution(size)
        for name in models:
            cfg = nas.get_config(name)
            x = torch.randn(1, cfg.in_channels, h, w)
            load = load_average()
            print(f"\n{name} at {format_resolution(size)} (height x width), load average {load:.2f}")
            runners, inputs, prep = deploy_runners(cfg, x, threads, skip)
            check_outputs(runners, inputs, x)
            times = interleaved(runners, x, threads, args.seconds, args.max_rounds, inputs, args.min_rounds,
                                args.warmup)
            print(f"  {len(times['eager'])} rounds")
            medians[(size, name)] = print_runtime_table(times, extra={n: f"{prep.get(n, 0):.1f}" for n in times},
                                                        extra_title="preparation s")
            load_end = load_average()
            if max(load, load_end) > threads + 0.5:
                print(f"  DISTURBED: load average {load:.2f} -> {load_end:.2f} on {os.cpu_count()} cores while timing; "
                      "the paired ratios are the figures to read")
    print_model_ratios(medians, sizes, models)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="hardnet68", help="canonical model (default hardnet68)")
    p.add_argument("--seconds", type=float, default=60.0, help="time for the latency part (default 60)")
    p.add_argument("--max-rounds", type=int, default=2000, help="at most this many latency rounds")
    p.add_argument("--repeat", type=int, default=3, help="runs per export format (default 3)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the latency part (default: torch's)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up forwards per model (default 3)")
    p.add_argument("--min-rounds", type=int, default=11, help="at least this many latency rounds (default 11)")
    p.add_argument("--runtimes", action="store_true", help="only section 3: deploy runtimes vs eager")
    p.add_argument("--models", default="hardnet68,hardnet39ds,tresnet_m,resnet50",
                   help="with --runtimes: canonical models, the last one is the reference of the ratios")
    p.add_argument("--sizes", default="224,1080x1920", help="with --runtimes: input sizes, 224 or HxW (height x width)")
    p.add_argument("--skip", default="", help="with --runtimes: runtimes to leave out (channels_last, torchscript, "
                                               "compile, onnxruntime)")
    args = p.parse_args()
    if args.runtimes:
        runtimes_section(args)
        return
    cfg = nas.get_config(args.model)
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(f"{args.model}: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cpu ({device_name(torch.device('cpu'))}), load average at start {load[0]:.2f}; CPU figures")

    # the weights every model below shares: the fresh initialisation with non-trivial BatchNorms
    package = model_with_nontrivial_bn(cfg)
    state = package.state_dict()

    section(f"1. export time per format ({args.model}, median of {args.repeat})")
    files: dict[str, bytes] = {}
    meta = {"latency_note": "not recorded (benchmark)"}
    for fmt, deploy in (("json", False), ("yaml", False), ("py", False), ("py", True), ("torchscript", False),
                        ("torchscript", True), ("onnx", False), ("onnx", True)):
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            data = export_bytes(cfg, fmt, deploy=deploy, metadata=meta, state_dict=state)
            times.append(time.perf_counter() - t0)
        files[f"{fmt}{'-deploy' if deploy else ''}"] = data
        label = f"{fmt}{' --deploy' if deploy else ''}"
        print(f"  {label:<20} {1000 * statistics.median(times):9.1f} ms   {len(data):>12,} bytes")

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "exported.py").write_bytes(files["py"])
        (Path(tmp) / "exported_deploy.py").write_bytes(files["py-deploy"])
        exported = load_module(Path(tmp) / "exported.py", "bench_exported").build().eval()
        exported.load_state_dict(state)
        fused = fuse_model(package)
        exported_deploy = load_module(Path(tmp) / "exported_deploy.py", "bench_exported_deploy").build().eval()
        exported_deploy.load_state_dict(fused.state_dict())
    x = torch.randn(1, 3, 224, 224)
    threads = args.threads or torch.get_num_threads()
    models = {"package": package, "exported .py": exported, "exported .py --deploy": exported_deploy,
              "package, BN folded": fused}
    section(f"2. inference latency, cpu ({threads} threads), batch 1, 224x224, fp32: {len(models)} models "
            f"interleaved forward by forward, {args.seconds:g} s")
    with torch.no_grad():
        ref = package(x)
        for name in ("exported .py", "exported .py --deploy"):
            err = float((models[name](x) - ref).abs().max())
            print(f"  {name} vs package: max |difference| {err:.2e} (outputs up to {float(ref.abs().max()):.2f})")
    times = interleaved(models, x, threads, args.seconds, args.max_rounds)
    names = list(models)
    rounds = len(times[names[0]])
    print(f"  {rounds} rounds (one forward of each model per round, the order rotating)\n")
    print(f"  {'model':<24}{'median':>10}{'p10':>10}{'p90':>10}   ms")
    for n in names:
        q = statistics.quantiles(times[n], n=10)
        print(f"  {n:<24}{statistics.median(times[n]):10.2f}{q[0]:10.2f}{q[-1]:10.2f}")
    print()
    base = times["package"]
    for n, target in (("exported .py", "~1.0"), ("exported .py --deploy", "<= 0.9"), ("package, BN folded", "")):
        paired = statistics.median(a / b for a, b in zip(times[n], base))
        of_medians = statistics.median(times[n]) / statistics.median(base)
        of_p10 = statistics.quantiles(times[n], n=10)[0] / statistics.quantiles(base, n=10)[0]
        t = f"  (target {target})" if target else ""
        print(f"  {n} / package: {of_medians:.3f} ratio of medians, {paired:.3f} median of paired ratios, "
              f"{of_p10:.3f} ratio of p10s{t}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(f"\nload average at the end {load[0]:.2f} (2 cores; other work on the machine shows up as spread)")


if __name__ == "__main__":
    sys.exit(main())
