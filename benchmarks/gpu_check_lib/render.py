"""The Markdown page of a `gpu_check.py` report, rendered from its JSON alone.

    python benchmarks/gpu_check_lib/render.py runs/gpu_check.json > gpu_check.md
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

TITLES = {
    "env": "Environment",
    "canonical": "Canonical networks, batch 1 (measured)",
    "canonical_large": "Canonical networks at the large resolution, batch 1 (measured)",
    "seed_claim": "Seed claim: HarDNet68 / ResNet-50 latency (measured)",
    "profile": "This device's profile (profile_device)",
    "predict": "Predicted vs measured latency",
    "search": "Search on this device",
    "export": "Exported model vs eager (measured)",
}


def _ms(v: Any) -> str:
    return "–" if v is None else f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def _num(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _flag(item: dict[str, Any]) -> str:
    """Footnote marks: * disturbed (not a quiet figure), † timing cap hit before the spread settled."""
    return ("*" if item.get("disturbed") else "") + ("†" if item.get("capped") else "")


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def _env(r: dict[str, Any]) -> list[str]:
    keys = ("device_name", "device", "capability", "memory_gib", "multiprocessors", "driver", "torch", "cuda_runtime",
            "cudnn", "tf32", "python", "platform", "cpu", "cpu_count", "torch_threads", "fingerprint", "hardnas_commit")
    lines = [f"- {k}: `{r[k]}`" for k in keys if r.get(k) is not None]
    lines += [f"- {p}: {why}" for p, why in (r.get("precisions") or {}).items()]
    return lines


def _latency_grid(r: dict[str, Any]) -> list[str]:
    items = r.get("items") or []
    precisions = list(dict.fromkeys(i["precision"] for i in items))
    models = list(dict.fromkeys(i["model"] for i in items))
    cell = {(i["model"], i["precision"]): i for i in items}
    rows = []
    for m in models:
        row = [m]
        for p in precisions:
            i = cell.get((m, p))
            row.append("–" if i is None else f"failed: {i['error']}" if i.get("error") else
                       f"{_ms(i['median_ms'])}{_flag(i)} (IQR {_pct(i.get('rel_iqr'))})")
        rows.append(row)
    lines = [f"Resolution {r.get('resolution')} px, batch 1; median ms (IQR of the runs)."]
    lines += [f"- {p}: {why}" for p, why in (r.get("precisions") or {}).items() if why != "measured"]
    if r.get("note"):
        lines.append(f"- {r['note']}")
    return lines + [""] + _table(["network", *(f"{p} ms" for p in precisions)], rows) if rows else lines


def _seed(r: dict[str, Any]) -> list[str]:
    pub = r.get("published") or {}
    lines = ["Published: " + "; ".join(f"{k}: {v:.2f}" for k, v in pub.items()) + ".", ""]
    rows = [[str(x["resolution"]), x["precision"], x["mode"], _ms(x["hardnet68_ms"]), _ms(x["resnet50_ms"]),
             f"{x['ratio']:.3f}{'*' if x.get('disturbed') else ''}"] for x in r.get("rows") or []]
    return lines + _table(["px", "precision", "mode", "HarDNet68 ms", "ResNet-50 ms", "ratio"], rows)


def _profile(r: dict[str, Any]) -> list[str]:
    p = r.get("profile")
    if not p:
        return ["No profile recorded."]
    peaks = ", ".join(f"{k} {v:,.0f}" for k, v in (p.get("peak_gflops") or {}).items())
    effs = ", ".join(f"{k.removesuffix('_eff')} {v:.3g}" for k, v in p.items() if k.endswith("_eff") and v is not None)
    prov = p.get("provenance") or {}
    return [f"- `{p.get('name')}`: {p.get('description')}", f"- source: {p.get('source')}",
            f"- peak GFLOP/s: {peaks}; bandwidth {_num(p.get('bandwidth_gbs'), 0)} GB/s; overhead "
            f"{_num(p.get('overhead_us'), 2)} us/kernel", f"- efficiencies: {effs}",
            f"- other work while profiling: {'yes (not saved)' if prov.get('disturbed') else 'no'}; "
            f"budget {r.get('budget_s')} s, took {r.get('wall_s')} s"]


def _predict(r: dict[str, Any]) -> list[str]:
    lines = [f"- closest published profile by name: {r.get('published_match')}"]
    cal = r.get("calibration") or {}
    if cal:
        lines.append(f"- calibration on a seeded half ({cal.get('fit', '?')} fitted, {cal.get('held_out', '?')} held out): "
                     f"{cal.get('reason')}")
    lines += [f"- `{p['label']}`: {p['source']}" for p in r.get("profiles") or []]
    rows = [[f["profile"], f["group"] + (" (disturbed figures only)" if f.get("disturbed_only") else ""), str(f["n"]),
             _num(f.get("kendall_tau")), _pct(f.get("within_10")), _pct(f.get("within_25")),
             _pct(f.get("median_abs_err")), _num(f.get("median_ratio"), 2)]
            for f in r.get("fidelity") or [] if f.get("n")]
    lines += ["", "Held out: the half of the fp32 measurements the calibration did not see; the calibrated "
              "profile's other rows include its fit data.", ""]
    return lines + _table(["profile", "group", "n", "Kendall τ", "within ±10%", "within ±25%", "median \\|err\\|",
                           "median pred/meas"], rows)


def _search(r: dict[str, Any]) -> list[str]:
    s = r.get("study") or {}
    data = r.get("data") or {}
    lines = [f"- `python {r.get('command', '?')}`", f"- budget {_ms(r.get('budget_ms'))} ms ({r.get('budget_rule')}); "
             f"data {data.get('name')} ({data.get('train')} train / {data.get('test')} test, prepared in "
             f"{data.get('prepare_s')} s)", f"- exit code {r.get('returncode')}, {r.get('wall_s')} s"]
    if r.get("study_error"):
        lines.append(f"- study not readable: {r['study_error']}")
    if s:
        best = s.get("best")
        lines += [f"- {s['trials']} trials {s['states']}: {s['evaluated']} evaluated, {s['gated']} rejected by the "
                  f"gate, {s['over_budget']} over budget; gate active: {'yes' if s['gate_active'] else 'no'}; "
                  f"latency sources {s['latency_sources']}",
                  f"- proxy training: median {_num(s.get('proxy_wall_s_median'), 1)} s per trial, "
                  f"{_num(s.get('proxy_images_per_s_median'), 0)} images/s",
                  f"- best feasible: {best}" if best else "- no feasible evaluated trial"]
        rows = [[str(t.get("number")), t.get("state", ""), t.get("seed") or t.get("arch_id", ""), _ms(t.get("latency_ms")),
                 t.get("latency_source", ""), _ms(t.get("gate_predicted_ms")), _num(t.get("accuracy")),
                 str(t.get("reason") or "")] for t in s.get("rows") or []]
        lines += [""] + _table(["#", "state", "network", "latency ms", "source", "gate predicted ms", "accuracy",
                                "reason"], rows)
    tail = r.get("output_tail") or []
    if tail:
        lines += ["", "Last lines of the search's output:", "", "```", *tail, "```"]
    return lines


def _export(r: dict[str, Any]) -> list[str]:
    rows = [[x["variant"], x["precision"], _ms(x["median_ms"]) + _flag(x), _num(x.get("vs_eager")),
             "–" if x.get("max_abs_diff") is None else f"{x['max_abs_diff']:.1e}"] for x in r.get("rows") or []]
    lines = [f"{r.get('model')} at {r.get('resolution')} px, batch 1, same weights; medians over rounds.", ""]
    lines += _table(["variant", "precision", "median ms", "/ eager", "max \\|diff\\| vs eager"], rows)
    lines += [f"- {f['variant']}: export failed: {f['error']}" for f in r.get("failures") or []]
    return lines


RENDERERS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "env": _env, "canonical": _latency_grid, "canonical_large": _latency_grid, "seed_claim": _seed,
    "profile": _profile, "predict": _predict, "search": _search, "export": _export,
}


def render_markdown(report: dict[str, Any]) -> str:
    """The whole page: header, one status table, then every section that recorded something."""
    sections = report.get("sections") or {}
    env = (sections.get("env") or {}).get("result") or {}
    where = env.get("device_name") or report.get("device")
    state = "finished" if report.get("finished") else f"stopped ({report['stopped']})" if report.get("stopped") else \
        "in progress (or killed)"
    lines = [f"# GPU check: {where} ({report.get('mode')} mode)", "",
             f"`{report.get('command')}` — started {report.get('started_utc')}, updated {report.get('updated_utc')}, "
             f"{report.get('elapsed_s')} s of {report.get('deadline_s')} s; {state}.", "",
             "Every figure is measured on the device above unless its column says predicted. "
             "\\* disturbed (other work ran; not a quiet figure), † timing cap hit before the spread settled.", ""]
    items = [i for s in sections.values() for key in ("items", "budget_measurement")
             for i in (s.get("result") or {}).get(key) or [] if i.get("median_ms") is not None]
    disturbed = sum(bool(i.get("disturbed")) for i in items)
    if disturbed:
        lines += [f"**{disturbed} of {len(items)} measurements were disturbed** (the device was busy with other work); "
                  "their figures are not quiet ones.", ""]
    lines += _table(["section", "status", "seconds", "allowed s"],
                    [[n, s.get("status", ""), _num(s.get("seconds"), 1), _num(s.get("allowance_s"), 0)]
                     for n, s in sections.items()])
    for name, sec in sections.items():
        result = sec.get("result") or {}
        if not result and not sec.get("status", "").startswith("error"):
            continue
        lines += ["", f"## {TITLES.get(name, name)} — {sec.get('status')}", ""]
        if sec.get("error_at"):
            lines += [f"Failed at `{sec['error_at']}`.", ""]
        if result:
            lines += RENDERERS.get(name, lambda r: [f"- {k}: {v}" for k, v in r.items()])(result)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/gpu_check_lib/render.py REPORT.json")
    with open(sys.argv[1], encoding="utf-8") as f:
        sys.stdout.write(render_markdown(json.load(f)))
