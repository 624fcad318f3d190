"""One-call GPU validation: the canonical networks measured, the seed claim, this device's profile,
predicted vs measured latency, a short search and the exported deploy model, within one deadline.

    python benchmarks/gpu_check.py [--device auto|cuda|cuda:N|cpu] [--quick] [--out DIR] [--deadline S]
                                   [--data CIFAR10.tar.gz] [--sections env,canonical,...] [--inject error:NAME]

Writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` (DIR: ``runs/`` or ``$HARDNAS_RUNS``) after
every section, atomically. Sections (docs/gpu.md): env, canonical, canonical_large, seed_claim,
profile, predict, search, export. Each gets a share of the deadline (default 420 s, ``--quick``
240 s); one that fails is one line in the report and the next one runs. ``--quick`` shrinks every
section (2 networks, 32 px, 2 random configs, a 2-trial search) so ``--device cpu --quick`` proves
the script without a GPU. Exit codes: 0 every selected section ok, 1 otherwise (the report says
which and why), 2 usage error, 130 stopped (Ctrl-C or SIGTERM; the report is written first).
"""

from __future__ import annotations

import time

START = time.monotonic()  # before the imports: the deadline counts the whole process

import dataclasses  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import torch  # noqa: E402

import nas  # noqa: E402
from gpu_check_harness import (OK, Report, Section, SectionError, Stopped, failure_line, log,  # noqa: E402
                               run_sections, start_watchdog)
from gpu_check_render import render_markdown  # noqa: E402
from nas.cli import ArgumentParser, run  # noqa: E402
from nas.config import ArchConfig  # noqa: E402
from nas.data import DATASET_NAMES  # noqa: E402
from nas.fuse import fuse_model  # noqa: E402
from nas.latency import (PRECISIONS, DeviceProfile, InterferencePolicy, LatencyResult, calibrate,  # noqa: E402
                         check_profile, load_cpu_profile, measure, predict_ms)
from nas.latency.devices import device_name, fingerprint, resolve_device, resolve_precision  # noqa: E402
from nas.paths import runs_dir  # noqa: E402
from nas.sampling import random_config  # noqa: E402
from nas.stats import kendall_tau  # noqa: E402

SECTIONS: tuple[str, ...] = ("env", "canonical", "canonical_large", "seed_claim", "profile", "predict", "search",
                             "export")
#: HarDNet68 / ResNet-50 latency as published (docs: /work/shared/REFERENCE.md, section 1.3-1.4)
PUBLISHED_RATIOS: dict[str, float] = {"paper Table 4 (GTX1080, PyTorch 1.1, 1024 px)": 0.70,
                                      "Pytorch-HarDNet README (1080Ti, PyTorch 1.1, 1024 px)": 0.73}
MIN_FIT = 6
"""Fewest measurements `calibrate` fits on (4) plus its own hold-out (2): the fit half needs this many."""
SEARCH_BUDGET_FACTOR = 1.5
"""The search's budget: this many times HarDNet68's measured latency at the search resolution."""


@dataclass(frozen=True)
class Plan:
    """What every section does in one mode (full on a GPU, or --quick)."""

    models: tuple[str, ...]
    resolution: int
    large_resolution: int
    seed_resolutions: tuple[int, ...]
    random_configs: int
    random_caps: dict[str, int]
    search_trials: int
    proxy_epochs: float
    max_seconds: float  # timing cap of one measurement
    profile_budget_s: float
    deadline_s: float
    export_rounds: int
    warmup: int  # untimed forwards before each measurement
    policy: InterferencePolicy = field(default_factory=InterferencePolicy)


FULL = Plan(tuple(nas.list_models()), 224, 1024, (512, 1024), 40, {"max_width": 128, "max_depth": 16}, 6, 4.0, 0.5,
            60.0, 420.0, 2, 3)
QUICK = Plan(("hardnet68", "resnet50"), 32, 64, (32, 64), 2, {"max_width": 64, "max_depth": 8}, 2, 0.1, 0.25, 5.0,
             240.0, 1, 1, InterferencePolicy(max_wait_s=0.3))
#: each section's weight in sharing out the time left (None: not time-boxed)
WEIGHTS: dict[str, float | None] = {"env": None, "canonical": 75, "canonical_large": 40, "seed_claim": 45,
                                    "profile": 60, "predict": 80, "search": 130, "export": 30}


