"""Plotly figure builders for the app; each returns a `plotly.graph_objects.Figure` with named traces.

Scatter plots of trials use WebGL (``Scattergl``) so a 10,000-trial study stays responsive; the
caller passes the rows to draw (`nas.explore.analysis.sample_for_display`). Every trace has a
``name`` the tests (and the legend) rely on.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..links import BlockPlan
from .data import DESIGN_CHOICES, NUMERIC_CHOICES

__all__ = [
    "block_links_figure",
    "clicked_key",
    "correlation_text",
    "cost_latency_figure",
    "curve_figure",
    "edf_figure",
    "importance_figure",
    "parallel_coordinates_figure",
    "pareto_figure",
    "symbol_map",
]

_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "pentagon", "hexagon", "triangle-down", "star-square")
_FRONT_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def symbol_map(families: Sequence[str]) -> dict[str, str]:
    """A stable marker symbol per block family (sorted names, so overlays and reruns agree)."""
    return {f: _SYMBOLS[i % len(_SYMBOLS)] for i, f in enumerate(sorted(set(families)))}


def _hover_data(rows: pd.DataFrame, lat: pd.Series, src: pd.Series) -> np.ndarray:
    return np.column_stack([
        rows["key"].to_numpy(), rows["arch_id"].to_numpy(), rows["study"].to_numpy(),
        rows["number"].to_numpy(), rows["name"].to_numpy(), rows["accuracy"].to_numpy(), lat.to_numpy(),
        (rows["cio"] / 1e6).to_numpy(), (rows["macs"] / 1e9).to_numpy(), (rows["params"] / 1e6).to_numpy(),
        src.to_numpy(), rows["family"].to_numpy(),
    ]) if len(rows) else np.zeros((0, 12))


_HOVER_NO_ACCURACY = ("<b>%{customdata[1]}</b> %{customdata[4]}<br>%{customdata[2]} trial %{customdata[3]} · "
                      "%{customdata[11]}<br><b>no accuracy</b>: %{customdata[12]}<br>latency %{customdata[6]:.4g} ms "
                      "(%{customdata[10]})<br>CIO %{customdata[7]:.3g} M elements · MACs %{customdata[8]:.3g} G · params "
                      "%{customdata[9]:.3g} M<extra></extra>")

_HOVER = ("<b>%{customdata[1]}</b> %{customdata[4]}<br>%{customdata[2]} trial %{customdata[3]} · %{customdata[11]}"
          "<br>accuracy %{customdata[5]:.4g}<br>latency %{customdata[6]:.4g} ms (%{customdata[10]})"
          "<br>CIO %{customdata[7]:.3g} M elements · MACs %{customdata[8]:.3g} G · params %{customdata[9]:.3g} M"
          "<extra></extra>")


_FAMILY_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


def pareto_figure(df: pd.DataFrame, latency: pd.Series, source: pd.Series, feasible: pd.Series, front: pd.Series,
                  shown: pd.Series | None = None, budget_ms: float | None = None, selected: Sequence[str] = (),
                  references: Mapping[str, float] | None = None, accuracy_label: str = "accuracy",
                  latency_label: str = "latency (ms)", reference_label: str | None = None,
                  colour_by: str = "family", front_line: bool = True) -> go.Figure:
    """Accuracy vs latency of completed trials with the front, the baselines and the selection.

    Traces, all WebGL so that they stack in this order above a 10,000-point cloud:
    ``infeasible`` (grey, over the budget), one per block family of the feasible points (colour
    by family, or by CIO on a scale fixed over every completed trial so a point keeps its colour
    when the budget moves: ``colour_by="cio"``; symbol by family either way), ``Pareto front``
    per study (a step line; rings only with ``front_line=False``, for a front that also minimises
    CIO and so is no staircase in these two axes), ``baselines`` (stars with their names), ``baselines without accuracy``
    (open stars on a "no accuracy" band below the others, at their latency, the hover saying why:
    ``why`` column), ``selected`` (rings). ``references`` (name -> latency) are canonical models
    drawn as dotted lines (one trace, ``reference_label``) each labelled by an annotation named
    ``reference``; the x axis spans the trials and the budget only, and a reference beyond it is
    an arrow at the right edge with its latency. ``shown`` limits the non-front points drawn
    (sampling). customdata[0] of every point is its row key, which is what a click returns.
    """
    if colour_by not in ("family", "cio"):
        raise ValueError(f"colour_by: {colour_by!r} is not allowed; expected family or cio")
    plotted = (df["state"] == "COMPLETE") & df["accuracy"].notna() & latency.notna()
    shown = plotted if shown is None else (plotted & (shown | front | df["baseline"]))
    band = df["baseline"] & df["accuracy"].isna() & latency.notna()
    families = sorted(set(df.loc[plotted, "family"]))
    symbols = symbol_map(families)
    fig = go.Figure()

    def points(mask: pd.Series, name: str, y: Any = None, hover: str = _HOVER, extra: np.ndarray | None = None,
               **kw: Any) -> None:
        rows = df[mask]
        data = _hover_data(rows, latency[mask], source[mask])
        if extra is not None:
            data = np.column_stack([data, extra])
        fig.add_trace(go.Scattergl(x=latency[mask], y=rows["accuracy"] if y is None else y, name=name,
                                   customdata=data, hovertemplate=hover, **kw))

    bad = shown & ~feasible
    points(bad, "infeasible", mode="markers", marker=dict(
        color="rgba(150,150,150,0.35)", size=6, symbol=[symbols.get(f, "circle") for f in df.loc[bad, "family"]]))
    cio = df.loc[plotted, "cio"] / 1e6
    cmin, cmax = (float(cio.min()), float(cio.max())) if len(cio) else (0.0, 1.0)
    for i, (fam, sym) in enumerate(symbols.items()):
        m = shown & feasible & (df["family"] == fam)
        colour = df.loc[m, "cio"] / 1e6 if colour_by == "cio" else _FAMILY_COLOURS[i % len(_FAMILY_COLOURS)]
        points(m, fam, mode="markers", marker=dict(symbol=sym, size=8, color=colour, line=dict(width=0.5, color="white"),
                                                   **({"coloraxis": "coloraxis"} if colour_by == "cio" else {})))
    studies = list(dict.fromkeys(df.loc[front, "study"]))
    for i, study in enumerate(studies):
        m = front & (df["study"] == study)
        order = latency[m].sort_values().index
        mask = pd.Series(False, index=df.index)
        mask[order] = True
        colour = _FRONT_COLOURS[i % len(_FRONT_COLOURS)]
        rows = df.loc[order]
        fig.add_trace(go.Scattergl(
            x=latency[order], y=rows["accuracy"], mode="lines+markers" if front_line else "markers", line_shape="hv",
            name="Pareto front" if len(studies) == 1 else f"Pareto front: {study}", line=dict(color=colour, width=2.5),
            marker=dict(size=11, color="rgba(0,0,0,0)", line=dict(width=2, color=colour)),
            customdata=_hover_data(rows, latency[order], source[order]), hovertemplate=_HOVER))
    base = plotted & df["baseline"]
    if base.any():
        points(base, "baselines", mode="markers+text", text=df.loc[base, "name"], textposition="top center",
               marker=dict(symbol="star", size=15, color="gold", line=dict(width=1, color="black")))
    y_band, half = _band(df.loc[plotted, "accuracy"])
    if band.any():
        fig.add_hrect(y0=y_band - half, y1=y_band + half, fillcolor="rgba(120,120,120,0.08)", line_width=0, layer="below",
                      annotation_text="no accuracy", annotation_position="left", annotation_font_size=11)
        points(band, "baselines without accuracy", y=[y_band] * int(band.sum()), hover=_HOVER_NO_ACCURACY,
               extra=df.loc[band, "why"].to_numpy(), mode="markers+text", text=df.loc[band, "name"],
               textposition="top center", marker=dict(symbol="star-open", size=15, color="darkgoldenrod",
                                                      line=dict(width=2)))
    sel = df["key"].isin(list(selected)) & (plotted | band)
    if sel.any():
        y_sel = df.loc[sel, "accuracy"].where(df.loc[sel, "accuracy"].notna(), y_band)
        points(sel, "selected", y=y_sel, mode="markers",
               marker=dict(size=20, color="rgba(0,0,0,0)", line=dict(width=3, color="black")))
    x_max = _x_extent(latency[plotted | band], budget_ms)
    _draw_references(fig, references or {}, x_max, df.loc[plotted, "accuracy"], y_band if band.any() else None,
                     reference_label)
    if budget_ms is not None and math.isfinite(budget_ms):
        fig.add_vline(x=budget_ms, line=dict(color="firebrick", dash="dash"),
                      annotation_text=f"budget {budget_ms:.3g} ms", annotation_position="bottom right")
    fig.update_layout(
        xaxis=dict(title=latency_label, range=[0, x_max]), yaxis_title=accuracy_label, legend_title_text="",
        legend=dict(orientation="h", yanchor="top", y=-0.15, xanchor="left", x=0),
        margin=dict(l=10, r=10, t=30, b=10), height=580, clickmode="event+select", uirevision="pareto",
    )
    if colour_by == "cio":
        fig.update_layout(coloraxis=dict(colorscale="Viridis", cmin=cmin, cmax=cmax,
                                         colorbar=dict(title="CIO (M elements)")))
    return fig


def _x_extent(latency: pd.Series, budget_ms: float | None) -> float:
    """The right end of the latency axis: the trials and the budget, not the reference lines."""
    top = float(latency.max()) if latency.notna().any() else 1.0
    if budget_ms is not None and math.isfinite(budget_ms):
        top = max(top, budget_ms)
    return 1.08 * top if top > 0 else 1.0


def _draw_references(fig: go.Figure, references: Mapping[str, float], x_max: float, accuracy: pd.Series,
                     y_band: float | None, name: str | None) -> None:
    """Dotted lines for the references inside the axis, each labelled at the top (labels stepped down so they
    never overlap); those beyond the axis become arrows at the right edge with their latency."""
    inside = {n: ms for n, ms in references.items() if ms is not None and math.isfinite(ms) and ms <= x_max}
    beyond = {n: ms for n, ms in references.items() if ms is not None and math.isfinite(ms) and ms > x_max}
    lo = y_band if y_band is not None else (float(accuracy.min()) if len(accuracy) else 0.0)
    hi = float(accuracy.max()) if len(accuracy) else 1.0
    xs: list[float | None] = []
    ys: list[float | None] = []
    for ms in inside.values():
        xs += [ms, ms, None]
        ys += [lo, hi, None]
    if xs or beyond:
        fig.add_trace(go.Scatter(x=xs or [None], y=ys or [None], mode="lines", name=name or "canonical (latency only)",
                                 line=dict(color="rgba(80,80,80,0.7)", dash="dot"), hoverinfo="skip"))
    for i, (label, ms) in enumerate(sorted(inside.items(), key=lambda kv: kv[1])):
        right = ms > 0.6 * x_max  # labels near the right edge open to the left
        fig.add_annotation(x=ms, y=1.0 - 0.07 * i, yref="paper", text=f"{label} {ms:.3g} ms", showarrow=False,
                           xanchor="right" if right else "left", xshift=-3 if right else 3, name="reference",
                           font=dict(size=11, color="#444"), bgcolor="rgba(255,255,255,0.75)")
    for j, (label, ms) in enumerate(sorted(beyond.items(), key=lambda kv: kv[1])):
        fig.add_annotation(x=1.0, xref="paper", y=1.0 - 0.07 * (len(inside) + j), yref="paper",
                           text=f"{label} → {ms:.3g} ms", showarrow=False, xanchor="right", name="reference",
                           font=dict(size=11, color="#444"), bgcolor="rgba(255,255,255,0.75)")


def _band(accuracy: pd.Series) -> tuple[float, float]:
    """(centre, half height) of the "no accuracy" band drawn below the lowest accuracy."""
    lo, hi = (float(accuracy.min()), float(accuracy.max())) if len(accuracy) else (0.0, 1.0)
    span = (hi - lo) or max(abs(hi), 1.0) * 0.1
    return lo - 0.15 * span, 0.05 * span


def parallel_coordinates_figure(df: pd.DataFrame, colour: pd.Series, colour_label: str,
                                choices: Sequence[str] = DESIGN_CHOICES) -> go.Figure:
    """Parallel coordinates of the design choices (categorical axes get their values as ticks), one line per trial.

    The outer axes' titles are centred on the first and last axis: the margins grow with their
    length so that no title is clipped at the edge of the plot.
    """
    dims = []
    for c in choices:
        col = df[c]
        if c in NUMERIC_CHOICES:
            v = col.astype(float).fillna(-1.0)
            dims.append(dict(label=c if c not in ("k", "m") else f"{c} (-1: none)", values=v.to_numpy()))
        else:
            cats = sorted(col.astype(str).unique())
            code = {v: i for i, v in enumerate(cats)}
            dims.append(dict(label=c, values=col.astype(str).map(code).to_numpy(), tickvals=list(range(len(cats))),
                             ticktext=cats))
    dims.append(dict(label=colour_label, values=colour.astype(float).to_numpy()))
    first_width = max([len(dims[0]["label"])] + [len(str(t)) for t in dims[0].get("ticktext", [])])
    fig = go.Figure(go.Parcoords(
        line=dict(color=colour.astype(float).to_numpy(), colorscale="Viridis", showscale=True,
                  colorbar=dict(title=dict(text=colour_label, side="right"), thickness=14)),
        dimensions=dims, name="design choices", labelfont=dict(size=12), tickfont=dict(size=11),
    ))
    char = 7.5  # px per character at these font sizes
    fig.update_layout(margin=dict(l=int(20 + char * first_width), r=int(90 + char * len(colour_label) / 2), t=50, b=20),
                      height=460)
    return fig


def importance_figure(importances: Mapping[str, float], target_label: str) -> go.Figure:
    """Horizontal bars of design-choice importances (largest on top)."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h", name="importance",
                           text=[f"{v:.2f}" for _, v in items], textposition="auto"))
    fig.update_layout(xaxis_title=f"importance for {target_label} (PED-ANOVA, sums to 1)", height=60 + 32 * max(1, len(items)),
                      margin=dict(l=10, r=10, t=30, b=10))
    return fig


