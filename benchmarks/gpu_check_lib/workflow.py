"""The GPU check's end-to-end sections: a short search on the device (a subprocess), and the
exported model against the eager one."""

from __future__ import annotations

import importlib.util
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import nas
from nas.config import ArchConfig
from nas.fuse import fuse_model
from nas.latency import LatencyResult
from nas.paths import runs_dir

from .common import Shared, model_with_nontrivial_bn, package_root, timed
from .harness import Section, SectionError, failure_line

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
    return sh.plan.search_budget_factor * known[0]


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
    sec.set("budget_rule",
            f"{sh.plan.search_budget_factor:g} x HarDNet68's measured fp32 latency at {sh.plan.resolution} px")
    env = {**os.environ, "HARDNAS_RUNS": str(runs_dir().resolve()),
           "PYTHONPATH": os.pathsep.join(p for p in (package_root(), os.environ.get("PYTHONPATH")) if p)}
    log_path = sh.out / "gpu_check_search.log"
    sec.set("log", log_path.name)
    sec.log(f"{study}: {sh.plan.search_trials} trials, budget {budget:.3f} ms, data {data} (log: {log_path})")
    t0 = time.monotonic()
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        sh.report.children.append(proc)
        stopped = False
        try:
            rc = proc.wait(timeout=max(1.0, sec.left() - 10))  # 10 s left for a graceful stop
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
        sec.partial_reason = f"fell short: {lines[-1].removeprefix('nas.search: fell short: ') if lines else 'no output'}"
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

    package = model_with_nontrivial_bn(cfg)
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