@dataclass
class Measured:
    """One clean-or-not measurement the predictor is later judged on."""

    name: str
    kind: str  # canonical or random
    config: ArchConfig
    precision: str
    resolution: int
    result: LatencyResult


@dataclass
class Shared:
    """What the sections hand on to each other."""

    device: torch.device
    plan: Plan
    data: str | None
    out: Path
    report: Report
    measured: list[Measured] = field(default_factory=list)
    local_profile: DeviceProfile | None = None
    _support: dict[str, str | None] | None = None
    _models: dict[str, torch.nn.Module] = field(default_factory=dict)

    def model(self, name: str) -> torch.nn.Module:
        """A canonical network, built once and measured at every precision and resolution."""
        if name not in self._models:
            self._models[name] = nas.build_model(nas.get_config(name))
        return self._models[name]

    def support(self) -> dict[str, str | None]:
        """precision -> None when measurable here, else why not (``not supported on cpu``...)."""
        if self._support is None:
            self._support = {p: precision_problem(self.device, p) for p in PRECISIONS}
        return self._support


# -- helpers -------------------------------------------------------------------------------------


def _bf16_native(dev: torch.device) -> bool:
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch has no emulation flag
        return torch.cuda.is_bf16_supported()


def precision_problem(dev: torch.device, precision: str) -> str | None:
    """None when ``measure`` can time ``precision`` on ``dev`` (a tiny conv under autocast runs), else why not."""
    try:
        resolve_precision(precision, dev)
    except ValueError:
        return f"not supported on {dev.type}"
    if precision == "fp32":
        return None
    where = device_name(dev) if dev.type == "cuda" else "cpu"
    if dev.type == "cuda" and precision == "bf16" and not _bf16_native(dev):
        return f"not supported on {where} (no native bf16)"
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    try:
        conv = torch.nn.Conv2d(8, 8, 3, padding=1).to(dev)
        with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype):
            y = conv(torch.randn(1, 8, 16, 16, device=dev))
        if y.dtype != dtype or not bool(torch.isfinite(y).all()):
            return f"not supported on {where} (autocast gave {y.dtype})"
    except Exception as err:
        return f"not supported on {where} ({failure_line(err)})"
    return None


def latency_item(r: LatencyResult, labels: dict[str, Any]) -> dict[str, Any]:
    item = {**labels, "median_ms": r.median_ms, "p10_ms": r.p10_ms, "p90_ms": r.p90_ms, "rel_iqr": r.rel_iqr,
            "runs": r.runs, "capped": r.capped, "disturbed": r.disturbed, "canary_slowdown": r.canary_slowdown}
    if r.error:
        item["error"] = r.error
    if r.interference and r.disturbed:
        item["interference"] = r.interference
    return item


def _label(labels: dict[str, Any]) -> str:
    return " ".join(str(v) for v in labels.values())


def timed(sec: Section, sh: Shared, labels: dict[str, Any], target: Any, items_left: int, key: str = "items",
          **kw: Any) -> LatencyResult | None:
    """`measure` one network within the section's box and record it; None when out of time or refused."""
    if not sec.has_time():
        return None
    cap = min(sh.plan.max_seconds, max(0.05, sec.left() / max(1, items_left) / 2))
    try:
        r = measure(target, device=sh.device, max_seconds=cap, warmup=sh.plan.warmup, interference=sh.plan.policy,
                    **kw)
    except Exception as err:  # bad arguments raise; a failing network is a result
        reason = failure_line(err)
        sec.add(key, {**labels, "error": reason})
        sec.item(False, f"{_label(labels)}: {reason}")
        sec.log(f"{_label(labels)}: {reason}")
        return None
    sec.add(key, latency_item(r, labels))
    sec.item(r.ok, None if r.ok else f"{_label(labels)}: {r.error}")
    if r.ok:
        flag = " DISTURBED" if r.disturbed else ""
        sec.log(f"{_label(labels)}: {r.median_ms:.3f} ms (IQR {100 * (r.rel_iqr or 0):.1f}%, {r.runs} runs){flag}")
    else:
        sec.log(f"{_label(labels)}: failed: {r.error}")
    return r