def correlation_text(stats: Mapping[str, Any]) -> str:
    """Kendall τ and Spearman ρ of `nas.explore.analysis.rank_correlations` in one line."""
    tau, rho, n, n_tau = stats.get("tau"), stats.get("rho"), stats.get("n", 0), stats.get("n_tau", 0)
    if tau is None or not math.isfinite(tau):
        return f"too few points for a rank correlation ({n})"
    sample = f" (τ on {n_tau:,} sampled)" if n_tau and n_tau < n else ""
    return f"Kendall τ {tau:.2f} · Spearman ρ {rho:.2f} over {n:,} architectures{sample}"


def cost_latency_figure(x: pd.Series, latency: pd.Series, families: pd.Series, x_label: str,
                        latency_label: str = "latency (ms)") -> go.Figure:
    """A cost measure (MACs, CIO) against latency, log axes (the page writes `correlation_text` above it:
    a title would run under the plot's toolbar)."""
    fig = go.Figure()
    symbols = symbol_map(families.dropna().astype(str).tolist())
    for fam, sym in symbols.items():
        m = (families == fam) & x.notna() & latency.notna()
        fig.add_trace(go.Scattergl(x=x[m], y=latency[m], mode="markers", name=fam,
                                   marker=dict(symbol=sym, size=6, opacity=0.7)))
    fig.update_layout(xaxis_title=x_label, yaxis_title=latency_label, xaxis_type="log", yaxis_type="log", height=380,
                      margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.2))
    return fig


