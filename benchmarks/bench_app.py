"""Time to first render of the explorer's Pareto page for studies of 100, 1,000 and 10,000 trials.

    python benchmarks/bench_app.py [--sizes 100 1000 10000] [--no-apptest]

Each size is a synthetic study (`nas.explore.synthetic`, real architectures and costs, made-up
accuracies) bulk-written to a temporary SQLite storage. For each, in this order and cold:

* load: list the studies, read every trial (the SQL fast path) and build the DataFrame;
* figure: latency column, feasibility and front under the budget, the display sample, the
  Pareto figure and its JSON (what streamlit ships to the browser);
* page: streamlit's AppTest running app.py to the end (Pareto view, selection detail, exports),
  with its caches cleared: the server-side time to first render;
* device switch: predicted latency for another device (one roofline evaluation per trial);
* the old path for reference: the same trials read through Optuna's API.

Prints seconds and ratios; never asserts on wall time (CPU figures on a shared, noisy VM).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _t(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--no-apptest", action="store_true", help="skip the AppTest page runs")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_app_"))
    os.environ["HARDNAS_RUNS"] = str(tmp / "runs")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore")
    import streamlit as st

    from nas.explore import analysis as A
    from nas.explore import data as D
    from nas.explore import figures as F
    from nas.explore.synthetic import synthetic_study

    print(f"bench_app: {os.cpu_count()} CPUs, storage in {tmp}")
    rows = []
    for n in args.sizes:
        url = f"sqlite:///{tmp / f'study{n}.db'}"
        _, t_write = _t(synthetic_study, url, "bench", n, seed=n, budget_ms=0.6, bulk=True)
        D.clear_storage_cache()
        (studies, t_list) = _t(D.list_studies, url)
        recs, t_read = _t(D.load_records, url, ["bench"])
        df, t_frame = _t(D.records_frame, recs)
        t_load = t_list + t_read + t_frame

        start = time.perf_counter()
        lat, src = A.latency_column(df, "predicted", "v100")
        feas = A.feasible_mask(df, lat, 0.6)
        front = A.front_mask(df, lat, feas)
        plotted = (df["state"] == "COMPLETE") & df["accuracy"].notna() & lat.notna()
        keep = front | df["baseline"]
        import pandas as pd

        shown = pd.Series(False, index=df.index)
        shown[plotted] = A.sample_for_display(df[plotted], keep[plotted], 4000)
        fig = F.pareto_figure(df, lat, src, feas, front, shown=shown, budget_ms=0.6)
        payload = fig.to_json()
        t_fig = time.perf_counter() - start
        drawn = sum(len(tr.x) for tr in fig.data if tr.type == "scattergl")

        t_page = float("nan")
        if not args.no_apptest:
            from streamlit.testing.v1 import AppTest

            os.environ["NAS_STORAGE"] = url
            st.cache_data.clear()
            D.clear_storage_cache()
            saved, sys.argv = sys.argv, ["app.py"]
            try:
                at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
                _, t_page = _t(at.run)
            finally:
                sys.argv = saved
            if at.exception:
                print(f"  page raised: {at.exception[0].value}")

        (_, t_switch) = _t(A.latency_column, df, "predicted", "a100")
        D.clear_storage_cache()
        _, t_optuna = _t(D.load_records, url, ["bench"], fast=False)
        rows.append(dict(n=n, write=t_write, load=t_load, read=t_read, fig=t_fig, page=t_page, switch=t_switch,
                         optuna=t_optuna, drawn=drawn, complete=int(plotted.sum()), front=int(front.sum()),
                         kb=len(payload) / 1024))
        r = rows[-1]
        print(f"  {n:>6} trials: load {r['load']:.2f} s, figure {r['fig']:.2f} s, page {r['page']:.2f} s, "
              f"device switch {r['switch']:.2f} s, Optuna-API read {r['optuna']:.2f} s (written in {r['write']:.1f} s)",
              flush=True)

    print("\n| trials | load (list + read + frame) | front + figure + JSON | page (AppTest, first run) | "
          "points drawn / completed | figure JSON | device switch | read via Optuna's API |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['load']:.2f} s | {r['fig']:.2f} s | {r['page']:.2f} s | {r['drawn']:,} / {r['complete']:,} "
              f"| {r['kb']:.0f} KiB | {r['switch']:.2f} s | {r['optuna']:.2f} s |")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"\nratios {b['n']:,} / {a['n']:,} trials ({b['n'] / a['n']:.0f}x the data): load {b['load'] / a['load']:.1f}x, "
              f"figure {b['fig'] / a['fig']:.1f}x, page {b['page'] / a['page']:.1f}x; "
              f"SQL read vs Optuna's API at {b['n']:,}: {b['optuna'] / b['read']:.1f}x faster")


if __name__ == "__main__":
    main()
