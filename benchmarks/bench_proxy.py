"""Proxy fidelity and cost on CIFAR-10, measured in one run.

    python benchmarks/bench_proxy.py [--data ../shared/data/cifar10-jpg.tar.gz] [--networks 30] [--scale 0.25]
                                     [--max-macs M] [--out FILE] [--fidelity-only | --cost-only]

1. Fidelity: `python -m nas.proxy fidelity` on the hybrid space (canonical seeds + seeded random
   points, width-scaled): each network trained with the reference (10 epochs over the whole training
   set) and the default proxy, resumable from its JSON cache; Kendall tau with bootstrap 95 %
   intervals of the proxy, the corrected proxies, each zero-cost proxy, params and MACs.
2. Cost: default-proxy wall time of a HarDNet68-size network, and training throughput of
   `train_eval` vs a plain PyTorch loop (DataLoader over the same tensors, same model), as a ratio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import nas
from nas.data import load_dataset
from nas.proxy import ProxyBudget, proxy_config, train_eval
from nas.proxy.__main__ import main as proxy_main

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"


def plain_loop_images_per_s(cfg: nas.ArchConfig, ds, batch: int, steps: int) -> float:
    """The loop a user would write: TensorDataset + DataLoader, float inputs, SGD."""
    model = nas.build_model(cfg).train()
    x = ds.normalize(ds.train_x[: batch * steps])
    loader = DataLoader(TensorDataset(x, ds.train_y[: batch * steps]), batch_size=batch, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    t0, n = time.perf_counter(), 0
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(yb)
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--networks", type=int, default=30, help="networks of the fidelity study (default 30)")
    p.add_argument("--scale", default="0.25", help="width of the study's networks (default 0.25)")
    p.add_argument("--max-macs", default=None, help="leave out networks above this many trained MACs (default: no cap)")
    p.add_argument("--reference-epochs", default="10", help="epochs of the reference (default 10)")
    p.add_argument("--threads", default="1", help="torch CPU threads of the fidelity study (default 1: on a shared "
                                                  "machine 2 threads ran 13-18x slower, docs/proxy.md)")
    p.add_argument("--out", default=None, help="the study's cache file (default runs/fidelity/...; keep one under "
                                              "benchmarks/results/ to commit it)")
    p.add_argument("--cost-only", action="store_true", help="only section 2 (minutes instead of hours on 2 cores)")
    p.add_argument("--fidelity-only", action="store_true", help="only section 1 (accuracies do not depend on the "
                                                                   "machine's load, wall times do)")
    args = p.parse_args()
    if not args.fidelity_only:
        cost(args.data)
    if args.cost_only:
        return
    print("\n== 1. fidelity (python -m nas.proxy fidelity)")
    cap = ["--max-macs", args.max_macs] if args.max_macs else []
    cap += ["--out", args.out] if args.out else []
    proxy_main(["fidelity", "--space", "hybrid", "--data", args.data, "--networks", str(args.networks),
                "--scale", args.scale, *cap, "--reference-epochs", args.reference_epochs, "--threads", args.threads])


def cost(data: str) -> None:
    t0 = time.perf_counter()
    ds = load_dataset(data)
    proxy = ProxyBudget()
    print(f"data {ds} loaded in {time.perf_counter() - t0:.1f} s; torch threads {torch.get_num_threads()}")
    print("\n== 2. cost")
    h68 = nas.get_config("hardnet68")
    r = train_eval(h68, ds, proxy)
    print(f"  HarDNet68 default proxy: {r.wall_s:.1f} s wall (target <= 60 s), accuracy {r.accuracy:.3f}, "
          f"{r.images_per_s:.0f} img/s, proxy params {r.proxy['params']:,}")
    pcfg = proxy_config(h68, ds.resized(32), proxy.width_mult)
    steps = 20
    ours = train_eval(h68, ds, ProxyBudget(steps=steps, max_train_samples=proxy.max_train_samples)).images_per_s
    plain = plain_loop_images_per_s(pcfg, ds, proxy.batch_size, steps)
    print(f"  throughput: train_eval {ours:.0f} img/s (with augmentation) vs plain loop {plain:.0f} img/s "
          f"-> ratio {ours / plain:.2f} (target >= 1.0)")


if __name__ == "__main__":
    main()
