"""``python -m nas.search --budget 30ms``: search the space for fast, accurate architectures.

With no other option it searches the hardnet space on this machine: latency measured on the
device at hand (the CPU where there is no GPU), accuracy from a short proxy training on the
embedded digits data, 20 evaluated trials, the canonical configs of the space enqueued first as
baselines.
Rerunning the same command resumes the study. Exit codes: 0 done, 2 usage error, 3 fell short (fewer
evaluated trials than --trials, or a front or baseline whose latency other work kept from being
measured: the last line says why and what to do), 130 interrupted.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from ..cli import ArgumentParser, quiet_swallowed_interrupt, run
from ..latency.runtimes import MEASURE_RUNTIMES
from ..paths import runs_dir
from ..resolution import parse_resolution, resolution_arg
from .results import shortfall, unmeasured_note
from .settings import SearchSettings, check_study_name, parse_budget, parse_objectives

EXIT_SHORT = 3
"""Exit code of a search that fell short: fewer evaluated trials than --trials, or latencies of its front or
baselines that could only be predicted (2: usage error, 130: interrupted)."""


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise ValueError(f"{text!r} is not a positive integer")
    return v


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m nas.search", description=__doc__.splitlines()[0])
    p.add_argument("--budget", required=True, help="latency budget with a unit: 30ms, 0.03s, 30000us")
    p.add_argument("--space", default="hardnet", help="hardnet, tresnet, hybrid, or a YAML space file (default hardnet)")
    p.add_argument("--trials", type=int, default=20,
                   help="evaluated trials the study should hold (default 20); candidates the gate or the budget "
                        "reject before training do not count, up to 25x this many")
    p.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="where latency is measured and proxies train: auto, cpu, cuda[:N]")
    p.add_argument("--resolution", type=resolution_arg, default=224,
                   help="input size for latency and cost: 224 or HxW, height x width, e.g. 1080x1920 (default 224)")
    p.add_argument("--runtime", default="eager",
                   help=f"runtime measured latencies run under: {', '.join(MEASURE_RUNTIMES)} (default eager)")
    p.add_argument("--batch", type=int, default=1, help="batch size for latency (default 1)")
    p.add_argument("--precision", default="fp32", help="fp32, fp16 or bf16 for latency")
    p.add_argument("--latency", default="measured",
                   help="measured, or predicted:<device> (e.g. predicted:h200; python -m nas.latency --list shows them, "
                        "runs/profiles/<device>.yaml adds your own)")
    p.add_argument("--proxy", default="train", help="train (short proxy training) or zero-cost")
    p.add_argument("--zero-cost-metric", default="naswot", help="synflow, naswot or grad_norm (with --proxy zero-cost)")
    p.add_argument("--proxy-epochs", type=float, default=4.0, help="epochs of the training proxy (default 4)")
    p.add_argument("--data", default="digits", help="digits (embedded), cifar10, cifar100 or a path (default digits)")
    p.add_argument("--objectives", default="accuracy,latency,cio", help="comma list among accuracy, latency, cio, macs, params")
    p.add_argument("--sampler", default=SearchSettings.sampler,
                   help="tpe, nsga2, random, evolution (mutations of the seeds and the front that fit the budget), "
                        "budget (random proposals nearest the budget edge) or hvi (the proposal that would grow the "
                        f"front most per second of training) (default {SearchSettings.sampler})")
    p.add_argument("--fidelity", default="median",
                   help="when a proxy training stops early: median (below the median at an epoch) or halving "
                        "(successive halving: top third at epochs 1, 3, 9...) (default median)")
    p.add_argument("--gate-factor", type=float, default=2.0,
                   help="reject before training when the predicted latency exceeds this many budgets (default 2)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///runs/nas.db) or journal:PATH")
    p.add_argument("--study-name", default=None, help="default: derived from space, budget, latency, proxy and data")
    p.add_argument("--backend", default="optuna", help="optuna or ray")
    p.add_argument("--workers", type=int, default=1, help="parallel trials (ray backend)")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="GPUs each Ray trial asks for on CUDA (default 1; a fraction shares a GPU)")
    p.add_argument("--ray-address", default=None, help="join an existing Ray cluster (default: a local one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _attach_values(argv: list[str]) -> list[str]:
    """``--budget -5ms`` reaches the budget parser (and its message) instead of argparse's."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in ("--budget", "--timeout") and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _interrupt(signum: int, frame: object) -> None:
    from .lifecycle import interrupt_now, request_stop

    request_stop()
    if interrupt_now():  # else the search stops at its next safe point, never inside a storage write
        raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_attach_values(list(sys.argv[1:] if argv is None else argv)))
    if argv is None:
        # a process started in the background may inherit SIGINT as ignored: Ctrl-C and `kill`
        # (SIGTERM) must still stop the search cleanly and print the front so far
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        from .lifecycle import stop_requested

        # Python swallows an interrupt raised in a GC callback (and prints "Exception ignored"): the stop
        # is requested all the same, so that is no traceback on the user's screen
        sys.unraisablehook = quiet_swallowed_interrupt(stop_requested)
    settings = SearchSettings(
        budget_ms=parse_budget(args.budget), space=args.space, trials=args.trials, timeout_s=args.timeout,
        seed=args.seed, device=args.device, resolution=args.resolution, batch=args.batch, precision=args.precision,
        latency=args.latency, proxy=args.proxy, zero_cost_metric=args.zero_cost_metric, data=args.data,
        proxy_epochs=args.proxy_epochs, objectives=parse_objectives(args.objectives), sampler=args.sampler,
        gate_factor=args.gate_factor, fidelity=args.fidelity, backend=args.backend, workers=args.workers,
        gpus_per_trial=args.gpus_per_trial, runtime=args.runtime,
    )
    study_name = check_study_name(args.study_name if args.study_name is not None else settings.default_study_name())
    _validate_early(settings)
    from . import run_search
    from .optuna_backend import default_storage, record_run

    storage = args.storage or default_storage()
    folder = runs_dir() / study_name
    interrupted = False
    try:
        study = run_search(settings, storage, study_name, progress=not args.no_progress, ray_address=args.ray_address,
                           on_open=lambda _study: record_run(folder, settings, storage, study_name))
    except KeyboardInterrupt:
        interrupted = True
        study = _read_study(storage, study_name)
    records = _report(study, settings, folder) if study is not None else None
    if interrupted:
        print("nas.search: interrupted; completed trials are saved, rerun the same command to resume", file=sys.stderr)
        return 130
    if records is None:
        return 0
    short = [line for line in (shortfall(records, settings.trials, settings.timeout_s),
                               unmeasured_note(records) if settings.latency_kind == "measured" else None) if line]
    for line in short:
        print(f"nas.search: fell short: {line}", file=sys.stderr)
    return EXIT_SHORT if short else 0


