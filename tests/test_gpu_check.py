"""benchmarks/gpu_check.py: the whole check in --quick mode on CPU, an injected failure, a deadline,
a hung section stopped by the watchdog, usage errors, and the calibration and section-status logic."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check as G  # noqa: E402
import gpu_check_lib.common as C  # noqa: E402
import gpu_check_lib.harness as H  # noqa: E402
import gpu_check_lib.latency as L  # noqa: E402

import nas  # noqa: E402
import nas.stats  # noqa: E402
from nas.latency import LatencyResult, load_cpu_profile, predict_ms  # noqa: E402


def _run(args: list[str], out: Path, runs: Path, timeout: float = 900) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "HARDNAS_RUNS": str(runs), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)
    report = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").exists() else {}
    return proc, report


def _numbers(node, path=""):
    """Every number in the report with its path."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


def _statuses(report: dict) -> dict[str, str]:
    return {n: s["status"] for n, s in report["sections"].items()}


@pytest.mark.slow
def test_quick_cpu_check_runs_every_section(tmp_path):
    # a generous deadline: on a busy machine the sections share it out instead of skipping; quiet, ~90 s
    proc, report = _run(["--deadline", "600"], tmp_path / "out", tmp_path / "runs")
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    statuses = _statuses(report)
    # on a busy machine every latency of the search's front may be disturbed: it says so (exit 3), honestly partial
    busy = statuses["search"].startswith("partial: fell short: latency not measured for ")
    assert statuses == {name: "ok" for name in G.SECTIONS} | ({"search": statuses["search"]} if busy else {}), \
        proc.stdout[-3000:]
    assert proc.returncode == (1 if busy else 0)
    assert report["finished"] is True
    for path, value in _numbers(report):
        assert math.isfinite(value), path
        if path.endswith("_ms") or "_ms." in path:
            assert value > 0, path
    sec = {n: s["result"] for n, s in report["sections"].items()}
    assert sec["env"]["precisions"]["fp16"] == "not supported on cpu"
    assert sec["canonical"]["precisions"]["fp16"] == "not supported on cpu"
    assert {(i["model"], i["precision"]) for i in sec["canonical"]["items"]} == {
        (m, p) for m in G.QUICK.models for p in ("fp32", "bf16")}
    assert sec["canonical_large"]["precision"] == "bf16" and "fp16 not supported on cpu" in sec["canonical_large"]["note"]
    assert {r["mode"] for r in sec["seed_claim"]["rows"]} == {"eager", "deploy"}
    assert all(r["ratio"] > 0 for r in sec["seed_claim"]["rows"])
    assert sec["profile"]["profile"]["name"] == "cpu" and sec["profile"]["profile"]["source"].startswith("profiled here")
    assert sec["predict"]["fidelity"] and len(sec["predict"]["predictions"]) >= len(G.QUICK.models) + 2
    assert {p["label"] for p in sec["predict"]["profiles"]} >= {"local profile (profile_device)"}
    study = sec["search"]["study"]
    assert sec["search"]["returncode"] == (3 if busy else 0) and study["evaluated"] >= 1 and study["trials"] >= 2
    rows = {r["variant"]: r for r in sec["export"]["rows"]}
    assert {"eager (package)", "exported .py", "exported .py --deploy", "torchscript --deploy"} <= set(rows)
    for row in rows.values():  # the same weights: every variant computes the package's outputs
        assert row["max_abs_diff"] < 1e-3, row
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    for name in G.SECTIONS:
        assert f"| {name} | {statuses[name]} |" in md
    assert "## Predicted vs measured latency — ok" in md and "Kendall τ" in md
    assert (tmp_path / "out" / "gpu_check_search.log").exists()


def test_injected_failure_is_one_line_and_the_rest_runs(tmp_path):
    proc, report = _run(["--sections", "env,canonical,predict", "--inject", "error:canonical"], tmp_path / "out",
                        tmp_path / "runs")
    assert proc.returncode == 1, proc.stderr[-2000:]
    statuses = _statuses(report)
    assert statuses["canonical"] == "error: injected failure (--inject error:canonical)"
    assert report["sections"]["canonical"]["error_at"].startswith("benchmarks/gpu_check_lib/harness.py:")
    assert statuses["env"] == "ok" and statuses["predict"] == "ok", statuses
    assert all(statuses[n] == H.NOT_SELECTED for n in ("canonical_large", "seed_claim", "profile", "search", "export"))
    measured = {i["model"] for i in report["sections"]["predict"]["result"]["items"]}
    assert set(G.QUICK.models) <= measured, "the section after the failure measured what the failed one did not"
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "error: injected failure (--inject error:canonical)" in md and "## Predicted vs measured latency — ok" in md


