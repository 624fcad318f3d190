"""Proxy fidelity reports (written by ``python -m nas.proxy fidelity``) as the explorer reads them.

Read-only: reports are found under ``runs/fidelity/`` (or ``$HARDNAS_RUNS``) and parsed as JSON;
a file that is not such a report is one line naming it and what is wrong, never a traceback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..paths import runs_dir
from ..proxy.fidelity_report import REPORT_FORMAT

__all__ = ["MAX_REPORT_BYTES", "find_reports", "read_report", "reference_noise", "score_rows", "tau_frame"]

MAX_REPORT_BYTES = 64 * 1024 * 1024  # a 30-network report is ~100 KB; anything near this is not one


def find_reports(folder: Path | None = None) -> list[Path]:
    """The ``*.report.json`` files under ``folder`` (default ``runs/fidelity``), newest first; none if it is missing."""
    folder = folder if folder is not None else runs_dir(create=False) / "fidelity"
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.report.json"), key=lambda p: p.stat().st_mtime, reverse=True)


def read_report(path: Path) -> dict[str, Any]:
    """The report in ``path``; `ValueError` with one line when it cannot be read or is not a fidelity report."""
    try:
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            raise ValueError(f"{size:,} bytes, more than the {MAX_REPORT_BYTES:,} a report can have")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"fidelity report {path}: cannot be read ({type(err).__name__}: {err})") from None
    except ValueError as err:
        raise ValueError(f"fidelity report {path}: {err}") from None
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"fidelity report {path}: format {found!r} is not allowed; expected {REPORT_FORMAT!r}")
    if not isinstance(data.get("tau"), dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"fidelity report {path}: no 'tau' table or 'rows' list; expected both")
    return data


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else math.nan


def tau_frame(report: Mapping[str, Any]) -> pd.DataFrame:
    """One row per score: Kendall tau against the reference, its 95 % bootstrap interval and n (NaN when too few)."""
    rows = [{"score": name, "tau": _num(t.get("tau")), "low": _num(t.get("low")), "high": _num(t.get("high")),
             "n": int(t.get("n") or 0)} for name, t in report["tau"].items() if isinstance(t, Mapping)]
    return pd.DataFrame(rows, columns=["score", "tau", "low", "high", "n"])


def score_rows(report: Mapping[str, Any], score: str) -> pd.DataFrame:
    """Per network: its name, reference accuracy and ``score`` (plot data; rows without both are left out)."""
    out = [{"name": str(r.get("name", "")), "reference": _num(r.get("reference")), "score": _num(r.get(score))}
           for r in report["rows"] if isinstance(r, Mapping)]
    frame = pd.DataFrame(out, columns=["name", "reference", "score"])
    return frame[frame["reference"].notna() & frame["score"].notna()].reset_index(drop=True)


def reference_noise(report: Mapping[str, Any]) -> str | None:
    """One markdown line on the reference's own seed agreement and what it allows (``--reference-seeds``), or None
    when the report has no such figures."""
    sec = report.get("reference_seeds")
    agreement = sec.get("agreement") if isinstance(sec, Mapping) else None
    if not isinstance(agreement, Mapping):
        return None
    a, one, mean = _num(agreement.get("tau")), _num(sec.get("ceiling_one_seed")), _num(sec.get("ceiling_mean"))
    seeds, n = _num(sec.get("seeds")), _num(sec.get("n"))
    if any(math.isnan(v) for v in (a, one, mean, seeds, n)):
        return None
    px = sec.get("tau", {}).get("proxy") if isinstance(sec.get("tau"), Mapping) else None
    px = px if isinstance(px, Mapping) else {}
    tau, low, high = _num(px.get("tau")), _num(px.get("low")), _num(px.get("high"))
    line = (f"**Reference noise**: its {seeds:.0f} seeds agree at τ {a:.3f} on "
            f"{n:.0f} networks, so no score can be expected above τ {one:.3f} against one seed, "
            f"{mean:.3f} against their mean")
    if not math.isnan(tau):
        line += f"; the proxy against their mean: τ {tau:.3f} [{low:.2f}, {high:.2f}]"
    return line + "."
