"""Baselines are always evaluated: over the budget or past the gate they get accuracy and latency,
are marked infeasible, never enter the front, and their proxy result is cached across studies."""

from __future__ import annotations

import json
import sqlite3

import optuna

from nas import get_config
from nas.proxy import ProxyCache
from nas.search import evaluate as E
from nas.search.__main__ import main
from nas.search.settings import SearchSettings

_ARGS = ["--space", "hardnet", "--resolution", "64", "--latency", "predicted:v100", "--proxy", "zero-cost",
         "--no-progress"]


def _settings(**kw) -> SearchSettings:
    return SearchSettings(**({"budget_ms": 0.001, "resolution": 64, "latency": "predicted:v100", "proxy": "zero-cost"}
                             | kw))


def test_a_baseline_over_the_budget_is_evaluated_a_candidate_is_rejected(_isolated_runs):
    cfg = get_config("hardnet68").replace(name="hardnet68")
    s = _settings()
    cand = E.evaluate(cfg, s)
    assert cand["status"] == "rejected" and "accuracy" not in cand
    base = E.evaluate(cfg, s, baseline=True)
    assert base["status"] == "ok" and base["over_budget"] is True
    assert base["accuracy"] == base["zc_naswot"] and base["latency_ms"] > s.budget_ms


def test_the_baseline_proxy_is_cached_by_arch_proxy_data_and_seed(_isolated_runs, monkeypatch):
    cfg = get_config("hardnet39ds").replace(name="hardnet39ds")
    first = E.evaluate(cfg, _settings(), baseline=True)
    assert "proxy_cached" not in first and (_isolated_runs / "proxy_cache.db").exists()

    def never(*_a, **_k):
        raise AssertionError("the cached baseline was computed again")

    monkeypatch.setattr(E, "zero_cost", never)
    again = E.evaluate(cfg, _settings(budget_ms=50.0), baseline=True)  # another budget: same proxy figures
    assert again["proxy_cached"] is True and again["accuracy"] == first["accuracy"]
    other_seed = E.evaluate(cfg, _settings(seed=1), baseline=True)  # a miss: computed, and here that fails
    assert other_seed["status"] == "failed" and "cached baseline" in other_seed["reason"]
    assert E.evaluate(cfg.replace(name=""), _settings(budget_ms=50.0))["status"] == "failed"  # candidates: no cache


def test_a_damaged_cache_is_a_miss_never_a_wrong_figure(tmp_path, caplog):
    cache = ProxyCache(tmp_path / "p.db")
    ctx = {"proxy": "train", "data": "digits", "seed": 0, "device": "cpu", "proxy_epochs": 1.0}
    assert cache.get("abc", ctx) is None and not (tmp_path / "p.db").exists()  # a reader creates nothing
    assert cache.put("abc", ctx, {"accuracy": 0.5, "accuracy_curve": [0.5], "latency_ms": 3.0})
    assert cache.get("abc", ctx) == {"accuracy": 0.5, "accuracy_curve": [0.5]}  # proxy fields only
    assert cache.get("abc", ctx | {"seed": 1}) is None
    assert not cache.put("nan", ctx, {"accuracy": float("nan")})
    with sqlite3.connect(tmp_path / "p.db") as conn:
        conn.execute("UPDATE proxy_results SET payload = replace(payload, '0.5', '0.9')")
    assert cache.get("abc", ctx) is None and "checksum" in caplog.text
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    assert ProxyCache(tmp_path / "junk.db").get("abc", ctx) is None


def test_baselines_over_the_budget_are_the_yardstick_everywhere_and_cached(_isolated_runs, capsys, monkeypatch):
    assert main([*_ARGS, "--budget", "0.05ms", "--trials", "4", "--study-name", "yard"]) == 0
    study = optuna.load_study(study_name="yard", storage=f"sqlite:///{_isolated_runs / 'nas.db'}")
    seeds = [t for t in study.trials if t.user_attrs.get("seed")]
    assert len(seeds) == 4 and all(t.state.name == "COMPLETE" and t.user_attrs["over_budget"] for t in seeds)
    assert all(t.constraints["latency"] > 0 for t in seeds)  # infeasible for the constrained samplers too
    out = json.loads((_isolated_runs / "yard" / "pareto.json").read_text())
    assert {b["name"] for b in out["baselines"]} == {"hardnet39ds", "hardnet68", "hardnet68ds", "hardnet85"}
    assert all(b["accuracy"] is not None and b["feasible"] is False and b["over_budget"] for b in out["baselines"])
    assert not {r["arch_id"] for r in out["front"]} & {b["arch_id"] for b in out["baselines"]}
    text = capsys.readouterr().out
    assert "hardnet68 *" in text and "The front beside the baselines" in text
    assert "hardnet85: accuracy" in text and "over the 0.05 ms budget" in text

    def never(*_a, **_k):
        raise AssertionError("a baseline's proxy was computed a second time")

    monkeypatch.setattr(E, "zero_cost", never)  # another study, same data, proxy and seed: paid once
    assert main([*_ARGS, "--budget", "0.06ms", "--trials", "4", "--study-name", "two"]) == 0
    study = optuna.load_study(study_name="two", storage=f"sqlite:///{_isolated_runs / 'nas.db'}")
    again = [t for t in study.trials if t.user_attrs.get("seed")]
    assert len(again) == 4 and all(t.user_attrs.get("proxy_cached") for t in again)
    assert sorted(t.user_attrs["accuracy"] for t in again) == sorted(t.user_attrs["accuracy"] for t in seeds)
