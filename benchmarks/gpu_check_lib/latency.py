"""The GPU check's measuring sections: environment, canonical networks, the seed claim, the
device profile, and predicted vs measured latency."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

import nas
from nas.config import ArchConfig
from nas.latency import PRECISIONS, DeviceProfile, calibrate, check_profile, load_cpu_profile, predict_ms
from nas.latency.devices import device_name, fingerprint
from nas.sampling import random_config

from .common import Measured, Plan, Shared, fidelity, package_root, timed
from .harness import Section, failure_line

#: HarDNet68 / ResNet-50 latency as published: 32.6 / 46.5 ms in the paper, 22.5 / 31.0 ms in the README
PUBLISHED_RATIOS: dict[str, float] = {"paper Table 4 (GTX1080, PyTorch 1.1, 1024 px)": 0.70,
                                      "Pytorch-HarDNet README (1080Ti, PyTorch 1.1, 1024 px)": 0.73}
MIN_FIT = 6
"""Fewest measurements `calibrate` fits on (4) plus its own hold-out (2): the fit half needs this many."""


def section_env(sec: Section, sh: Shared) -> None:
    dev = sh.device
    threads = torch.get_num_threads()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    info: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda, "cudnn": cudnn, "device": str(dev), "device_name": device_name(dev),
        "fingerprint": fingerprint(dev, threads), "cpu": device_name(torch.device("cpu")), "cpu_count": os.cpu_count(),
        "torch_threads": threads, "hardnas_commit": _git_commit(),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info.update(capability=f"sm{props.major}{props.minor}", memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count, driver=_driver(), tf32=_tf32_flags())
    info["precisions"] = {p: "supported" if why is None else why for p, why in sh.support().items()}
    for k, v in info.items():
        sec.set(k, v)
    sec.log(f"{info['device_name']}, torch {info['torch']}, CUDA {info['cuda_runtime']}, "
            f"precisions {info['precisions']}")


def _tf32_flags() -> dict[str, Any]:
    """Whether fp32 convs and matmuls run as TF32 here (each flag read on its own: torch renames them)."""
    reads = {"cudnn.allow_tf32": lambda: torch.backends.cudnn.allow_tf32,
             "cuda.matmul.allow_tf32": lambda: torch.backends.cuda.matmul.allow_tf32,
             "float32_matmul_precision": torch.get_float32_matmul_precision}
    out: dict[str, Any] = {}
    for name, read in reads.items():
        try:
            out[name] = read()
        except Exception as err:  # a renamed flag is a note, not a failed environment section
            out[name] = f"unreadable: {failure_line(err)}"
    return out


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package_root(), capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def _driver() -> str | None:
    """The NVIDIA driver's version line (``/proc`` or ``nvidia-smi``), None when neither answers."""
    try:
        return Path("/proc/driver/nvidia/version").read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,clocks.max.mem,power.limit",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _measure_all(sec: Section, sh: Shared, jobs: list[tuple[str, str]], resolution: int) -> None:
    """Time each (network, precision) at ``resolution``; keep the results for the predictor section."""
    sec.total = len(jobs)
    for i, (name, precision) in enumerate(jobs):
        cfg = nas.get_config(name)
        labels = {"model": name, "precision": precision, "resolution": resolution}
        r = timed(sec, sh, labels, sh.model(name), len(jobs) - i, resolution=resolution, precision=precision)
        if r is None and sec.out_of_time:
            return
        if r is not None and r.ok:
            sh.measured.append(Measured(name, "canonical", cfg, precision, resolution, r))


def section_canonical(sec: Section, sh: Shared) -> None:
    support = sh.support()
    sec.set("resolution", sh.plan.resolution)
    sec.set("batch", 1)
    sec.set("precisions", {p: "measured" if why is None else why for p, why in support.items()})
    jobs = [(n, p) for p in PRECISIONS if support[p] is None for n in sh.plan.models]
    _measure_all(sec, sh, jobs, sh.plan.resolution)


def section_canonical_large(sec: Section, sh: Shared) -> None:
    support = sh.support()
    precision = next(p for p in ("fp16", "bf16", "fp32") if support[p] is None)
    sec.set("resolution", sh.plan.large_resolution)
    sec.set("batch", 1)
    sec.set("precision", precision)
    if precision != "fp16":
        sec.set("note", f"fp16 {support['fp16']}; measured {precision} instead")
    _measure_all(sec, sh, [(n, precision) for n in sh.plan.models], sh.plan.large_resolution)


