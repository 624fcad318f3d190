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
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = ["REJECTION_CAP", "current", "format_table", "hypervolume", "is_gate_rejection", "is_interrupted",
           "measured_cleanly", "nondominated", "pareto_front", "shortfall", "trial_metadata", "trial_records",
           "unmeasured", "unmeasured_note", "write_front", "yardstick"]

_COLUMNS = ("number", "name", "arch_id", "accuracy", "latency_ms", "latency_source", "cio", "macs", "params", "feasible")


def is_interrupted(state: str, attrs: Mapping[str, Any]) -> bool:
    """A FAIL that is no verdict on the candidate: its process died or was stopped (it is run again)."""
    return state == "FAIL" and attrs.get("status") != "failed"


def is_gate_rejection(attrs: Mapping[str, Any]) -> bool:
    """A candidate the cheap latency gate rejected before anything was built."""
    return str(attrs.get("reason") or "").startswith("gate")


def _finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def measured_cleanly(attrs: Mapping[str, Any]) -> bool:
    """A latency measured on the device with no other work disturbing it (not a prediction standing in)."""
    return attrs.get("latency_source") == "measured" and not attrs.get("latency_disturbed")


def trial_records(study: Any) -> list[dict[str, Any]]:
    """One flat dict per trial: number, state, objective values and all user attributes.

    A finished trial cannot be edited, so a re-measurement is a later trial (``remeasure_of``):
    the record it replaces gets ``superseded_by`` (a disturbed latency, once a twin measured it
    cleanly; a re-measurement that was disturbed again adds nothing over its original).
    """
    out = []
    budget = study.user_attrs.get("settings", {}).get("budget_ms")
    for t in study.get_trials(deepcopy=False):
        rec = {"number": t.number, "state": t.state.name, **t.user_attrs}
        rec.setdefault("name", rec.get("seed") or "")
        lat = rec.get("latency_ms")
        rec["feasible"] = bool(t.state.name == "COMPLETE" and lat is not None and (budget is None or lat <= budget))
        out.append(rec)
    clean: dict[str, int] = {}
    for r in out:
        if r["state"] in ("COMPLETE", "PRUNED") and measured_cleanly(r):
            clean.setdefault(str(r.get("arch_id")), r["number"])
    for r in out:
        if r["state"] != "COMPLETE" or not r.get("latency_disturbed"):
            continue
        if str(r.get("arch_id")) in clean:
            r["superseded_by"] = clean[str(r.get("arch_id"))]
        elif r.get("remeasure_of") is not None:
            r["superseded_by"] = r["remeasure_of"]
    return out


