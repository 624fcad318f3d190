"""Export benchmarks for HarDNet68, all measured in one run.

    python benchmarks/bench_export.py [--rounds 5] [--max-seconds 2] [--repeat 3]

1. Export time per format (``export_bytes``; onnx and torchscript include their built-in checks
   against PyTorch), median of ``--repeat`` runs.
2. Inference latency on this CPU (batch 1, 224x224, fp32) of the exported standalone ``.py`` vs the
   in-package model (target ratio ~1.0), and of the ``--deploy`` export (BatchNorm folded; target
   <= 0.9), with the same weights. The models are measured side by side, interleaved: every round
   measures each once with `nas.latency.measure` (warm-up, GC off, repeated until the IQR settles or
   the time cap), in a rotating order, and a ratio is taken within each round; the median over
   rounds is reported with the range. Nothing here asserts on wall time: it prints figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import nas
from nas.export import export_bytes
from nas.fuse import fuse_model
from nas.latency import measure
from nas.latency.devices import device_name


def section(title: str) -> None:
    print(f"\n== {title}")


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="hardnet68", help="canonical model (default hardnet68)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds (default 5)")
    p.add_argument("--max-seconds", type=float, default=2.0, help="time cap per measurement (default 2)")
    p.add_argument("--repeat", type=int, default=3, help="runs per export format (default 3)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the latency part (default: torch's)")
    args = p.parse_args()
    cfg = nas.get_config(args.model)
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(f"{args.model}: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cpu ({device_name(torch.device('cpu'))}), load average at start {load[0]:.2f}; CPU figures")

    # the weights every model below shares: the fresh initialisation with non-trivial BatchNorms
    torch.manual_seed(0)
    package = nas.build_model(cfg).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in package.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
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

    threads = args.threads or torch.get_num_threads()
    section(f"2. inference latency, cpu ({threads} threads), batch 1, 224x224, fp32 ({args.rounds} interleaved rounds)")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "exported.py").write_bytes(files["py"])
        (Path(tmp) / "exported_deploy.py").write_bytes(files["py-deploy"])
        exported = load_module(Path(tmp) / "exported.py", "bench_exported").build().eval()
        exported.load_state_dict(state)
        fused = fuse_model(package)
        exported_deploy = load_module(Path(tmp) / "exported_deploy.py", "bench_exported_deploy").build().eval()
        exported_deploy.load_state_dict(fused.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = package(x)
        for name, m in (("exported", exported), ("exported deploy", exported_deploy)):
            err = float((m(x) - ref).abs().max())
            print(f"  {name} vs package: max |difference| {err:.2e} (outputs up to {float(ref.abs().max()):.2f})")
    models = {"package": package, "exported .py": exported, "exported .py --deploy": exported_deploy,
              "package, BN folded": fused}
    names = list(models)
    medians: dict[str, list[float]] = {n: [] for n in names}
    iqrs: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate, so no model always goes first
        for n in order:
            res = measure(models[n], device="cpu", resolution=224, max_seconds=args.max_seconds,
                          threads=args.threads)
            medians[n].append(res.median_ms)
            iqrs[n].append(100 * (res.rel_iqr or 0.0))
        print(f"  round {r + 1}: " + ", ".join(f"{n} {medians[n][-1]:.1f} ms" for n in names))
    print()
    for n in names:
        print(f"  {n:<24} median {statistics.median(medians[n]):8.2f} ms  (rounds {min(medians[n]):.1f}-"
              f"{max(medians[n]):.1f}; IQR within a measurement {statistics.median(iqrs[n]):.1f}% median)")
    print()
    for n, target in (("exported .py", "~1.0"), ("exported .py --deploy", "<= 0.9"), ("package, BN folded", "")):
        ratios = [a / b for a, b in zip(medians[n], medians["package"])]
        t = f"  (target {target})" if target else ""
        print(f"  ratio {n} / package: {statistics.median(ratios):.3f} (per round {min(ratios):.3f}-"
              f"{max(ratios):.3f}){t}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(f"\nload average at the end {load[0]:.2f} (2 cores; other work on the machine shows up as spread)")


if __name__ == "__main__":
    sys.exit(main())
