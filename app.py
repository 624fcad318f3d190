"""``streamlit run app.py [-- --storage URL]``: browse search results, understand each architecture, export it.

A thin layout over `nas.explore` (loading, latency per device, fronts, figures, exports are
tested there). The storage is the search's default (``sqlite:///runs/nas.db``), ``--storage``
after ``--``, ``$NAS_STORAGE``, or whatever is typed into the sidebar. Study data is cached under
the storage's change marker, so a search writing to the same storage shows up on the next
interaction and an idle page never rereads thousands of trials.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import streamlit as st

from nas.errors import first_line
from nas.explore import analysis as A
from nas.explore import data as D
from nas.explore import demo
from nas.explore import downloads as X
from nas.explore import fidelity as FI
from nas.explore import figures as F
from nas.explore import profiles as P
from nas.explore import state as S
from nas.explore import text as T
from nas.latency.profiles import list_profiles
from nas.resolution import format_resolution

MAX_POINTS = 4000  # trials drawn in the Pareto plot; beyond, front + baselines + a stratified sample
REFERENCES = ("hardnet68", "tresnet_m", "resnet50")  # canonical models drawn as latency lines when not in a study

VIEWS = ["Pareto front", "Trade-offs", "Compare", "Trials", "Proxy fidelity"]

st.set_page_config(page_title="hardnas explorer", layout="wide")


class Shown(NamedTuple):
    """What the Pareto view draws: the trials, the latency shown and its source, and the front under the budget."""

    df: pd.DataFrame
    lat: pd.Series
    src: pd.Series
    feasible: pd.Series
    front: pd.Series
    budget: float
    latency_label: str
    acc_label: str
    mode: str
    device: str
    front_name: str
    front_line: bool  # a 2-D front is drawn as a step line; a front that also minimises CIO as points
    data_key: tuple  # what identifies the rows and latencies above: storage, marker, studies, latency


# Study data is cached under the storage's change marker (`D.storage_marker`), not for a time: a rerun asks
# the storage one small question, and reads trials again only when a search wrote some. Frames are shared,
# not copied (cache_resource): the page never modifies them.
@st.cache_data(show_spinner=False, max_entries=32)
def _studies(url: str, marker: str) -> list[D.StudyInfo]:
    return D.list_studies(url)


@st.cache_resource(show_spinner="Loading trials…", max_entries=4)
def _frame(url: str, names: tuple[str, ...], marker: str) -> pd.DataFrame:
    return D.records_frame(D.load_records(url, names))


@st.cache_data(show_spinner=False, max_entries=64)
def _export(config_json: str, fmt: str, meta_json: str, deploy: bool = False) -> bytes:
    return X.export_file(A.arch_config(config_json), fmt, json.loads(meta_json), deploy)


@st.cache_data(show_spinner="Ranking design choices…")
def _importances(features: pd.DataFrame, target: pd.Series, maximize: bool) -> tuple[dict[str, float], str | None]:
    return A.param_importances(features, target, maximize=maximize)


@st.cache_resource(show_spinner="Calibrating this CPU's latency profile on the measurements shown…", max_entries=16)
def _predictor(device: str, url: str, names: tuple[str, ...], marker: str) -> P.Predictor:
    """The profile predictions for ``device`` use; this CPU's is refitted on the studies' clean measurements."""
    return P.predictor(device, P.clean_cpu_measurements(_frame(url, names, marker)) if device == "cpu" else None)


@st.cache_resource(show_spinner=False, max_entries=8)
def _pareto_figure(key: tuple, _df, _lat, _src, _feasible, _front, _shown, _look: dict):
    """`F.pareto_figure`, built again only when ``key`` (the data shown and every option) changes."""
    return F.pareto_figure(_df, _lat, _src, _feasible, _front, shown=_shown, **_look)


def _choose(widget, label: str, options: list, key: str, default, scope="", **kwargs):
    """``widget`` (st.selectbox, st.radio, st.multiselect, or the sidebar's) whose value sticks across views."""
    S.restore(st.session_state, key, default, options=options, scope=scope)
    value = widget(label, options, key=key, **kwargs)
    S.keep(st.session_state, key, scope)
    return value


def _refresh() -> None:
    st.cache_data.clear()
    st.cache_resource.clear()
    D.clear_storage_cache()


def empty_state(url: str, studies: list[D.StudyInfo]) -> None:
    where = D.storage_location(url)
    if not studies and D.storage_is_missing(url):
        st.info(f"No storage file at {where} yet: no search has written to `{url}`. Create one with the search "
                "(on this machine it takes minutes):")
    else:
        st.info(f"No completed trial in `{url}` yet. Run a search (on this machine it takes minutes):")
    st.code(demo.create_command(url, D.default_storage_url()), language="bash")
    demo_offer(url, studies)


def demo_offer(url: str, studies: list[D.StudyInfo]) -> None:
    """The tiny demo search, into this storage (an interrupted demo is resumed; another study named demo is kept)."""
    name = demo.demo_study_name(url, {s.name: s.settings for s in studies})
    home = demo.demo_home(url)
    st.write(f"Or try the app at once with a tiny demo search: {demo.DEMO_TRIALS} small networks at 64x64, latency "
             f"predicted for a V100, zero-cost accuracy (15-30 s on two CPU cores), as study `{name}` in this storage; "
             f"its files go to {home}.")
    if st.button("Run a tiny demo search", key="demo", type="primary"):
        bar = st.progress(0.0, text="demo search: starting…")
        try:
            demo.run_demo(url, study=name,
                          on_progress=lambda d, t: bar.progress(d / t, text=f"demo search: {d}/{t} trials"))
        except RuntimeError as err:
            st.error(str(err))
            return
        _refresh()
        st.session_state["_demo_study"] = name  # picked on the next run, before the study list is drawn
        st.rerun()


def _options(df: pd.DataFrame, lat: pd.Series, feasible: pd.Series, front: pd.Series, limit: int = 300) -> list[str]:
    """Selectable trials: the front (by latency), every baseline (with or without an accuracy), then the best others."""
    plotted = (df["state"] == "COMPLETE") & df["accuracy"].notna()
    first = list(df.loc[front].assign(_l=lat[front]).sort_values("_l")["key"])
    base = list(df.loc[df["baseline"], "key"])
    rest = df.loc[plotted].assign(_f=feasible[plotted]).sort_values(["_f", "accuracy"], ascending=False)["key"]
    return list(dict.fromkeys(first + base + list(rest[: limit])))


def _label(df: pd.DataFrame, lat: pd.Series, keys: list[str]) -> callable:
    """The selectbox text of each of ``keys``: arch_id, name, study and trial, accuracy (or outcome), latency."""
    rows = df[df["key"].isin(keys)]
    labels = {}
    for key, arch, name, study, number, acc, why, ms in zip(rows["key"], rows["arch_id"], rows["name"], rows["study"],
                                                             rows["number"], rows["accuracy"], rows["why"],
                                                             lat[rows.index]):
        shown = f"acc {T.num(acc)}" if acc == acc else why.split(":")[0]
        labels[key] = f"{arch}{' ' + name if name else ''} · {study} #{number} · {shown} · {T.num(ms)} ms"
    return lambda key: labels.get(key, key)


def export_buttons(row: pd.Series, key: str) -> None:
    why = X.export_available()
    if why:
        st.caption(f"Downloads: {why}.")
        return
    config = A.arch_config(row["config"])
    meta = X.metadata_of(row.to_dict())
    S.restore(st.session_state, "deploy", False)
    cols = st.columns([1.4] + [1] * len(X.FORMATS))
    deploy = cols[0].toggle("deploy (BatchNorm folded)", key="deploy",
                            help="as the export command's --deploy: BatchNorm folded into the convs (.py, .onnx, .pt)")
    S.keep(st.session_state, "deploy")
    for col, (fmt, (suffix, mime)) in zip(cols[1:], X.FORMATS.items()):
        with col:
            name = X.file_name(config, fmt, stem=row["name"] or f"{row['study']}-trial{row['number']}", deploy=deploy)
            label = f"⬇ {suffix}" + (" (TorchScript)" if fmt == "torchscript" else "")
            if fmt != "json":  # a second or more of work (source rendering, tracing): only when clicked
                st.download_button(label, data=lambda c=config, f=fmt, m=meta, d=deploy: X.export_file(c, f, m, d),
                                   file_name=name, mime=mime, key=f"dl-{fmt}-{key}")
                continue
            try:
                payload = _export(row["config"], fmt, json.dumps(meta, sort_keys=True), deploy)
            except Exception as err:  # one format failing must not take the page down
                st.warning(f"{fmt}: {first_line(err)}")
                continue
            st.download_button(label, data=payload, file_name=name, mime=mime, key=f"dl-{fmt}-{key}")


def front_downloads(df, lat, front, feasible, mode: str, device: str, front_name: str) -> None:
    """The front shown, per study, as the search's pareto.csv / pareto.json (made when clicked)."""
    studies = list(dict.fromkeys(df.loc[front, "study"]))
    for study in studies:
        cols = st.columns([2, 1, 1])
        cols[0].caption(f"Front of {study} ({front_name}, latency {mode}"
                        + (f" for {device}" if mode == "predicted" else "") + "):")
        for col, fname, mime in ((cols[1], "pareto.csv", "text/csv"), (cols[2], "pareto.json", "application/json")):
            col.download_button(f"⬇ {fname}", key=f"front-{fname}-{study}", mime=mime,
                                file_name=f"{study}-{fname}",
                                data=lambda s=study, f=fname: X.front_files(
                                    *A.front_records(df, lat, front, feasible, s, mode, device))[f])


def _accuracy_label(proxy: str) -> str:
    return "accuracy" if proxy in ("", "train") else f"score ({proxy})"


def arch_summary(row: pd.Series, lat: float, src: str) -> None:
    title = f"`{row['arch_id']}`" + (f" — {row['name']} (baseline)" if row["name"] else "")
    st.markdown(f"#### {title}\n{row['study']} · trial {row['number']} · {row['why']} · family {row['family']} · "
                f"input {format_resolution(row['resolution'])}")
    c = st.columns(6)
    c[0].metric(_accuracy_label(str(row["proxy"])), T.num(row["accuracy"], 4))
    c[1].metric("latency (ms)", T.num(lat, 4), help=src or "no latency for this choice")
    c[2].metric("CIO (elements)", T.si(row["cio"]), help=T.CIO_HELP)
    c[3].metric("MACs", T.si(row["macs"]))
    c[4].metric("params", T.si(row["params"]))
    c[5].metric("MoC", T.num(row["moc"]), help=T.MOC_HELP)
    _latency_note(row, src)


def _latency_note(row: pd.Series, src: str) -> None:
    recorded = row["latency_source"] or "none"
    runtime = T.runtime(row["latency_runtime"], row["latency_runtime_version"])
    busy = (f" Its measurement was disturbed by other work (reference workload {T.num(row['latency_slowdown'])}x "
            "slower), so the search recorded this device's prediction instead." if row.get("latency_disturbed") else "")
    st.caption(f"Latency shown: {src or 'none'}. Recorded by the search: {T.num(row['latency_ms'], 4)} ms, "
               f"{recorded}{' on ' + row['latency_device'] if row['latency_device'] else ''}"
               f"{' under ' + runtime if runtime else ''} at {format_resolution(row['resolution'])}.{busy}")


def stage_table(row: pd.Series) -> None:
    st.table(pd.DataFrame(T.stage_table(A.stage_rows(A.arch_config(row["config"]), row["resolution"]))
                          ).set_index("stage"))


def arch_detail(row: pd.Series, lat: float, src: str) -> None:
    arch_summary(row, lat, src)
    export_buttons(row, row["key"])
    if not row["config"]:
        st.warning("This trial has no stored config.")
        return
    config = A.arch_config(row["config"])
    st.markdown(f"**Per stage** (at {format_resolution(row['resolution'])}, height x width; output is channels x "
                "height x width; CIO in feature-map elements, MoC = MACs / CIO)")
    stage_table(row)
    left, right = st.columns([3, 2])
    with left:
        plans = A.harmonic_plans(config)
        if plans:
            labels = [f"stage {i}: {config.stages[i].link_rule}, {p.depth} layers" for i, p in plans]
            pick = st.selectbox("harmonic block", range(len(plans)), format_func=lambda j: labels[j],
                                key=f"block-{row['key']}")
            i, plan = plans[pick]
            st.plotly_chart(F.block_links_figure(plan, f"stage {i}: which layer reads which ({config.stages[i].link_rule})"),
                            key=f"links-{row['key']}")
    with right:
        if row["curve"]:
            st.plotly_chart(F.curve_figure({row["arch_id"]: row["curve"]}), key=f"curve-{row['key']}")
        else:
            st.caption(f"No per-epoch curve (proxy: {row['proxy'] or 'unknown'}).")
        with st.expander("config", expanded=False):
            with st.container(height=360, key="config-box"):
                st.code(json.dumps(json.loads(row["config"]), indent=1), language="json")


def pareto_view(v: Shown, ref_pred: P.Predictor | None, ref_note: str) -> None:
    df, lat, src, feasible, front = v.df, v.lat, v.src, v.feasible, v.front
    plotted = (df["state"] == "COMPLETE") & df["accuracy"].notna() & lat.notna()
    options = _options(df, lat, feasible, front)
    if not options:
        st.warning("No completed trial with an accuracy yet.")
        return
    selected = S.restore(st.session_state, "selected", options[0], options=options)
    keep = front | df["baseline"] | (df["key"] == selected)
    shown = pd.Series(False, index=df.index)
    shown[plotted] = A.sample_for_display(df[plotted], keep[plotted], MAX_POINTS)
    present = set(df.loc[df["accuracy"].notna(), "name"])  # a rejected canonical model still gets its line
    left, right = st.columns([3, 2])
    colour_by = _choose(left.radio, "colour by", ["block family", "CIO"], "colour_by", "block family", horizontal=True,
                        help=T.CIO_HELP)
    S.restore(st.session_state, "show_refs", True)
    show_refs = right.checkbox("canonical reference lines", key="show_refs",
                               help="HarDNet68, TResNet-M and ResNet-50 at their predicted latency, where the study "
                                    "has no accuracy for them")
    S.keep(st.session_state, "show_refs")
    shapes = df.loc[plotted, ["resolution", "batch", "precision"]].drop_duplicates().itertuples(index=False, name=None)
    references = {} if ref_pred is None or not show_refs else P.reference_latencies(
        [n for n in REFERENCES if n not in present], ref_pred, list(shapes))
    ref_label = None if ref_pred is None else f"canonical, predicted for {ref_pred.device} ({ref_pred.short})"
    look = dict(budget_ms=v.budget, selected=(selected,), references=references, accuracy_label=v.acc_label,
                latency_label=v.latency_label, front_line=v.front_line, reference_label=ref_label,
                colour_by="cio" if colour_by == "CIO" else "family")
    fig = _pareto_figure((v.data_key, repr(sorted(look.items()))), df, lat, src, feasible, front, shown, look)
    event = st.plotly_chart(fig, key="pareto", on_select="rerun", selection_mode="points", width="stretch")
    n_plot, n_shown = int(plotted.sum()), int((shown & plotted).sum())
    st.caption(f"The front over {v.front_name}: {int(front.sum())} trials, of {int(feasible.sum())} feasible and {n_plot} "
               f"completed trials with a latency" + (f"; drawing the front, the baselines and a stratified sample: "
                                                     f"{n_shown} of {n_plot}" if n_shown < n_plot else "")
               + ". Click a point, or pick below."
               + (f" Reference lines: {ref_pred.label}." if ref_pred is not None else f" {ref_note}." if ref_note else ""))
    front_downloads(df, lat, front, feasible, v.mode, v.device, v.front_name)
    clicked = F.clicked_key(event)
    if clicked and clicked != st.session_state.get("_last_click"):
        st.session_state["_last_click"] = clicked
        if clicked in set(df["key"]) and clicked != selected:
            st.session_state["selected"] = clicked
            st.rerun()
    selected = _choose(st.selectbox, "architecture", options, "selected", options[0],
                       format_func=_label(df, lat, options))
    row = df.loc[df["key"] == selected].iloc[0]
    arch_detail(row, float(lat[row.name]), str(src[row.name]))


def tradeoff_view(df, lat, latency_label, acc_label, error_label, metric) -> None:
    done = (df["state"] == "COMPLETE") & df["accuracy"].notna()
    sub = df[done]
    if len(sub) < 2:
        st.info("Trade-off views need at least two completed trials.")
        return
    st.subheader("Design choices")
    short_acc = acc_label.split(" (")[0]
    colour_by = _choose(st.radio, "colour by", [short_acc, "latency (ms)"], "pc_colour", short_acc, horizontal=True)
    colour = sub["accuracy"] if colour_by == short_acc else lat[done]
    pc_rows = sub if len(sub) <= 3000 else sub.sample(n=3000, random_state=0)
    st.caption(f"Colour: {acc_label if colour_by == short_acc else latency_label}"
               + (f"; {len(pc_rows):,} of {len(sub):,} trials, sampled" if len(pc_rows) < len(sub) else "") + ".")
    st.plotly_chart(F.parallel_coordinates_figure(pc_rows, colour.loc[pc_rows.index], colour_by), key="parcoords")
    st.subheader("Does CIO predict latency? (the HarDNet thesis on your data)")
    st.caption(f"Latency: {latency_label}.")
    cols = st.columns(2)
    for col, (c, label) in zip(cols, (("macs", "MACs"), ("cio", "CIO (elements)"))):
        with col:
            stats = A.rank_correlations(sub[c], lat[done])
            st.markdown(f"**{label} vs latency**: {F.correlation_text(stats)}")
            st.plotly_chart(F.cost_latency_figure(sub[c], lat[done], sub["family"], label, "latency (ms)"),
                            key=f"corr-{c}")
    st.subheader("Error distribution per design choice")
    st.caption("Empirical CDF over all completed trials (RegNet's EDF): a curve further "
               + ("up-left" if metric is not None and error_label.startswith("error") else "right")
               + " means the choice is good across the space, not just at the front.")
    choice = _choose(st.selectbox, "design choice", list(D.DESIGN_CHOICES), "edf_choice", "link_rule")
    curves = A.edf_by_choice(sub, choice, metric[done])
    st.plotly_chart(F.edf_figure(curves, choice, error_label), key="edf")
    st.subheader("Which choices matter")
    st.caption("PED-ANOVA: how much each choice sets the best 10 % of trials apart (the most accurate; the "
               "fastest) — not whether it changes the average.")
    cols = st.columns(2)
    targets = ((acc_label, sub["accuracy"], True), (latency_label, lat[done], False))
    for col, (label, target, maximize) in zip(cols, targets):
        with col:
            imp, why = _importances(sub[list(D.DESIGN_CHOICES)], target.rename("target"), maximize)
            if why:
                st.info(f"{label}: {why}.")
            else:
                st.plotly_chart(F.importance_figure(imp, label), key=f"imp-{label}")


def compare_view(df, lat, src) -> None:
    done = df.loc[(df["state"] == "COMPLETE") & df["accuracy"].notna()]
    if len(done) < 2:
        st.info("Compare needs at least two completed trials.")
        return
    keys = list(dict.fromkeys(list(df.loc[df["baseline"], "key"]) + list(done.sort_values("accuracy", ascending=False)["key"][:500])))
    first = S.restore(st.session_state, "selected", keys[0], options=list(df["key"]))
    if first not in keys:
        keys = [first, *keys]
    label = _label(df, lat, keys)
    a, b = st.columns(2)
    ka = _choose(a.selectbox, "A", keys, "cmp_a", first, scope=first, format_func=label)
    st.session_state["selected"] = ka  # A is the selection: the Pareto view shows it too
    S.keep(st.session_state, "selected")
    kb = _choose(b.selectbox, "B", keys, "cmp_b", next(k for k in keys if k != ka), format_func=label)
    ra, rb = (df.loc[df["key"] == k].iloc[0] for k in (ka, kb))
    st.table(pd.DataFrame(T.comparison_rows(ra, rb, _accuracy_label(str(ra["proxy"])), float(lat[ra.name]),
                                            float(lat[rb.name]))).set_index(""))
    curves = {}
    for which, row, k in (("A", ra, ka), ("B", rb, kb)):  # one under the other: each stage table needs the width
        title = f"`{row['arch_id']}`" + (f" — {row['name']}" if row["name"] else "")
        st.markdown(f"**{which}: {title}** · {row['study']} · trial {row['number']} · {row['why']}")
        _latency_note(row, str(src[row.name]))
        if row["config"]:
            stage_table(row)
        if row["curve"]:
            curves[f"{row['arch_id']} ({k})"] = row["curve"]
    if curves:
        st.plotly_chart(F.curve_figure(curves), key="cmp-curves")


def _budget_note(info: dict, shown: list[str], budgets: dict[str, float]) -> str:
    """Which study budgets apply to the latency shown (the smallest is the default), and which do not."""
    own = {n: info[n].budget_ms for n in shown if info[n].budget_ms is not None}
    if not own:
        return "The studies recorded no budget."
    parts = [f"{n}: {b:g} ms ({info[n].settings.get('latency', '?')})" + ("" if n in budgets else ", another axis")
             for n, b in own.items()]
    head = ("Default: the smallest budget set for this latency. " if len(budgets) > 1 else
            "" if budgets else "No study set a budget for this latency. ")
    return head + "Budgets: " + "; ".join(parts) + "."


def fidelity_view() -> None:
    """Reports of `python -m nas.proxy fidelity`: does the proxy rank networks like a long training?"""
    reports = FI.find_reports()
    if not reports:
        st.info("No proxy fidelity report under `runs/fidelity/` (or `$HARDNAS_RUNS/fidelity/`). Make one on your "
                "own space and data (hours on a CPU; resumable):")
        st.code("python -m nas.proxy fidelity --space hybrid --data PATH --networks 30 --threads 1", language="bash")
        return
    names = [str(p) for p in reports]
    path = _choose(st.selectbox, "report", names, "fidelity_report", names[0], format_func=lambda p: Path(p).name)
    try:
        rep = FI.read_report(reports[names.index(path)])
    except ValueError as err:
        st.error(str(err))
        return
    taus = FI.tau_frame(rep)
    ref = rep.get("settings", {}).get("reference", {}) if isinstance(rep.get("settings"), dict) else {}
    st.caption(f"{rep.get('n', 0)} networks with a reference and a proxy result ({len(rep.get('failed') or [])} "
               f"failed) of {rep.get('networks', '?')} in the study; reference: {ref.get('epochs', '?')} epochs over "
               f"{ref.get('max_train_samples') or 'all'} training images. Higher τ: the score ranks networks more "
               "like the reference training does.")
    if taus["tau"].notna().any():
        st.plotly_chart(F.fidelity_tau_figure(taus), key="fid-tau")
    else:
        st.info("Too few finished networks for a rank correlation yet (at least 2).")
    held = rep.get("held_out") or {}
    if "fitted_tau_mean" in held:
        st.markdown(f"**Corrected proxy on held-out networks** ({held.get('repeats')} x {held.get('folds')}-fold): "
                    f"mean τ {held['fitted_tau_mean']:.3f} vs the plain proxy's {held['plain_tau_mean']:.3f}; "
                    f"better in {100 * held.get('fitted_better_fraction', 0):.0f} % of folds.")
    elif held.get("skipped"):
        st.caption(f"Corrected proxy: not fitted ({held['skipped']}).")
    noise = FI.reference_noise(rep)
    if noise:
        st.markdown(noise)
    scores = [s for s in taus.loc[taus["n"] >= 2, "score"]]
    if scores:
        score = _choose(st.selectbox, "score", scores, "fidelity_score", scores[0])
        st.plotly_chart(F.fidelity_scatter_figure(FI.score_rows(rep, score), score), key="fid-scatter")


def trials_view(df: pd.DataFrame, lat: pd.Series, src: pd.Series) -> None:
    states = sorted(set(df["state"]))
    left, right = st.columns([3, 2])
    picked = _choose(left.multiselect, "states", states, "trial_states", states)
    S.restore(st.session_state, "trial_filter", "")
    text = right.text_input("contains", key="trial_filter", placeholder="study, name, arch_id or outcome…")
    S.keep(st.session_state, "trial_filter")
    table = A.trials_table(df, lat, src, picked, text)
    running = int((df["state"] == "RUNNING").sum())
    st.caption(f"{len(table):,} of {len(df):,} trials" + (f", {running} running" if running else "")
               + ". Click a column header to sort, a row to select that architecture.")
    compact = st.column_config.NumberColumn(format="compact")
    event = st.dataframe(
        table.drop(columns="key"), hide_index=True, on_select="rerun", selection_mode="single-row", key="trials_table",
        width="stretch", height=min(600, 38 + 35 * max(1, len(table))),
        column_config={"outcome": st.column_config.TextColumn(width="medium"), "CIO": compact, "MACs": compact,
                       "params": compact, "accuracy": st.column_config.NumberColumn(format="%.4g"),
                       "latency (ms)": st.column_config.NumberColumn(format="%.4g"),
                       "recorded (ms)": st.column_config.NumberColumn(format="%.4g")})
    rows = event.selection.rows if event is not None else []
    if rows:
        key = table.iloc[rows[0]]["key"]
        st.session_state["selected"] = key
        S.keep(st.session_state, "selected")
        row = df.loc[df["key"] == key].iloc[0]
        arch_summary(row, float(lat[row.name]), str(src[row.name]))
        st.caption("Selected: the Pareto front and Compare views show it too.")


def main() -> None:
    st.title("hardnas explorer")
    sb = st.sidebar
    url = sb.text_input("storage URL", value=D.resolve_storage_url(sys.argv[1:]), key="storage",
                        help="sqlite:///path.db, postgresql://..., journal:PATH; also `-- --storage URL` or $NAS_STORAGE").strip()
    if sb.button("Refresh", help="read the storage again now (the page rereads it anyway when a search has written)"):
        _refresh()
    try:
        marker = D.storage_marker(url)
        studies = _studies(url, marker)
    except D.StorageError as err:
        st.error(str(err))
        return
    if not studies:
        empty_state(url, studies)
        return
    names = [s.name for s in studies]
    if st.session_state.get("_demo_study") in names:
        st.session_state["studies"] = [st.session_state.pop("_demo_study")]
    picked = _choose(sb.multiselect, "studies (overlaid)", names, "studies",
                     [max(studies, key=lambda s: s.n_trials).name], scope=url)
    if not picked:
        st.info("Pick at least one study in the sidebar.")
        return
    try:
        df = _frame(url, tuple(picked), marker)
    except D.StorageError as err:
        st.error(str(err))
        return
    info = {s.name: s for s in studies}
    by_proxy = D.studies_by_proxy(df)
    if len(by_proxy) > 1:  # one y axis per proxy: a training accuracy and a zero-cost score are not comparable
        proxy = _choose(sb.radio, "accuracy proxy (one at a time)", list(by_proxy), "proxy_group", list(by_proxy)[0],
                        scope=tuple(sorted(picked)))
        hidden = sorted(set(picked) - set(by_proxy[proxy]))
        st.info(f"These studies use different accuracy proxies ({', '.join(by_proxy)}), which share no axis: showing "
                f"{proxy}" + (f"; not shown: {', '.join(hidden)}" if hidden else "") + " (pick another in the sidebar).")
        df = df[df["study"].isin(by_proxy[proxy])]
    P.warm_up(df)  # kernel rows for a device switch, built by a child process while the page is drawn
    proxies = D.accuracy_proxies(df)
    train = all(p == "train" for p in proxies)
    acc_label = "proxy accuracy" if train else f"score ({', '.join(proxies) or 'accuracy'})"

    has_measured = bool((df["latency_source"] == "measured").any())
    mode = _choose(sb.radio, "latency", ["measured", "predicted"], "lat_mode", "measured" if has_measured else "predicted",
                   scope="measured" if has_measured else "predicted only", horizontal=True)
    recorded = df.loc[df["latency_source"] == "predicted", "latency_device"]
    profiles = list_profiles()
    default_dev = recorded.mode().iloc[0] if len(recorded) and recorded.mode().iloc[0] in profiles else "cpu"
    device = _choose(sb.selectbox, "target device (predicted)", profiles, "device", default_dev, scope=default_dev,
                     disabled=mode == "measured")  # a pick sticks while the studies' own device stays the same
    pred = _predictor(device, url, tuple(picked), marker) if mode == "predicted" else None
    if pred is not None:
        sb.caption(f"Predicted with the {pred.label}.")
    bar = []

    def progress(done: int, total: int) -> None:  # a first switch to another device on a big study takes a while
        if total >= 1000:
            if not bar:
                bar.append(st.progress(0.0))
            bar[0].progress(done / total, text=f"predicting latency for {device}: {done:,} of {total:,} architectures")

    lat, src = A.latency_column(df, mode, pred, on_progress=progress)
    if bar:
        bar[0].empty()
    if mode == "measured":
        measured_on = df.loc[df["latency_source"] == "measured", "latency_device"]
        cpu = _predictor("cpu", url, tuple(picked), marker) if set(measured_on) == {"cpu"} else None
        runtimes = A.measured_runtimes(df)
        ref_pred, ref_note = P.reference_predictor(
            list(measured_on), cpu, list(df.loc[df["latency_source"] == "measured", "latency_runtime"]))
        if measured_on.nunique() > 1:
            st.warning(f"These latencies were measured on different devices ({', '.join(sorted(set(measured_on)))}): "
                       "compare points of one device, or switch to predicted for one target.")
        if len(runtimes) > 1:
            st.warning(f"These latencies were measured under different runtimes ({', '.join(runtimes)}): "
                       "compare points of one runtime (the hover names each point's).")
        latency_label = f"latency (ms, measured{' under ' + ' / '.join(runtimes) if runtimes else ''})"
    else:
        ref_pred, ref_note = pred, ""
        latency_label = f"latency (ms, predicted for {device}, {pred.short})"

    c = st.columns(6)
    c[0].metric("trials", len(df))
    c[1].metric("completed", int((df["state"] == "COMPLETE").sum()))
    c[2].metric("running", int((df["state"] == "RUNNING").sum()))
    c[3].metric("pruned / rejected", int((df["state"] == "PRUNED").sum()))
    c[4].metric("failed", int((df["state"] == "FAIL").sum()))
    st.caption("  \n".join(A.study_lines(df, {n: info[n].settings for n in set(df["study"])})))
    view = _choose(st.radio, "view", VIEWS, "view", VIEWS[0], horizontal=True, label_visibility="collapsed")
    if view == "Trials":
        c[5].metric("with an accuracy", int(df["accuracy"].notna().sum()))
        trials_view(df, lat, src)
        return
    if view == "Proxy fidelity":
        fidelity_view()
        return
    plotted = (df["state"] == "COMPLETE") & df["accuracy"].notna() & lat.notna()
    if not plotted.any():
        if not df["accuracy"].notna().any():  # nothing finished yet, e.g. an interrupted demo: offer it again
            empty_state(url, studies)
            return
        st.warning(f"No completed trial has a {mode} latency"
                   + (" (these studies predicted latency: switch to predicted)" if mode == "measured" else "")
                   + ". The Trials view lists every trial and why it has none.")
        return
    shown_studies = sorted(set(df["study"]))
    budgets = A.applicable_budgets({n: info[n].settings for n in shown_studies}, mode, device)
    study_budget = min(budgets.values()) if budgets else None
    # a rounded-up range stays put while a live search adds trials (the slider keeps its value)
    top = A.nice_ceiling(1.05 * max(float(lat[plotted].max()), study_budget or 0.0))
    S.restore(st.session_state, "budget", min(study_budget, top) if study_budget else top,
              valid=lambda b: 0.0 <= b <= top, scope=(mode, device, tuple(shown_studies)))
    budget = sb.slider("latency budget (ms)", 0.0, top, step=top / 500, format="%.4g", key="budget",
                       help="trials above it are greyed out and leave the front")
    S.keep(st.session_state, "budget", scope=(mode, device, tuple(shown_studies)))
    sb.caption(_budget_note(info, shown_studies, budgets))
    front_name = _choose(sb.radio, "front over", list(A.FRONTS), "front_objectives", list(A.FRONTS)[0],
                         help="the search's pareto.csv also minimises CIO: its front has more points")
    objectives = A.FRONTS[front_name]
    feasible = A.feasible_mask(df, lat, budget)
    front = A.front_mask(df, lat, feasible, objectives=objectives)
    c[5].metric("feasible under budget", int(feasible.sum()))
    data_key = (url, marker, tuple(shown_studies), mode, pred.key if pred is not None else "")
    shown = Shown(df, lat, src, feasible, front, budget, latency_label, acc_label, mode, device, front_name,
                  len(objectives) == 2, data_key)

    metric = (1.0 - df["accuracy"]) if train else df["accuracy"]
    error_label = "error (1 − proxy accuracy)" if train else acc_label
    if view == "Pareto front":
        pareto_view(shown, ref_pred, ref_note)
    elif view == "Trade-offs":
        tradeoff_view(df, lat, latency_label, acc_label, error_label, metric)
    else:
        compare_view(df, lat, src)
    P.warm_up(df, in_thread=True)  # where no child process can be forked: a thread, now that the page is drawn


main()
