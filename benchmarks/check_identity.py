"""Behaviour fingerprint of random configs, to hold a refactor to "nothing changed".

    python benchmarks/check_identity.py save FILE [--configs 200]
    python benchmarks/check_identity.py compare FILE [--configs 200]

For each of ``--configs`` configs from `nas.sampling.random_config` (seeds 0..n-1) it records the
state_dict keys and shapes of `nas.build_model`, the model's output on a fixed input with the
weights a fixed seed initialises (eval mode), every record of `nas.analyze` (the fields any
version has) and `nas.latency.predict_ms` on the packaged V100 profile (this CPU's would be measured
afresh) for two precisions, eager and deployed. ``save`` writes that to FILE (a pickle of plain
data: run it on the old code); ``compare`` recomputes it and prints
how many configs differ, exiting 1 if any does. Outputs must be bit-identical.
"""

from __future__ import annotations

import argparse
import pickle
import sys

import torch

import nas
from nas.sampling import random_config

_FIELDS = ("name", "op", "in_shape", "out_shape", "params", "macs", "cio", "extra_macs", "mem", "groups",
           "bytes_per_element")


def fingerprint(seed: int) -> dict:
    cfg = random_config(seed)
    torch.manual_seed(seed)
    model = nas.build_model(cfg).eval()
    res = 2 * cfg.reduction
    x = torch.randn(2, cfg.in_channels, res, res, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = model(x)
    from nas.latency.predict import predict_ms
    from nas.latency.profiles import resolve_profile

    profile = resolve_profile("v100")  # packaged: this CPU's profile is measured afresh unless one is saved
    report = nas.analyze(cfg, res)
    return {
        "arch_id": cfg.arch_id,
        "state": [(k, tuple(v.shape)) for k, v in model.state_dict().items()],
        "out": out.numpy().tobytes(),
        "records": [tuple(getattr(r, f) for f in _FIELDS) for r in report.layers],
        "predict": [predict_ms(cfg, profile, res, 1, prec, deploy) for prec in ("fp32", "fp16")
                    for deploy in (False, True)],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["save", "compare"])
    p.add_argument("file")
    p.add_argument("--configs", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(1)
    prints = [fingerprint(s) for s in range(args.configs)]
    if args.mode == "save":
        with open(args.file, "wb") as f:
            pickle.dump(prints, f)
        print(f"saved {len(prints)} fingerprints to {args.file}")
        return 0
    with open(args.file, "rb") as f:
        old = pickle.load(f)
    bad = {}
    for seed, (a, b) in enumerate(zip(old, prints)):
        diff = [k for k in a if a[k] != b[k]]
        if diff:
            bad[seed] = diff
    print(f"{len(prints)} configs: {len(prints) - len(bad)} identical, {len(bad)} differ"
          + (f": {dict(list(bad.items())[:10])}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
