"""What the app computes from trial rows: latency per device, feasibility, fronts, samples, EDFs,
rank correlations, design-choice importances and per-stage costs.

All functions take the `records_frame` DataFrame (or plain sequences) and return plain values,
so they are tested without streamlit. Fronts are `nas.search.results.pareto_front` on accuracy and
latency (best-first sweep: responsive at 10,000 trials).
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from optuna.importance import PedAnovaImportanceEvaluator

from ..config import ArchConfig
from ..errors import first_line
from ..resolution import Resolution, format_resolution
from ..stats import kendall_tau, spearman_rho
from . import text as T
from .data import DESIGN_CHOICES, NUMERIC_CHOICES

if TYPE_CHECKING:
    from .profiles import Predictor

__all__ = [
    "applicable_budgets",
    "arch_config",
    "edf",
    "edf_by_choice",
    "feasible_mask",
    "FRONTS",
    "front_mask",
    "front_records",
    "harmonic_plans",
    "latency_column",
    "measured_runtimes",
    "nice_ceiling",
    "param_importances",
    "rank_correlations",
    "sample_for_display",
    "stage_rows",
    "study_lines",
    "trials_table",
]


_PREDICT_CHUNK = 1000  # rows predicted per vectorised call, between progress reports


@lru_cache(maxsize=100_000)
def arch_config(config_json: str) -> ArchConfig:
    """The `ArchConfig` of a stored config (cached: thousands of rows share a few parses per rerun)."""
    return ArchConfig.from_json(config_json)


def latency_column(df: pd.DataFrame, mode: str, device: "str | Predictor | None" = None,
                   on_progress: Callable[[int, int], None] | None = None,
                   rows: pd.Series | None = None) -> tuple[pd.Series, pd.Series]:
    """The latency each row shows and where it comes from, for ``mode`` ``measured`` or ``predicted``.

    ``measured``: the recorded latency of rows whose source is ``measured`` (NaN otherwise: a
    prediction is never passed off as a measurement). ``predicted``: with ``device`` a profile
    name or a `Predictor` (see `nas.explore.profiles`): the search's own figure where it predicted
    for the same published device, else the predictor's figure on the row's config at its study's
    resolution, batch and precision, for completed trials and baselines (or the ``rows`` given).
    This CPU's figures are always the predictor's: its profile depends on the machine and on
    calibration, and one axis never mixes two of them. Returns (latency in ms, source label such
    as ``measured on cpu under onnxruntime 1.17.3`` or ``predicted for cpu (calibrated on 24)``). A first prediction costs
    about a millisecond per architecture: ``on_progress(done, total)`` is called every
    `_PREDICT_CHUNK` rows.
    """
    from .profiles import Predictor, predict_rows, predictor

    if mode not in ("measured", "predicted"):
        raise ValueError(f"latency mode: {mode!r} is not allowed; expected measured or predicted")
    if df.empty:
        return pd.Series([], dtype=float, index=df.index), pd.Series([], dtype=object, index=df.index)
    if mode == "measured":
        ok = df["latency_source"] == "measured"
        lat = df["latency_ms"].where(ok)
        src = "measured on " + df["latency_device"].astype(str) + _runtime_text(df).map(lambda t: f" under {t}" if t else "")
        if "latency_disturbed" in df:
            slow = df.get("latency_slowdown", pd.Series(np.nan, index=df.index)).astype(float)
            flag = df["latency_disturbed"].fillna(False).astype(bool)
            note = np.where(slow.notna(), " (DISTURBED, reference " + slow.round(2).astype(str) + "x slower)",
                            " (DISTURBED)")
            src = src + pd.Series(np.where(flag, note, ""), index=df.index)
        return lat.astype(float), src.where(ok, "")
    if not device:
        raise ValueError("latency device: missing; expected a device profile name for predicted latency")
    pred = device if isinstance(device, Predictor) else predictor(device)
    recorded = (df["latency_source"] == "predicted") & (df["latency_device"] == pred.device) & (pred.device != "cpu")
    lat = df["latency_ms"].where(recorded).astype(float)
    wanted = rows if rows is not None else (df["state"] == "COMPLETE") | df["baseline"]
    todo = ~recorded & wanted & (df["config"] != "")
    if todo.any():
        sub = df.loc[todo, ["config", "resolution", "batch", "precision"]]
        done = 0
        for (r, b, p), group in sub.groupby(["resolution", "batch", "precision"], sort=False):
            for start in range(0, len(group), _PREDICT_CHUNK):
                if on_progress is not None:
                    on_progress(done, len(sub))
                part = group.iloc[start:start + _PREDICT_CHUNK]
                lat.loc[part.index] = predict_rows(part["config"].tolist(), pred, r, b, p)
                done += len(part)
        if on_progress is not None:
            on_progress(len(sub), len(sub))
    label = f"predicted for {pred.device} ({pred.short})"
    src = pd.Series(np.where(lat.notna(), label, ""), index=df.index, dtype=object)
    src[recorded & lat.notna()] = f"predicted for {pred.device} ({pred.short}, as the search recorded it)"
    return lat, src


def _runtime_text(df: pd.DataFrame) -> pd.Series:
    """`nas.explore.text.runtime` of each row ("" where the latency was not measured)."""
    return pd.Series([T.runtime(n, v) for n, v in zip(df["latency_runtime"], df["latency_runtime_version"])],
                     index=df.index, dtype=object)


def measured_runtimes(df: pd.DataFrame) -> list[str]:
    """The runtimes (with versions) the measured latencies of ``df`` ran under, sorted."""
    return sorted(set(_runtime_text(df[df["latency_source"] == "measured"])) - {""})


def study_lines(df: pd.DataFrame, settings: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per study shown: its input size (HxW), batch, precision and how its latency was obtained,
    with the runtime (and version) a measured latency ran under."""
    out = []
    for name, rows in df.groupby("study", sort=True):
        first = rows.iloc[0]
        how = str(settings.get(name, {}).get("latency") or "") or "latency not recorded"
        runtimes = measured_runtimes(rows)
        devices = sorted(set(rows.loc[rows["latency_source"] == "measured", "latency_device"]) - {""})
        if runtimes:
            how = f"measured on {', '.join(devices)} under {' and '.join(runtimes)}"
        elif how == "measured":
            how = "measured (no trial has a measured latency yet)"
        out.append(f"{name}: input {format_resolution(first['resolution'])}, batch {first['batch']}, "
                   f"{first['precision']}; latency {how}")
    return out


