"""The explorer as a user drives it, timed: first render and each interaction on a large study.

    python benchmarks/bench_app.py [--trials 5000] [--baseline REV] [--rounds 2] [--tables]

A synthetic study (`nas.explore.synthetic`: real architectures and costs, made-up accuracies)
is bulk-written to a temporary SQLite storage. Then, in a fresh process per run, streamlit's
AppTest drives ``app.py`` through what a user does: the first render, switching the target device at once (before
the app's background warm-up is done), a rerun with nothing changed, a rerun after 6 s idle (a live search may have written meanwhile), picking another
architecture, moving the budget, switching the target device, the Trade-offs, Compare and
Trials views, and back. Library imports (torch, optuna, plotly...), paid once when the server
starts, are timed apart.

``--baseline REV`` runs the same steps on ``app.py`` + ``nas/`` of a git revision, in the same
run and alternating with this tree, so the two columns saw the same machine load. Prints
seconds and ratios; asserts nothing about time (CPU figures on a shared, noisy machine).
AppTest times the server side (the script run); the browser's drawing comes on top.

``--tables`` times instead what a first prediction of the study costs per architecture, in a
fresh process per run: parsing its stored config and building its kernel table (the version's
`nas.latency.warm_tables` on the parsed configs, caches empty), in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (label, action) in the order they run; an action a version's page does not offer is "n/a"
STEPS = ("first render", "switch device at once (t4)", "rerun, nothing changed", "rerun after 6 s idle", "pick another architecture",
         "move the budget", "switch device (a100)", "Trade-offs view", "Compare view", "Trials view",
         "back to the Pareto view")


def _worker(root: Path, url: str) -> dict[str, float | str]:
    """Run `STEPS` on ``root``'s app.py in this process; seconds per step (or why not)."""
    sys.path.insert(0, str(root))
    os.environ["NAS_STORAGE"] = url
    sys.argv = ["app.py"]
    import warnings

    warnings.filterwarnings("ignore")
    out: dict[str, float | str] = {}
    start = time.perf_counter()
    import numpy, optuna, pandas, plotly.graph_objects, scipy.stats, streamlit, torch  # noqa: E401,F401
    from streamlit.testing.v1 import AppTest

    out["library imports"] = time.perf_counter() - start
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    at = AppTest.from_file(str(root / "app.py"), default_timeout=900)

    def timed(label: str, action) -> None:
        try:
            t0 = time.perf_counter()
            action()
            out[label] = time.perf_counter() - t0
        except (KeyError, ValueError, IndexError) as err:  # the page of that version lacks the widget
            out[label] = f"n/a ({type(err).__name__})"
            return
        if at.exception:
            out[label] = f"raised: {at.exception[0].value.splitlines()[0][:80]}"

    def widget(kind: str, key: str):
        return getattr(at, kind)(key=key)

    def budget():
        sliders = [s for s in at.slider if s.key == "budget"] or list(at.slider)
        s = sliders[0]
        return s.set_value(round(0.8 * s.value, 6)).run()

    def view(name: str):
        def go():
            r = widget("radio", "view")
            if name not in r.options:
                raise KeyError(name)
            r.set_value(name).run()
        return go

    timed("first render", at.run)
    # before the background warm-up of the kernel tables (`nas.explore.profiles.warm_up`) is done
    timed("switch device at once (t4)", lambda: widget("selectbox", "device").set_value("t4").run())
    timed("rerun, nothing changed", at.run)
    time.sleep(6)
    timed("rerun after 6 s idle", at.run)
    timed("pick another architecture", lambda: widget("selectbox", "selected").select_index(3).run())
    timed("move the budget", budget)
    timed("switch device (a100)", lambda: widget("selectbox", "device").set_value("a100").run())
    timed("Trade-offs view", view("Trade-offs"))
    timed("Compare view", view("Compare"))
    timed("Trials view", view("Trials"))
    timed("back to the Pareto view", view("Pareto front"))
    return out


def _tables_worker(root: Path, stored: Path) -> dict[str, float]:
    """Milliseconds per architecture to parse a stored config and to build its kernel table, with ``root``'s code."""
    sys.path.insert(0, str(root))
    from nas.config import ArchConfig
    from nas.latency import warm_tables

    data = json.loads(stored.read_text())
    configs, n = data["configs"], len(data["configs"])
    t0 = time.perf_counter()
    parsed = [ArchConfig.from_json(c) for c in configs]
    t1 = time.perf_counter()
    built = warm_tables(parsed, data["resolution"])
    t2 = time.perf_counter()
    if built != n:
        raise SystemExit(f"bench_app: {built} of {n} kernel tables built")
    return {"parse a stored config (ms)": 1e3 * (t1 - t0) / n, "build its kernel table (ms)": 1e3 * (t2 - t1) / n}


