"""Proxy fidelity study: resumable JSON cache, bootstrap intervals, held-out correction, CLI and report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import forked

from nas.data import load_dataset
from nas.proxy import ProxyBudget, train_eval
from nas.proxy.__main__ import main
from nas.proxy.curve import extrapolate_accuracy
from nas.proxy.fidelity import FidelityCache, StudySettings, default_cache_path, reference_budget, run_study, \
    study_networks
from nas.proxy.fidelity_report import COLUMNS, REPORT_FORMAT, cross_validate, fidelity_report, format_report, ridge_fit
from nas.space import load_space
from nas.stats import _tau_b_batch, bootstrap_tau, kendall_tau, tau_ceiling

ROOT = Path(__file__).resolve().parents[1]
TINY_SPACE = str(ROOT / "tests" / "data" / "fidelity_tiny_space.yaml")
PROXY = ProxyBudget(epochs=1, batch_size=32, max_train_samples=64, max_eval_samples=64)
REFERENCE = reference_budget(PROXY, epochs=1, train_images=96)
TINY = ["--space", TINY_SPACE, "--scale", "1", "--reference-epochs", "1", "--reference-images", "96",
        "--proxy-epochs", "1", "--proxy-images", "64", "--batch-size", "32", "--resamples", "50"]


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset()
    ds.test_x, ds.test_y = ds.test_x[:64], ds.test_y[:64]  # a small held-out split keeps each network < 1 s
    return ds


class Counting:
    """`train_eval` that counts reference and proxy trainings and can stop the run in the n-th one."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.stop_at = stop_at

    def __call__(self, cfg, ds, budget, device="cpu"):
        self.calls.append((cfg.name, "reference" if budget == REFERENCE else "proxy"))
        if self.stop_at is not None and len(self.calls) == self.stop_at:
            raise KeyboardInterrupt  # the run killed while this network trains
        return train_eval(cfg, ds, budget, device=device)

    def count(self, kind: str) -> int:
        return sum(k == kind for _, k in self.calls)


def _study(digits, path: Path | None = None, reference: ProxyBudget = REFERENCE, networks: int = 3):
    space = load_space(TINY_SPACE)
    settings = StudySettings.make(space, digits, reference, scale=1.0)
    cache = FidelityCache(path or default_cache_path(settings), settings)
    return cache, study_networks(space, networks, scale=1.0)


def test_networks_are_seeds_then_random_and_grow_as_a_prefix():
    space = load_space("hybrid")
    six, eleven = study_networks(space, 6, scale=0.1), study_networks(space, 11, scale=0.1)
    assert [c.arch_id for c in eleven[:6]] == [c.arch_id for c in six]
    names = [c.name for c in eleven]
    assert names[:8] == [f"{n}@0.1" for n in space.seeds()] and names[8:] == ["random0", "random1", "random2"]
    assert len({c.arch_id for c in eleven}) == 11
    other = study_networks(space, 11, scale=0.1, seed=1)
    assert [c.arch_id for c in other[8:]] != [c.arch_id for c in eleven[8:]]


def test_killed_run_keeps_finished_networks_and_rerun_skips_them(digits):
    cache, nets = _study(digits)
    killer = Counting(stop_at=3)  # network 1: reference + proxy; killed in network 2's reference
    with pytest.raises(KeyboardInterrupt):
        run_study(cache, nets, digits, PROXY, log=lambda _: None, train=killer)
    on_disk = json.loads(cache.path.read_text())  # a whole file, with exactly the finished networks
    assert sorted(on_disk["networks"]) == [nets[0].name]
    again = Counting()
    lines: list[str] = []
    run_study(FidelityCache(cache.path, StudySettings(**on_disk["settings"])), nets, digits, PROXY, log=lines.append,
              train=again)
    assert again.calls == [(c.name, k) for c in nets[1:] for k in ("reference", "proxy")]
    assert len(lines) == 3 and "cached" in lines[0] and "trained reference+proxy" in lines[2]
    third = Counting()
    run_study(FidelityCache(cache.path), nets, digits, PROXY, log=lambda _: None, train=third)
    assert third.calls == []


