"""One-call GPU validation: the canonical networks measured, the seed claim, this device's profile,
predicted vs measured latency, a short search and the exported deploy model, within one deadline.

    python benchmarks/gpu_check.py [--device auto|cuda|cuda:N|cpu] [--quick] [--out DIR] [--deadline S]
                                   [--data CIFAR10.tar.gz] [--sections env,canonical,...] [--inject error:NAME]

Writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` (DIR: ``runs/`` or ``$HARDNAS_RUNS``) after
every section, atomically. Sections (docs/gpu.md): env, canonical, canonical_large, seed_claim,
profile, predict, search, export. Each gets a share of the deadline (default 420 s, ``--quick``
240 s); one that fails is one line in the report and the next one runs. ``--quick`` shrinks every
section (2 networks, 32 px, 2 random configs, a 2-trial search) so ``--device cpu --quick`` proves
the script without a GPU. Exit codes: 0 every selected section ok, 1 otherwise (the report says
which and why), 2 usage error, 130 stopped (Ctrl-C or SIGTERM; the report is written first).
"""

from __future__ import annotations

import time

START = time.monotonic()  # before the imports: the deadline counts the whole process

import dataclasses  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Sequence  # noqa: E402

import nas  # noqa: E402
from gpu_check_lib.common import Plan, Shared  # noqa: E402
from gpu_check_lib.harness import OK, Report, Stopped, failure_line, log, run_sections, start_watchdog  # noqa: E402
from gpu_check_lib.latency import (section_canonical, section_canonical_large, section_env,  # noqa: E402
                                   section_predict, section_profile, section_seed_claim)
from gpu_check_lib.render import render_markdown  # noqa: E402
from gpu_check_lib.workflow import section_export, section_search  # noqa: E402
from nas.cli import ArgumentParser, run  # noqa: E402
from nas.data import DATASET_NAMES  # noqa: E402
from nas.latency import InterferencePolicy  # noqa: E402
from nas.latency.devices import resolve_device  # noqa: E402
from nas.paths import runs_dir  # noqa: E402

SECTIONS: tuple[str, ...] = ("env", "canonical", "canonical_large", "seed_claim", "profile", "predict", "search",
                             "export")
FULL = Plan(models=tuple(nas.list_models()), resolution=224, large_resolution=1024, seed_resolutions=(512, 1024),
            random_configs=40, random_caps={"max_width": 128, "max_depth": 16}, search_trials=6,
            search_budget_factor=1.5, proxy_epochs=4.0, max_seconds=0.5, profile_budget_s=60.0, deadline_s=420.0,
            export_rounds=2, warmup=3)
# --quick proves the mechanics: a budget no candidate misses, so a noisy machine cannot starve the search
QUICK = Plan(models=("hardnet68", "resnet50"), resolution=32, large_resolution=64, seed_resolutions=(32, 64),
             random_configs=2, random_caps={"max_width": 64, "max_depth": 8}, search_trials=2,
             search_budget_factor=10.0, proxy_epochs=0.1, max_seconds=0.25, profile_budget_s=5.0, deadline_s=240.0,
             export_rounds=1, warmup=1, policy=InterferencePolicy(max_wait_s=0.3))
#: each section's weight in sharing out the time left (None: not time-boxed)
WEIGHTS: dict[str, float | None] = {"env": None, "canonical": 75, "canonical_large": 40, "seed_claim": 45,
                                    "profile": 60, "predict": 80, "search": 130, "export": 30}
FUNCTIONS = {"env": section_env, "canonical": section_canonical, "canonical_large": section_canonical_large,
             "seed_claim": section_seed_claim, "profile": section_profile, "predict": section_predict,
             "search": section_search, "export": section_export}