def feasible_mask(df: pd.DataFrame, latency: pd.Series, budget_ms: float | None) -> pd.Series:
    """Completed trials with an accuracy and a latency within ``budget_ms`` (no budget: any latency); a trial a
    re-measurement superseded is not one."""
    ok = (df["state"] == "COMPLETE") & df["accuracy"].notna() & latency.notna()
    if "superseded_by" in df:
        ok &= df["superseded_by"].isna()
    if budget_ms is not None:
        ok &= latency <= budget_ms
    return ok


#: the fronts the app offers: what the page calls it -> objective columns (accuracy maximised, the others minimised)
FRONTS: dict[str, tuple[str, ...]] = {
    "accuracy and latency": ("accuracy", "latency_ms"),
    "accuracy, latency and CIO (as the search's pareto.csv)": ("accuracy", "latency_ms", "cio"),
}


def front_mask(df: pd.DataFrame, latency: pd.Series, feasible: pd.Series, by: str | None = "study",
               objectives: Sequence[str] = ("accuracy", "latency_ms")) -> pd.Series:
    """Rows on the Pareto front of the feasible rows (per ``by`` group), accuracy up, latency (and CIO) down.

    The front is `nas.search.results.pareto_front` on ``objectives`` (a value of `FRONTS`; the
    latency is the one shown): the first trial of each architecture stands for it, and a point is
    kept when no feasible point is at least as good in every objective and better in one. With
    CIO it is the front the search writes to ``pareto.csv``.
    """
    from ..search.results import pareto_front  # lazily: importing nas.search imports optuna

    objectives = tuple(objectives)
    if objectives not in FRONTS.values():
        raise ValueError(f"front objectives: {objectives!r} is not allowed; expected one of "
                         f"{', '.join(map(str, FRONTS.values()))}")
    out = pd.Series(False, index=df.index)
    others = [o for o in objectives if o not in ("accuracy", "latency_ms")]
    pool = df.loc[feasible, ["arch_id", "accuracy", *others] + ([by] if by else [])].copy()
    pool["latency_ms"] = latency[feasible].astype(float)
    if pool.empty:
        return out
    groups = pool.groupby(by, sort=False) if by else [(None, pool)]
    for _, g in groups:
        recs = [{"row": i, "state": "COMPLETE", **r} for i, r in zip(g.index, g.to_dict("records"))]
        front = pareto_front(recs, objectives=objectives, maximize=("accuracy",), feasible_only=False)
        out.loc[[r["row"] for r in front]] = True
    return out