def edf_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], choice: str, metric_label: str) -> go.Figure:
    """One step curve per value of a design choice: the fraction of trials with metric <= x."""
    fig = go.Figure()
    for value, (xs, ys) in curves.items():
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line_shape="hv", name=f"{choice}={value} (n={len(xs)})"))
    fig.update_layout(xaxis_title=metric_label, yaxis_title="cumulative fraction of trials", yaxis_range=[0, 1.02],
                      height=380, margin=dict(l=10, r=10, t=30, b=10), legend_title_text=choice)
    return fig


def block_links_figure(plan: BlockPlan, title: str = "") -> go.Figure:
    """A harmonic block's links: layers on a line, an arc from every layer to each layer that reads it.

    Layer 0 is the block input; marker size grows with a layer's output channels; the layers
    concatenated into the block output are filled. Arc height grows with the distance skipped,
    so the 2^n structure of harmonic links is visible at a glance.
    """
    xs: list[float | None] = []
    ys: list[float | None] = []
    for layer, reads in enumerate(plan.links, start=1):
        for src in reads:
            span = layer - src
            t = np.linspace(0.0, math.pi, 24)
            xs += list(src + span * (1 - np.cos(t)) / 2) + [None]
            ys += list(0.35 * span * np.sin(t)) + [None]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="links", hoverinfo="skip",
                             line=dict(color="rgba(31,119,180,0.55)", width=1.5)))
    layers = list(range(plan.depth + 1))
    chans = [plan.channels(i) for i in layers]
    reads = ["input"] + [", ".join(str(j) for j in lk) for lk in plan.links]
    out = set(plan.outputs)
    big = max(chans) or 1
    fig.add_trace(go.Scatter(
        x=layers, y=[0] * len(layers), mode="markers+text", name="layers", text=[str(i) for i in layers],
        textposition="bottom center",
        marker=dict(size=[10 + 18 * c / big for c in chans], color=["#d62728" if i in out else "white" for i in layers],
                    line=dict(width=1.5, color="#333")),
        customdata=np.column_stack([chans, reads, ["yes" if i in out else "no" for i in layers]]),
        hovertemplate="layer %{x}: %{customdata[0]} channels<br>reads %{customdata[1]}<br>in block output: %{customdata[2]}<extra></extra>",
    ))
    fig.update_layout(title=dict(text=title, font=dict(size=13)), showlegend=False, height=300,
                      xaxis=dict(title="layer (0 = block input; filled = concatenated into the output)", dtick=1),
                      yaxis=dict(visible=False), margin=dict(l=10, r=10, t=40, b=10))
    return fig