def test_a_stop_swallowed_in_a_garbage_collection_callback_still_ends_the_run(digits, monkeypatch):
    """SIGTERM landing in a weakref callback: Python swallows its KeyboardInterrupt, so the run would go on
    training; the handler's flag ends it before the next network, quietly, with network 1 saved."""
    import signal
    import weakref

    import nas.proxy.__main__ as cli
    from nas.cli import quiet_swallowed_interrupt

    reported = []
    monkeypatch.setattr(sys, "unraisablehook", quiet_swallowed_interrupt(cli._STOP.is_set, default=reported.append))
    cache, nets = _study(digits)

    class Node:
        pass

    class SigtermInGc(Counting):
        def __call__(self, cfg, ds, budget, device="cpu"):
            result = super().__call__(cfg, ds, budget, device)
            if len(self.calls) == 2:  # network 1's proxy has trained
                node = Node()
                ref = weakref.ref(node, lambda _: cli._interrupt(signal.SIGTERM, None))
                del node
                assert ref() is None and cli._STOP.is_set()  # swallowed: we are still here
            return result

    train = SigtermInGc()
    cli._STOP.clear()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_study(cache, nets, digits, PROXY, log=lambda _: None, train=train, should_stop=cli._STOP.is_set)
    finally:
        cli._STOP.clear()
    assert train.calls == [(nets[0].name, "reference"), (nets[0].name, "proxy")] and reported == []
    assert sorted(json.loads(cache.path.read_text())["networks"]) == [nets[0].name]


def test_a_new_proxy_reruns_only_proxies(digits):
    cache, nets = _study(digits, networks=2)
    run_study(cache, nets, digits, PROXY, log=lambda _: None)
    other = Counting()
    run_study(FidelityCache(cache.path), nets, digits, ProxyBudget(epochs=1, batch_size=16, max_train_samples=32),
              log=lambda _: None, train=other)
    assert other.count("reference") == 0 and other.count("proxy") == len(nets)
    assert len(json.loads(cache.path.read_text())["proxies"]) == 2


def test_other_settings_are_never_mixed(digits, tmp_path):
    cache, nets = _study(digits, tmp_path / "study.json")
    run_study(cache, nets[:2], digits, PROXY, log=lambda _: None)
    before = cache.path.read_bytes()
    longer = reference_budget(PROXY, epochs=2, train_images=96)
    space = load_space(TINY_SPACE)
    assert default_cache_path(StudySettings.make(space, digits, longer)) != \
        default_cache_path(StudySettings.make(space, digits, REFERENCE))
    with pytest.raises(ValueError, match="holds another study .*reference") as err:
        _study(digits, cache.path, reference=longer)
    assert "\n" not in str(err.value) and cache.path.read_bytes() == before
    cache.path.write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        FidelityCache(cache.path, StudySettings.make(space, digits, REFERENCE, scale=1.0))
    assert cache.path.read_text() == "{not json"