def applicable_budgets(settings: Mapping[str, Mapping[str, Any]], mode: str, device: str | None) -> dict[str, float]:
    """The budgets of the studies whose search judged the latency shown (``measured``, or predicted for
    ``device``), by study name: a budget set for another device or kind of latency is no line on this axis."""
    wanted = "measured" if mode == "measured" else f"predicted:{device}"
    return {name: float(s["budget_ms"]) for name, s in sorted(settings.items())
            if s.get("budget_ms") is not None and str(s.get("latency") or "") == wanted}


def trials_table(df: pd.DataFrame, latency: pd.Series, source: pd.Series, states: Sequence[str] | None = None,
                 contains: str = "") -> pd.DataFrame:
    """Every trial as the Trials view lists it, newest first: identity, state, outcome (``why``), the latency
    shown with its source, what the search recorded, costs. Filtered to ``states`` and to rows whose
    study, name, arch_id or outcome contains ``contains`` (case-insensitive)."""
    keep = pd.Series(True, index=df.index)
    if states is not None:
        keep &= df["state"].isin(list(states))
    text = contains.strip().lower()
    if text:
        hay = (df["study"] + " " + df["name"] + " " + df["arch_id"] + " " + df["why"]).str.lower()
        keep &= hay.str.contains(text, regex=False)
    rows = df.loc[keep]
    table = pd.DataFrame({
        "key": rows["key"], "study": rows["study"], "trial": rows["number"], "state": rows["state"],
        "outcome": rows["why"], "name": rows["name"], "arch_id": rows["arch_id"], "accuracy": rows["accuracy"],
        "latency (ms)": latency[keep], "latency source": source[keep], "recorded (ms)": rows["latency_ms"],
        "recorded as": (rows["latency_source"] + " " + rows["latency_device"] + " " + _runtime_text(rows)).str.strip(),
        "input": rows["resolution"].map(format_resolution),
        "CIO": rows["cio"], "MACs": rows["macs"], "params": rows["params"], "family": rows["family"],
    })
    return table.sort_values(["study", "trial"], ascending=[True, False]).reset_index(drop=True)


def front_records(df: pd.DataFrame, latency: pd.Series, front: pd.Series, feasible: pd.Series, study: str,
                  mode: str, device: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(front, baselines) of one study as `nas.search.results.write_front` takes them, with the latency
    shown: ``latency_source`` is ``mode`` (measured or predicted), ``latency_device`` the measuring
    device, or the predicted ``device``."""
    def record(i: Any) -> dict[str, Any]:
        r = df.loc[i]
        known = bool(latency.notna()[i])
        rec = {k: r[k] for k in ("number", "name", "arch_id", "accuracy", "cio", "macs", "params", "moc", "proxy")}
        rec.update(latency_ms=float(latency[i]), latency_source=mode if known else None,
                   latency_device=(r["latency_device"] if mode == "measured" else device) if known else None,
                   feasible=bool(feasible[i]), config=r["config"] or None, seed=r["name"] if r["baseline"] else None)
        if known and mode == "measured":
            rec.update(latency_runtime=r["latency_runtime"] or None, latency_runtime_version=r["latency_runtime_version"] or None)
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in rec.items()}

    mine = df["study"] == study
    rows = [record(i) for i in latency[front & mine].sort_values().index]
    return rows, [record(i) for i in df.index[mine & df["baseline"]]]


def sample_for_display(df: pd.DataFrame, keep: pd.Series, max_points: int = 4000, strata: Sequence[str] = ("family",),
                       seed: int = 0) -> pd.Series:
    """A mask of the rows to draw: all of ``keep`` (front, baselines, selection) plus a stratified sample.

    Below ``max_points`` rows everything is drawn. Above, the remaining quota is spread over the
    ``strata`` groups in proportion to their size (at least one row each), with a fixed seed so
    the picture does not jump between reruns. The page stays responsive at any study size.
    """
    if len(df) <= max_points:
        return pd.Series(True, index=df.index)
    mask = keep.copy().astype(bool)
    rest = df.loc[~mask]
    quota = max(0, max_points - int(mask.sum()))
    if quota == 0 or rest.empty:
        return mask
    rng = np.random.RandomState(seed)
    groups = rest.groupby(list(strata), sort=True, dropna=False) if strata else [(None, rest)]
    sizes = {k: len(g) for k, g in groups}
    total = sum(sizes.values())
    for k, g in groups:
        n = min(len(g), max(1, int(round(quota * len(g) / total))))
        picked = rng.choice(len(g), size=n, replace=False)
        mask.loc[g.index[np.sort(picked)]] = True
    return mask


def edf(values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Empirical distribution function: sorted finite values and the fraction of values <= each."""
    v = np.sort(np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float))
    return v, (np.arange(1, len(v) + 1) / len(v)) if len(v) else np.zeros(0)