def section_seed_claim(sec: Section, sh: Shared) -> None:
    sec.set("published", PUBLISHED_RATIOS)
    precisions = ["fp32"] + (["fp16"] if sh.device.type == "cuda" and sh.support()["fp16"] is None else [])
    h68, r50 = sh.model("hardnet68"), sh.model("resnet50")
    # the published setting (fp32, the largest resolution) first: it is what a short time box must not lose
    jobs = [(res, p, deploy) for p in precisions for res in sorted(sh.plan.seed_resolutions, reverse=True)
            for deploy in (False, True)]
    sec.total = 2 * len(jobs)
    for i, (res, p, deploy) in enumerate(jobs):
        mode = "deploy" if deploy else "eager"
        left = 2 * (len(jobs) - i)
        a = timed(sec, sh, {"model": "hardnet68", "precision": p, "resolution": res, "mode": mode}, h68, left,
                  resolution=res, precision=p, deploy=deploy)
        b = timed(sec, sh, {"model": "resnet50", "precision": p, "resolution": res, "mode": mode}, r50, left - 1,
                  resolution=res, precision=p, deploy=deploy)
        if a is None or b is None or not (a.ok and b.ok):
            if sec.out_of_time:
                return
            continue
        ratio = a.median_ms / b.median_ms
        sec.add("rows", {"resolution": res, "precision": p, "mode": mode, "hardnet68_ms": a.median_ms,
                         "resnet50_ms": b.median_ms, "ratio": ratio, "disturbed": a.disturbed or b.disturbed})
        sec.log(f"{res} px {p} {mode}: HarDNet68 / ResNet-50 = {ratio:.3f} (published 0.70-0.73)")


def section_profile(sec: Section, sh: Shared) -> None:
    from nas.latency import profile_device  # an ImportError (no profiler in this nas) is this section's line

    budget = max(1.0, min(sh.plan.profile_budget_s, 0.85 * sec.left()))
    sec.set("budget_s", round(budget, 1))
    t0 = time.monotonic()
    profile = profile_device(str(sh.device), budget_s=budget, save=True)
    sec.set("wall_s", round(time.monotonic() - t0, 1))
    sec.set("profile", profile.to_dict())
    sh.local_profile = profile
    sec.item(True)
    problems = check_profile(profile)
    if problems:
        sec.partial_reason = f"implausible profile: {'; '.join(problems)}"
    sec.log(f"{profile.name}: {profile.source}")


def _random_configs(plan: Plan, count: int) -> list[ArchConfig]:
    """Seeded random configs from the whole vocabulary that take the check's resolution as they are."""
    rng = random.Random(0)
    out: list[ArchConfig] = []
    while len(out) < count:
        cfg = random_config(rng, num_classes=1000, **plan.random_caps)
        if plan.resolution % cfg.reduction == 0:
            out.append(cfg)
    return out


def _published(sec: Section, name: str) -> DeviceProfile | None:
    """The published profile `match_published` finds for this device's name, recorded either way."""
    try:
        from nas.latency import match_published
    except ImportError as err:  # lands with profile_device; until then there is no spec-only comparison
        sec.set("published_match", f"unavailable: {failure_line(err)}")
        return None
    match = match_published(name)
    sec.set("published_match", match.name if match else f"none: no published profile's name appears in {name!r}")
    return match


def _local_base(sh: Shared) -> tuple[str, DeviceProfile] | None:
    if sh.local_profile is not None:
        return "local profile (profile_device)", sh.local_profile
    if sh.device.type == "cpu":
        return "local profile (cpu micro-benchmark; no profile_device result)", load_cpu_profile().profile
    return None


