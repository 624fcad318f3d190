"""benchmarks/bench_search.py: runs saved as they finish, shared by processes, skipped on a rerun, reported alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import forked

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_search.py"
QUICK = ["--proxy", "zero-cost", "--data", "digits", "--seconds", "2"]


def _run(*args: str, runs: Path, usage_error: bool = False) -> subprocess.CompletedProcess:
    """The script in its own process; a usage error in a forked one (`forked`: no start-up cost, no training)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    argv = [sys.executable, str(SCRIPT), *args, "--runs", str(runs)]
    if usage_error:
        return forked.run(argv, env=env, timeout=600)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_runs_are_saved_shared_and_skipped(tmp_path: Path) -> None:
    results, runs = tmp_path / "results.jsonl", tmp_path / "runs"
    first = _run(*QUICK, "--seed-list", "0", "--strategies", "random", "--results", str(results), runs=runs)
    assert first.returncode == 0, first.stderr
    second = _run(*QUICK, "--seed-list", "0", "--strategies", "random,tpe", "--results", str(results), runs=runs)
    assert second.returncode == 0, second.stderr
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["strategy"], r["seed"]) for r in lines] == [("random", 0), ("tpe", 0)]  # random was not run again
    assert "random " not in second.stdout.split("hypervolume")[0]
    for run in lines:
        assert run["candidates"] >= 1 and run["seconds"] == 2
        assert all({"accuracy", "latency_ms", "cio", "at_s"} <= set(r) for r in run["records"])
    report = _run("--report-only", "--results", str(results), runs=runs)
    assert report.returncode == 0, report.stderr
    rows = {line.split()[0]: line for line in report.stdout.splitlines() if line.strip().startswith(("random", "tpe"))}
    assert set(rows) == {"random", "tpe"} and "1.00" in rows["random"]


def test_usage_errors_name_the_value(tmp_path: Path) -> None:
    for args, needle in ((["--seed-list", "x"], "'x' is not allowed"), (["--seeds", "0"], "--seeds: 0 is not allowed"),
                         (["--strategies", "tpe"], "no random run to compare with"),
                         (["--strategies", "fast"], "'fast' is not allowed"),
                         (["--report-only", "--results", str(tmp_path / "none.jsonl")], "needs an existing --results")):
        proc = _run(*args, runs=tmp_path / "runs", usage_error=True)
        assert proc.returncode == 2 and needle in proc.stderr, (args, proc.stderr)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"strategy": "random", "seed": 0, "candidates": 1, "dominated_s": null, "records": []}\nnot json\n')
    proc = _run("--report-only", "--results", str(bad), runs=tmp_path / "runs", usage_error=True)
    assert proc.returncode == 2 and f"{bad}:2 is not a run" in proc.stderr
