"""One trial lifecycle for both backends: the same scenario ends in the same states and attributes on Optuna
and on Ray Tune; Ray uses the chosen sampler and asks for GPUs on CUDA."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import RAY_ENV, RAY_PREFIX, drive_ray, needs_ray, needs_ray_network

from nas.search import lifecycle
from nas.search.settings import SearchSettings
from nas.space import load_space

# predicted on a V100 at 32 px (predictor v2): hardnet39ds 2.4 ms, hardnet68 4.3, hardnet68ds 4.3, hardnet85 5.8
BUDGET_MS = 3.0
BROKEN = "8b5e70783171"  # hardnet68: its zero-cost proxy crashes (a verdict: FAIL)
DUPLICATES = ("hardnet68ds", "hardnet39ds", "hardnet68")  # proposed again after the seeds

# (seed, state, status, duplicate_of) of every trial, in order
# (baselines over the budget are evaluated all the same: COMPLETE, infeasible by their constraint)
EXPECTED = [("hardnet39ds", "COMPLETE", "ok", None), ("hardnet68", "FAIL", "failed", None),
            ("hardnet68ds", "COMPLETE", "ok", None), ("hardnet85", "COMPLETE", "ok", None),
            (None, "COMPLETE", "ok", 2),  # a candidate twin of an infeasible baseline reuses it
            (None, "COMPLETE", "ok", 0), (None, "FAIL", "failed", 1)]

SCENARIO = """
import sys
import time
from nas.search import lifecycle, run_search
from nas.search.settings import SearchSettings
from nas.space import load_space

def settings(backend):
    return SearchSettings(space="hardnet", resolution=32, latency="predicted:v100", budget_ms={budget}, proxy="zero-cost",
                          trials=7, backend=backend)

def prepare(s, url, name):
    study = lifecycle.open_study(s, url, name, heartbeat=False)
    space = load_space(s.space)
    lifecycle.enqueue_seeds(study, space)
    for seed in {duplicates!r}:
        study.enqueue_trial(space.params_of(space.seeds()[seed])[0])

if __name__ == "__main__":
    backend, url, name = sys.argv[1:]
    prepare(settings(backend), url, name)
    run_search(settings(backend), url, name)
""".format(budget=BUDGET_MS, duplicates=DUPLICATES)

CRASH = """
def crash(zero_cost):
    def zero_cost_or_crash(config, *a, **k):
        if config.arch_id == {broken!r}:
            raise RuntimeError("CUDA out of memory (injected)")
        return zero_cost(config, *a, **k)
    return zero_cost_or_crash
""".format(broken=BROKEN)

# every process of a run imports it (sitecustomize), Ray's trial workers too: BROKEN's proxy crashes there
CRASH_HOOK = CRASH + """
import importlib.abc, importlib.machinery, sys