def fidelity(pred: Sequence[float], meas: Sequence[float]) -> dict[str, Any]:
    """Kendall tau, share within +-10 % / +-25 %, median |error| and median predicted/measured."""
    n = len(meas)
    if not n:
        return {"n": 0}
    ratios = [p / m for p, m in zip(pred, meas)]
    errs = [abs(r - 1) for r in ratios]
    return {"n": n, "kendall_tau": kendall_tau(pred, meas) if n >= 3 else None,
            "within_10": sum(e <= 0.10 for e in errs) / n, "within_25": sum(e <= 0.25 for e in errs) / n,
            "median_abs_err": statistics.median(errs), "median_ratio": statistics.median(ratios)}


def _package_root() -> str:
    """The folder holding the ``nas`` this process imported (the search subprocess must import the same)."""
    return str(Path(nas.__file__).resolve().parent.parent)


# -- sections ------------------------------------------------------------------------------------


def section_env(sec: Section, sh: Shared) -> None:
    dev = sh.device
    threads = torch.get_num_threads()
    info: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
        else None, "device": str(dev), "device_name": device_name(dev), "fingerprint": fingerprint(dev, threads),
        "cpu": device_name(torch.device("cpu")), "cpu_count": os.cpu_count(), "torch_threads": threads,
        "hardnas_commit": _git_commit(),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info.update(capability=f"sm{props.major}{props.minor}", memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count, driver=_driver(),
                    tf32={"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                          "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                          "float32_matmul_precision": torch.get_float32_matmul_precision()})
    info["precisions"] = {p: "supported" if why is None else why for p, why in sh.support().items()}
    for k, v in info.items():
        sec.set(k, v)
    sec.log(f"{info['device_name']}, torch {info['torch']}, CUDA {info['cuda_runtime']}, "
            f"precisions {info['precisions']}")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_package_root(), capture_output=True, text=True,
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
    from nas.latency import profile_device  # the lead's nas/latency/profiling.py; an ImportError is this section's line

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
        from nas.latency.profiling import match_published
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


def _search_budget_ms(sec: Section, sh: Shared) -> float:
    res = sh.plan.resolution
    known = [m.result.median_ms for m in sh.measured
             if m.name == "hardnet68" and m.precision == "fp32" and m.resolution == res and m.result.clean]
    if not known:
        r = timed(sec, sh, {"model": "hardnet68", "precision": "fp32", "resolution": res}, sh.model("hardnet68"), 1,
                  key="budget_measurement", resolution=res)
        if r is None or not r.ok:
            raise SectionError("no HarDNet68 measurement to set the search budget from")
        known = [r.median_ms]
    return SEARCH_BUDGET_FACTOR * known[0]


