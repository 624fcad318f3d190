"""The functions behind the explorer app (`nas.explore`): loading, errors, fronts, samples, EDFs,
correlations, importances, figures, downloads and the synthetic-study writer."""

from __future__ import annotations

import importlib
import json
import math
import random
import sqlite3
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
import pytest

from nas.config import ArchConfig
from nas.cost import analyze
from nas.explore import analysis as A
from nas.explore import data as D
from nas.explore import downloads as X
from nas.explore import figures as F
from nas.explore import profiles as P
from nas.explore import warm as W
from nas.explore.demo import create_command, demo_args
from nas.explore.synthetic import synthetic_study
from nas.latency import predict_ms, resolve_profile
from nas.latency.predict import predict
from nas.links import links
from nas.registry import get_config
from nas.sampling import random_config
from nas.search.results import pareto_front, trial_records

optuna.logging.set_verbosity(optuna.logging.WARNING)

RES = 64
BUDGET = 0.5


def small_configs(n: int, seed: int = 1) -> list[ArchConfig]:
    """Distinct random configs that are valid at 64x64."""
    rng, out = random.Random(seed), []
    while len(out) < n:
        cfg = random_config(rng.randrange(10**9), max_stages=3, max_width=32, max_depth=4)
        try:
            cfg.check_resolution(RES)
        except ValueError:
            continue
        if cfg.arch_id not in {c.arch_id for c in out}:
            out.append(cfg)
    return out


def _attrs(cfg: ArchConfig, acc: float | None, lat: float, **extra) -> dict:
    cost = analyze(cfg, RES)
    a = {"arch_id": cfg.arch_id, "config": cfg.to_json(indent=None), "params": cost.params, "macs": cost.macs,
         "thop_macs": cost.thop_macs, "cio": cost.cio, "moc": cost.moc, "latency_ms": lat,
         "latency_source": "predicted", "latency_device": "v100", "latency_rel_iqr": None, "status": "ok",
         "reason": None, "wall_s": 1.0, "budget_ms": BUDGET, "proxy": "train"}
    if acc is not None:
        a.update(accuracy=acc, accuracy_curve=[round(acc * 0.7, 4), round(acc * 0.9, 4), acc])
    a.update(extra)
    return a


#: (trial, config index or baseline name, accuracy, latency ms, state); the front at 0.5 ms is 2, 3, 6, 5
PLAN = [
    (0, "hardnet39ds", 0.80, 0.45, "COMPLETE"),
    (1, "hardnet68", None, 0.90, "PRUNED"),  # over budget: rejected, as the search does
    (2, 0, 0.70, 0.10, "COMPLETE"),
    (3, 1, 0.75, 0.20, "COMPLETE"),
    (4, 2, 0.72, 0.30, "COMPLETE"),
    (5, 3, 0.82, 0.40, "COMPLETE"),
    (6, 4, 0.78, 0.35, "COMPLETE"),
    (7, 5, None, 0.25, "FAIL"),
    (8, 1, 0.75, 0.20, "COMPLETE"),  # a duplicate of trial 3
]
FRONT = {2, 3, 5, 6}


