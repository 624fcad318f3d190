"""Reading studies back: trial records, the Pareto front, baselines, and the files a search leaves.

Both backends write the same Optuna storage (trial values = objectives, user attributes = every
metric), so everything downstream (the front, the app, export) reads through here and does not
care which backend ran.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["format_table", "hypervolume", "pareto_front", "trial_records", "write_front"]

_COLUMNS = ("number", "name", "arch_id", "accuracy", "latency_ms", "latency_source", "cio", "macs", "params", "feasible")


def trial_records(study: Any) -> list[dict[str, Any]]:
    """One flat dict per trial: number, state, objective values and all user attributes."""
    out = []
    budget = study.user_attrs.get("settings", {}).get("budget_ms")
    for t in study.get_trials(deepcopy=False):
        rec = {"number": t.number, "state": t.state.name, **t.user_attrs}
        rec.setdefault("name", rec.get("seed") or "")
        lat = rec.get("latency_ms")
        rec["feasible"] = bool(t.state.name == "COMPLETE" and lat is not None and (budget is None or lat <= budget))
        out.append(rec)
    return out


def _dominates(a: Sequence[float], b: Sequence[float], signs: Sequence[int]) -> bool:
    better_or_equal = all(s * x >= s * y for x, y, s in zip(a, b, signs))
    strictly = any(s * x > s * y for x, y, s in zip(a, b, signs))
    return better_or_equal and strictly


def pareto_front(records: Iterable[dict[str, Any]], objectives: Sequence[str] = ("accuracy", "latency_ms", "cio"),
                 maximize: Sequence[str] = ("accuracy",), feasible_only: bool = True) -> list[dict[str, Any]]:
    """Non-dominated records (first occurrence of each architecture), sorted by the second objective."""
    pool, seen = [], set()
    for r in records:
        if r.get("state") != "COMPLETE" or (feasible_only and not r.get("feasible")):
            continue
        if any(r.get(o) is None or (isinstance(r.get(o), float) and math.isnan(r[o])) for o in objectives):
            continue
        if r.get("arch_id") in seen:
            continue
        seen.add(r.get("arch_id"))
        pool.append(r)
    signs = [1 if o in maximize else -1 for o in objectives]
    vecs = [[float(r[o]) for o in objectives] for r in pool]
    front = [r for i, r in enumerate(pool) if not any(_dominates(vecs[j], vecs[i], signs) for j in range(len(pool)) if j != i)]
    key = objectives[1] if len(objectives) > 1 else objectives[0]
    return sorted(front, key=lambda r: r[key])


def hypervolume(points: Iterable[Sequence[float]], reference: Sequence[float]) -> float:
    """Volume dominated by ``points`` (all objectives minimised) and bounded by ``reference``.

    Exact, by slicing along the first objective and recursing (fine for the tens to hundreds of
    points a front has). Points not strictly better than the reference in every objective add
    nothing. Maximised objectives are passed negated, or as ``1 - accuracy``.
    """
    ref = [float(r) for r in reference]
    pts = [[float(v) for v in p] for p in points]
    pts = [p for p in pts if len(p) == len(ref) and all(v < r for v, r in zip(p, ref))]
    return _hv(pts, ref)


def _hv(pts: list[list[float]], ref: list[float]) -> float:
    if not pts:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in pts)
    pts = sorted(pts, key=lambda p: p[0])
    total = 0.0
    for i, p in enumerate(pts):
        upper = pts[i + 1][0] if i + 1 < len(pts) else ref[0]
        if upper > p[0]:
            # the slab [p0, upper) is dominated by every point up to i in the remaining objectives
            total += (upper - p[0]) * _hv([q[1:] for q in pts[: i + 1]], ref[1:])
    return total


def _fmt(v: Any, col: str) -> str:
    if v is None:
        return "-"
    if col == "accuracy":
        return f"{v:.3f}"
    if col == "latency_ms":
        return f"{v:.2f}"
    if col in ("cio", "params"):
        return f"{v / 1e6:.2f}M"
    if col == "macs":
        return f"{v / 1e9:.3f}G"
    return str(v)


def format_table(rows: Sequence[dict[str, Any]], title: str) -> str:
    cols = ("number", "name", "arch_id", "accuracy", "latency_ms", "latency_source", "cio", "macs", "params")
    head = ["#", "name", "arch_id", "accuracy", "latency ms", "source", "CIO", "MACs", "params"]
    table = [head] + [[_fmt(r.get(c), c) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = [title] + ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in table]
    if not rows:
        lines.append("  (none)")
    return "\n".join(lines)


def write_front(folder: Path, front: Sequence[dict[str, Any]], baselines: Sequence[dict[str, Any]]) -> tuple[Path, Path]:
    """``pareto.json`` (front + baselines with configs) and ``pareto.csv`` (front, one row per architecture)."""
    folder.mkdir(parents=True, exist_ok=True)
    js, cs = folder / "pareto.json", folder / "pareto.csv"
    keep = ("number", "name", "arch_id", "accuracy", "latency_ms", "latency_source", "latency_device", "cio", "macs",
            "thop_macs", "params", "moc", "feasible", "config", "proxy", "seed")

    def slim(r: dict[str, Any]) -> dict[str, Any]:
        d = {k: r.get(k) for k in keep if k in r}
        if isinstance(d.get("config"), str):
            d["config"] = json.loads(d["config"])
        return d

    tmp = js.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"front": [slim(r) for r in front], "baselines": [slim(r) for r in baselines]}, indent=2))
    tmp.replace(js)
    tmp = cs.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in front:
            w.writerow(r)
    tmp.replace(cs)
    return js, cs