def section_predict(sec: Section, sh: Shared) -> None:
    plan, res = sh.plan, sh.plan.resolution
    have = {m.name for m in sh.measured if m.precision == "fp32" and m.resolution == res}
    missing = [n for n in plan.models if n not in have]
    randoms = _random_configs(plan, plan.random_configs)
    sec.total = len(missing) + len(randoms)
    jobs: list[tuple[str, str, ArchConfig]] = [(n, "canonical", nas.get_config(n)) for n in missing]
    jobs += [(f"random{i:02d} {c.arch_id}", "random", c) for i, c in enumerate(randoms)]
    for i, (name, kind, cfg) in enumerate(jobs):
        r = timed(sec, sh, {"model": name, "precision": "fp32", "resolution": res}, cfg, len(jobs) - i,
                  resolution=res, precision="fp32")
        if r is None and sec.out_of_time:
            break
        if r is not None and r.ok:
            sh.measured.append(Measured(name, kind, cfg, "fp32", res, r))

    profiles: list[tuple[str, DeviceProfile]] = []
    match = _published(sec, device_name(sh.device))
    if match:
        profiles.append((f"published {match.name} (spec only)", match))
    local = _local_base(sh)
    if local:
        profiles.append(local)
    held_out = _calibrate_half(sec, sh, local[1] if local else (profiles[0][1] if profiles else None), profiles)
    sec.set("profiles", [{"label": label, "name": p.name, "source": p.source} for label, p in profiles])
    if not profiles:
        sec.partial_reason = "no profile to predict with (no published match and no local profile)"
        return
    rows, groups = [], {"canonical": [], "random": [], "held out": []}
    for m in sh.measured:
        pred = {label: predict_ms(m.config, p, resolution=m.resolution, precision=m.precision) for label, p in profiles}
        rows.append({"model": m.name, "kind": m.kind, "precision": m.precision, "resolution": m.resolution,
                     "measured_ms": m.result.median_ms, "disturbed": m.result.disturbed, "held_out": id(m) in held_out,
                     "predicted_ms": pred})
        groups[m.kind].append(rows[-1])
        if id(m) in held_out:
            groups["held out"].append(rows[-1])
    sec.set("predictions", rows)
    table = []
    for label, _ in profiles:
        for group, members in groups.items():
            clean = [r for r in members if not r["disturbed"]]
            use = clean or members  # a machine that was never quiet still gets figures, flagged as such
            f = fidelity([r["predicted_ms"][label] for r in use], [r["measured_ms"] for r in use])
            table.append({"profile": label, "group": group, **f, "disturbed_only": bool(members) and not clean})
            if use:
                sec.log(f"{label} on {group}: n={f['n']} within +-25% {100 * f['within_25']:.0f}%"
                        f"{' (disturbed figures only)' if not clean else ''}")
    sec.set("fidelity", table)


def _calibrate_half(sec: Section, sh: Shared, base: DeviceProfile | None,
                    profiles: list[tuple[str, DeviceProfile]]) -> set[int]:
    """Fit ``base`` on a seeded half of the clean fp32 measurements at the check's resolution; add the fit
    to ``profiles``; returns the held-out half (ids of `Measured`) every profile is then judged on."""
    res = sh.plan.resolution
    pool = [m for m in sh.measured if m.precision == "fp32" and m.resolution == res and m.result.clean]
    order = list(range(len(pool)))
    random.Random(1).shuffle(order)
    fit, test = [pool[i] for i in order[:len(pool) // 2]], [pool[i] for i in order[len(pool) // 2:]]
    held_out = {id(m) for m in test}
    record: dict[str, Any] = {"accepted": False, "fit": len(fit), "held_out": len(test)}
    if base is None:
        sec.set("calibration", {**record, "reason": "not attempted: no profile to start from"})
        return held_out
    if len(fit) < MIN_FIT:
        sec.set("calibration", {**record, "reason": f"not attempted: {len(pool)} undisturbed fp32 measurements at "
                                                    f"{res} px; a fit half needs at least {MIN_FIT}"})
        return held_out
    try:
        cal = calibrate([m.config for m in fit], [m.result for m in fit], base, resolution=res, precision="fp32")
    except Exception as err:  # the fidelity of the other profiles is still worth reporting
        sec.set("calibration", {**record, "reason": f"failed: {failure_line(err)}"})
        sec.item(False, f"calibration: {failure_line(err)}")
        return held_out
    sec.set("calibration", {**record, "accepted": cal.accepted, "reason": cal.reason, "base": base.name,
                            "fitted": cal.fitted.to_dict() if cal.fitted else None})
    if cal.fitted is not None:
        profiles.append((f"calibrated here on {len(fit)} ({'accepted' if cal.accepted else 'rejected'})", cal.fitted))
    sec.log(cal.reason)
    return held_out