def curve_figure(curves: Mapping[str, Sequence[float]], metric_label: str = "proxy accuracy") -> go.Figure:
    """Per-epoch proxy accuracy, one line per architecture."""
    fig = go.Figure()
    for label, curve in curves.items():
        if curve:
            fig.add_trace(go.Scatter(x=list(range(1, len(curve) + 1)), y=list(curve), mode="lines+markers", name=label))
    fig.update_layout(xaxis_title="epoch", yaxis_title=metric_label, height=300, margin=dict(l=10, r=10, t=30, b=10))
    return fig


def clicked_key(event: Any) -> str | None:
    """The row key of the first clicked point in a `st.plotly_chart(..., on_select="rerun")` event.

    Every trial trace carries the row key as ``customdata[0]``; points without one (reference
    lines) are ignored. None when nothing was clicked.
    """
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError, AttributeError):
        return None
    for p in points or []:
        cd = p.get("customdata") if isinstance(p, Mapping) else None
        if isinstance(cd, (list, tuple)) and cd and isinstance(cd[0], str) and "#" in cd[0]:
            return cd[0]
    return None


def fidelity_tau_figure(taus: pd.DataFrame) -> go.Figure:
    """Kendall tau of each score against the reference training, with its 95 % bootstrap interval."""
    t = taus[taus["tau"].notna()].iloc[::-1]
    fig = go.Figure(go.Scatter(
        x=t["tau"], y=t["score"], mode="markers", name="Kendall τ",
        error_x=dict(type="data", symmetric=False, array=(t["high"] - t["tau"]).clip(lower=0),
                     arrayminus=(t["tau"] - t["low"]).clip(lower=0)),
        customdata=t[["low", "high", "n"]].to_numpy(),
        hovertemplate="%{y}: τ %{x:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}], n=%{customdata[2]}<extra></extra>"))
    fig.add_vline(x=0.0, line=dict(color="grey", width=1))
    fig.update_layout(xaxis_title="Kendall τ against the reference training (95 % bootstrap interval)",
                      xaxis_range=[-1.05, 1.05], height=80 + 34 * max(1, len(t)), margin=dict(l=10, r=10, t=30, b=10))
    return fig


def fidelity_scatter_figure(rows: pd.DataFrame, score: str) -> go.Figure:
    """Each network's ``score`` against its reference accuracy."""
    fig = go.Figure(go.Scatter(x=rows["score"], y=rows["reference"], mode="markers", text=rows["name"], name="networks",
                               hovertemplate="%{text}: " + score + " %{x:.4g}, reference %{y:.3f}<extra></extra>"))
    fig.update_layout(xaxis_title=score, yaxis_title="reference accuracy", height=420,
                      margin=dict(l=10, r=10, t=30, b=10))
    return fig