def _read_study(storage: str, study_name: str) -> Any:
    """The study as far as it got, read-only; None when the run was stopped before it existed."""
    import optuna

    from .storage import open_storage_readonly

    try:
        return optuna.load_study(study_name=study_name, storage=open_storage_readonly(storage))
    except (KeyError, ValueError):
        return None


def _validate_early(s: SearchSettings) -> None:
    """Fail on bad values before any work: the space, the data, the device."""
    import torch

    from ..data import load_dataset
    from ..latency.devices import resolve_device, resolve_precision
    from ..space import load_space

    space = load_space(s.space)
    # Ray trials run where the cluster has GPUs: their device is checked against it once Ray is up
    dev = torch.device("cuda") if s.backend == "ray" and s.device == "cuda" else resolve_device(s.device)
    if s.latency_kind == "measured":
        resolve_precision(s.precision, dev)
    load_dataset(None if s.data == "digits" else s.data, seed=s.seed)
    strides = {lay: 4 * 2 ** lay.count("R") for lay in space.layouts}
    side = min(parse_resolution(s.resolution))
    for lay, stride in strides.items():
        if side < stride:
            raise ValueError(f"resolution: {s.resolution!r} is not allowed; expected each side at least "
                             f"{max(strides.values())} (layout {lay!r} of space {space.name!r} has stride {stride})")


def _report(study, s: SearchSettings, folder: Path) -> list[dict[str, Any]]:
    """Print the summary, the front and the baselines, write the front's files; returns the trial records."""
    from ..config import ArchConfig
    from .results import current, format_table, is_interrupted, pareto_front, trial_records, write_front, yardstick

    recs = trial_records(study)
    front = pareto_front(recs)
    interrupted = [r for r in recs if is_interrupted(r["state"], r)]
    baselines = [r for r in current(recs) if r.get("seed")]
    states = {st: sum(r["state"] == st for r in recs) for st in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    remeasured = sum(1 for r in recs if r.get("remeasure_of") is not None and r["state"] in ("COMPLETE", "PRUNED"))
    gated = sum(1 for r in recs if r.get("status") == "rejected" and r.get("remeasure_of") is None)
    failed = states["FAIL"] - len(interrupted)
    others = "".join(f", {states[st]} {st.lower()}" for st in ("RUNNING", "WAITING") if states[st])
    again = f", {remeasured} latency re-measurements" if remeasured else ""
    print(f"\nstudy {study.study_name}: {len(recs)} trials ({states['COMPLETE']} complete, {states['PRUNED']} pruned "
          f"of which {gated} rejected before training, {failed} failed, {len(interrupted)} interrupted{others}{again}); "
          f"budget {s.budget_ms:g} ms "
          f"({'measured on ' + s.device if s.latency_kind == 'measured' else 'predicted for ' + str(s.latency_device)})")
    if failed:
        print(f"{failed} failed candidates count toward --trials (each crashed, went NaN or ran out of memory; "
              "the reasons are in the trials' 'reason')")
    if interrupted:
        print(f"{len(interrupted)} interrupted trials (process killed or stopped) do not count; each is run again "
              "with the same parameters")
    print(format_table(front, f"\nPareto front (feasible: latency <= {s.budget_ms:g} ms; accuracy = "
                              f"{'proxy training on ' + s.data if s.proxy == 'train' else s.zero_cost_metric}):"))
    print(format_table([{**b, "name": f"{b.get('seed')}{'' if b.get('feasible') else ' *'}"} for b in baselines],
                       "\nBaselines (canonical configs, evaluated like any candidate; * = over the budget or not "
                       "completed: infeasible, never on the front):"))
    lines = yardstick(front, baselines, s.budget_ms)
    if lines:
        print("\nThe front beside the baselines:\n" + "\n".join(lines))
    js, cs = write_front(folder, front, baselines)
    print(f"\nwrote {js} and {cs}")
    feasible = [r for r in front if r.get("accuracy") is not None]
    if feasible:
        best = max(feasible, key=lambda r: r["accuracy"])
        path = folder / "best.json"
        cfg = ArchConfig.from_json(best["config"]).replace(name=f"{study.study_name}-trial{best['number']}")
        cfg.save(path)
        print(f"best feasible architecture: trial {best['number']} ({best['arch_id']}), accuracy {best['accuracy']:.3f}, "
              f"{best['latency_ms']:.2f} ms -> {path}")
    return recs


def cli() -> None:
    """Console-script entry point."""
    run(main, "nas.search")


if __name__ == "__main__":
    cli()