def section_search(sec: Section, sh: Shared) -> None:
    from nas.data import load_dataset

    data = sh.data or "digits"
    t0 = time.monotonic()
    ds = load_dataset(None if data == "digits" else data, seed=0)  # decodes once into runs/datasets for the search
    sec.set("data", {"spec": data, "name": ds.name, "train": len(ds.train_y), "test": len(ds.test_y),
                     "prepare_s": round(time.monotonic() - t0, 1)})
    budget = _search_budget_ms(sec, sh)
    if not sec.has_time(10.0):
        return
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    storage = f"sqlite:///{(runs_dir() / 'gpu_check_search.db').resolve()}"
    study = f"gpu_check-{sh.device.type}-{stamp}"
    cmd = [sys.executable, "-m", "nas.search", "--budget", f"{budget:.6f}ms", "--device", str(sh.device),
           "--trials", str(sh.plan.search_trials), "--resolution", str(sh.plan.resolution),
           "--proxy-epochs", f"{sh.plan.proxy_epochs:g}", "--data", data, "--storage", storage,
           "--study-name", study, "--timeout", f"{max(5.0, 0.75 * sec.left()):.0f}", "--no-progress"]
    sec.set("command", " ".join(cmd[1:]))
    sec.set("budget_ms", budget)
    sec.set("budget_rule", f"{SEARCH_BUDGET_FACTOR:g} x HarDNet68's measured fp32 latency at {sh.plan.resolution} px")
    env = {**os.environ, "HARDNAS_RUNS": str(runs_dir().resolve()),
           "PYTHONPATH": os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)}
    log_path = sh.out / "gpu_check_search.log"
    sec.set("log", log_path.name)
    sec.log(f"{study}: {sh.plan.search_trials} trials, budget {budget:.3f} ms, data {data} (log: {log_path})")
    t0 = time.monotonic()
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        sh.report.children.append(proc)
        stopped = False
        try:
            rc = proc.wait(timeout=max(1.0, sec.left()))
        except subprocess.TimeoutExpired:
            stopped = True
            rc = _stop(proc)
        finally:
            if proc.poll() is None:  # Ctrl-C or SIGTERM reached this process: the search goes too
                _stop(proc)
    wall = time.monotonic() - t0
    sec.set("returncode", rc)
    sec.set("wall_s", round(wall, 1))
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    sec.set("output_tail", lines[-12:])
    try:
        summary = study_summary(storage, study)
        sec.set("study", summary)
    except Exception as err:  # the search may have failed before its storage existed
        summary = {}
        sec.set("study_error", failure_line(err))
    sec.item(True)
    evaluated = summary.get("evaluated", 0)
    if stopped:
        sec.partial_reason = f"time: the search was stopped after {wall:.0f} s with {evaluated} trials evaluated"
    elif rc == 3:
        sec.partial_reason = f"fell short: {lines[-1] if lines else 'no output'}"
    elif rc != 0:
        raise SectionError(f"python -m nas.search exited {rc}: {lines[-1] if lines else 'no output'}")


