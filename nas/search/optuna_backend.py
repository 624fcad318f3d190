"""The Optuna backend: `study.optimize` over the trial lifecycle of `nas.search.lifecycle`.

* canonical configs that are points of the space are enqueued first (and marked as baselines);
* architectures are deduplicated by ``arch_id``: a repeat reuses the first evaluation;
* the cheap gate and the budget reject hopeless candidates before any training (PRUNED, with
  the reason); a crashing or NaN candidate becomes a FAIL with its reason and the search goes on;
* a training stops early (PRUNED) by the ``--fidelity`` rule (`nas.search.fidelity`): below the median, or
  out of the top third at a successive-halving rung;
* every metric is a trial user attribute; the storage is SQLite in ``runs/`` by default, any
  RDB URL (PostgreSQL...) or a journal file;
* a trial whose process died (kill -9) or was stopped (Ctrl-C) is failed as ``interrupted``
  (at once on this host, by heartbeat elsewhere), does not count and is queued to run again
  with the same parameters, so a rerun of the same command resumes with nothing lost.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import optuna

from ..latency.devices import resolve_device
from ..space import SearchSpace, load_space
from .fidelity import stop_rule
from .lifecycle import (DeadlineReached, Outcome, claim, enqueue_seeds, evaluated_count, interrupted, interruptible,
                        open_study, record, report_failure, requeue_interrupted, say, search_done, settle,
                        stop_requested)
from .results import is_gate_rejection
from .settings import VOLATILE, SearchSettings
from .storage import default_storage

__all__ = ["CandidateFailed", "default_storage", "record_run", "run_optuna"]


class CandidateFailed(Exception):
    """A candidate that crashed, went NaN or ran out of memory (the trial becomes FAIL)."""


class _StopWhenDone:
    """Stop at ``trials`` evaluated trials, or at REJECTION_CAP times that many finished ones (all rejected)."""

    def __init__(self, trials: int) -> None:
        self.trials = trials

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if search_done(study, self.trials) or stop_requested():
            study.stop()


class _GateCalibration:
    """Refit this CPU's latency profile on the search's own clean measurements every 8 of them.

    The cheap gate predicts CPU latency from the micro-benchmarked profile, which is optimistic
    by 1.5-2x before calibration. Disturbed measurements are left out, the fit is bounded, and it
    replaces the profile (in runs/, for later searches too) only if it predicts the newest
    measurements better; either way one line says what happened.
    """

    def __init__(self, s: SearchSettings) -> None:
        self.s = s
        self.fitted_at = 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from ..config import ArchConfig
        from ..latency import calibrate

        if self.s.latency_kind != "measured" or resolve_device(self.s.device).type != "cpu" or self.s.runtime != "eager":
            return  # the saved cpu profile models eager PyTorch: figures under another runtime must not refit it
        clean = {}
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):  # oldest first: newest held out
            a = t.user_attrs
            if a.get("latency_source") == "measured" and a.get("latency_ms") and not a.get("latency_disturbed"):
                clean[a["arch_id"]] = (a["config"], a["latency_ms"])
        if len(clean) >= 8 and len(clean) >= self.fitted_at + 8:
            configs = [ArchConfig.from_json(c) for c, _ in clean.values()]
            cal = calibrate(configs, [ms for _, ms in clean.values()], "cpu", resolution=self.s.resolution,
                            batch=self.s.batch, precision=self.s.precision, save=True)
            self.fitted_at = len(clean)
            say(f"nas.search: latency gate: {cal.reason}")


def _objective(study: optuna.Study, space: SearchSpace, s: SearchSettings,
               deadline: float | None) -> Callable[[optuna.Trial], list[float]]:
    stop = stop_rule(study, s)

    def objective(trial: optuna.Trial) -> list[float]:
        try:
            if stop_requested():
                raise KeyboardInterrupt
            claimed = claim(trial, space, s)
            result = claimed if isinstance(claimed, Outcome) else settle(
                study, trial.number, claimed, s, deadline, on_epoch=stop if s.proxy == "train" else None)
        except KeyboardInterrupt:
            record(trial, interrupted("Ctrl-C or SIGTERM"))
            raise
        except DeadlineReached as err:
            record(trial, interrupted(str(err)))
            raise
        record(trial, result)
        if result.state == optuna.trial.TrialState.PRUNED:
            raise optuna.TrialPruned(result.attrs.get("reason"))
        if result.state == optuna.trial.TrialState.FAIL:
            raise CandidateFailed(result.attrs.get("reason"))
        return result.values

    return objective


def _report_failure(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    if trial.state == optuna.trial.TrialState.FAIL:
        report_failure(trial.number, trial.user_attrs)


class _Progress:
    """trial n/N, best feasible accuracy, front size, ETA (tqdm on stderr)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=min(done, total), unit="trial", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.bar is None or trial.user_attrs.get("status") in ("rejected", "interrupted") \
                or trial.user_attrs.get("remeasure_of") is not None:
            return
        from .results import pareto_front, trial_records

        recs = trial_records(study)
        feasible = [r["accuracy"] for r in recs if r.get("feasible") and r.get("accuracy") is not None]
        self.bar.set_postfix_str(f"best feasible acc {max(feasible):.3f}, front {len(pareto_front(recs))}"
                                 if feasible else "no feasible trial yet")
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def record_run(folder: Path, s: SearchSettings, storage: str, study_name: str) -> Path:
    """The exact command and environment, appended for every run of the study (strict JSON: no NaN or Infinity)."""
    import torch

    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv, "cwd": os.getcwd(),
             "settings": s.identity() | {k: getattr(s, k) for k in VOLATILE},
             "storage": storage, "study_name": study_name, "python": sys.version.split()[0],
             "platform": platform.platform(), "torch": torch.__version__, "optuna": optuna.__version__,
             "threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    line = json.dumps(entry, allow_nan=False) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "runs.jsonl"
    with open(path, "a") as f:
        f.write(line)
    return path


def _collect_garbage(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Free what a trial built (models, tensors in cycles); a gate rejection built nothing, and a
    full collection with torch loaded costs about as much as the rest of such a trial."""
    if not is_gate_rejection(trial.user_attrs):
        gc.collect()


def _requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    requeue_interrupted(study)


def run_optuna(s: SearchSettings, storage: str, study_name: str, progress: bool = True,
               on_open: Callable[[optuna.Study], None] | None = None) -> optuna.Study:
    """Run (or resume) the search until the study holds ``s.trials`` evaluated trials or the timeout.

    ``on_open`` is called once the storage is open and the settings match the study's.
    """
    deadline = time.time() + s.timeout_s if s.timeout_s is not None else None
    space = load_space(s.space)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported in one line each
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    with interruptible(False):
        study = open_study(s, storage, study_name)
        if on_open is not None:
            on_open(study)
        enqueue_seeds(study, space)
        evaluated, _ = evaluated_count(study)
        bar = _Progress(s.trials, evaluated, progress)
        try:
            if not search_done(study, s.trials) and not stop_requested():
                study.optimize(
                    _objective(study, space, s, deadline), timeout=s.timeout_s, n_jobs=1, catch=(CandidateFailed,),
                    callbacks=[_report_failure, _requeue, _StopWhenDone(s.trials), _GateCalibration(s), bar,
                               _collect_garbage],
                )
        except DeadlineReached:
            pass
        finally:
            bar.close()
    if stop_requested():
        raise KeyboardInterrupt
    return study