def make_study(url: str, name: str = "fixture", budget: float = BUDGET, plan=PLAN, zero_cost: bool = False,
               resolution: int = RES, device: str = "v100") -> optuna.Study:
    """A study written the way `nas.search` writes one: settings, objectives, seeds, user attributes.

    ``zero_cost``: NASWOT scores as accuracy; as in a real search, a trial rejected before its
    evaluation records no proxy (the study's setting says ``zero-cost``)."""
    cfgs = small_configs(6)
    study = optuna.create_study(study_name=name, storage=url, directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("settings", {"budget_ms": budget, "space": "tiny", "seed": 0, "device": "auto",
                                     "resolution": resolution, "batch": 1, "precision": "fp32",
                                     "latency": f"predicted:{device}", "proxy": "zero-cost" if zero_cost else "train",
                                     "zero_cost_metric": "naswot", "data": "digits",
                                     "objectives": ["accuracy", "latency", "cio"]})
    study.set_user_attr("objectives", ["accuracy", "latency", "cio"])
    trials = []
    for number, which, acc, lat, state in plan:
        cfg = get_config(which) if isinstance(which, str) else cfgs[which]
        extra = {"seed": which} if isinstance(which, str) else {}
        if number == 8:
            extra["duplicate_of"] = 3
        if state == "PRUNED":
            extra.update(status="rejected", reason=f"over budget: predicted {lat} ms > {budget} ms")
        if state == "FAIL":
            extra.update(status="failed", reason="proxy training: loss is NaN")
        attrs = _attrs(cfg, None if acc is None else (1000 * acc if zero_cost else acc), lat, latency_device=device,
                       budget_ms=budget, **extra)
        if zero_cost:
            attrs.pop("accuracy_curve", None)
            if acc is None:
                attrs.pop("proxy")
            else:
                attrs["proxy"] = "zero-cost:naswot"
        acc = attrs.get("accuracy")
        st = getattr(optuna.trial.TrialState, state)
        values = [acc, lat, float(attrs["cio"])] if state == "COMPLETE" else None
        trials.append(optuna.trial.create_trial(state=st, values=values, user_attrs=attrs))
    study.add_trials(trials)
    return study


def make_measured_study(url: str, name: str = "cpu", n: int = 16, factor: float = 5.0, budget: float = 1000.0,
                        disturbed: int = 0) -> optuna.Study:
    """A study whose latencies were measured on this CPU: ``factor`` x what the uncalibrated profile predicts
    (a real micro-benchmarked profile is several times optimistic); the first ``disturbed`` are flagged."""
    from nas.latency import cpu_profile, predict_ms

    base = cpu_profile()
    rng = random.Random(3)
    study = optuna.create_study(study_name=name, storage=url, directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("settings", {"budget_ms": budget, "resolution": RES, "batch": 1, "precision": "fp32",
                                     "latency": "measured", "proxy": "train", "data": "digits"})
    trials = []
    for i, cfg in enumerate(small_configs(n, seed=7)):
        ms = factor * predict_ms(cfg, base, RES) * rng.uniform(0.95, 1.05)
        attrs = _attrs(cfg, 0.5 + 0.02 * i, ms, latency_source="measured", latency_device="cpu", budget_ms=budget,
                       latency_disturbed=i < disturbed)
        trials.append(optuna.trial.create_trial(values=[attrs["accuracy"], ms, float(attrs["cio"])], user_attrs=attrs))
    study.add_trials(trials)
    return study


def make_runtime_study(url: str, name: str = "hd", resolution: str = "1080x1920", runtime: str = "onnxruntime",
                       version: str = "1.17.3", n: int = 6, budget: float = 5000.0) -> optuna.Study:
    """A study whose latencies were measured on this CPU under ``runtime`` at a non-square input, written as
    `nas.search` writes one (the setting ``runtime`` when not eager; each trial's runtime and its version)."""
    study = optuna.create_study(study_name=name, storage=url, directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("settings", {"budget_ms": budget, "resolution": resolution, "batch": 1, "precision": "fp32",
                                     "latency": "measured", "proxy": "train", "data": "digits", "runtime": runtime})
    trials = []
    for i, cfg in enumerate(small_configs(n, seed=11)):
        cost = analyze(cfg, resolution)
        ms = 1000.0 * cost.macs / 1e9 + 5.0 * i
        attrs = {**_attrs(cfg, 0.5 + 0.03 * i, ms, latency_source="measured", latency_device="cpu", budget_ms=budget,
                          latency_runtime=runtime, latency_runtime_version=version),
                 "params": cost.params, "macs": cost.macs, "cio": cost.cio, "moc": cost.moc}
        trials.append(optuna.trial.create_trial(values=[attrs["accuracy"], ms, float(cost.cio)], user_attrs=attrs))
    study.add_trials(trials)
    return study


@pytest.fixture
def fixture_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    make_study(url)
    return url


@pytest.fixture
def frame(fixture_url) -> pd.DataFrame:
    return D.records_frame(D.load_records(fixture_url, ["fixture"]))


# -- storages and loading -------------------------------------------------------------------


def test_storage_url_priority(monkeypatch, _isolated_runs):
    assert D.resolve_storage_url(["--storage", "sqlite:///a.db"], {"NAS_STORAGE": "sqlite:///b.db"}) == "sqlite:///a.db"
    assert D.resolve_storage_url(["--other", "x"], {"NAS_STORAGE": "sqlite:///b.db"}) == "sqlite:///b.db"
    assert D.resolve_storage_url([], {}) == f"sqlite:///{_isolated_runs / 'nas.db'}"


def test_missing_sqlite_file_is_an_empty_storage_and_is_not_created(tmp_path):
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    assert D.storage_is_missing(url) and D.list_studies(url) == []
    assert not (tmp_path / "nas.db").exists()
    assert D.storage_location(url) == str(tmp_path / "nas.db")
    url = f"sqlite:///{tmp_path / 'none' / 'nas.db'}"  # a folder that does not exist: a mistyped path
    with pytest.raises(D.StorageError, match=f"the folder {tmp_path / 'none'} does not exist"):
        D.list_studies(url)
    assert not (tmp_path / "none").exists()
    assert D.storage_location("postgresql://u@h/db") is None


@pytest.mark.parametrize("kind", ["corrupt", "folder", "bad-url", "unreachable", "missing-study"])
def test_storage_errors_are_one_line_naming_the_url(kind, tmp_path, fixture_url):
    if kind == "corrupt":
        path = tmp_path / "broken.db"
        path.write_bytes(b"this is not a database, just bytes\n" * 200)
        url = f"sqlite:///{path}"
    elif kind == "folder":
        (tmp_path / "dir.db").mkdir()
        url = f"sqlite:///{tmp_path / 'dir.db'}"
    elif kind == "bad-url":
        url = "nonsense"
    elif kind == "unreachable":
        url = "postgresql://nobody@127.0.0.1:1/nas"
    else:
        url = fixture_url
    with pytest.raises(D.StorageError) as err:
        if kind == "missing-study":
            D.load_records(url, ["no-such-study"])
        else:
            D.list_studies(url)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"storage {url}: ") and len(msg) < 400, msg
    assert "Traceback" not in msg
    expected = {"corrupt": "not a database", "folder": "is a folder", "bad-url": "is not allowed",
                "unreachable": "could not be opened", "missing-study": "no study named 'no-such-study'"}[kind]
    assert expected in msg


def test_study_list_and_settings(fixture_url):
    make_study(fixture_url, name="second", budget=0.3)
    studies = D.list_studies(fixture_url)
    assert [s.name for s in studies] == ["fixture", "second"]
    assert studies[0].n_trials == len(PLAN) and studies[1].budget_ms == 0.3
    assert studies[0].directions == ("maximize", "minimize", "minimize")


def test_fast_sql_read_equals_optunas_api(fixture_url):
    fast = D.load_records(fixture_url, ["fixture"])
    slow = D.load_records(fixture_url, ["fixture"], fast=False)
    assert fast == slow
    study = optuna.load_study(study_name="fixture", storage=fixture_url)
    assert [r["number"] for r in fast] == [t.number for t in study.trials]
    assert fast[0]["name"] == "hardnet39ds" and fast[0]["study"] == "fixture"
    assert [r["state"] for r in fast] == [p[4] for p in PLAN]


def test_a_zero_cost_study_is_one_proxy_though_rejected_trials_record_none(tmp_path):
    url = f"sqlite:///{tmp_path / 'zc.db'}"
    make_study(url, zero_cost=True)
    df = D.records_frame(D.load_records(url, ["fixture"]))
    assert set(df["proxy"]) == {"zero-cost:naswot"}
    assert D.accuracy_proxies(df) == ["zero-cost:naswot"]
    assert D.proxy_name(None, {"proxy": "zero-cost", "zero_cost_metric": "synflow"}) == "zero-cost:synflow"
    assert D.proxy_name(None, {"proxy": "train"}) == "train" and D.proxy_name("", {}) == ""


def test_records_frame_columns_and_design_features(frame):
    assert list(frame["key"][:2]) == ["fixture#0", "fixture#1"]
    row = frame.iloc[0]
    assert row["baseline"] and row["name"] == "hardnet39ds" and row["resolution"] == RES
    assert row["family"] == "hard" and row["stem"] == "hardnet_ds" and row["link_rule"] == "harmonic"
    assert row["k"] == pytest.approx(sum(s.growth_rate for s in get_config("hardnet39ds").stages) / 4)
    assert row["m"] == pytest.approx(1.6) and row["depth"] == sum(s.depth for s in get_config("hardnet39ds").stages)
    assert frame.loc[frame["state"] == "FAIL", "accuracy"].isna().all()
    assert frame.loc[2, "curve"] == [0.49, 0.63, 0.70]


def test_design_features_of_residual_and_tresnet():
    r = D.design_features(get_config("resnet50").to_dict())
    assert r["family"] == "bottleneck" and math.isnan(r["k"]) and r["link_rule"] == "none" and r["se"] == "none"
    t = D.design_features(get_config("tresnet_m").to_json())
    assert t["stem"] == "space_to_depth" and t["family"] == "basic+bottleneck" and t["se"] == "mid+output"
    mixed = get_config("hardnet68").to_dict()
    mixed["stages"][1]["link_rule"] = "dense"
    assert D.design_features(mixed)["link_rule"] == "mixed"


# -- latency, feasibility, fronts -----------------------------------------------------------


def test_latency_column_measured_predicted_and_other_devices(frame):
    with pytest.raises(ValueError, match="latency mode"):
        A.latency_column(frame, "guessed")
    lat, src = A.latency_column(frame, "measured")
    assert lat.isna().all() and (src == "").all()  # never a prediction shown as a measurement
    lat, src = A.latency_column(frame, "predicted", "v100")
    assert lat.equals(frame["latency_ms"].astype(float))
    assert src[0] == "predicted for v100 (spec sheet, not calibrated, as the search recorded it)"
    lat, src = A.latency_column(frame, "predicted", "jetson_nano")
    cfg = ArchConfig.from_json(frame.loc[2, "config"])
    assert lat[2] == pytest.approx(predict(cfg, "jetson_nano", RES).median_ms)
    assert math.isnan(lat[7])  # a failed trial is not predicted
    mixed = frame.copy()
    mixed.loc[2, "latency_source"] = "measured"
    lat, src = A.latency_column(mixed, "measured")
    assert lat.notna().sum() == 1 and src[2] == "measured on v100"


def test_front_and_feasibility_under_a_budget(frame):
    lat, _ = A.latency_column(frame, "predicted", "v100")
    feas = A.feasible_mask(frame, lat, BUDGET)
    assert set(frame.loc[feas, "number"]) == {0, 2, 3, 4, 5, 6, 8}
    front = A.front_mask(frame, lat, feas)
    assert set(frame.loc[front, "number"]) == FRONT  # duplicate 8 stands behind 3
    feas = A.feasible_mask(frame, lat, 0.3)
    assert set(frame.loc[A.front_mask(frame, lat, feas), "number"]) == {2, 3}
    assert not A.front_mask(frame, lat, A.feasible_mask(frame, lat, 0.01)).any()
    assert A.feasible_mask(frame, lat, None).sum() == 7


def test_front_agrees_with_the_search_front_on_random_points():
    rng = np.random.RandomState(3)
    n = 300
    df = pd.DataFrame({"study": rng.choice(["a", "b"], n), "state": "COMPLETE",
                       "arch_id": [f"id{i % 250}" for i in range(n)],  # some duplicates
                       "accuracy": rng.randint(0, 40, n) / 40, "latency_ms": rng.randint(1, 60, n) / 10.0})
    lat = df["latency_ms"]
    feas = A.feasible_mask(df, lat, 4.0)
    front = A.front_mask(df, lat, feas)
    for study in ("a", "b"):
        recs = [dict(r, feasible=bool(f)) for r, f in zip(df.to_dict("records"), feas) if r["study"] == study]
        expected = {(r["arch_id"], r["accuracy"], r["latency_ms"]) for r in
                    pareto_front(recs, objectives=("accuracy", "latency_ms"), maximize=("accuracy",))}
        got = {tuple(r) for r in df.loc[front & (df["study"] == study), ["arch_id", "accuracy", "latency_ms"]].to_numpy()}
        assert got == expected and got


def test_sample_for_display_keeps_the_front_and_every_family():
    rng = np.random.RandomState(0)
    n = 5000
    df = pd.DataFrame({"family": rng.choice(["hard", "basic", "bottleneck"], n, p=[0.7, 0.29, 0.01])})
    keep = pd.Series(rng.rand(n) < 0.01, index=df.index)
    mask = A.sample_for_display(df, keep, max_points=1000)
    assert mask[keep].all()
    assert 990 <= mask.sum() <= 1010
    assert set(df.loc[mask & ~keep, "family"]) == {"hard", "basic", "bottleneck"}
    share = df.loc[mask & ~keep, "family"].value_counts(normalize=True)
    assert share["hard"] == pytest.approx(0.7, abs=0.05)
    assert mask.equals(A.sample_for_display(df, keep, max_points=1000))  # stable between reruns
    assert A.sample_for_display(df.iloc[:500], keep.iloc[:500], max_points=1000).all()


# -- analysis ---------------------------------------------------------------------------------


def test_edf():
    xs, ys = A.edf([0.3, 0.1, float("nan"), 0.2, 0.2])
    assert list(xs) == [0.1, 0.2, 0.2, 0.3] and list(ys) == [0.25, 0.5, 0.75, 1.0]
    assert len(A.edf([])[0]) == 0


def test_edf_by_choice_groups_and_bins(frame):
    done = frame[frame["state"] == "COMPLETE"]
    err = 1 - done["accuracy"]
    curves = A.edf_by_choice(done, "family", err)
    assert sum(len(xs) for xs, _ in curves.values()) == len(done)
    assert all(np.all(np.diff(ys) > 0) and ys[-1] == 1.0 for _, ys in curves.values())
    rng = np.random.RandomState(0)
    df = pd.DataFrame({"k": np.r_[rng.randint(4, 40, 200).astype(float), [np.nan] * 20]})
    binned = A.edf_by_choice(df, "k", pd.Series(rng.rand(220)), bins=4)
    assert "none" in binned and len(binned) == 5 and sum(len(x) for x, _ in binned.values()) == 220
    with pytest.raises(ValueError, match="choice"):
        A.edf_by_choice(df, "colour", pd.Series(rng.rand(220)))


def test_rank_correlations():
    x = list(range(50))
    r = A.rank_correlations(x, [2 * v + 1 for v in x])
    assert r == {"tau": 1.0, "rho": pytest.approx(1.0), "n": 50, "n_tau": 50}
    r = A.rank_correlations(x, [-v for v in x])
    assert r["tau"] == -1.0 and r["rho"] == pytest.approx(-1.0)
    r = A.rank_correlations(x + [float("nan")], x + [3.0])
    assert r["n"] == 50
    big = np.arange(3000.0)
    r = A.rank_correlations(big, big ** 2, kendall_max=500)
    assert r["n_tau"] == 500 and r["tau"] == pytest.approx(1.0) and r["n"] == 3000
    assert A.rank_correlations(big, big ** 2)["n_tau"] == 3000  # no sample unless asked (SciPy is O(n log n))
    assert math.isnan(A.rank_correlations([1, 2], [2, 1])["tau"])


def test_param_importances_find_the_choice_that_matters():
    rng = np.random.RandomState(0)
    n = 80
    df = pd.DataFrame({"stem": rng.choice(["hardnet", "resnet"], n), "family": rng.choice(["hard", "basic"], n),
                       "k": rng.randint(4, 40, n).astype(float), "m": rng.choice([1.6, 1.7], n),
                       "link_rule": rng.choice(["harmonic", "dense", "chain"], n), "depth": rng.randint(2, 20, n),
                       "se": "none", "stages": 3})
    target = df["link_rule"].map({"harmonic": 0.9, "dense": 0.5, "chain": 0.1}) + rng.normal(0, 0.01, n)
    imp, why = A.param_importances(df, target)
    assert why is None and max(imp, key=imp.get) == "link_rule" and sum(imp.values()) == pytest.approx(1.0)
    assert "se" not in imp and "stages" not in imp  # constant choices are left out
    imp, why = A.param_importances(df.iloc[:5], target.iloc[:5])
    assert imp == {} and "at least 8" in why
    imp, why = A.param_importances(df, pd.Series(0.5, index=df.index))
    assert imp == {} and "same value" in why
    flat = df.assign(stem="x", family="x", k=1.0, m=1.0, link_rule="x", depth=1)
    assert A.param_importances(flat, target)[1] == "no design choice varies among these trials"


def test_param_importances_look_at_the_best_end_of_the_target():
    """The best accuracies are set by the link rule, the lowest latencies by the depth: each direction finds its own."""
    rng = np.random.RandomState(1)
    n = 300
    df = pd.DataFrame({"stem": rng.choice(["hardnet", "resnet"], n), "family": "hard", "k": rng.randint(4, 40, n).astype(float),
                       "m": 1.7, "link_rule": rng.choice(["harmonic", "dense", "chain"], n), "depth": rng.randint(2, 20, n),
                       "se": "none", "stages": 3})
    df.loc[df.index[::7], "k"] = np.nan  # no harmonic block: a level of its own, not a crash
    target = pd.Series(np.where(df["link_rule"] == "harmonic", 2.0, 0.01 * df["depth"]) + rng.normal(0, 1e-3, n))
    best_high, _ = A.param_importances(df, target, maximize=True)
    best_low, _ = A.param_importances(df, target, maximize=False)
    assert max(best_high, key=best_high.get) == "link_rule"
    assert max(best_low, key=best_low.get) == "depth"


def test_stage_rows_sum_to_the_cost_report():
    cfg = get_config("hardnet68")
    rows = A.stage_rows(cfg, 224)
    report = analyze(cfg, 224)
    assert [r["stage"] for r in rows] == ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "stages.4", "head"]
    assert sum(r["params"] for r in rows) == report.params == 17565348
    assert sum(r["MACs"] for r in rows) == report.macs and sum(r["CIO"] for r in rows) == report.cio
    assert rows[1]["block"] == "hard k=14 m=1.7 harmonic" and rows[1]["output"] == "128x56x56"


def test_harmonic_plans_follow_the_builder():
    import nas

    cfg = get_config("hardnet68")
    plans = A.harmonic_plans(cfg)
    assert [i for i, _ in plans] == [0, 1, 2, 3, 4]
    model = nas.build_model(cfg)
    assert plans[2][1].out_channels == model.stages[2][0].out_channels if hasattr(model.stages[2][0], "out_channels") else True
    assert plans[1][1].links == tuple(links("harmonic", i) for i in range(1, plans[1][1].depth + 1))
    assert A.harmonic_plans(get_config("resnet50")) == []


def test_nice_ceiling():
    assert [A.nice_ceiling(x) for x in (0.43, 1.0, 1.2, 2.2, 3.1, 7.0, 0.0)] == [0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 1.0]


# -- figures ------------------------------------------------------------------------------------


def test_pareto_figure_traces(frame):
    lat, src = A.latency_column(frame, "predicted", "v100")
    feas = A.feasible_mask(frame, lat, 0.3)
    front = A.front_mask(frame, lat, feas)
    fig = F.pareto_figure(frame, lat, src, feas, front, budget_ms=0.3, selected=["fixture#5"],
                          references={"resnet50 (predicted)": 1.5, "tiny (predicted)": 0.05})
    assert isinstance(fig, go.Figure)
    names = [t.name for t in fig.data]
    assert names[0] == "infeasible" and "Pareto front" in names and "baselines" in names and "selected" in names
    assert "canonical (latency only)" in names
    by = {t.name: t for t in fig.data}
    # every point trace is WebGL, so the front, baselines and selection stack above the cloud in this order
    points = [t for t in fig.data if t.name != "canonical (latency only)"]
    assert all(isinstance(t, go.Scattergl) for t in points)
    order = [t.name for t in points]
    cloud = [i for i, n in enumerate(order) if n == "infeasible" or n in set(frame["family"])]
    assert max(cloud) < order.index("Pareto front") < order.index("baselines") < order.index("selected")
    assert sorted(c[0] for c in by["infeasible"].customdata) == ["fixture#0", "fixture#5", "fixture#6"]
    assert [c[0] for c in by["Pareto front"].customdata] == ["fixture#2", "fixture#3"]  # sorted by latency
    assert list(by["baselines"].text) == ["hardnet39ds"] and by["baselines"].marker.symbol == "star"
    assert by["selected"].customdata[0][0] == "fixture#5"
    drawn = sum(len(by[n].x) for n in order if n == "infeasible" or n in set(frame["family"]))
    assert drawn == 7  # completed trials with accuracy and latency, each once
    assert any("budget 0.3" in (a.text or "") for a in fig.layout.annotations)
    # the axis spans the trials (and the budget), not the references; one beyond it is an arrow at the edge
    assert fig.layout.xaxis.range[1] == pytest.approx(1.08 * 0.9)  # the slowest: the rejected baseline
    refs = {a.text: a for a in fig.layout.annotations if a.name == "reference"}
    assert set(refs) == {"tiny (predicted) 0.05 ms", "resnet50 (predicted) → 1.5 ms"}
    assert refs["resnet50 (predicted) → 1.5 ms"].xref == "paper" and refs["tiny (predicted) 0.05 ms"].x == 0.05


def test_pareto_colours_by_family_or_by_cio_on_a_scale_the_budget_does_not_move(frame):
    lat, src = A.latency_column(frame, "predicted", "v100")
    scales = []
    for budget in (0.3, BUDGET):
        feas = A.feasible_mask(frame, lat, budget)
        fig = F.pareto_figure(frame, lat, src, feas, A.front_mask(frame, lat, feas), budget_ms=budget, colour_by="cio")
        scales.append((fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax))
        assert fig.layout.coloraxis.colorbar.title.text == "CIO (M elements)"
    assert scales[0] == scales[1]
    done = frame[(frame["state"] == "COMPLETE")]
    assert scales[0] == pytest.approx((done["cio"].min() / 1e6, done["cio"].max() / 1e6))
    fig = F.pareto_figure(frame, lat, src, A.feasible_mask(frame, lat, BUDGET), A.front_mask(frame, lat, feas))
    families = [t for t in fig.data if t.name in set(frame["family"])]
    assert len({t.marker.color for t in families}) == len(families)  # one colour per family
    with pytest.raises(ValueError, match="colour_by"):
        F.pareto_figure(frame, lat, src, feas, feas, colour_by="size")


def test_rejected_baselines_are_drawn_on_a_no_accuracy_band_saying_why(frame):
    assert frame.loc[1, "why"] == "rejected: over budget: predicted 0.9 ms > 0.5 ms"
    assert frame.loc[7, "why"] == "failed: proxy training: loss is NaN" and frame.loc[2, "why"] == "ok"
    lat, src = A.latency_column(frame, "predicted", "v100")
    assert lat[1] == pytest.approx(0.9)  # the rejected baseline keeps its latency
    feas = A.feasible_mask(frame, lat, BUDGET)
    fig = F.pareto_figure(frame, lat, src, feas, A.front_mask(frame, lat, feas), selected=["fixture#1"])
    by = {t.name: t for t in fig.data}
    band = by["baselines without accuracy"]
    assert list(band.text) == ["hardnet68"] and band.customdata[0][0] == "fixture#1"
    assert band.x[0] == pytest.approx(0.9) and band.y[0] < frame["accuracy"].min()
    assert band.customdata[0][12] == "rejected: over budget: predicted 0.9 ms > 0.5 ms"
    assert "no accuracy" in band.hovertemplate
    assert by["selected"].y[0] == band.y[0]  # the selection ring sits on the band
    assert any(a.text == "no accuracy" for a in fig.layout.annotations)


def test_pareto_figure_overlaid_studies_draw_one_front_each(frame):
    other = frame.assign(study="b", key=frame["key"].str.replace("fixture", "b"))
    both = pd.concat([frame, other], ignore_index=True)
    lat, src = A.latency_column(both, "predicted", "v100")
    feas = A.feasible_mask(both, lat, BUDGET)
    fig = F.pareto_figure(both, lat, src, feas, A.front_mask(both, lat, feas))
    assert [t.name for t in fig.data if t.name.startswith("Pareto")] == ["Pareto front: fixture", "Pareto front: b"]


def test_pareto_figure_respects_the_sample(frame):
    lat, src = A.latency_column(frame, "predicted", "v100")
    feas = A.feasible_mask(frame, lat, BUDGET)
    front = A.front_mask(frame, lat, feas)
    shown = pd.Series(False, index=frame.index)
    fig = F.pareto_figure(frame, lat, src, feas, front, shown=shown)
    drawn = {c[0] for t in fig.data if isinstance(t, go.Scattergl) for c in t.customdata}
    assert drawn == {f"fixture#{i}" for i in FRONT} | {"fixture#0", "fixture#1"}  # the front and the baselines stay


def test_other_figures(frame):
    done = frame[frame["state"] == "COMPLETE"]
    pc = F.parallel_coordinates_figure(done, done["accuracy"], "accuracy")
    assert isinstance(pc.data[0], go.Parcoords)
    labels = [d.label for d in pc.data[0].dimensions]
    assert labels[0] == "stem" and labels[-1] == "accuracy" and len(labels) == len(D.DESIGN_CHOICES) + 1
    fam = pc.data[0].dimensions[1]
    assert list(fam.ticktext) == sorted(done["family"].unique())
    imp = F.importance_figure({"k": 0.7, "link_rule": 0.3}, "accuracy")
    assert list(imp.data[0].y) == ["link_rule", "k"]
    stats = A.rank_correlations(done["cio"], done["latency_ms"])
    corr = F.cost_latency_figure(done["cio"], done["latency_ms"], done["family"], "CIO")
    assert corr.layout.title.text is None  # the page writes the statistics above: a title runs under the toolbar
    text = F.correlation_text(stats)
    assert text.startswith("Kendall τ ") and "Spearman ρ" in text and text.endswith(f"over {len(done)} architectures")
    assert F.correlation_text({"tau": math.nan, "n": 2}) == "too few points for a rank correlation (2)"
    assert sum(len(t.x) for t in corr.data) == len(done)
    edf = F.edf_figure(A.edf_by_choice(done, "family", 1 - done["accuracy"]), "family", "error")
    assert all(t.name.startswith("family=") for t in edf.data) and len(edf.data) == done["family"].nunique()
    curves = F.curve_figure({"a": [0.1, 0.2], "b": []})
    assert [t.name for t in curves.data] == ["a"]


def test_block_links_figure_draws_every_link():
    plan = A.harmonic_plans(get_config("hardnet68"))[1][1]
    fig = F.block_links_figure(plan, "stage 1")
    arcs, layers = fig.data
    assert arcs.name == "links" and layers.name == "layers"
    assert list(arcs.x).count(None) == sum(len(lk) for lk in plan.links)
    assert len(layers.x) == plan.depth + 1
    filled = [c for c in layers.marker.color if c != "white"]
    assert len(filled) == len(plan.outputs)
    # layer 4 of a harmonic block reads 3, 2 and 0
    assert layers.customdata[4][1] == "3, 2, 0"


def test_clicked_key():
    ev = {"selection": {"points": [{"curve_number": 3, "customdata": ["s#4", "abc"]}]}}
    assert F.clicked_key(ev) == "s#4"
    assert F.clicked_key({"selection": {"points": [{"x": 1}]}}) is None
    assert F.clicked_key(None) is None and F.clicked_key({}) is None


# -- downloads, demo, synthetic studies ----------------------------------------------------------


def test_front_downloads_are_the_searchs_pareto_files_with_the_latency_shown(frame):
    import csv
    import io

    lat, src = A.latency_column(frame, "predicted", "jetson_nano")
    feas = A.feasible_mask(frame, lat, None)
    front = A.front_mask(frame, lat, feas)
    rows, baselines = A.front_records(frame, lat, front, feas, "fixture", "predicted", "jetson_nano")
    assert [r["number"] for r in rows] == list(frame.loc[lat[front].sort_values().index, "number"])
    assert {r["latency_source"] for r in rows} == {"predicted"} and {r["latency_device"] for r in rows} == {"jetson_nano"}
    assert [b["seed"] for b in baselines] == ["hardnet39ds", "hardnet68"]
    files = X.front_files(rows, baselines)
    table = list(csv.DictReader(io.StringIO(files["pareto.csv"].decode())))
    assert list(table[0]) == ["number", "name", "arch_id", "accuracy", "latency_ms", "latency_source", "cio", "macs",
                              "params", "feasible"]
    assert [int(r["number"]) for r in table] == [r["number"] for r in rows]
    assert float(table[0]["latency_ms"]) == pytest.approx(lat[front].min())
    js = json.loads(files["pareto.json"])
    assert len(js["front"]) == len(rows) and js["baselines"][1]["accuracy"] is None
    assert js["front"][0]["config"]["stages"]  # configs as JSON objects, as the search writes them


def test_front_over_accuracy_latency_and_cio_is_the_searchs(frame):
    lat, _ = A.latency_column(frame, "predicted", "v100")
    feas = A.feasible_mask(frame, lat, BUDGET)
    three = A.front_mask(frame, lat, feas, objectives=("accuracy", "latency_ms", "cio"))
    assert A.front_mask(frame, lat, feas).le(three).all()  # the 2-D front is part of the 3-D one
    expected = pareto_front([{**r, "latency_ms": lat[i]} for i, r in frame.iterrows() if feas[i]], feasible_only=False)
    assert set(frame.loc[three, "arch_id"]) == {r["arch_id"] for r in expected}
    with pytest.raises(ValueError, match="front objectives"):
        A.front_mask(frame, lat, feas, objectives=("accuracy", "params"))


def test_trials_table_filters_and_orders(frame):
    lat, src = A.latency_column(frame, "predicted", "v100")
    table = A.trials_table(frame, lat, src)
    assert list(table["trial"]) == list(range(len(PLAN) - 1, -1, -1))
    assert table.loc[table["trial"] == 1, "outcome"].item().startswith("rejected: over budget")
    assert list(A.trials_table(frame, lat, src, states=["FAIL"])["trial"]) == [7]
    assert list(A.trials_table(frame, lat, src, contains="HARDNET68")["trial"]) == [1]


def test_download_names_and_metadata():
    cfg = get_config("hardnet68")
    assert X.file_name(cfg, "onnx") == "hardnet68.onnx"
    assert X.file_name(cfg.replace(name=""), "py") == f"arch_{cfg.arch_id}.py"
    assert X.file_name(cfg, "json", stem="my study/trial 3") == "my_study_trial_3.json"
    with pytest.raises(ValueError, match="format"):
        X.file_name(cfg, "exe")
    meta = X.metadata_of({"study": "s", "number": np.int64(3), "accuracy": float("nan"), "latency_ms": 1.5, "name": "",
                          "latency_device": "v100", "resolution": np.int64(64)})
    assert meta == {"study": "s", "trial": 3, "latency_ms": 1.5, "device": "v100", "resolution": 64}
    assert isinstance(meta["trial"], int)


def test_export_through_the_export_package():
    assert X.export_available() is None
    cfg = get_config("hardnet39ds")
    payload = X.export_file(cfg, "json", {"study": "s", "trial": 1})
    assert ArchConfig.from_json(payload.decode()) == cfg and ArchConfig.from_json(payload.decode()).arch_id == cfg.arch_id
    py = X.export_file(cfg, "py", {"accuracy": 0.8, "latency_ms": 1.5}).decode()
    assert "import torch" in py
    compile(py, "exported.py", "exec")


def test_the_demo_writes_next_to_its_storage_and_never_into_someone_elses_study(tmp_path, _isolated_runs):
    from nas.explore.demo import demo_home, demo_study_name

    url = f"sqlite:///{tmp_path / 'x' / 'nas.db'}"
    assert demo_home(url) == (tmp_path / "x").resolve()
    assert demo_home("postgresql://u@h/db") == _isolated_runs.resolve()
    own = {"space": str(tmp_path / "x" / "demo_space.yaml")}
    assert demo_study_name(url, {}) == "demo"
    assert demo_study_name(url, {"demo": own}) == "demo"  # an earlier (maybe interrupted) demo: resumed
    assert demo_study_name(url, {"demo": {"space": "mine.yaml"}}) == "demo-2"
    assert demo_study_name(url, {"demo": {}, "demo-2": {}, "demo-3": own}) == "demo-3"


def test_demo_command_lines(tmp_path):
    assert create_command("sqlite:///runs/nas.db", "sqlite:///runs/nas.db") == "python -m nas.search --budget 30ms"
    assert create_command("sqlite:///x.db", "sqlite:///runs/nas.db").endswith("--storage 'sqlite:///x.db'")
    args = demo_args("sqlite:///x.db", tmp_path / "s.yaml")
    assert args[args.index("--proxy") + 1] == "zero-cost" and args[args.index("--latency") + 1].startswith("predicted:")
    from nas.search.__main__ import build_parser

    build_parser().parse_args(args)  # every flag exists


def test_synthetic_bulk_study_reads_like_add_trials(tmp_path):
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    sa = synthetic_study(a, "s", 12, seed=4)
    sb = synthetic_study(b, "s", 12, seed=4, bulk=True)
    ra, rb = trial_records(sa), trial_records(sb)
    assert ra == rb and len(ra) == 12
    assert ra[0]["name"] == "hardnet39ds" and {r["state"] for r in ra} <= {"COMPLETE", "PRUNED"}
    assert [t.values for t in sa.trials] == [t.values for t in sb.trials]
    assert D.load_records(b, ["s"]) == D.load_records(b, ["s"], fast=False)
    with sqlite3.connect(tmp_path / "b.db") as con:
        assert con.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 12
    with pytest.raises(ValueError, match="bulk"):
        synthetic_study(f"journal:{tmp_path / 'j.log'}", "s", 3, bulk=True)


def test_latency_progress_is_reported(frame):
    seen = []
    A.latency_column(frame, "predicted", "titanv", on_progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 8) and seen[-1] == (8, 8)  # 7 completed trials and the rejected baseline


# -- which profile a prediction comes from ------------------------------------------------------------


def test_cpu_predictions_are_calibrated_on_the_studys_measurements(tmp_path, steady_cpu):
    url = f"sqlite:///{tmp_path / 'cpu.db'}"
    make_measured_study(url, disturbed=3)
    df = D.records_frame(D.load_records(url, ["cpu"]))
    clean = P.clean_cpu_measurements(df)
    assert len(clean) == 13  # the disturbed ones are left out
    plain = P.predictor("cpu")
    assert plain.short == "micro-benchmarked here" and "profiled here" in plain.label
    fitted = P.predictor("cpu", clean)
    assert fitted.short.startswith("calibrated here on ") and "held-out error" in fitted.source
    assert fitted.key != plain.key
    raw, _ = A.latency_column(df, "predicted", plain)
    lat, src = A.latency_column(df, "predicted", fitted)
    ratio = (lat / df["latency_ms"]).median()
    assert (raw / df["latency_ms"]).median() < 0.3  # the uncalibrated profile is ~5x optimistic here
    assert 0.7 < ratio < 1.4  # the calibrated one agrees with what was measured
    assert src[0] == f"predicted for cpu ({fitted.short})"


@pytest.mark.parametrize("forks", [True, False])
def test_a_warm_up_makes_a_device_switch_a_lookup(tmp_path, monkeypatch, forks):
    """After `warm_up` (a forked child process builds the kernel rows, or a thread where none can be forked),
    predicting every row for a device never seen builds nothing more, and the rows that came through the pipe are
    those built here, bit for bit."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    make_study(url)
    df = D.records_frame(D.load_records(url, ["fixture"]))
    for earlier in P._WARMING:  # an app test's warm-up may still run
        earlier.join(timeout=120)
    if forks and not W.FORKS:
        pytest.skip("forks a child process (Linux only)")
    monkeypatch.setattr(W, "FORKS", forks)
    monkeypatch.setattr(W, "_KEPT", {})
    monkeypatch.setattr(P, "_MEMO", {})
    built_here = []
    build = W._build
    monkeypatch.setattr(W, "_build", lambda c, shape: built_here.append(c) or build(c, shape))
    assert P.warm_up(df, in_thread=W.FORKS) is None  # the call for the other kind of platform does nothing
    thread = P.warm_up(df, in_thread=not W.FORKS)
    thread.join(timeout=120)
    assert not thread.is_alive() and P.warm_up(df, in_thread=not W.FORKS) is None  # nothing left to warm
    done = (df["state"] == "COMPLETE") | df["baseline"]
    # a child's builds are counted in its own memory: none here; a thread's are all here
    assert (built_here == []) if forks else (sorted(built_here) == sorted(set(df.loc[done, "config"])))
    shape = (RES, 1, "fp32")
    assert sorted(c for c, s in W._KEPT if s == shape) == sorted(set(df.loc[done, "config"]))
    for (c, s), rows in W._KEPT.items():
        assert not rows.flags.writeable and np.array_equal(rows, build(c, s)) and rows.dtype == np.float64
    monkeypatch.setattr(W, "kernel_rows", lambda *a, **k: pytest.fail("kernel rows were rebuilt"))
    lat, src = A.latency_column(df, "predicted", "l4")
    assert lat[done].notna().all() and lat[done].gt(0).all()
    pred = P.predictor("l4")
    profile = resolve_profile("l4")
    one = [predict_ms(ArchConfig.from_json(c), profile, r, b, p) for c, r, b, p in
           df.loc[done, ["config", "resolution", "batch", "precision"]].itertuples(index=False, name=None)]
    assert lat[done].tolist() == pytest.approx(one, rel=1e-12)
    assert src[done].eq(f"predicted for l4 ({pred.short})").all()


def _jobs(n: int = 6) -> list:
    """Two warm-up jobs: ``n`` configs, an unreadable one and ResNet-50 at 64x64; two configs and ResNet-50 (too deep
    for it) at 16x16."""
    configs = small_configs(n, seed=4)
    resnet = get_config("resnet50").to_json(indent=None)
    small = [c.to_json(indent=None) for c in configs if c.reduction <= 16][:2]
    assert len(small) == 2
    return [([c.to_json(indent=None) for c in configs] + ["{not json", resnet], (RES, 1, "fp32")),
            (small + [resnet], (16, 1, "fp16"))]


@pytest.mark.skipif(not W.FORKS, reason="forks a child process (Linux only)")
def test_the_warm_up_child_sends_every_row_and_none_for_what_has_none(monkeypatch):
    monkeypatch.setattr(W, "_KEPT", {})
    monkeypatch.setattr(W, "FRAME", 3)  # several messages per job
    jobs = _jobs()
    thread = W.warm(jobs)
    thread.join(timeout=120)
    assert not thread.is_alive()
    for configs, shape in jobs:
        got = W.rows_for(configs, shape)
        assert W.kept(configs, shape) == [True] * len(configs)
        for c, rows in zip(configs, got):
            ref = W._build(c, shape)
            assert (rows is None) == (ref is None) and (ref is None or np.array_equal(rows, ref)), c[:40]
    assert W.rows_for(["{not json"], (RES, 1, "fp32")) == [None]
    small, resnet = jobs[1][0][:2], jobs[1][0][2]
    assert W.rows_for([resnet], (16, 1, "fp16")) == [None]  # ResNet-50 cannot take 16x16
    assert all(r is not None for r in W.rows_for(small, (16, 1, "fp16")))


@pytest.mark.skipif(not W.FORKS, reason="forks a child process (Linux only)")
@pytest.mark.parametrize("fault", ["dies", "silent", "cut off"])
def test_a_warm_up_child_that_fails_costs_nothing_but_its_rows(monkeypatch, fault):
    """A child that dies, falls silent or stops mid-message is reaped (or stopped) and what it did not send is built
    here on demand: the predictions are complete all the same."""
    import os
    import time

    def child(jobs, fd):
        if fault == "silent":
            time.sleep(60)
        elif fault == "cut off":
            os.write(fd, np.array([0, 5], np.int64).tobytes())  # two thirds of a header
        os._exit(1)

    pids = []
    receive = W._receive
    monkeypatch.setattr(W, "_receive", lambda jobs, fd, pid: pids.append(pid) or receive(jobs, fd, pid))
    monkeypatch.setattr(W, "_KEPT", {})
    monkeypatch.setattr(W, "_child", child)
    monkeypatch.setattr(W, "SILENCE_S", 0.5)
    jobs = _jobs()
    started = time.monotonic()
    thread = W.warm(jobs)
    thread.join(timeout=30)
    assert not thread.is_alive() and time.monotonic() - started < 20  # the silent child is not waited for
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind, and no child still running
        os.waitpid(pids[0], os.WNOHANG)
    configs, shape = jobs[0]
    assert W.kept(configs, shape) == [False] * len(configs)
    rows = W.rows_for(configs, shape)  # built here now: only the unreadable config has none
    assert [r is None for r in rows] == [False] * (len(configs) - 2) + [True, False]


def test_a_calibrated_profile_saved_here_is_used_and_named(tmp_path):
    from nas.latency import calibrate, predict_ms

    url = f"sqlite:///{tmp_path / 'cpu.db'}"
    make_measured_study(url)
    df = D.records_frame(D.load_records(url, ["cpu"]))
    cal = calibrate([ArchConfig.from_json(c) for c in df["config"]], list(df["latency_ms"]), "cpu", resolution=RES,
                    save=True)
    assert cal.accepted and cal.saved
    pred = P.predictor("cpu")  # no measurements given: the saved calibration
    assert pred.short == f"calibrated on {cal.fit_count}" and pred.source.startswith("calibrated on")
    cfg = ArchConfig.from_json(df.loc[0, "config"])
    assert P.predict_one(df.loc[0, "config"], pred, RES) == pytest.approx(predict_ms(cfg, cal.profile, RES))
    assert P.predictor("v100").short == "spec sheet, not calibrated"


def test_reference_lines_in_measured_mode_need_a_profile_of_the_measuring_device():
    cpu = P.predictor("v100")  # any predictor stands in for this CPU's here
    assert P.reference_predictor(["cpu", "cpu"], cpu) == (cpu, "")
    pred, why = P.reference_predictor(["cuda:0 (NVIDIA H200)"], cpu)
    assert pred is None and why == "no reference lines: measured on cuda:0 (NVIDIA H200), which has no device profile"



# -- choices that stick ---------------------------------------------------------------------------------


def test_restore_and_keep_make_a_widget_value_survive_runs_without_it():
    from nas.explore.state import keep, restore

    state: dict = {}
    assert restore(state, "selected", "a", options=["a", "b"]) == "a"
    state["selected"] = "b"  # the user picks b
    keep(state, "selected")
    del state["selected"]  # a run that does not draw the widget: streamlit forgets it
    assert restore(state, "selected", "a", options=["a", "b", "c"]) == "b"
    assert restore(state, "selected", "a", options=["a", "c"]) == "a"  # b is gone: the default
    # one value per scope: the studies picked per storage URL
    assert restore(state, "studies", ["x"], options=["x", "y"], scope="url1") == ["x"]
    state["studies"] = ["x", "y"]
    keep(state, "studies", scope="url1")
    assert restore(state, "studies", ["z"], options=["z"], scope="url2") == ["z"]
    assert restore(state, "studies", ["x"], options=["x", "y"], scope="url1") == ["x", "y"]
    assert restore(state, "studies", ["x"], options=["y"], scope="url1") == ["y"]  # what is left of the picks
    assert restore(state, "budget", 5.0, valid=lambda v: 0 <= v <= 10) == 5.0
    state["budget"] = 50.0
    assert restore(state, "budget", 5.0, valid=lambda v: 0 <= v <= 10) == 5.0  # out of range: the default


def test_budgets_apply_to_the_latency_they_were_set_for():
    settings = {"b": {"budget_ms": 0.3, "latency": "predicted:v100"}, "a": {"budget_ms": 0.5, "latency": "predicted:v100"},
                "cpu": {"budget_ms": 40.0, "latency": "measured"}, "none": {"latency": "measured"}}
    assert A.applicable_budgets(settings, "predicted", "v100") == {"a": 0.5, "b": 0.3}
    assert A.applicable_budgets(settings, "measured", None) == {"cpu": 40.0}
    assert A.applicable_budgets(settings, "predicted", "a100") == {}


def test_reference_latencies_per_input_shape():
    pred = P.predictor("v100")
    one = P.reference_latencies(["resnet50"], pred, [(224, 1, "fp32")])
    assert list(one) == ["resnet50 (predicted)"]
    two = P.reference_latencies(["resnet50"], pred, [(224, 1, "fp32"), (64, 1, "fp32"), (64, 1, "fp32")])
    assert list(two) == ["resnet50 @64x64 (predicted)", "resnet50 @224x224 (predicted)"]
    assert two["resnet50 @224x224 (predicted)"] == pytest.approx(one["resnet50 (predicted)"])
    assert two["resnet50 @64x64 (predicted)"] < two["resnet50 @224x224 (predicted)"]


def test_a_non_square_study_under_another_runtime_keeps_its_input_size_and_runtime(tmp_path, fixture_url):
    from nas.search.results import trial_metadata

    make_runtime_study(fixture_url)
    make_measured_study(fixture_url, name="eager")  # recorded no runtime: measured before runtimes existed
    studies = {s.name: s.settings for s in D.list_studies(fixture_url)}
    df = D.records_frame(D.load_records(fixture_url, ["fixture", "hd", "eager"]))
    hd, fx, eager = (df[df["study"] == n] for n in ("hd", "fixture", "eager"))
    assert set(hd["resolution"]) == {"1080x1920"} and set(fx["resolution"]) == {RES}  # the canonical forms
    assert set(hd["latency_runtime"]) == {"onnxruntime"} and set(hd["latency_runtime_version"]) == {"1.17.3"}
    assert set(fx["latency_runtime"]) == {""}  # predicted: no runtime ran
    assert set(eager["latency_runtime"]) == {"eager"} and set(eager["latency_runtime_version"]) == {""}
    lat, src = A.latency_column(df, "measured")
    assert set(src[hd.index]) == {"measured on cpu under onnxruntime 1.17.3"}
    assert set(src[eager.index]) == {"measured on cpu under eager"}
    assert A.measured_runtimes(df) == ["eager", "onnxruntime 1.17.3"]
    assert A.study_lines(df, studies) == [
        "eager: input 64x64, batch 1, fp32; latency measured on cpu under eager",
        f"fixture: input {RES}x{RES}, batch 1, fp32; latency predicted:v100",
        "hd: input 1080x1920, batch 1, fp32; latency measured on cpu under onnxruntime 1.17.3"]
    # the cpu profile models eager PyTorch: only eager measurements calibrate it
    assert set(P.clean_cpu_measurements(df)["study"]) == {"eager"}
    row = hd.iloc[0]
    cfg = ArchConfig.from_json(row["config"])
    stages = A.stage_rows(cfg, row["resolution"])
    assert stages[0]["output"] == "x".join(map(str, analyze(cfg, "1080x1920").by_stage()[0].out_shape[1:]))
    assert stages[0]["output"] != "x".join(map(str, analyze(cfg, 1080).by_stage()[0].out_shape[1:]))
    assert trial_metadata(row.to_dict())["latency_runtime"] == "onnxruntime 1.17.3"
    assert "latency_runtime" not in trial_metadata(eager.iloc[0].to_dict())
    front, _ = A.front_records(df, lat, pd.Series(df.index == row.name, index=df.index), lat.notna(), "hd", "measured")
    assert (front[0]["latency_runtime"], front[0]["latency_runtime_version"]) == ("onnxruntime", "1.17.3")


def test_reference_lines_need_an_eager_measurement_and_take_each_studys_input_size():
    cpu = P.predictor("v100")  # any predictor stands in for this CPU's here
    assert P.reference_predictor(["cpu"], cpu, ["eager"]) == (cpu, "")
    pred, why = P.reference_predictor(["cpu"], cpu, ["eager", "onnxruntime"])
    assert pred is None and why == ("no reference lines: measured under onnxruntime, which the cpu profile "
                                    "(eager PyTorch) does not model")
    refs = P.reference_latencies(["resnet50"], cpu, [("1080x1920", 1, "fp32"), (224, 1, "fp32")])
    assert list(refs) == ["resnet50 @224x224 (predicted)", "resnet50 @1080x1920 (predicted)"]
    assert refs["resnet50 @1080x1920 (predicted)"] == pytest.approx(
        predict(get_config("resnet50"), "v100", "1080x1920").median_ms)


def test_storage_marker_changes_when_a_search_writes_and_only_then(tmp_path, fixture_url):
    first = D.storage_marker(fixture_url)
    assert first.startswith("rdb:") and D.storage_marker(fixture_url) == first
    study = optuna.load_study(study_name="fixture", storage=fixture_url)
    trial = study.ask()
    second = D.storage_marker(fixture_url)
    assert second != first  # a trial started
    study.set_user_attr("x", 1)  # study attributes are not trial data
    trial.set_user_attr("latency_ms", 0.3)
    third = D.storage_marker(fixture_url)
    assert third != second  # a running trial recorded a figure
    study.tell(trial, [0.7, 0.3, 1.0])
    assert D.storage_marker(fixture_url) != third  # it finished
    optuna.create_study(study_name="another", storage=fixture_url)
    assert D.storage_marker(fixture_url) != third
    assert D.storage_marker(f"sqlite:///{tmp_path / 'none.db'}") == "missing"
    journal = f"journal:{tmp_path / 'j.log'}"
    from nas.search.storage import open_storage

    s = optuna.create_study(study_name="j", storage=open_storage(journal))
    before = D.storage_marker(journal)
    s.ask()
    assert before.startswith("journal:") and D.storage_marker(journal) != before


def test_a_prediction_a_re_measurement_superseded_is_no_feasible_point():
    """The search measures a disturbed latency again in a later trial; the app shows the measured one only."""
    base = {"state": "COMPLETE", "arch_id": "a1", "accuracy": 0.8, "status": "ok", "config": None, "seed": "hardnet68"}
    records = [{**base, "number": 0, "latency_ms": 5.0, "latency_source": "predicted", "latency_disturbed": True,
                "superseded_by": 1},
               {**base, "number": 1, "latency_ms": 9.0, "latency_source": "measured", "latency_disturbed": False,
                "remeasure_of": 0}]
    frame = D.records_frame(records)
    lat = frame["latency_ms"]
    assert list(A.feasible_mask(frame, lat, 10.0)) == [False, True]
    assert list(A.front_mask(frame, lat, A.feasible_mask(frame, lat, 10.0), by=None)) == [False, True]
    assert frame.loc[0, "why"] == "superseded by trial 1" and frame.loc[1, "why"] == "ok"
    assert list(frame["baseline"]) == [False, True]  # one yardstick per baseline: the measured one
