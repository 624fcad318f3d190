"""Shared test helpers: forward-hook counters (the measured side of the cost model), official-layout state dicts,
fast search arguments, free ports, Ray markers, a synthetic CPU and its clock for the profiler."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from nas.layers import BlurPool2d


def hook_counts(model: nn.Module, x: torch.Tensor) -> dict[str, dict[str, int]]:
    """Per conv-like / linear module: input+output elements and MACs seen in a real forward pass."""
    seen: dict[str, dict[str, int]] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, BlurPool2d, nn.Linear)):

            def hook(mod, inp, out, name=name):
                i, o = inp[0], out
                if isinstance(mod, nn.Conv2d):
                    macs = o.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
                elif isinstance(mod, BlurPool2d):
                    macs = o.numel() * 9
                else:
                    macs = o.numel() * mod.in_features
                cio = 0 if isinstance(mod, nn.Linear) else i.numel() + o.numel()
                seen[name] = {"cio": cio, "macs": macs, "out_shape": tuple(o.shape)}

            handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def official_state_dict(layout: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under an official checkpoint's keys and shapes (``reference_layouts[name]``), in its order."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in layout["state_dict"]:
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7)
        else:
            sd[key] = torch.randn(shape, generator=g)
    return sd


TINY = str(Path(__file__).parent / "data" / "tiny_space.yaml")


def fast(budget: str = "1ms") -> list[str]:
    """Search arguments that make a trial take a second: tiny space, 64 px, predicted latency, one epoch."""
    return ["--space", TINY, "--resolution", "64", "--latency", "predicted:v100", "--budget", budget,
            "--proxy-epochs", "1", "--no-progress"]


FAST = fast()


def free_port() -> int:
    """A TCP port nothing listens on right now, on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray[tune] is not installed (pip install -e '.[ray]')")


def _loopback_only_prefix() -> list[str] | None:
    """A command prefix that runs inside a private network namespace with only loopback up.

    Ray 2.60 binds its services to the machine's first non-loopback address whatever
    --node-ip-address says; sandboxes that allow loopback traffic only (like this project's CI)
    must not let it. In a fresh namespace loopback is the only address there is, so Ray uses it.
    """
    prefix = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "ns"]
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if ok:
        return prefix
    return [] if os.environ.get("HARDNAS_TEST_RAY") == "1" else None


RAY_PREFIX = _loopback_only_prefix() if HAVE_RAY else None
needs_ray_network = pytest.mark.skipif(
    RAY_PREFIX is None,
    reason="ray[tune] is not installed" if not HAVE_RAY else
    "Ray binds to the host's network address: needs `unshare --net` (root) for a loopback-only namespace, "
    "or HARDNAS_TEST_RAY=1 where that is allowed")
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def synthetic_cpu():
    """A fixed CPU profile (`nas.latency.DeviceProfile`) that micro-benchmarks are timed against instead of a clock."""
    from nas.latency import profiles
    from nas.latency.profiling import _simd_channels

    return profiles.DeviceProfile(
        name="truth", description="synthetic CPU", peak_gflops={"fp32": 200.0, "bf16": 200.0}, bandwidth_gbs=40.0,
        overhead_us=12.0, conv3x3_eff=0.9, conv1x1_eff=0.7, conv_strided_eff=0.45, dwconv_eff=0.05,
        linear_eff=0.35, memory_eff=0.6, channel_block=_simd_channels())


def synthetic_clock(truth):
    """A ``timer`` for `nas.latency.profiling.profile_device`: each probe takes what ``truth`` predicts for it."""
    from nas.latency.kernels import kernels_ms

    return lambda probe, seconds: kernels_ms(probe.kernels, truth)


def drive_ray(s: Any, url: str, name: str) -> None:
    """What Tune does with one worker: propose, run the trainable, hand its last result back, until finished."""
    from ray.tune.search import Searcher

    from nas.search import lifecycle
    from nas.search.ray_backend import LifecycleSearch, param_space, run_trial

    search = LifecycleSearch(s, lifecycle.open_study(s, url, name, heartbeat=False), url)
    search.set_max_concurrency(1)
    for i in range(50):
        proposal = search.suggest(f"t{i}")
        if proposal == Searcher.FINISHED:
            return
        if proposal is None:  # nothing to run now
            continue
        reports: list[dict] = []
        run_trial(param_space(s, url, name, None) | proposal, reports.append)
        search.on_trial_complete(f"t{i}", {**reports[-1], "done": True})
    pytest.fail("the Ray searcher never finished")
