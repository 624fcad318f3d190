"""Proxy fidelity and cost on CIFAR-10, measured in one run.

    python benchmarks/bench_proxy.py [--data ../shared/data/cifar10-jpg.tar.gz] [--archs 12] [--long-factor 10]

1. Fidelity: random architectures of the space plus canonical ones (width-scaled) are trained
   with the default proxy and with a >= 10x longer schedule; Kendall tau of the proxy's accuracy,
   of each zero-cost proxy, of params and of MACs against the long run's accuracy.
2. Cost: default-proxy wall time of a HarDNet68-size network, and training throughput of
   `train_eval` vs a plain PyTorch loop (DataLoader over the same tensors, same model), as a ratio.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import nas
from nas.data import Dataset, load_dataset
from nas.proxy import ProxyBudget, proxy_config, scale_width, train_eval, zero_cost
from nas.sampling import random_config
from nas.stats import kendall_tau

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
    p.add_argument("--archs", type=int, default=12, help="random architectures (canonical ones are added)")
    p.add_argument("--long-factor", type=float, default=10.0, help="long schedule = this many x the proxy's images")
    p.add_argument("--cost-only", action="store_true", help="only section 2 (minutes instead of hours on 2 cores)")
    p.add_argument("--fidelity-only", action="store_true", help="only section 1 (accuracies do not depend on the "
                                                                   "machine's load, wall times do)")
    args = p.parse_args()
    t0 = time.perf_counter()
    ds = load_dataset(args.data)
    print(f"data {ds} loaded in {time.perf_counter() - t0:.1f} s; torch threads {torch.get_num_threads()}")
    proxy = ProxyBudget()
    long = ProxyBudget(epochs=proxy.epochs * args.long_factor / 2, max_train_samples=2 * proxy.max_train_samples,
                       max_eval_samples=None)
    print(f"default proxy: {proxy.epochs} epochs x {proxy.max_train_samples} images, width x{proxy.width_mult}; "
          f"long: {long.epochs} epochs x {long.max_train_samples} images ({args.long_factor:.0f}x the images)")

    if not args.fidelity_only:
        cost(ds, proxy)
    if args.cost_only:
        return
    fidelity(args, ds, proxy, long)


def cost(ds: Dataset, proxy: ProxyBudget) -> None:
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


def fidelity(args: argparse.Namespace, ds: Dataset, proxy: ProxyBudget, long: ProxyBudget) -> None:
    print("\n== 1. fidelity")
    rng = random.Random(0)
    cfgs = [random_config(rng, max_width=64, max_depth=8, num_classes=10).replace(name=f"random{i}")
            for i in range(args.archs)]
    cfgs += [scale_width(nas.get_config(n), 0.25).replace(name=f"{n}@0.25")
             for n in ("hardnet39ds", "hardnet68", "tresnet_m", "resnet50")]
    rows = []
    for c in cfgs:
        a = train_eval(c, ds, proxy)
        b = train_eval(c, ds, long)
        z = zero_cost(c, ds)
        cost = nas.analyze(proxy_config(c, ds, proxy.width_mult), max(32, c.reduction))
        rows.append((c.name, a, b, z, cost.macs))
        print(f"  {c.name:<16} proxy {a.accuracy if a.ok else float('nan'):.3f} ({a.wall_s:5.1f} s)  "
              f"long {b.accuracy if b.ok else float('nan'):.3f} ({b.wall_s:6.1f} s)  "
              f"synflow {z['synflow']:.1f} naswot {z['naswot']:.1f} grad_norm {z['grad_norm']:.2f} "
              f"params {z['params'] / 1e6:.2f}M {a.status}/{b.status}")
    ok = [r_ for r_ in rows if r_[1].ok and r_[2].ok]
    longs = [r_[2].accuracy for r_ in ok]
    print(f"\n  Kendall tau against the long run's accuracy (n={len(ok)}):")
    print(f"    default proxy   {kendall_tau([r_[1].accuracy for r_ in ok], longs):6.3f}   (target >= 0.6)")
    for key in ("synflow", "naswot", "grad_norm", "params"):
        print(f"    {key:<15} {kendall_tau([r_[3][key] for r_ in ok], longs):6.3f}")
    print(f"    MACs            {kendall_tau([r_[4] for r_ in ok], longs):6.3f}")
    print(f"  wall: proxy median {statistics.median(r_[1].wall_s for r_ in ok):.1f} s, "
          f"long median {statistics.median(r_[2].wall_s for r_ in ok):.1f} s")


if __name__ == "__main__":
    main()