def current(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that stand: neither superseded by a re-measurement nor an interrupted trial run again."""
    records = list(records)
    retried = {r.get("retry_of") for r in records}
    return [r for r in records if r.get("superseded_by") is None and r["number"] not in retried]


def unmeasured(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """COMPLETE records whose latency is a prediction standing in for a disturbed measurement."""
    return [r for r in records if r.get("state") == "COMPLETE" and r.get("latency_disturbed")]


def measured_runtime(record: Mapping[str, Any], settings: Mapping[str, Any]) -> tuple[str, str]:
    """(runtime, version) a trial's latency was measured under: the trial's record, else the study's setting
    (eager when it has none: studies from before runtimes existed); ``("", "")`` when the latency was not measured."""
    if record.get("latency_source") != "measured":
        return "", ""
    return (str(record.get("latency_runtime") or settings.get("runtime") or "eager"),
            str(record.get("latency_runtime_version") or ""))


def trial_metadata(record: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of a trial record that belong in an export (its docstring, JSON and ONNX metadata).

    ``record`` is a `trial_records` row with the study's ``settings`` and ``study_name`` added
    (the export command), or an explorer row (``study``; the study's settings are columns).
    Missing, empty and NaN values are left out; numpy scalars become Python numbers.
    """
    settings = record.get("settings") or {}
    meta: dict[str, Any] = {"latency_ms": record.get("latency_ms"), "latency_source": record.get("latency_source"),
                            "device": record.get("latency_device"),
                            "latency_disturbed": record.get("latency_disturbed"),
                            "latency_slowdown": record.get("latency_slowdown")}
    if _present(record.get("latency_ms")):
        meta.update(precision=settings.get("precision"), batch=settings.get("batch"),
                    latency_resolution=settings.get("resolution") or None)
        runtime, version = measured_runtime(record, settings)
        if runtime not in ("", "eager"):  # as the export command records its own measurement
            meta["latency_runtime"] = f"{runtime} {version}".strip()
    proxy = record.get("proxy")
    if proxy == "train" and settings.get("data"):
        proxy = f"training on {settings['data']}"
    meta.update(accuracy=record.get("accuracy"), proxy=proxy,
                resolution=settings.get("resolution") or record.get("resolution"),
                study=record.get("study_name") or record.get("study"), trial=record.get("number"),
                budget_ms=settings.get("budget_ms"))
    meta.update({k: record.get(k) for k in ("arch_id", "name", "cio", "macs", "params")})
    return {k: v.item() if hasattr(v, "item") else v for k, v in meta.items() if _present(v)}


def _present(v: Any) -> bool:
    return v is not None and v != "" and not (isinstance(v, float) and math.isnan(v))


REJECTION_CAP = 25
"""A search stops after this many times ``--trials`` finished candidates, evaluated or not."""


def shortfall(records: Sequence[dict[str, Any]], trials: int, timeout_s: float | None = None) -> str | None:
    """One line saying why a search holds fewer than ``trials`` evaluated trials, and what to try; None if it does not."""
    finished = [r for r in records if r.get("state") in ("COMPLETE", "PRUNED", "FAIL") and r.get("remeasure_of") is None]
    interrupted = {r["number"] for r in finished if is_interrupted(r["state"], r)}
    evaluated = [r for r in finished if r.get("status") != "rejected" and r["number"] not in interrupted]
    if len(evaluated) >= trials:
        return None
    reason = [str(r.get("reason") or "") for r in finished]
    gated = sum(1 for r in finished if is_gate_rejection(r))
    over = [r for r, x in zip(finished, reason) if x.startswith("over budget")]
    busy = sum(1 for r in over if r.get("latency_disturbed"))
    disturbed = sum(1 for r in finished if r.get("latency_disturbed"))
    failed = sum(1 for r in finished if r.get("state") == "FAIL" and r["number"] not in interrupted)
    if len(finished) >= REJECTION_CAP * trials:
        why = f"stopped at the cap of {REJECTION_CAP}x --trials candidates"
    elif timeout_s is not None:
        why = f"stopped by --timeout {timeout_s:g} s"
    else:
        why = "stopped early"
    tips = []
    if gated + len(over) > len(evaluated):
        measured = [r["latency_ms"] for r in finished if isinstance(r.get("latency_ms"), (int, float))]
        fastest = f" (the fastest candidate took {min(measured):.1f} ms)" if measured else ""
        tips.append(f"a larger --budget{fastest} or --gate-factor")
    if disturbed:
        tips.append(f"a quieter machine ({disturbed} latencies were measured while other work ran)")
    if failed:
        tips.append("the failed trials' reasons")
    if timeout_s is not None and why.startswith("stopped by"):
        tips.append("a longer --timeout")
    tips.append("rerunning the same command, which resumes the study")
    return (f"{len(evaluated)} of {trials} trials evaluated; {why}: {gated} rejected by the gate, {len(over)} over "
            f"budget ({busy} of them while other work ran), {failed} failed, {len(interrupted)} interrupted. "
            f"Try {'; '.join(tips)}")


def nondominated(points: Sequence[Sequence[float]], signs: Sequence[int]) -> list[int]:
    """Indices (ascending) of the points no other point dominates; ``signs``: +1 maximised, -1 minimised.

    Points are visited best first (lexicographically on the signed objectives), so any dominator
    of a point comes before it and a point is on the front unless an earlier front point dominates
    it. In one or two objectives the newest front point alone decides (a sweep: O(n log n),
    responsive at 10,000 trials); in more, every front point is tried, newest first. Equal points
    do not dominate each other.
    """
    signed = [tuple(s * float(x) for x, s in zip(p, signs)) for p in points]
    order = sorted(range(len(signed)), key=lambda i: signed[i], reverse=True)
    front: list[int] = []
    for i in order:
        p = signed[i]
        rivals = front[-1:] if len(signs) <= 2 else reversed(front)
        if not any(signed[j] != p and all(a >= b for a, b in zip(signed[j], p)) for j in rivals):
            front.append(i)
    return sorted(front)


def pareto_front(records: Iterable[dict[str, Any]], objectives: Sequence[str] = ("accuracy", "latency_ms", "cio"),
                 maximize: Sequence[str] = ("accuracy",), feasible_only: bool = True) -> list[dict[str, Any]]:
    """Non-dominated records (first occurrence of each architecture, superseded ones left out), sorted by the
    second objective."""
    pool, seen = [], set()
    for r in records:
        if r.get("state") != "COMPLETE" or (feasible_only and not r.get("feasible")) or _present(r.get("superseded_by")):
            continue
        if any(r.get(o) is None or (isinstance(r.get(o), float) and math.isnan(r[o])) for o in objectives):
            continue
        if r.get("arch_id") in seen:
            continue
        seen.add(r.get("arch_id"))
        pool.append(r)
    signs = [1 if o in maximize else -1 for o in objectives]
    front = [pool[i] for i in nondominated([[r[o] for o in objectives] for r in pool], signs)]
    key = objectives[1] if len(objectives) > 1 else objectives[0]
    return sorted(front, key=lambda r: r[key])


def unit_scale(rows: Sequence[dict[str, Any]], keys: Sequence[str],
               signs: Sequence[int]) -> Callable[[dict[str, Any]], list[float]]:
    """A map from a record to its ``keys`` scaled to [0, 1] over ``rows``, all minimised (0 best): what a
    hypervolume over records of different units is computed on."""
    lo = {k: min(float(r[k]) for r in rows) for k in keys}
    span = {k: (max(float(r[k]) for r in rows) - lo[k]) or 1.0 for k in keys}

    def scaled(r: dict[str, Any]) -> list[float]:
        return [(1.0 - (float(r[k]) - lo[k]) / span[k]) if sg > 0 else (float(r[k]) - lo[k]) / span[k]
                for k, sg in zip(keys, signs)]

    return scaled


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


def unmeasured_note(records: Sequence[dict[str, Any]]) -> str | None:
    """One line when the front or a baseline of a measured-latency search stands on predicted latencies
    (every measurement of them was disturbed by other work), and what to do; None when all were measured."""
    standing = current(records)
    front = pareto_front(standing)
    baselines = [r for r in standing if r.get("seed")]
    on_front, base = unmeasured(front), unmeasured(baselines)
    if not on_front and not base:
        return None
    both = on_front + base
    slow = [r["latency_slowdown"] for r in both if isinstance(r.get("latency_slowdown"), (int, float))]
    worst = f" (the device ran up to {max(slow):.1f}x slower than its quiet baseline)" if slow else ""
    calibrated = all(r.get("latency_prediction_calibrated") for r in both)
    trust = ("from this device's calibrated profile" if calibrated else
             "from a profile not yet calibrated on measurements here, which can be several times off")
    return (f"latency not measured for {len(on_front)} of the front's {len(front)} architectures and {len(base)} of "
            f"{len(baselines)} baselines: every measurement of them was disturbed{worst}, by other work or by a host "
            f"that slowed down by itself, so their latency is predicted {trust}. Rerun the same command when the "
            "machine is quiet: it measures them again and keeps their training")


def format_table(rows: Sequence[dict[str, Any]], title: str) -> str:
    cols = ("number", "name", "arch_id", "accuracy", "latency_ms", "latency_source", "cio", "macs", "params")
    head = ["#", "name", "arch_id", "accuracy", "latency ms", "source", "CIO", "MACs", "params"]
    table = [head] + [[_fmt(r.get(c), c) + ("!" if c == "latency_source" and r.get("latency_disturbed") else "")
                       for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = [title] + ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in table]
    if not rows:
        lines.append("  (none)")
    if any(r.get("latency_disturbed") for r in rows):
        lines.append("  ! measured while other work ran (disturbed): the latency shown is this device's prediction "
                     "(source); rerun on a quiet machine to measure it")
    return "\n".join(lines)


def yardstick(front: Sequence[dict[str, Any]], baselines: Sequence[dict[str, Any]], budget_ms: float) -> list[str]:
    """Lines comparing the front with the canonical baselines: what the search bought over them."""
    scored = [b for b in baselines if b.get("state") == "COMPLETE" and b.get("accuracy") is not None]
    if not scored:
        return []
    lines = []
    best = max(front, key=lambda r: r["accuracy"]) if front else None
    for b in sorted(scored, key=lambda r: r["latency_ms"]):
        where = "fits" if b.get("feasible") else f"over the {budget_ms:g} ms budget"
        line = f"  {b.get('seed') or b.get('name')}: accuracy {b['accuracy']:.3f} at {b['latency_ms']:.2f} ms ({where})"
        if best is not None:
            beat = [r for r in front if r["accuracy"] >= b["accuracy"] and r["latency_ms"] <= b["latency_ms"]
                    and r.get("arch_id") != b.get("arch_id")]
            line += (f"; dominated by trial {beat[0]['number']} ({beat[0]['accuracy']:.3f} at {beat[0]['latency_ms']:.2f} ms)"
                     if beat else f"; the front's best is {best['accuracy'] - b['accuracy']:+.3f} accuracy "
                                  f"at {best['latency_ms'] / b['latency_ms']:.2f}x its latency")
        lines.append(line)
    return lines


def write_front(folder: Path, front: Sequence[dict[str, Any]], baselines: Sequence[dict[str, Any]]) -> tuple[Path, Path]:
    """``pareto.json`` (front + baselines with configs) and ``pareto.csv`` (front, one row per architecture)."""
    folder.mkdir(parents=True, exist_ok=True)
    js, cs = folder / "pareto.json", folder / "pareto.csv"
    keep = ("number", "name", "arch_id", "accuracy", "latency_ms", "latency_source", "latency_device", "cio", "macs",
            "thop_macs", "params", "moc", "feasible", "config", "proxy", "seed", "latency_disturbed",
            "latency_slowdown", "latency_raw_ms", "latency_runtime", "latency_runtime_version", "state", "status",
            "reason", "over_budget", "proxy_cached", "budget_ms")

    def slim(r: dict[str, Any]) -> dict[str, Any]:
        d = {k: _finite_or_none(r.get(k)) for k in keep if k in r}
        if isinstance(d.get("config"), str):
            d["config"] = json.loads(d["config"])
        return d

    tmp = js.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"front": [slim(r) for r in front], "baselines": [slim(r) for r in baselines]},
                              indent=2, allow_nan=False))
    tmp.replace(js)
    tmp = cs.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in front:
            w.writerow(r)
    tmp.replace(cs)
    return js, cs