def _run_worker(root: Path, url: str, runs: Path, tables: Path | None = None) -> dict[str, float | str]:
    env = {**os.environ, "HARDNAS_RUNS": str(runs), "PYTHONPATH": str(root)}
    extra = ["--tables-from", str(tables)] if tables else []
    proc = subprocess.run([sys.executable, __file__, "--worker", str(root), "--url", url, *extra], env=env, cwd=runs,
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"bench_app: the run on {root} failed (exit {proc.returncode}): {tail}")
    return json.loads(lines[-1])


def _checkout(rev: str, into: Path) -> Path:
    """``app.py`` and ``nas/`` of git revision ``rev``, extracted into ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "app.py", "nas"], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"bench_app: --baseline {rev!r}: {archive.stderr.decode().strip().splitlines()[-1]}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _cell(values: list, unit: str = " s") -> str:
    nums = [v for v in values if isinstance(v, float)]
    if not nums:
        return str(values[0]) if values else "–"
    return f"{statistics.median(nums):.2f}{unit}" + (f" ({min(nums):.2f}–{max(nums):.2f})" if len(nums) > 1 else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=5000)
    p.add_argument("--baseline", default=None, help="git revision to time side by side with this tree")
    p.add_argument("--rounds", type=int, default=2, help="runs per version (alternating)")
    p.add_argument("--tables", action="store_true", help="time parsing configs and building kernel tables instead")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--url", default=None, help=argparse.SUPPRESS)
    p.add_argument("--tables-from", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        root = Path(args.worker)
        print(json.dumps(_tables_worker(root, Path(args.tables_from)) if args.tables_from else _worker(root, args.url)))
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench_app_"))
    os.environ["HARDNAS_RUNS"] = str(tmp / "runs")
    sys.path.insert(0, str(ROOT))
    from nas.explore.synthetic import synthetic_study

    url = f"sqlite:///{tmp / 'study.db'}"
    t0 = time.perf_counter()
    synthetic_study(url, "bench", args.trials, seed=args.trials, budget_ms=0.6, bulk=True)
    print(f"bench_app: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.trials:,} trials written "
          f"in {time.perf_counter() - t0:.1f} s to {url}", flush=True)
    stored, count = None, f"{args.trials:,} trials"
    if args.tables:
        import optuna

        study = optuna.load_study(study_name="bench", storage=url)
        stored = tmp / "configs.json"
        stored.write_text(json.dumps({"resolution": study.user_attrs["settings"]["resolution"],
                                      "configs": sorted({t.user_attrs["config"] for t in study.trials})}))
        count = f"{len(json.loads(stored.read_text())['configs']):,} architectures of {args.trials:,} trials"
    versions = {"this tree": ROOT}
    if args.baseline:
        versions = {f"baseline {args.baseline}": _checkout(args.baseline, tmp / "baseline"), **versions}
    results: dict[str, list[dict]] = {v: [] for v in versions}
    for r in range(args.rounds):
        for name, root in versions.items():
            runs = tmp / f"runs-{len(results[name])}-{abs(hash(name)) % 1000}"
            runs.mkdir()
            got = _run_worker(root, url, runs, stored)
            results[name].append(got)
            first = next(iter(got)) if args.tables else "first render"
            print(f"  round {r + 1}, {name}: {first} {_cell([got.get(first)], '' if args.tables else ' s')}", flush=True)

    labels = list(next(iter(results.values()))[0]) if args.tables else ["library imports", *STEPS]
    unit = "" if args.tables else " s"
    names = list(versions)
    print(f"\n{count}, load average now {os.getloadavg()[0]:.1f} (median of {args.rounds}, range)\n")
    print("| step | " + " | ".join(names) + (" | ratio |" if len(names) == 2 else " |"))
    print("|---" * (len(names) + 1 + (len(names) == 2)) + "|")
    for label in labels:
        cells = [_cell([run.get(label, "–") for run in results[n]], unit) for n in names]
        ratio = ""
        if len(names) == 2:
            a, b = ([run.get(label) for run in results[n]] for n in names)
            a, b = [v for v in a if isinstance(v, float)], [v for v in b if isinstance(v, float)]
            ratio = f" {statistics.median(a) / statistics.median(b):.1f}x |" if a and b else " – |"
        print(f"| {label} | " + " | ".join(cells) + " |" + ratio)


if __name__ == "__main__":
    main()