def test_two_runners_share_a_study_and_each_network_is_trained_once(digits):
    cache, nets = _study(digits, networks=4)
    started = threading.Barrier(2)

    class Slow(Counting):
        def __call__(self, cfg, ds, budget, device="cpu"):
            if not self.calls:
                started.wait(timeout=30)  # both runners are in their first network before either finishes
            time.sleep(0.2)
            return super().__call__(cfg, ds, budget, device)

    runners = [Slow(), Slow()]
    logs: list[list[str]] = [[], []]
    caches = [cache, FidelityCache(cache.path, StudySettings(**cache.settings))]
    threads = [threading.Thread(target=run_study, args=(caches[i], nets, digits, PROXY),
                                kwargs={"log": logs[i].append, "train": runners[i]}) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    trained = sorted(runners[0].calls + runners[1].calls)
    assert trained == sorted((c.name, k) for c in nets for k in ("reference", "proxy"))  # once each
    assert runners[0].calls and runners[1].calls  # the work was shared
    on_disk = json.loads(cache.path.read_text())
    assert sorted(on_disk["networks"]) == sorted(c.name for c in nets)
    assert all(len(lines) == len(nets) for lines in logs)  # each runner ends knowing the whole study
    assert all(sorted(c.networks) == sorted(on_disk["networks"]) for c in caches)


def test_a_runner_waits_for_a_network_in_another_runners_hands(digits):
    cache, nets = _study(digits, networks=2)
    counting = Counting()
    with cache.claim(nets[0].name, wait=False) as held:
        assert held.held
        t = threading.Thread(target=run_study, args=(FidelityCache(cache.path, StudySettings(**cache.settings)),
                                                     nets, digits, PROXY),
                             kwargs={"log": lambda _: None, "train": counting})
        t.start()
        deadline = time.monotonic() + 60
        while len(counting.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        t.join(timeout=1)
        assert t.is_alive() and counting.calls == [(nets[1].name, "reference"), (nets[1].name, "proxy")]
    t.join(timeout=20)  # released without a result (the other runner died): this runner trains it
    assert not t.is_alive() and counting.count("reference") == 2


def test_bootstrap_interval_is_seeded_and_sane():
    rng = np.random.default_rng(3)
    x = rng.random(30)
    y = x + rng.normal(0, 0.3, 30)
    tau, low, high = bootstrap_tau(x, y, seed=0)
    assert tau == kendall_tau(x, y) and low < tau < high and -1 <= low and high <= 1
    assert bootstrap_tau(x, y, seed=0) == (tau, low, high)
    assert bootstrap_tau(x, y, seed=1) != (tau, low, high)
    wider = bootstrap_tau(x[:10], y[:10], seed=0)
    assert wider[2] - wider[1] > high - low  # fewer networks, a wider interval
    assert bootstrap_tau(x, x) == (1.0, 1.0, 1.0)


def test_batched_tau_b_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, (20, 12)).astype(float), rng.integers(0, 3, (20, 12)).astype(float)
    np.testing.assert_allclose(_tau_b_batch(x, y), [kendall_tau(a, b) for a, b in zip(x, y)], atol=1e-12)


def test_the_fit_never_sees_the_networks_it_is_judged_on():
    n = 24
    rng = np.random.default_rng(0)
    ids = np.arange(n, dtype=float)
    x = np.column_stack([ids, rng.random(n)])
    target = rng.random(n)
    seen: list[tuple[set, set]] = []

    def memorise(xt: np.ndarray, yt: np.ndarray):
        """Perfect on the networks it was fitted on, noise elsewhere: a leak would show as tau 1."""
        table = dict(zip(xt[:, 0], yt))
        train_ids = set(xt[:, 0])

        def predict(xq: np.ndarray) -> np.ndarray:
            seen.append((train_ids, set(xq[:, 0])))
            return np.array([table.get(i, rng.random()) for i in xq[:, 0]])
        return predict

    cv = cross_validate(x, target, target, fit=memorise, folds=4, repeats=3, seed=0)
    assert seen and all(not (train & test) for train, test in seen)
    assert cv["fitted_tau_mean"] < 0.5 and cv["plain_tau_mean"] == pytest.approx(1.0)
    assert kendall_tau(cv["score"], target) < 0.5


def test_ridge_recovers_a_linear_ranking():
    rng = np.random.default_rng(1)
    x = rng.random((40, 3))
    y = x @ np.array([2.0, -1.0, 0.0])
    assert kendall_tau(ridge_fit(x[:30], y[:30], alpha=1e-6)(x[30:]), y[30:]) == pytest.approx(1.0)


def test_extrapolation_favours_curves_that_keep_learning():
    assert extrapolate_accuracy([]) is None
    assert extrapolate_accuracy([0.5, 0.5, 0.5]) == 0.5  # flat: no extrapolation
    assert extrapolate_accuracy([0.6, 0.5]) == 0.5  # getting worse: the last value
    slow, fast = [0.2, 0.35, 0.45, 0.52], [0.45, 0.50, 0.52, 0.53]
    assert extrapolate_accuracy(slow) > extrapolate_accuracy(fast) > 0.53
    assert extrapolate_accuracy([0.1, 0.5, 0.9, 0.99]) <= 1.0


def test_train_eval_carries_the_extrapolation(digits):
    r = train_eval(study_networks(load_space(TINY_SPACE), 2, scale=1.0)[0], digits,
                   ProxyBudget(epochs=2, batch_size=32, max_train_samples=64))
    assert r.ok and r.extrapolated_accuracy == extrapolate_accuracy(r.accuracy_curve)


def test_cli_writes_the_report_and_reports_a_partial_cache(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["fidelity", *TINY, "--networks", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[2/2] random1" in printed and "Kendall tau" in printed
    report = json.loads((tmp_path / "s.report.json").read_text())
    assert report["format"] == REPORT_FORMAT and report["n"] == 2 and report["networks"] == 2
    assert set(report["tau"]) == set(COLUMNS)
    for col, t in report["tau"].items():
        assert set(t) == {"n", "tau", "low", "high"}
        if t["tau"] is not None:
            assert t["low"] <= t["high"]
    assert "skipped" in report["held_out"]  # 2 networks: too few to fit and judge
    row = report["rows"][0]
    for key in ("name", "reference", "proxy", "proxy_extrapolated", "params", "macs", "proxy_curve", "reference_curve"):
        assert key in row
    cached = json.loads(out.read_text())["proxies"]
    px = next(iter(cached.values()))["results"][row["name"]]
    assert row["proxy_train_loss"] == -px["loss_curve"][-1] and row["proxy_eval_loss"] == -px["eval_loss_curve"][-1]
    assert report["settings"]["reference"]["max_train_samples"] == 96
    assert main(["fidelity", *TINY, "--networks", "2", "--out", str(out), "--report-only"]) == 0


@pytest.mark.parametrize("args, message", [
    (["--networks", "1"], "--networks"),
    (["--networks", "x"], "--networks"),
    (["--reference-seeds", "6"], "--reference-seeds: '6' is not allowed; expected an integer in [1, 5]"),
    (["--reference-seeds", "x"], "--reference-seeds: 'x' is not allowed; expected an integer in [1, 5]"),
    (["--reference-epochs", "0"], "--reference-epochs"),
    (["--scale", "9"], "--scale"),
    (["--space", "nope"], "space: 'nope'"),
    (["--data", "/no/such"], "data: '/no/such'"),
    (["--report-only", "--out", "/no/such/study.json"], "--report-only: no study file"),
    (["--out", "/proc/no/study.json"], "cannot write the study file's lock"),
])
def test_cli_usage_errors_are_one_line_exit_2(args, message, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARDNAS_RUNS": str(tmp_path)}
    p = forked.run([sys.executable, "-m", "nas.proxy", "fidelity", *TINY, *args], env=env, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and message in p.stderr and p.stdout == "", (p.stdout, p.stderr)


def _synthetic_cache(digits, path: Path, n: int, rng: np.random.Generator) -> FidelityCache:
    """A study file as a run writes it, with made-up figures: bigger networks learn slower but further."""
    cache, _ = _study(digits, path)
    proxies = cache.proxy_results(PROXY, "cpu")
    for i in range(n):
        size = rng.uniform(4, 7)
        final = 0.5 + 0.05 * size + rng.normal(0, 0.02)
        curve = [final * (1 - np.exp(-(e + 1) / size)) for e in range(4)]
        cache.networks[f"n{i}"] = {"arch_id": str(i), "params": int(10 ** size), "macs": int(10 ** size) * 9,
                                   "zero_cost": {"synflow": size, "naswot": rng.random(), "grad_norm": None},
                                   "reference": {"status": "ok", "accuracy": final, "accuracy_curve": [final]}}
        proxies[f"n{i}"] = {"status": "ok", "accuracy": curve[-1], "accuracy_curve": curve, "wall_s": 1.0}
    cache.networks["broken"] = {"arch_id": "x", "params": 1, "macs": 1, "reference": {"status": "failed"}}
    proxies["broken"] = {"status": "ok", "accuracy": 0.1, "accuracy_curve": [0.1]}
    cache.save()
    return FidelityCache(cache.path)


def test_report_schema_and_held_out_fit(digits, tmp_path):
    report = fidelity_report(_synthetic_cache(digits, tmp_path / "a.json", 20, np.random.default_rng(0)), PROXY, "cpu",
                             resamples=100)
    assert report["n"] == 20 and report["networks"] == 21 and report["failed"] == ["broken"]
    assert report["tau"]["grad_norm"] == {"n": 0, "tau": None, "low": None, "high": None}
    assert report["tau"]["params"]["tau"] > report["tau"]["proxy"]["tau"]  # the bias the study is about
    h = report["held_out"]
    assert h["folds"] == 5 and h["repeats"] == 10 and h["fitted_tau_mean"] > h["plain_tau_mean"]
    assert all(np.isfinite(r["proxy_fitted"]) for r in report["rows"]) and report["tau"]["proxy_fitted"]["n"] == 20
    json.dumps(report, allow_nan=False)
    few = fidelity_report(_synthetic_cache(digits, tmp_path / "b.json", 3, np.random.default_rng(0)), PROXY, "cpu",
                          resamples=10)
    assert few["n"] == 3 and "skipped" in few["held_out"] and few["tau"]["proxy_fitted"]["tau"] is None


def test_reference_seeds_judge_against_their_mean_and_say_what_their_noise_allows(digits, tmp_path):
    rng = np.random.default_rng(3)
    cache = _synthetic_cache(digits, tmp_path / "r.json", 12, rng)
    second, third = StudySettings(**cache.settings).reference_seed_budgets(3)[1:]
    assert (second.seed, third.seed) == (1, 2) and second.epochs == REFERENCE.epochs
    runs = {b: cache.proxy_results(b, "cpu") for b in (second, third)}
    for name, entry in cache.networks.items():
        if entry["reference"]["status"] == "ok":
            for b in (second, third):
                runs[b][name] = {"status": "ok", "accuracy": entry["reference"]["accuracy"] + rng.normal(0, 0.01)}
    del runs[third]["n0"]  # a third seed not trained yet on one network: left out of the section
    cache.save()
    cache = FidelityCache(cache.path)
    plain = fidelity_report(cache, PROXY, "cpu", resamples=50)
    assert "reference_seeds" not in plain
    report = fidelity_report(cache, PROXY, "cpu", reference_seeds=3, resamples=50)
    assert report["tau"] == plain["tau"]  # the headline stays against the study's own reference
    sec = report["reference_seeds"]
    rows = {r["name"]: r for r in report["rows"]}
    assert sec["seeds"] == 3 and sec["n"] == 11 and "reference_mean" not in rows["n0"]
    both = [r for r in report["rows"] if "reference_mean" in r]
    seeds = list(zip(*(r["reference_seeds"] for r in both)))
    pairs = [kendall_tau(seeds[0], seeds[1]), kendall_tau(seeds[0], seeds[2]), kendall_tau(seeds[1], seeds[2])]
    assert sec["agreement"]["pairs"] == pytest.approx(pairs) and sec["agreement"]["tau"] == pytest.approx(np.mean(pairs))
    assert sec["ceiling_one_seed"] == pytest.approx(tau_ceiling(1.0, np.mean(pairs)))
    assert sec["ceiling_one_seed"] < sec["ceiling_mean"] < 1
    mean = [np.mean(r["reference_seeds"]) for r in both]
    assert sec["tau"]["proxy"]["tau"] == pytest.approx(kendall_tau([r["proxy"] for r in both], mean))
    assert sec["tau"]["proxy"]["n"] == 11
    json.dumps(report, allow_nan=False)
    assert "reference seeds: 3 on n=11 networks" in format_report(report)
    from nas.explore.fidelity import reference_noise

    line = reference_noise(report)
    assert line.startswith("**Reference noise**: its 3 seeds agree at τ ") and "on 11 networks" in line
    assert f"the proxy against their mean: τ {sec['tau']['proxy']['tau']:.3f}" in line
    assert reference_noise(plain) is None
    for hostile in ({"reference_seeds": "x"}, {"reference_seeds": {"agreement": {"tau": "0.6"}}},
                    {"reference_seeds": {**sec, "seeds": None}}, {"reference_seeds": {**sec, "tau": []}}):
        assert reference_noise(hostile) in (None, line.split("; the proxy")[0] + ".")
    with pytest.raises(ValueError, match="reference seeds 6 is not allowed"):
        StudySettings(**cache.settings).reference_seed_budgets(6)


def test_cli_trains_the_other_reference_seeds_after_the_proxies_and_resumes(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["fidelity", *TINY, "--networks", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["fidelity", *TINY, "--networks", "2", "--out", str(out), "--reference-seeds", "2"]) == 0
    printed = capsys.readouterr().out
    assert "reference seed 1 (2 seeds)" in printed and printed.count("trained seed 1") == 2
    assert "trained reference" not in printed and "trained proxy" not in printed  # the first run's work is kept
    report = json.loads((tmp_path / "s.report.json").read_text())
    assert report["reference_seeds"]["seeds"] == 2 and report["reference_seeds"]["n"] == 2
    assert "reference seeds: 2 on n=2 networks" in printed
    assert main(["fidelity", *TINY, "--networks", "2", "--out", str(out), "--reference-seeds", "2"]) == 0
    assert "trained" not in capsys.readouterr().out


@pytest.mark.slow
def test_a_killed_process_loses_at_most_the_network_in_progress(tmp_path):
    out = tmp_path / "study.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARDNAS_RUNS": str(tmp_path)}
    cmd = [sys.executable, "-m", "nas.proxy", "fidelity", *TINY, "--networks", "6", "--out", str(out)]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        if line.startswith("[2/6]"):
            p.kill()  # SIGKILL: no cleanup at all, somewhere in network 3
            break
    p.wait(timeout=60)
    done = json.loads(out.read_text())["networks"]
    assert 2 <= len(done) <= 3
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    lines = [x for x in rerun.stdout.splitlines() if x.startswith("[")]
    assert len(lines) == 6 and all("cached" in x for x in lines[:2]) and "trained" in lines[-1]
    assert len(json.loads(out.read_text())["networks"]) == 6


# -- the explorer's view of a report ----------------------------------------------------------------


def _report_file(digits, folder: Path, n: int = 20) -> Path:
    report = fidelity_report(_synthetic_cache(digits, folder / "study.json", n, np.random.default_rng(0)), PROXY, "cpu",
                             resamples=50)
    path = folder / "fidelity" / "hybrid-digits-abc.report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))
    return path


def test_the_explorer_reads_a_report_and_refuses_other_files(digits, tmp_path):
    from nas.explore import fidelity as FI

    assert FI.find_reports(tmp_path / "nowhere") == [] and not (tmp_path / "nowhere").exists()
    path = _report_file(digits, tmp_path)
    assert FI.find_reports(path.parent) == [path]
    report = FI.read_report(path)
    taus = FI.tau_frame(report)
    assert list(taus["score"]) == list(COLUMNS)
    row = taus.set_index("score").loc["proxy"]
    assert row["n"] == 20 and row["low"] <= row["tau"] <= row["high"]
    assert np.isnan(taus.set_index("score").loc["grad_norm", "tau"])  # no score recorded: NaN, not a crash
    pts = FI.score_rows(report, "params")
    assert len(pts) == 20 and pts["reference"].between(0, 1).all()
    for text, message in (("{", "cannot be read"), ('{"format": "other"}', "format 'other' is not allowed"),
                          ("[1, 2]", "format 'list' is not allowed"),
                          (json.dumps({"format": REPORT_FORMAT}), "no 'tau' table")):
        bad = tmp_path / "bad.report.json"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message) as err:
            FI.read_report(bad)
        assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_the_app_shows_a_fidelity_report(digits, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from test_explore import make_study

    url = f"sqlite:///{tmp_path / 'nas.db'}"
    make_study(url)
    monkeypatch.setenv("NAS_STORAGE", url)
    monkeypatch.setattr("sys.argv", ["app.py"])
    runs = tmp_path / "runs"
    monkeypatch.setenv("HARDNAS_RUNS", str(runs))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.run()
    at.radio(key="view").set_value("Proxy fidelity").run()
    assert not at.exception and not at.error
    assert any("No proxy fidelity report" in i.value for i in at.info) and not runs.exists()  # a reader creates nothing
    _report_file(digits, runs)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    tau = next(c for c in charts if "Kendall" in c["layout"]["xaxis"]["title"]["text"])
    assert set(tau["data"][0]["y"]) >= {"proxy", "params", "proxy_fitted"}
    assert any("Corrected proxy on held-out networks" in m.value for m in at.markdown)
    at.selectbox(key="fidelity_score").set_value("params").run()
    scatter = [json.loads(c.proto.spec) for c in at.get("plotly_chart")][-1]
    assert scatter["layout"]["xaxis"]["title"]["text"] == "params" and len(scatter["data"][0]["text"]) == 20
    assert not any("Reference noise" in m.value for m in at.markdown)
    path = next((runs / "fidelity").glob("*.report.json"))
    report = json.loads(path.read_text())
    report["reference_seeds"] = {"seeds": 2, "n": 20, "agreement": {"tau": 0.6}, "ceiling_one_seed": 0.712,
                                 "ceiling_mean": 0.79, "tau": {"proxy": {"tau": 0.62, "low": 0.4, "high": 0.8, "n": 20}}}
    path.write_text(json.dumps(report))
    at.run()
    assert any("seeds agree at τ 0.600 on 20 networks" in m.value and "0.712 against one seed" in m.value
               for m in at.markdown), [m.value for m in at.markdown]