class _Patch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "nas.search.evaluate":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.zero_cost = crash(module.zero_cost)

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Patch())
"""
_VOLATILE = ("wall_s", "worker", "proxy_cached")  # timings, the process, whether a baseline's proxy was cached


def _exec(code: str) -> dict:
    namespace: dict = {"__name__": "scenario"}
    exec(compile(code, "scenario", "exec"), namespace)  # noqa: S102 - the test's own code
    return namespace


def _summary(url: str, name: str) -> list[dict]:
    study = optuna.load_study(study_name=name, storage=url)
    return [{"number": t.number, "state": t.state.name, "values": t.values,
             "attrs": {k: v for k, v in t.user_attrs.items() if k not in _VOLATILE},
             "constraints": {k: v for k, v in t.system_attrs.items() if k.startswith("constraints")}}
            for t in study.trials]


def _differences(a: object, b: object, where: str = "") -> list[str]:
    """Where two summaries differ; floats agree to 0.1 % (a Ray worker computes with other thread counts)."""
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-3) else [f"{where}: {a} != {b}"]
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _differences(a.get(k), b.get(k), f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def _check_expected(rows: list[dict]) -> None:
    got = [(r["attrs"].get("seed"), r["state"], r["attrs"].get("status"), r["attrs"].get("duplicate_of")) for r in rows]
    assert got == EXPECTED
    failed = rows[1]["attrs"]["reason"]
    assert failed.startswith("zero-cost proxy: RuntimeError: CUDA out of memory")
    assert rows[6]["attrs"]["reason"] == failed  # the failed twin is reused, not run again
    assert rows[5]["values"] == rows[0]["values"]
    from nas import get_config
    from nas.latency import predict

    fits = predict(get_config("hardnet39ds"), "v100", 32, 1, "fp32").median_ms
    assert rows[0]["constraints"] == {"constraints:latency": pytest.approx(fits - BUDGET_MS)}
    assert rows[2]["constraints"]["constraints:latency"] > 0 and rows[4]["values"] == rows[2]["values"]


@needs_ray
def test_both_backends_run_one_trial_lifecycle(tmp_path, monkeypatch):
    import nas.search.evaluate as E
    from nas.search.optuna_backend import run_optuna

    scenario = _exec(SCENARIO)
    monkeypatch.setattr(E, "zero_cost", _exec(CRASH)["crash"](E.zero_cost))
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    for backend, run in (("optuna", lambda s: run_optuna(s, url, "optuna", progress=False)),
                         ("ray", lambda s: drive_ray(s, url, "ray"))):
        s = scenario["settings"](backend)
        scenario["prepare"](s, url, backend)
        run(s)
    optuna_rows = _summary(url, "optuna")
    _check_expected(optuna_rows)
    assert _differences(_summary(url, "ray"), optuna_rows) == []


@pytest.mark.slow
@needs_ray_network
def test_both_backends_run_one_trial_lifecycle_under_tune(tmp_path):
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(CRASH_HOOK)
    (tmp_path / "scenario.py").write_text(SCENARIO)
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    path = os.pathsep.join([str(tmp_path / "hook"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, **RAY_ENV, "HARDNAS_RUNS": str(tmp_path / "runs"), "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    for backend in ("optuna", "ray"):
        proc = subprocess.run([*RAY_PREFIX, sys.executable, str(tmp_path / "scenario.py"), backend, url, backend],
                              capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert [ln for ln in proc.stderr.splitlines() if ln.startswith("nas.search: trial ")] == [
            f"nas.search: trial {n} failed: zero-cost proxy: RuntimeError: CUDA out of memory (injected){same}"
            for n, same in ((1, ""), (6, " (same architecture as trial 1)"))], proc.stderr[-3000:]
    optuna_rows = _summary(url, "optuna")
    _check_expected(optuna_rows)
    assert _differences(_summary(url, "ray"), optuna_rows) == []


@needs_ray
@pytest.mark.parametrize("name", ["tpe", "nsga2", "random"])
def test_the_ray_backend_proposes_with_the_chosen_sampler(name, tmp_path):
    from nas.search.ray_backend import LifecycleSearch

    s = SearchSettings(space=str(Path(__file__).parent / "data" / "tiny_space.yaml"), resolution=64,
                       latency="predicted:v100", proxy="zero-cost", sampler=name, backend="ray", trials=8)
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    study = lifecycle.open_study(s, url, "sampler", heartbeat=False)
    expected = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
                "random": optuna.samplers.RandomSampler}[name]
    assert type(study.sampler) is expected
    asked = []
    for method in ("sample_relative", "sample_independent"):
        real = getattr(study.sampler, method)
        setattr(study.sampler, method, lambda *a, _real=real, **k: asked.append(1) or _real(*a, **k))
    search = LifecycleSearch(s, study, url)
    search.set_max_concurrency(2)
    proposals = [search.suggest("a"), search.suggest("b")]
    assert all("arch" in p for p in proposals) and asked  # proposed by the study's own sampler


@needs_ray
@pytest.mark.parametrize(("device", "gpus", "cluster", "request_"), [
    ("cpu", None, 4, {"cpu": 3}),
    ("cuda", None, 4, {"cpu": 3, "gpu": 1.0}),
    ("cuda", 0.25, 1, {"cpu": 3, "gpu": 0.25}),
    ("cuda", 2.0, 4, {"cpu": 3, "gpu": 2.0}),
    ("auto", None, 2, {"cpu": 3, "gpu": 1.0}),
    ("auto", None, 0, {"cpu": 3}),
])
def test_ray_trials_ask_for_gpus_on_cuda(device, gpus, cluster, request_):
    from nas.search.ray_backend import trial_resources

    s = SearchSettings(device=device, gpus_per_trial=gpus, backend="ray")
    assert trial_resources(s, 3, cluster) == request_


@needs_ray
@pytest.mark.parametrize(("device", "gpus", "cluster", "message"), [
    ("cuda", None, 0, "device: 'cuda' is not allowed; the Ray cluster has no GPU"),
    ("cuda", 2.0, 1, "gpus_per_trial: 2 is not allowed; the Ray cluster has 1 GPU (expected at most 1)"),
    ("auto", 0.5, 0, "gpus_per_trial: 0.5 is not allowed; the Ray cluster has no GPU"),
])
def test_a_gpu_request_the_cluster_cannot_meet_is_one_line(device, gpus, cluster, message):
    from nas.search.ray_backend import trial_resources

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        trial_resources(SearchSettings(device=device, gpus_per_trial=gpus, backend="ray"), 3, cluster)


@pytest.mark.parametrize(("kw", "message"), [
    ({"gpus_per_trial": 0.0, "backend": "ray"}, "gpus_per_trial: 0.0 is not allowed; expected a fraction"),
    ({"gpus_per_trial": 1.5, "backend": "ray"}, "gpus_per_trial: 1.5 is not allowed; expected a fraction"),
    ({"gpus_per_trial": float("nan"), "backend": "ray"}, "gpus_per_trial: nan is not allowed"),
    ({"gpus_per_trial": 0.5}, "gpus_per_trial: 0.5 is not allowed with --backend optuna"),
    ({"gpus_per_trial": 1.0, "backend": "ray", "device": "cpu"}, "gpus_per_trial: 1.0 is not allowed with --device cpu"),
    ({"device": "cuda:1", "backend": "ray"}, "device: 'cuda:1' is not allowed with --backend ray; expected cuda"),
])
def test_ray_device_settings_are_validated(kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchSettings(**kw)


def test_status_maps_to_one_state():
    s = SearchSettings(latency="predicted:v100", objectives=("accuracy", "latency"))
    ok = lifecycle.outcome({"status": "ok", "accuracy": 0.5, "latency_ms": 12.0}, s)
    assert (ok.state.name, ok.values, ok.constraint) == ("COMPLETE", [0.5, 12.0], 12.0 - s.budget_ms)
    assert lifecycle.outcome({"status": "rejected", "reason": "gate"}, s).state.name == "PRUNED"
    assert lifecycle.outcome({"status": "pruned", "reason": "median"}, s).state.name == "PRUNED"
    assert lifecycle.outcome({"status": "failed", "reason": "nan"}, s).state.name == "FAIL"
    nan = lifecycle.outcome({"status": "ok", "accuracy": float("nan"), "latency_ms": 12.0}, s)
    assert (nan.state.name, nan.attrs["status"]) == ("FAIL", "failed") and "accuracy is nan" in nan.attrs["reason"]
    stopped = lifecycle.interrupted("Ctrl-C")
    assert (stopped.state.name, stopped.attrs) == ("FAIL", {"status": "interrupted", "reason": "interrupted: Ctrl-C"})
    assert lifecycle.Outcome.from_json(ok.to_json()) == ok


@needs_ray
def test_how_a_tune_trial_ended_maps_to_the_same_outcomes():
    from nas.search.ray_backend import tune_outcome

    s = SearchSettings(latency="predicted:v100")
    told = lifecycle.outcome({"status": "rejected", "reason": "over budget"}, s)
    assert tune_outcome({"outcome": told.to_json(), "done": True}, False, s) == told
    asha = tune_outcome({"epoch": 2, "accuracy": 0.4, "attrs": json.dumps({"arch_id": "x", "latency_ms": 9.0}),
                         "done": True}, False, s)
    assert asha.state.name == "PRUNED" and asha.attrs["reason"] == "stopped early by ASHA after epoch 2"
    assert asha.attrs["accuracy"] == 0.4 and asha.attrs["latency_ms"] == 9.0
    for result, error in (({"epoch": 1, "attrs": "{}", "done": False}, False), (None, False), (None, True)):
        ended = tune_outcome(result, error, s)
        assert ended.state.name == "FAIL" and ended.attrs["status"] == "interrupted"


def test_seeds_are_queued_once_and_a_killed_queue_is_completed(tmp_path):
    s = SearchSettings(space="hardnet", resolution=32, latency="predicted:v100", proxy="zero-cost")
    study = lifecycle.open_study(s, f"sqlite:///{tmp_path / 'nas.db'}", "seeds", heartbeat=False)
    space = load_space("hardnet")
    first = next(iter(space.seeds()))
    study.enqueue_trial(space.params_of(space.seeds()[first])[0], user_attrs={"seed": first})  # killed after one
    assert lifecycle.enqueue_seeds(study, space) == ["hardnet68", "hardnet68ds", "hardnet85"]
    assert lifecycle.enqueue_seeds(study, space) == []
    assert [t.user_attrs["seed"] for t in study.trials] == ["hardnet39ds", "hardnet68", "hardnet68ds", "hardnet85"]


TWO_POINTS = "layouts: ['.R']\nstem: {type: resnet, channels: [[8]]}\n" \
             "stages: [{block: basic, basic: {depth: 1, width: [8, 16], downsample: conv}}]\n"


def _small_search(tmp_path: Path) -> tuple:
    from nas.search.ray_backend import LifecycleSearch

    (tmp_path / "one.yaml").write_text(TWO_POINTS)
    s = SearchSettings(space=str(tmp_path / "one.yaml"), resolution=32, latency="predicted:v100", proxy="zero-cost",
                       backend="ray", trials=4)
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    search = LifecycleSearch(s, lifecycle.open_study(s, url, "one", heartbeat=False), url)
    search.set_max_concurrency(2)
    return s, url, search


@needs_ray
def test_a_crashed_tune_trial_is_interrupted_and_queued_again_on_resume(tmp_path):
    s, url, search = _small_search(tmp_path)
    assert "arch" in search.suggest("t0")
    search.on_trial_complete("t0", None, error=True)
    study = lifecycle.open_study(s, url, "one", heartbeat=False)  # what the next run does first
    crashed, retry = study.trials
    assert (crashed.state.name, crashed.user_attrs["status"]) == ("FAIL", "interrupted")
    assert crashed.user_attrs["reason"].startswith("interrupted: its Tune trial crashed")
    assert retry.state.name == "WAITING" and retry.user_attrs == {"retry_of": 0}
    assert lifecycle.evaluated_count(study) == (0, 1)


@needs_ray
def test_a_ray_trial_waits_for_its_running_twin_until_the_deadline(tmp_path):
    from nas.search.ray_backend import param_space, run_trial

    s, url, search = _small_search(tmp_path)
    search.study.enqueue_trial({"s0.basic.width": 8, "s1.basic.width": 8})
    search.study.enqueue_trial({"s0.basic.width": 8, "s1.basic.width": 8})
    first, second = search.suggest("t0"), search.suggest("t1")  # the same architecture, both in flight
    assert first["arch"] == second["arch"] and second["number"] == first["number"] + 1
    reports: list[dict] = []
    run_trial(param_space(s, url, "one", time.time() + 0.5) | second, reports.append)
    ended = lifecycle.Outcome.from_json(reports[-1]["outcome"])
    assert ended.state.name == "FAIL" and ended.attrs["status"] == "interrupted"
    assert ended.attrs["reason"].startswith(f"interrupted: --timeout reached while waiting for trial {first['number']}")


@needs_ray
def test_trials_tune_never_handed_back_are_interrupted(tmp_path, capsys):
    s, url, search = _small_search(tmp_path)
    first, second = search.suggest("t0"), search.suggest("t1")
    search.on_trial_complete("t0", {"epoch": 1, "attrs": "{}", "done": False})  # stopped by Tune at --timeout
    search.release()  # Tune ended with t1 never handed back
    trials = optuna.load_study(study_name="one", storage=url).trials
    assert [(t.state.name, t.user_attrs["status"], t.user_attrs["reason"]) for t in trials] == [
        ("FAIL", "interrupted", "interrupted: Tune stopped the trial before its verdict (--timeout or Ctrl-C)"),
        ("FAIL", "interrupted", "interrupted: Tune ended before its verdict (--timeout)")]
    assert "nas.search: trial" not in capsys.readouterr().err  # the shortfall line says it, once


@pytest.mark.slow
@needs_ray_network
def test_ctrl_c_stops_a_ray_search_in_one_line_and_the_trial_runs_again(tmp_path):
    import signal

    space = str(Path(__file__).parent / "data" / "tiny_space.yaml")
    args = ["-m", "nas.search", "--space", space, "--resolution", "64",
            "--latency", "predicted:v100", "--budget", "1ms", "--proxy-epochs", "30", "--no-progress", "--trials", "3",
            "--backend", "ray", "--study-name", "sigint"]
    env = {**os.environ, **RAY_ENV, "HARDNAS_RUNS": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*RAY_PREFIX, sys.executable, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    db = tmp_path / "nas.db"
    deadline = time.time() + 300
    while not db.exists() or not any(t.state.name == "RUNNING" for t in _trials(db)):
        assert proc.poll() is None and time.time() < deadline, "no trial started"
        time.sleep(0.5)
    time.sleep(5)  # the trial is training in its Tune worker
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert [ln for ln in err.splitlines() if ln.startswith("nas.search")] == [
        "nas.search: interrupted; completed trials are saved, rerun the same command to resume"], err[-3000:]
    stopped = [t for t in _trials(db) if t.user_attrs.get("status") == "interrupted"]
    assert stopped and not [t for t in _trials(db) if t.state.name == "RUNNING"]
    assert stopped[0].user_attrs["reason"] == "interrupted: Ctrl-C or SIGTERM"
    study = lifecycle.open_study(SearchSettings(space=space, resolution=64, latency="predicted:v100", budget_ms=1.0,
                                                proxy_epochs=30.0, backend="ray", trials=3), f"sqlite:///{db}", "sigint")
    assert [t.user_attrs.get("retry_of") for t in study.trials if t.state.name == "WAITING"] == [
        t.number for t in stopped]


def _trials(db: Path) -> list:
    from nas.search.storage import open_storage_readonly

    try:
        return optuna.load_study(study_name="sigint", storage=open_storage_readonly(f"sqlite:///{db}")).trials
    except (KeyError, ValueError):
        return []