def _bin_labels(values: pd.Series, bins: int) -> pd.Series:
    """Numeric choices with many values become quantile bins labelled by their range."""
    finite = values.dropna()
    if finite.nunique() <= bins + 2:
        return values.map(lambda x: "none" if pd.isna(x) else f"{x:g}")
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)))
    cut = pd.cut(values, edges, include_lowest=True, duplicates="drop")
    return cut.map(lambda iv: f"{iv.left:g}–{iv.right:g}", na_action="ignore").astype(object).where(values.notna(), "none")


def edf_by_choice(df: pd.DataFrame, choice: str, metric: pd.Series, bins: int = 4,
                  min_count: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One EDF of ``metric`` per value of a design choice (RegNet's error EDFs), over all given rows.

    A curve further up-left means the choice gives low errors more often across the whole space,
    not just at the front. Numeric choices with more than ``bins + 2`` values are binned by
    quantiles; values with fewer than ``min_count`` rows are left out.
    """
    if choice not in df.columns:
        raise ValueError(f"choice: {choice!r} is not allowed; expected one of {', '.join(DESIGN_CHOICES)}")
    ok = metric.notna()
    labels = _bin_labels(df.loc[ok, choice], bins) if choice in NUMERIC_CHOICES else df.loc[ok, choice].astype(str)
    out = {}
    for value in sorted(labels.unique(), key=_natural):
        xs, ys = edf(metric[ok][labels == value].to_numpy())
        if len(xs) >= min_count:
            out[str(value)] = (xs, ys)
    return out


def _natural(label: Any) -> tuple:
    text = str(label)
    try:
        return (0, float(text.split("–")[0]), text)
    except ValueError:
        return (1, 0.0, text)


def rank_correlations(x: Sequence[float], y: Sequence[float], kendall_max: int | None = None,
                      seed: int = 0) -> dict[str, Any]:
    """Kendall's tau and Spearman's rho (from `nas.stats`, SciPy's) between two columns, NaN pairs dropped.

    Both use every pair (SciPy's Kendall tau is O(n log n)); with ``kendall_max`` set, tau is
    computed on a seeded random sample of that many points (``n_tau`` says how many).
    Fewer than 3 points give NaN for both.
    """
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    n = len(xa)
    if n < 3:
        return {"tau": math.nan, "rho": math.nan, "n": n, "n_tau": n}
    idx = np.arange(n)
    if kendall_max is not None and n > kendall_max:
        idx = np.sort(np.random.RandomState(seed).choice(n, size=kendall_max, replace=False))
    tau = kendall_tau(xa[idx].tolist(), ya[idx].tolist())
    rho = spearman_rho(xa.tolist(), ya.tolist())
    return {"tau": tau, "rho": rho, "n": n, "n_tau": len(idx)}


MAX_LEVELS = 12  # a numeric design choice with at most this many values is ranked as categories


def param_importances(df: pd.DataFrame, target: pd.Series, choices: Sequence[str] = DESIGN_CHOICES,
                      maximize: bool = True, max_trials: int = 500, min_trials: int = 8,
                      seed: int = 0) -> tuple[dict[str, float], str | None]:
    """How much each design choice matters for reaching the best ``target`` values (PED-ANOVA).

    Optuna's `PedAnovaImportanceEvaluator` asks which choices set the top 10 % of trials
    (highest ``target``, or lowest with ``maximize=False``) apart from the rest: the question a
    designer asks, answered in linear time (fANOVA's random forests took ~0.4 s of CPU on 200
    trials, PED-ANOVA ~0.05 s, so it looks at more of them; most of its cost is building the
    throw-away study). The choices are loaded as
    parameters of a throw-away in-memory study (categorical for the string choices, float for
    the numeric ones, NaN as -1 = "no harmonic block"), so studies of different spaces share one
    set of names; above ``max_trials`` a seeded sample of that many is used. Returns
    (importances summing to 1, None) or ({}, a one-line reason) when there are too few trials
    or no choice varies; never raises.
    """
    import optuna

    ok = target.notna() & np.isfinite(target.astype(float))
    sub = df.loc[ok]
    if len(sub) < min_trials:
        return {}, f"need at least {min_trials} completed trials with a value to rank design choices; have {len(sub)}"
    if len(sub) > max_trials:
        sub = sub.sample(n=max_trials, random_state=seed)
    values = target.loc[sub.index].astype(float)
    dists: dict[str, Any] = {}
    cols: dict[str, list[Any]] = {}
    for c in choices:
        col = sub[c]
        if c in NUMERIC_CHOICES and col.nunique(dropna=False) > MAX_LEVELS:
            v = col.astype(float).fillna(-1.0)
            dists[c] = optuna.distributions.FloatDistribution(float(v.min()), float(v.max()))
            cols[c] = v.tolist()
        else:  # a few numeric values (m in {1.6, 1.7}) are levels: a density over a 2-point axis is an artefact
            v = col.map(lambda x: "none" if pd.isna(x) else str(x))
            if v.nunique() < 2:
                continue
            dists[c] = optuna.distributions.CategoricalDistribution(sorted(v.unique()))
            cols[c] = v.tolist()
    if not dists:
        return {}, "no design choice varies among these trials"
    if values.nunique() < 2:
        return {}, "every trial has the same value; nothing to attribute"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if maximize else "minimize")
    trials = [optuna.trial.create_trial(params={c: cols[c][i] for c in dists}, distributions=dists, value=float(val))
              for i, val in enumerate(values.tolist())]
    study.add_trials(trials)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
    except Exception as err:  # optuna refuses degenerate inputs in several ways
        return {}, f"importances could not be computed: {first_line(err)}"
    return {k: float(v) for k, v in imp.items()}, None


def stage_rows(config: ArchConfig, resolution: Resolution = 224) -> list[dict[str, Any]]:
    """Per-stage table of `nas.analyze` at ``resolution`` (224 or "HxW"): block, depth, output shape
    (channels x height x width), params, MACs, CIO and MoC."""
    from ..cost import analyze

    report = analyze(config, resolution)
    rows = []
    for sc in report.by_stage():
        i = int(sc.name.split(".")[1]) if sc.name.startswith("stages.") else None
        st = config.stages[i] if i is not None else None
        if st is None:
            what = config.stem.type if sc.name == "stem" else "classifier"
        elif st.block == "hard":
            what = f"hard k={st.growth_rate} m={st.weight_factor:g} {st.link_rule}"
        else:
            what = f"{st.block} w={st.width}"
        rows.append({
            "stage": sc.name,
            "block": what,
            "depth": st.depth if st is not None else None,
            "se": st.se if st is not None else None,
            "output": "x".join(str(d) for d in sc.out_shape[1:]),
            "params": sc.params,
            "MACs": sc.macs,
            "CIO": sc.cio,
            "MoC": round(sc.moc, 2),
        })
    return rows


def harmonic_plans(config: ArchConfig) -> list[tuple[int, Any]]:
    """(stage index, `nas.links.BlockPlan`) of every harmonic stage, with the stage's real input width."""
    from ..blocks import plan_for, stage_out_channels

    out, ch = [], config.stem.out_channels
    for i, st in enumerate(config.stages):
        if st.block == "hard":
            out.append((i, plan_for(st, ch)))
        ch = stage_out_channels(st, ch)
    return out


def nice_ceiling(x: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= x (a slider range that does not move with every trial)."""
    if not x > 0 or not math.isfinite(x):
        return 1.0
    base = 10.0 ** math.floor(math.log10(x))
    for f in (1.0, 2.0, 2.5, 5.0, 10.0):
        if f * base >= x * (1 - 1e-12):
            return f * base
    return 10.0 * base