def test_deadline_skips_sections_and_writes_a_valid_report(tmp_path):
    proc, report = _run(["--deadline", "0.5"], tmp_path / "out", tmp_path / "runs", timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    statuses = _statuses(report)
    assert statuses["env"] == "ok"  # not time-boxed: the environment is always recorded
    assert all(s == H.SKIPPED_TIME for n, s in statuses.items() if n != "env"), statuses
    assert report["finished"] is True
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    assert md.startswith("# GPU check:") and "| search | skipped: time |" in md


def test_watchdog_ends_a_hung_section_and_keeps_the_report(tmp_path):
    proc, report = _run(["--deadline", "1", "--sections", "env,canonical", "--inject", "hang:env"], tmp_path / "out",
                        tmp_path / "runs", timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert report["stopped"] == "hard deadline" and report["finished"] is False
    assert _statuses(report)["env"].startswith("partial: time (stopped at the hard deadline")
    assert _statuses(report)["canonical"] == "pending"
    assert "hard deadline reached" in proc.stdout
    assert "stopped (hard deadline)" in (tmp_path / "out" / "gpu_check.md").read_text()


def test_sigterm_writes_the_report_and_exits_130(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "HARDNAS_RUNS": str(tmp_path / "runs"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out),
                             "--sections", "env,canonical", "--inject", "hang:env"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and '"status": "running"' not in _text(out / "gpu_check.json"):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # what `timeout` in gpu_check.sh sends
        stdout, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stdout[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["stopped"] == "signal 15" and _statuses(report)["env"] == "partial: stopped (signal 15)"


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_usage_error_is_one_line_with_exit_code_2(tmp_path):
    proc, _ = _run(["--sections", "env,nope"], tmp_path / "out", tmp_path / "runs", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"gpu_check.py: error: sections: 'env,nope' is not allowed; expected a comma list among {', '.join(G.SECTIONS)}"]
    assert not (tmp_path / "out" / "gpu_check.json").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--inject", "boom:env"], "inject: 'boom:env' is not allowed; expected error:SECTION or hang:SECTION"),
    (["--deadline", "0"], "deadline: 0.0 is not allowed; expected seconds above 0"),
    (["--deadline", "nan"], "deadline: nan is not allowed"),
    (["--data", "/no/such/cifar.tar.gz"], "data: '/no/such/cifar.tar.gz' does not exist"),
    (["--device", "tpu"], "device: 'tpu' is not allowed"),
])
def test_bad_values_are_refused_before_any_work(tmp_path, args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        G.main(["--out", str(tmp_path / "out"), *args])
    assert not (tmp_path / "out" / "gpu_check.json").exists()


def test_section_status_rules():
    report = H.Report(Path("."), {}, ["a"], {"a"}, lambda d: "", 0.0)
    sec = H.Section(report, "a", 10.0)
    assert sec.status() == H.OK
    sec.out_of_time = True
    assert sec.status() == H.SKIPPED_TIME  # ran out before anything was done
    sec.total = 3
    sec.item(True)
    assert sec.status() == "partial: time (1 of 3 done)"
    sec.out_of_time = False
    sec.item(False, "x: boom")
    assert sec.status() == "partial: 1 of 2 failed; first: x: boom"
    only = H.Section(report, "a", 10.0)
    only.item(False, "y: bad")
    with pytest.raises(H.SectionError, match="all 1 items failed; first: y: bad"):
        only.status()
    assert H.failure_line(H.SectionError("plain")) == "plain"
    assert H.failure_line(ValueError("two\nlines")) == "ValueError: two"


def test_fidelity_figures():
    f = C.fidelity([1.0, 2.1, 3.0, 5.0], [1.0, 2.0, 4.0, 4.0])  # ratios 1, 1.05, 0.75, 1.25
    assert f["n"] == 4 and f["within_10"] == 0.5 and f["within_25"] == 1.0
    assert f["median_abs_err"] == pytest.approx(0.15) and f["median_ratio"] == pytest.approx(1.025)
    assert f["kendall_tau"] == pytest.approx(nas.stats.kendall_tau([1.0, 2.1, 3.0, 5.0], [1.0, 2.0, 4.0, 4.0]))
    assert C.fidelity([], []) == {"n": 0}


def test_calibration_on_half_is_judged_on_the_other_half(tmp_path, steady_cpu):
    # synthetic clean measurements made by a "true" device 3x slower than the micro-benchmarked profile (timed by
    # the synthetic CPU of `steady_cpu`: on the real, loaded CPU the base profile, and so the fit, varied)
    report = H.Report(tmp_path, {}, ["predict"], {"predict"}, lambda d: "", 0.0)
    sh = C.Shared(torch.device("cpu"), G.FULL, None, tmp_path, report)
    base = load_cpu_profile().profile
    configs = L._random_configs(G.FULL, 14)
    for i, cfg in enumerate(configs):
        ms = 3.0 * predict_ms(cfg, base, resolution=224) * (1 + 0.02 * ((i % 3) - 1))
        result = LatencyResult(ms, "measured", "cpu", runs=9, canary_slowdown=1.0)
        sh.measured.append(C.Measured(f"r{i}", "random", cfg, "fp32", 224, result))
    sec = H.Section(report, "predict", 60.0)
    profiles = [("local", base)]
    held_out = L._calibrate_half(sec, sh, base, profiles)
    cal = sec.result["calibration"]
    assert (cal["fit"], cal["held_out"], len(held_out)) == (7, 7, 7)
    assert cal["accepted"] is True, cal["reason"]
    assert profiles[-1][0].startswith("calibrated here on 7 (accepted)")
    fitted = profiles[-1][1]
    test = [m for m in sh.measured if id(m) in held_out]
    errs = [abs(predict_ms(m.config, fitted, resolution=224) / m.result.median_ms - 1) for m in test]
    assert sorted(errs)[len(errs) // 2] < 0.25