def _stop(proc: subprocess.Popen) -> int:
    """SIGTERM the search's process group (it stops at a safe point and prints its front), SIGKILL after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            pass
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll() if proc.poll() is not None else -9


def study_summary(storage: str, study_name: str) -> dict[str, Any]:
    """Counts, the gate, the latency sources, the best trial and one row per trial, read-only."""
    import optuna

    from nas.search.results import trial_records
    from nas.search.storage import open_storage_readonly

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=open_storage_readonly(storage))
    recs = trial_records(study)
    states: dict[str, int] = {}
    sources: dict[str, int] = {}
    for r in recs:
        states[r["state"]] = states.get(r["state"], 0) + 1
        if r.get("latency_source"):
            sources[r["latency_source"]] = sources.get(r["latency_source"], 0) + 1
    reasons = [str(r.get("reason") or "") for r in recs]
    done = [r for r in recs if r["state"] == "COMPLETE" and r.get("accuracy") is not None]
    feasible = [r for r in done if r.get("feasible")]
    best = max(feasible, key=lambda r: r["accuracy"]) if feasible else None
    walls = [r["proxy_wall_s"] for r in done if r.get("proxy_wall_s")]
    speeds = [r["proxy_images_per_s"] for r in done if r.get("proxy_images_per_s")]
    keep = ("number", "state", "status", "seed", "arch_id", "latency_ms", "latency_source", "latency_disturbed",
            "gate_predicted_ms", "accuracy", "proxy_wall_s", "reason")
    return {
        "study": study_name, "trials": len(recs), "states": states, "evaluated": len(done),
        "gated": sum(x.startswith("gate") for x in reasons), "over_budget": sum(x.startswith("over budget") for x in reasons),
        "gate_active": any(r.get("gate_predicted_ms") is not None for r in recs), "latency_sources": sources,
        "proxy_wall_s_median": statistics.median(walls) if walls else None,
        "proxy_images_per_s_median": statistics.median(speeds) if speeds else None,
        "best": {k: best.get(k) for k in ("number", "arch_id", "accuracy", "latency_ms", "seed")} if best else None,
        "rows": [{k: r.get(k) for k in keep if r.get(k) is not None} for r in recs],
    }


def _load_py(data: bytes, folder: Path, name: str) -> torch.nn.Module:
    """Build the network from an exported .py this check just wrote (its own output, never a user's file)."""
    path = folder / f"{name}.py"
    path.write_bytes(data)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build().eval()


def _export_variants(sec: Section, cfg: ArchConfig, folder: Path) -> dict[str, torch.nn.Module]:
    """The in-package model (BatchNorm statistics made non-trivial), BN-folded, and its exports, same weights."""
    from nas.export import export_bytes

    torch.manual_seed(0)
    package = nas.build_model(cfg).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in package.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    state, fused = package.state_dict(), fuse_model(package)
    variants: dict[str, torch.nn.Module] = {"eager (package)": package, "package, BN folded": fused}
    for label, fmt, deploy in (("exported .py", "py", False), ("exported .py --deploy", "py", True),
                               ("torchscript --deploy", "torchscript", True)):
        t0 = time.monotonic()
        try:
            data = export_bytes(cfg, fmt, deploy=deploy, metadata={"latency_note": "not recorded (gpu_check)"},
                                state_dict=state)
            if fmt == "py":
                model = _load_py(data, folder, f"gpu_check_{'deploy' if deploy else 'eager'}")
                model.load_state_dict(fused.state_dict() if deploy else state)
            else:
                model = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
        except Exception as err:  # a missing formatter or exporter costs this variant only
            sec.add("failures", {"variant": label, "error": failure_line(err)})
            sec.item(False, f"{label}: {failure_line(err)}")
            sec.log(f"{label}: export failed: {failure_line(err)}")
            continue
        sec.add("exports", {"variant": label, "export_s": round(time.monotonic() - t0, 2), "bytes": len(data)})
        variants[label] = model
    return variants


def section_export(sec: Section, sh: Shared) -> None:
    cfg, res = nas.get_config("hardnet68"), sh.plan.resolution
    sec.set("model", "hardnet68")
    sec.set("resolution", res)
    precisions = ["fp32"] + (["fp16"] if sh.device.type == "cuda" and sh.support()["fp16"] is None else [])
    with tempfile.TemporaryDirectory() as tmp:
        variants = _export_variants(sec, cfg, Path(tmp))
        figures: dict[tuple[str, str], list[LatencyResult]] = {}
        jobs = [(p, label) for p in precisions for _ in range(sh.plan.export_rounds) for label in variants]
        sec.total = len(jobs) + sec.failed
        for i, (p, label) in enumerate(jobs):  # rounds interleave the variants: drift hits them alike
            r = timed(sec, sh, {"model": label, "precision": p, "resolution": res}, variants[label], len(jobs) - i,
                      resolution=res, precision=p)
            if r is None and sec.out_of_time:
                break
            if r is not None and r.ok:
                figures.setdefault((label, p), []).append(r)
        diffs = _output_differences(variants, sh.device, res, cfg.in_channels)
    rows = []
    for p in precisions:
        eager = _median_of(figures.get(("eager (package)", p), []))
        for label in variants:
            results = figures.get((label, p), [])
            med = _median_of(results)
            if med is None:
                continue
            rows.append({"variant": label, "precision": p, "median_ms": med, "rounds": len(results),
                         "disturbed": all(r.disturbed for r in results), "vs_eager": med / eager if eager else None,
                         "max_abs_diff": diffs.get(label)})
    sec.set("rows", rows)


def _median_of(results: list[LatencyResult]) -> float | None:
    """Median over rounds of the undisturbed figures (of all of them when every one was disturbed)."""
    use = [r.median_ms for r in results if not r.disturbed] or [r.median_ms for r in results]
    return statistics.median(use) if use else None


def _output_differences(variants: dict[str, torch.nn.Module], dev: torch.device, res: int,
                        in_channels: int) -> dict[str, float | None]:
    """Largest |output - the package's output| of every variant on one seeded fp32 input, on ``dev``."""
    x = torch.randn(1, in_channels, res, res, generator=torch.Generator().manual_seed(0)).to(dev)
    out: dict[str, float | None] = {}
    with torch.inference_mode():
        ref = variants["eager (package)"].to(dev).eval()(x).float()
        for label, model in variants.items():
            try:
                out[label] = float((model.to(dev).eval()(x).float() - ref).abs().max())
            except Exception:  # the variant's timing row already says whether it ran
                out[label] = None
    return out


FUNCTIONS = {"env": section_env, "canonical": section_canonical, "canonical_large": section_canonical_large,
             "seed_claim": section_seed_claim, "profile": section_profile, "predict": section_predict,
             "search": section_search, "export": section_export}


# -- command line --------------------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="gpu_check.py", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N or cpu (default auto)")
    p.add_argument("--quick", action="store_true", help="shrink every section (2 networks, 32 px, a 2-trial search)")
    p.add_argument("--out", default=None, help="folder for gpu_check.json/.md (default runs/ or $HARDNAS_RUNS)")
    p.add_argument("--deadline", type=float, default=None,
                   help=f"seconds for the whole check (default {FULL.deadline_s:g}, --quick {QUICK.deadline_s:g})")
    p.add_argument("--data", default=None, help="CIFAR-10 archive or folder for the search's proxy (default digits)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list among {', '.join(SECTIONS)} (default all)")
    p.add_argument("--inject", action="append", default=[], metavar="error:SECTION|hang:SECTION",
                   help="tests only: make SECTION raise, or hang until the watchdog ends the check")
    return p


def _parse_inject(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        kind, _, name = v.partition(":")
        if kind not in ("error", "hang") or name not in SECTIONS:
            raise ValueError(f"inject: {v!r} is not allowed; expected error:SECTION or hang:SECTION with SECTION one "
                             f"of {', '.join(SECTIONS)}")
        out[name] = kind
    return out


def _parse_sections(text: str) -> set[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in SECTIONS]
    if not names or bad:
        raise ValueError(f"sections: {text!r} is not allowed; expected a comma list among {', '.join(SECTIONS)}")
    return set(names)


def _check_data(data: str | None) -> str | None:
    if data is None or data in DATASET_NAMES or Path(data).exists():
        return data
    raise ValueError(f"data: {data!r} does not exist; expected a CIFAR-10 archive (.tar.gz) or dataset folder, one of "
                     f"{', '.join(DATASET_NAMES)}, or no --data for the embedded digits")


def _out_dir(out: str | None) -> Path:
    path = Path(out) if out is not None else runs_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".gpu_check_probe."):
            pass
    except OSError as err:
        raise ValueError(f"out: {str(path)!r} is not writable ({err.strerror or failure_line(err)}); "
                         "expected a writable folder") from None
    return path


def _terminate(signum: int, frame: object) -> None:
    raise Stopped(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = QUICK if args.quick else FULL
    deadline = plan.deadline_s if args.deadline is None else args.deadline
    if not (0 < deadline < 86_400):
        raise ValueError(f"deadline: {args.deadline!r} is not allowed; expected seconds above 0 and below one day")
    selected, inject = _parse_sections(args.sections), _parse_inject(args.inject)
    data, device = _check_data(args.data), resolve_device(args.device)
    out = _out_dir(args.out)
    header = {"command": " ".join(["python benchmarks/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]),
              "mode": "quick" if args.quick else "full", "device": str(device), "deadline_s": deadline,
              "data": data or "digits", "plan": {k: v for k, v in dataclasses.asdict(plan).items() if k != "policy"},
              "interference_policy": dataclasses.asdict(plan.policy), "injected": inject}
    report = Report(out, header, list(SECTIONS), selected, render_markdown, START)
    shared = Shared(device, plan, data, out, report)
    signal.signal(signal.SIGTERM, _terminate)
    grace = min(45.0, max(10.0, 0.1 * deadline))
    start_watchdog(report, START + deadline + grace)
    log(START, f"{header['mode']} check on {device}; deadline {deadline:g} s (+{grace:g} s grace); writing {out}")
    steps = [(n, WEIGHTS[n], lambda sec, fn=FUNCTIONS[n]: fn(sec, shared)) for n in SECTIONS]
    try:
        run_sections(report, steps, selected, START + deadline, inject)
    except (Stopped, KeyboardInterrupt) as err:
        report.kill_children()
        report.stop_running(f"partial: stopped ({err or 'Ctrl-C'})")
        report.data["stopped"] = str(err) or "Ctrl-C"
        report.write()
        log(START, f"stopped ({err or 'Ctrl-C'}); report written to {report.json_path}")
        return 130
    report.data["finished"] = True
    report.write()
    statuses = {n: s["status"] for n, s in report.data["sections"].items() if n in selected}
    for n, s in statuses.items():
        print(f"  {n:<16} {s}")
    print(f"wrote {report.json_path} and {report.md_path}")
    return 0 if all(s == OK for s in statuses.values()) else 1


if __name__ == "__main__":
    run(main, "gpu_check.py")
