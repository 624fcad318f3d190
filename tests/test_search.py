"""The search end to end on CPU: outputs, seeds, dedup, gate, failures, resume, kill -9, concurrency, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

import forked
from helpers import FAST, RAY_ENV, RAY_PREFIX, fast, free_port, needs_ray, needs_ray_network

from nas.search import evaluate as E
from nas.search.__main__ import main
from nas.search.settings import parse_budget


def _study(runs: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{runs / 'nas.db'}")


@pytest.mark.parametrize(("text", "ms"), [("30ms", 30.0), ("0.03s", 30.0), ("30000us", 30.0), ("2.5ms", 2.5)])
def test_budget_units(text, ms):
    assert parse_budget(text) == pytest.approx(ms)


def _cli(args: list[str], runs: Path, fork: bool = False, **kw) -> subprocess.CompletedProcess:
    """The CLI in its own process; ``fork=True`` for a usage error (`forked`: without the start-up cost)."""
    env = {**os.environ, "HARDNAS_RUNS": str(runs), "PYTHONUNBUFFERED": "1"}
    if fork:
        return forked.run([sys.executable, "-m", "nas.search", *args], env=env, **kw)
    return subprocess.run([sys.executable, "-m", "nas.search", *args], capture_output=True, text=True, env=env, **kw)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "30"], "budget: '30' is not allowed; expected a positive latency with a unit"),
        (["--budget", "-5ms"], "budget: '-5ms' is not allowed"),
        (["--budget", "0ms"], "budget: '0ms' is not allowed; expected a latency above zero"),
        (["--budget", "abc"], "budget: 'abc' is not allowed"),
        (["--budget", "30ms", "--trials", "0"], "trials: 0 is not allowed"),
        (["--budget", "30ms", "--latency", "guessed"], "latency: 'guessed' is not allowed"),
        (["--budget", "30ms", "--latency", "predicted:tpu"], "device profile: 'tpu' is not known"),
        (["--budget", "30ms", "--objectives", "accuracy,speed"], "objectives: 'accuracy,speed' is not allowed"),
        (["--budget", "30ms", "--proxy", "guess"], "proxy: 'guess' is not allowed"),
        (["--budget", "30ms", "--backend", "spark"], "backend: 'spark' is not allowed"),
        (["--budget", "30ms", "--space", "nope.yaml"], "space: 'nope.yaml' is neither a built-in space"),
        (["--budget", "30ms", "--data", "/no/such/dir"], "data: '/no/such/dir' is neither a known dataset"),
        (["--budget", "30ms", "--device", "cpu", "--precision", "fp16"], "precision: 'fp16' is not allowed on cpu"),
        (["--budget", "30ms", "--storage", "nonsense"], "storage: 'nonsense' is not allowed"),
        (["--budget", "30ms", "--resolution", "16x64"], "resolution: '16x64' is not allowed; expected each side at least 32 (layout"),
        (["--budget", "30ms", "--resolution", "wide"], "argument --resolution: 'wide' is not allowed; expected a positive integer or HxW"),
        (["--budget", "30ms", "--runtime", "tvm"], "runtime: 'tvm' is not allowed; expected one of eager, compile, onnxruntime"),
        (["--budget", "30ms", "--gpus-per-trial", "0.5"], "gpus_per_trial: 0.5 is not allowed with --backend optuna"),
        (["--budget", "30ms", "--backend", "ray", "--gpus-per-trial", "1.5"],
         "gpus_per_trial: 1.5 is not allowed; expected a fraction of one GPU"),
    ],
)
def test_bad_cli_values_are_one_line_exit_2(args, message, tmp_path):
    proc = _cli(args, tmp_path, fork=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_end_to_end_writes_front_best_and_command(tmp_path, monkeypatch, capsys, _isolated_runs):
    assert main([*FAST, "--trials", "4", "--study-name", "e2e"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and "best feasible architecture" in out
    folder = _isolated_runs / "e2e"
    front = json.loads((folder / "pareto.json").read_text())["front"]
    assert front and all(r["latency_ms"] <= 1.0 and r["latency_source"] == "predicted" for r in front)
    assert (folder / "pareto.csv").read_text().startswith("number,name,arch_id,accuracy,latency_ms")
    best = json.loads((folder / "best.json").read_text())
    assert best["stages"] and best["name"].startswith("e2e-trial")
    run = json.loads((folder / "runs.jsonl").read_text().splitlines()[0])
    assert run["settings"]["budget_ms"] == 1.0 and run["torch"] and run["optuna"]
    study = _study(_isolated_runs, "e2e")
    done = [t for t in study.trials if t.user_attrs.get("status") != "rejected"]
    assert len(done) == 4
    t = next(t for t in study.trials if t.state.name == "COMPLETE")
    for key in ("arch_id", "config", "params", "macs", "cio", "moc", "latency_ms", "latency_source", "accuracy",
                "zc_synflow", "zc_naswot", "zc_grad_norm", "wall_s", "accuracy_curve", "extrapolated_accuracy"):
        assert key in t.user_attrs, key
    assert t.values[1] == t.user_attrs["latency_ms"] and t.values[2] == t.user_attrs["cio"]
    assert 1 <= t.user_attrs["proxy_threads"] <= torch.get_num_threads()  # the fewest CPU threads it trained with


def test_seeds_are_enqueued_first_and_shown_as_baselines(_isolated_runs, capsys):
    args = ["--space", "hardnet", "--latency", "predicted:v100", "--budget", "5ms", "--proxy", "zero-cost",
            "--trials", "5", "--no-progress", "--study-name", "seeds"]
    assert main(args) == 0
    study = _study(_isolated_runs, "seeds")
    assert [t.user_attrs.get("seed") for t in study.trials[:4]] == ["hardnet39ds", "hardnet68", "hardnet68ds", "hardnet85"]
    assert study.trials[0].user_attrs["arch_id"] == "7ab55b22c183"
    baselines = json.loads((_isolated_runs / "seeds" / "pareto.json").read_text())["baselines"]
    assert [b["name"] for b in baselines] == ["hardnet39ds", "hardnet68", "hardnet68ds", "hardnet85"]
    assert "Baselines" in capsys.readouterr().out


def test_an_architecture_is_never_evaluated_twice(tmp_path, monkeypatch, _isolated_runs):
    one_point = tmp_path / "one.yaml"
    one_point.write_text("layouts: ['.R']\nstem: {type: resnet, channels: [[8]]}\n"
                         "stages: [{block: basic, basic: {depth: 1, width: 8, downsample: conv}}]\n")
    calls = []
    real = E.evaluate

    def counting(config, s, **kw):
        calls.append(config.arch_id)
        return real(config, s, **kw)

    monkeypatch.setattr("nas.search.lifecycle.evaluate", counting)
    assert main(["--space", str(one_point), "--resolution", "64", "--latency", "predicted:v100", "--budget", "1ms",
                 "--proxy", "zero-cost", "--trials", "3", "--no-progress", "--study-name", "dup"]) == 0
    study = _study(_isolated_runs, "dup")
    assert len(calls) == 1 and len(study.trials) == 3
    assert [t.user_attrs.get("duplicate_of") for t in study.trials] == [None, 0, 0]
    assert len({tuple(t.values) for t in study.trials}) == 1


def test_gate_rejects_before_training(monkeypatch, _isolated_runs, capsys):
    def never(*_a, **_k):
        raise AssertionError("trained a candidate the gate should have rejected")

    monkeypatch.setattr(E, "train_eval", never)
    assert main([*fast("0.0001ms"), "--trials", "2", "--study-name", "gate"]) == 3  # fell short, and says why
    study = _study(_isolated_runs, "gate")
    assert len(study.trials) == 50  # 25x the requested trials, all rejected cheaply
    assert all(t.state.name == "PRUNED" and t.user_attrs["reason"].startswith("gate: predicted") for t in study.trials)
    out = capsys.readouterr()
    assert "50 pruned of which 50 rejected before training" in out.out
    assert "fell short: 0 of 2 trials evaluated; stopped at the cap of 25x --trials candidates: 50 rejected" in out.err


def test_crashing_candidates_become_failed_trials(monkeypatch, _isolated_runs):
    from nas.proxy import ProxyResult

    def crash(config, *a, **k):
        if config.stages[0].block == "basic":
            return ProxyResult(None, "failed", "RuntimeError: CUDA out of memory")
        return ProxyResult(None, "failed", "non-finite loss (nan) at step 3")

    monkeypatch.setattr(E, "train_eval", crash)
    assert main([*FAST, "--trials", "3", "--study-name", "crash"]) == 0
    study = _study(_isolated_runs, "crash")
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) == 3
    assert all(t.user_attrs["reason"].startswith("proxy training: ") for t in failed)


def test_resume_continues_and_refuses_other_settings(_isolated_runs):
    assert main([*FAST, "--trials", "2", "--study-name", "resume"]) == 0
    first = [(t.number, t.values) for t in _study(_isolated_runs, "resume").trials if t.state.name == "COMPLETE"]
    assert main([*FAST, "--trials", "4", "--study-name", "resume"]) == 0
    study = _study(_isolated_runs, "resume")
    assert len([t for t in study.trials if t.user_attrs.get("status") != "rejected"]) == 4
    assert [(t.number, t.values) for t in study.trials if t.number in dict(first)] == first
    with pytest.raises(ValueError, match="study-name: 'resume' was created with other settings \\(budget_ms\\)"):
        main([*fast("2ms"), "--trials", "5", "--study-name", "resume"])


def test_a_resume_may_switch_the_sampler_and_runs_jsonl_records_each_run_s(_isolated_runs):
    assert main([*FAST, "--trials", "2", "--sampler", "tpe", "--study-name", "switch"]) == 0
    study = _study(_isolated_runs, "switch")
    old = dict(study.user_attrs["settings"]) | {"sampler": "tpe"}  # as studies recorded it before it was volatile
    study.set_user_attr("settings", old)
    assert main([*FAST, "--trials", "3", "--sampler", "hvi", "--study-name", "switch"]) == 0
    assert len([t for t in _study(_isolated_runs, "switch").trials if t.user_attrs.get("status") != "rejected"]) == 3
    runs = [json.loads(line) for line in (_isolated_runs / "switch" / "runs.jsonl").read_text().splitlines()]
    assert [r["settings"]["sampler"] for r in runs] == ["tpe", "hvi"]


def _completed(db: Path, study: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM trials t JOIN studies s ON t.study_id = s.study_id "
                                "WHERE s.study_name = ? AND t.state = 'COMPLETE'", (study,)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _wait_for(db: Path, study: str, n: int, proc: subprocess.Popen, limit: float = 240) -> None:
    start = time.time()
    while _completed(db, study) < n:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "search exited early"
        assert time.time() - start < limit, "timed out waiting for trials"
        time.sleep(0.2)


def _popen(args: list[str], runs: Path) -> subprocess.Popen:
    env = {**os.environ, "HARDNAS_RUNS": str(runs), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "nas.search", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_kill_9_loses_no_completed_trial(tmp_path):
    args = [*FAST, "--trials", "30", "--study-name", "killed"]
    proc = _popen(args, tmp_path)
    _wait_for(tmp_path / "nas.db", "killed", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = _completed(tmp_path / "nas.db", "killed")
    assert saved >= 2
    done = _cli([*FAST, "--trials", str(saved + 2), "--study-name", "killed"], tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _completed(tmp_path / "nas.db", "killed") >= saved + 1


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study(tmp_path):
    args = [*FAST, "--trials", "6", "--study-name", "shared"]
    # create the study first so both workers resume the same one
    assert _cli([*FAST, "--trials", "1", "--study-name", "shared"], tmp_path, timeout=300).returncode == 0
    procs = [_popen(args, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{tmp_path / 'nas.db'}")
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    evaluated = [t for t in study.trials if t.user_attrs.get("status") != "rejected"]
    assert len(evaluated) >= 6 and all(t.state.name != "RUNNING" for t in study.trials)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_prints_the_front(tmp_path):
    proc = _popen([*FAST, "--trials", "40", "--study-name", "sigint"], tmp_path)
    _wait_for(tmp_path / "nas.db", "sigint", 2, proc)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"search did not stop on SIGINT; stderr: {err[-2000:]}")
    assert proc.returncode == 130, err
    assert "Pareto front" in out and "interrupted; completed trials are saved" in err
    assert (tmp_path / "sigint" / "pareto.json").exists()




def _ray_cli(args: list[str], runs: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, **RAY_ENV, "HARDNAS_RUNS": str(runs), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*RAY_PREFIX, sys.executable, "-m", "nas.search", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.mark.slow
@needs_ray_network
def test_ray_backend_two_local_workers_writes_the_same_layout(tmp_path):
    proc = _ray_cli([*FAST, "--proxy-epochs", "2", "--trials", "4", "--backend", "ray", "--workers", "2",
                     "--study-name", "ray"], tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Pareto front" in proc.stdout and (tmp_path / "ray" / "pareto.json").exists()
    study = optuna.load_study(study_name="ray", storage=f"sqlite:///{tmp_path / 'nas.db'}")
    assert len(study.trials) == 4 and all(t.state.name in ("COMPLETE", "PRUNED", "FAIL") for t in study.trials)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert done and all("config" in t.user_attrs and "latency_ms" in t.user_attrs for t in done)
    assert not any(k.startswith("config/") for t in study.trials for k in t.user_attrs)


@pytest.mark.slow
@needs_ray_network
def test_ray_backend_joins_a_running_cluster(tmp_path):
    # the head and the search share one namespace: `ray start --head` on loopback, then --ray-address
    ray_bin = str(Path(sys.executable).with_name("ray"))
    search = " ".join([sys.executable, "-m", "nas.search", *FAST, "--trials", "2", "--backend", "ray",
                       "--ray-address", "127.0.0.1:6379", "--study-name", "cluster"])
    script = (f"{ray_bin} start --head --port=6379 --node-ip-address=127.0.0.1 --num-cpus=2 "
              f"--include-dashboard=false --disable-usage-stats >head.log 2>&1 || {{ tail -3 head.log; exit 99; }}; "
              f"{search}; rc=$?; {ray_bin} stop --force >/dev/null 2>&1; exit $rc")
    env = {**os.environ, **RAY_ENV, "HARDNAS_RUNS": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([*RAY_PREFIX, "bash", "-c", script], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=900)
    if proc.returncode == 99:
        pytest.skip(f"could not start a local Ray head: {proc.stdout.strip().splitlines()[-1:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Connected to Ray cluster" in proc.stderr or "Connecting to existing Ray cluster" in proc.stderr
    study = optuna.load_study(study_name="cluster", storage=f"sqlite:///{tmp_path / 'nas.db'}")
    assert len(study.trials) == 2


@pytest.mark.slow
@needs_ray_network
def test_a_cuda_search_on_a_ray_cluster_without_gpus_is_one_line_and_records_no_run(tmp_path):
    proc = _ray_cli([*FAST, "--trials", "1", "--backend", "ray", "--device", "cuda", "--study-name", "gpu"], tmp_path,
                    timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == ("nas.search: error: device: 'cuda' is not allowed; the Ray cluster "
                                                    "has no GPU (expected cpu or auto, or --ray-address of a cluster "
                                                    "with GPUs)")
    assert not (tmp_path / "gpu" / "runs.jsonl").exists()


@needs_ray
def test_an_unreachable_ray_address_is_one_line_exit_2(tmp_path):
    proc = _cli([*FAST, "--trials", "1", "--backend", "ray", "--ray-address", f"127.0.0.1:{free_port()}"],
                tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("nas.search: error: ray-address: '127.0.0.1:")
    assert "Traceback" not in proc.stderr


def test_an_unexpected_exception_is_a_failed_candidate(monkeypatch):
    import nas
    from nas.search.settings import SearchSettings

    def boom(*_a, **_k):
        raise ZeroDivisionError("division by zero in a new op")

    monkeypatch.setattr(E, "analyze", boom)
    m = E.evaluate(nas.get_config("hardnet39ds"), SearchSettings(latency="predicted:v100"))
    assert m["status"] == "failed" and m["reason"] == "ZeroDivisionError: division by zero in a new op"