# -- command line --------------------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="gpu_check.py", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N or cpu (default auto)")
    p.add_argument("--quick", action="store_true", help="shrink every section (2 networks, 32 px, a 2-trial search)")
    p.add_argument("--out", default=None, help="folder for gpu_check.json/.md (default runs/ or $HARDNAS_RUNS)")
    p.add_argument("--deadline", type=float, default=None,
                   help=f"seconds for the whole check (default {FULL.deadline_s:g}, --quick {QUICK.deadline_s:g})")
    p.add_argument("--data", default=None, help="CIFAR-10 archive or folder for the search's proxy (default digits)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma list among {', '.join(SECTIONS)} (default all)")
    p.add_argument("--inject", action="append", default=[], metavar="error:SECTION|hang:SECTION",
                   help="tests only: make SECTION raise, or hang until the watchdog ends the check")
    return p


def _parse_inject(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        kind, _, name = v.partition(":")
        if kind not in ("error", "hang") or name not in SECTIONS:
            raise ValueError(f"inject: {v!r} is not allowed; expected error:SECTION or hang:SECTION with SECTION one "
                             f"of {', '.join(SECTIONS)}")
        out[name] = kind
    return out


def _parse_sections(text: str) -> set[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in SECTIONS]
    if not names or bad:
        raise ValueError(f"sections: {text!r} is not allowed; expected a comma list among {', '.join(SECTIONS)}")
    return set(names)


def _check_data(data: str | None) -> str | None:
    if data is None or data in DATASET_NAMES:
        return data
    if Path(data).exists():
        return str(Path(data).resolve())  # the search subprocess gets the same file whatever its folder
    raise ValueError(f"data: {data!r} does not exist; expected a CIFAR-10 archive (.tar.gz) or dataset folder, one of "
                     f"{', '.join(DATASET_NAMES)}, or no --data for the embedded digits")


def _out_dir(out: str | None) -> Path:
    path = Path(out) if out is not None else runs_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".gpu_check_probe."):
            pass
    except OSError as err:
        raise ValueError(f"out: {str(path)!r} is not writable ({err.strerror or failure_line(err)}); "
                         "expected a writable folder") from None
    return path


def _terminate(signum: int, frame: object) -> None:
    raise Stopped(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = QUICK if args.quick else FULL
    deadline = plan.deadline_s if args.deadline is None else args.deadline
    if not (0 < deadline < 86_400):
        raise ValueError(f"deadline: {args.deadline!r} is not allowed; expected seconds above 0 and below one day")
    selected, inject = _parse_sections(args.sections), _parse_inject(args.inject)
    data, device = _check_data(args.data), resolve_device(args.device)
    out = _out_dir(args.out)
    header = {"command": " ".join(["python benchmarks/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]),
              "mode": "quick" if args.quick else "full", "device": str(device), "deadline_s": deadline,
              "data": data or "digits", "plan": {k: v for k, v in dataclasses.asdict(plan).items() if k != "policy"},
              "interference_policy": dataclasses.asdict(plan.policy), "injected": inject}
    report = Report(out, header, list(SECTIONS), selected, render_markdown, START)
    shared = Shared(device, plan, data, out, report)
    signal.signal(signal.SIGTERM, _terminate)
    grace = min(45.0, max(10.0, 0.1 * deadline))
    start_watchdog(report, START + deadline + grace)
    log(START, f"{header['mode']} check on {device}; deadline {deadline:g} s (+{grace:g} s grace); writing {out}")
    steps = [(n, WEIGHTS[n], lambda sec, fn=FUNCTIONS[n]: fn(sec, shared)) for n in SECTIONS]
    try:
        run_sections(report, steps, selected, START + deadline, inject)
    except (Stopped, KeyboardInterrupt) as err:
        report.kill_children()
        report.stop_running(f"partial: stopped ({err or 'Ctrl-C'})")
        report.data["stopped"] = str(err) or "Ctrl-C"
        report.write()
        log(START, f"stopped ({err or 'Ctrl-C'}); report written to {report.json_path}")
        return 130
    report.data["finished"] = True
    report.write()
    statuses = {n: s["status"] for n, s in report.data["sections"].items() if n in selected}
    for n, s in statuses.items():
        print(f"  {n:<16} {s}")
    print(f"wrote {report.json_path} and {report.md_path}")
    return 0 if all(s == OK for s in statuses.values()) else 1


if __name__ == "__main__":
    run(main, "gpu_check.py")
