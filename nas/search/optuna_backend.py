"""The Optuna backend: a multi-objective study with the latency budget as a constraint.

* canonical configs that are points of the space are enqueued first (and marked as baselines);
* architectures are deduplicated by ``arch_id``: a repeat reuses the first evaluation;
* the cheap gate and the budget reject hopeless candidates before any training (PRUNED, with
  the reason); a crashing or NaN candidate becomes a FAIL with its reason and the search goes on;
* every metric is a trial user attribute; the storage is SQLite in ``runs/`` by default, any
  RDB URL (PostgreSQL...) or a journal file;
* a trial whose process died (kill -9) or was stopped (Ctrl-C) is failed as ``interrupted``
  (at once on this host, by heartbeat elsewhere), does not count and is queued to run again
  with the same parameters, so a rerun of the same command resumes with nothing lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import statistics
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna

from ..latency.devices import resolve_device
from ..space import InvalidCandidate, SearchSpace, load_space
from .evaluate import evaluate, objective_values
from .results import REJECTION_CAP, is_interrupted
from .settings import SearchSettings
from .storage import default_storage, open_storage

__all__ = ["CandidateFailed", "default_storage", "fail_dead_trials", "interrupt_now", "make_storage", "open_study",
           "request_stop", "requeue_interrupted", "run_optuna"]

_STOP = threading.Event()


def request_stop() -> None:
    """Ask a running search to stop: now if possible, else after the current epoch or trial.

    The CLI's SIGINT/SIGTERM handler calls this before raising KeyboardInterrupt, because an
    interrupt that lands inside a garbage-collection callback is swallowed by Python.
    """
    _STOP.set()

_RAISE_OK = threading.Event()
_RAISE_OK.set()


def interrupt_now() -> bool:
    """Whether Ctrl-C may raise KeyboardInterrupt right now: not while the storage is being read or written.

    Otherwise `request_stop` alone ends the search at the next safe point (an epoch, a poll, a trial).
    """
    return _RAISE_OK.is_set()


@contextlib.contextmanager
def _interruptible(ok: bool) -> Iterator[None]:
    before = _RAISE_OK.is_set()
    _RAISE_OK.set() if ok else _RAISE_OK.clear()
    try:
        if ok and _STOP.is_set():
            raise KeyboardInterrupt
        yield
    finally:
        _RAISE_OK.set() if before else _RAISE_OK.clear()


_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


class CandidateFailed(Exception):
    """A candidate that crashed, went NaN or ran out of memory (the trial becomes FAIL)."""


class _DeadlineReached(Exception):
    """``--timeout`` ran out while a trial waited for another process's result."""


def make_storage(url: str, heartbeat: bool = False) -> Any:
    """The storage a search writes into (`nas.search.storage.open_storage`); readers use `open_storage_readonly`."""
    return open_storage(url, heartbeat=heartbeat)


def _sampler(s: SearchSettings, offset: int) -> optuna.samplers.BaseSampler:
    seed = s.seed + offset  # a second process joining the study must not propose the same points
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, min(50, s.trials // 3)))
    # constraints come from trial.set_constraint("latency", ...) (Optuna 5's interface)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                      n_startup_trials=max(5, min(10, s.trials // 4)))


def open_study(s: SearchSettings, storage: str, study_name: str, heartbeat: bool = True) -> optuna.Study:
    """Create or resume; a resumed study must have been created with the same settings.

    Trials of processes that died are failed first and queued to run again (`requeue_interrupted`).
    """
    st = make_storage(storage, heartbeat=heartbeat)
    try:
        existing = optuna.load_study(study_name=study_name, storage=st)
    except KeyError:
        existing = None
    if existing is not None:
        recorded = existing.user_attrs.get("settings")
        if recorded is not None and recorded != s.identity():
            diff = sorted(k for k in s.identity() if recorded.get(k) != s.identity()[k])
            raise ValueError(f"study-name: {study_name!r} was created with other settings ({', '.join(diff)}); "
                             "rerun with the same settings to resume, or pass a new --study-name")
    offset = len(existing.trials) if existing is not None else 0
    study = optuna.create_study(study_name=study_name, storage=st, directions=s.directions, load_if_exists=True,
                                sampler=_sampler(s, offset))
    if existing is None:
        study.set_user_attr("settings", s.identity())
        study.set_user_attr("objectives", list(s.objectives))
    fail_dead_trials(study, own_pid_is_dead=True)
    requeue_interrupted(study)
    return study


def _pid_dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child its parent has not reaped yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def _worker_dead(worker: Any, own_pid_is_dead: bool) -> bool:
    """True when ``host:pid`` names a process of this host that no longer runs."""
    host, _, pid = str(worker).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return own_pid_is_dead
    return _pid_dead(int(pid))


def fail_dead_trials(study: optuna.Study, own_pid_is_dead: bool = False) -> list[int]:
    """Fail RUNNING trials whose process is gone; returns their numbers.

    A trial of a dead process on this host is failed at once (its ``worker`` is host:pid); others
    by the storage heartbeat after its grace period. ``own_pid_is_dead`` is for a process that
    opens the study and runs no trial yet: a RUNNING trial with its own pid is a leftover.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        if not _worker_dead(worker, own_pid_is_dead):
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "status", "interrupted")
            study._storage.set_trial_user_attr(t._trial_id, "reason", f"interrupted: its process {worker} died")
            if study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL):
                failed.append(t.number)
        except optuna.exceptions.UpdateFinishedTrialError:  # another process failed it first
            pass
    return failed


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Queue every interrupted trial (its process died or was stopped) again, once, with the same parameters.

    Such a trial is no verdict on its candidate: it does not count toward ``--trials`` and its
    re-run keeps its ``seed`` (a baseline gets its numbers). Returns the numbers queued again.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    queued = []
    for t in trials:
        if is_interrupted(t.state.name, t.user_attrs) and t.number not in retried and (t.params or t.user_attrs.get("seed")):
            attrs = {"retry_of": t.number} | ({"seed": t.user_attrs["seed"]} if t.user_attrs.get("seed") else {})
            study.enqueue_trial(t.params, user_attrs=attrs)
            queued.append(t.number)
    return queued


def _enqueue_seeds(study: optuna.Study, space: SearchSpace) -> list[str]:
    """Queue the canonical configs of the space once (a run killed while queueing them completes the set)."""
    trials = study.get_trials(deepcopy=False)
    if any(not t.user_attrs.get("seed") for t in trials):
        return []
    have = {t.user_attrs["seed"] for t in trials}
    names = []
    for name, cfg in space.seeds().items():
        if name in have:
            continue
        params, _ = space.params_of(cfg)
        study.enqueue_trial(params, user_attrs={"seed": name})
        names.append(name)
    return names


def evaluated_count(study: optuna.Study) -> tuple[int, int]:
    """(trials that were evaluated, all finished trials): gate/budget rejections and interrupted trials are not."""
    finished = [t for t in study.get_trials(deepcopy=False) if t.state in _FINISHED]
    evaluated = [t for t in finished if t.user_attrs.get("status") != "rejected"
                 and not is_interrupted(t.state.name, t.user_attrs)]
    return len(evaluated), len(finished)


class _StopWhenDone:
    """Stop at ``trials`` evaluated trials, or at REJECTION_CAP times that many finished ones (all rejected)."""

    def __init__(self, trials: int) -> None:
        self.trials = trials

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        evaluated, finished = evaluated_count(study)
        if evaluated >= self.trials or finished >= REJECTION_CAP * self.trials or _STOP.is_set():
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

        if self.s.latency_kind != "measured" or resolve_device(self.s.device).type != "cpu":
            return
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
            _say(f"nas.search: latency gate: {cal.reason}")


def _median_stop(study: optuna.Study) -> Callable[[int, float], bool]:
    """Stop a training whose accuracy after an epoch is below the median of completed trials then.

    Optuna's pruners do not support multi-objective studies, so the median-stopping rule is
    applied here on the per-epoch curves the completed trials recorded (after 5 of them).
    """

    def stop(epoch: int, acc: float) -> bool:
        if _STOP.is_set():
            return True
        curves = [t.user_attrs.get("accuracy_curve") or [] for t in study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
        at = [c[epoch - 1] for c in curves if len(c) >= epoch]
        return len(at) >= 5 and acc < statistics.median(at)

    return stop




def _mark(trial: optuna.Trial, status: str, reason: str) -> None:
    trial.set_user_attr("status", status)
    trial.set_user_attr("reason", reason)


def _evaluated_twin(study: optuna.Study, number: int, arch_id: str, deadline: float | None = None,
                    poll_s: float = 1.0) -> optuna.trial.FrozenTrial | None:
    """A finished evaluation of the same architecture (COMPLETE, or a FAIL of the candidate itself).

    Another process sharing the study may be evaluating the very same architecture; the trial
    with the lower number goes ahead and the later one waits for its result instead of training
    it a second time. While waiting, twins of dead processes are failed (then this one runs);
    ``deadline`` (time.monotonic) and Ctrl-C end the wait.
    """
    wanted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING)
    while True:
        waiting_for = None
        failed = None
        for t in study.get_trials(deepcopy=False, states=wanted):
            if t.number == number or t.user_attrs.get("arch_id") != arch_id:
                continue
            if t.state == optuna.trial.TrialState.COMPLETE:
                return t
            if t.state == optuna.trial.TrialState.FAIL:
                if not is_interrupted(t.state.name, t.user_attrs) and failed is None:
                    failed = t
            elif t.number < number and waiting_for is None:
                waiting_for = t
        if failed is not None:
            return failed
        if waiting_for is None:
            return None
        if _STOP.is_set():
            raise KeyboardInterrupt
        if deadline is not None and time.monotonic() >= deadline:
            raise _DeadlineReached(f"--timeout reached while waiting for trial {waiting_for.number} "
                                   f"({waiting_for.user_attrs.get('worker')}) to evaluate the same architecture")
        with _interruptible(True):
            time.sleep(poll_s)
        fail_dead_trials(study)


def _objective(study: optuna.Study, space: SearchSpace, s: SearchSettings,
               deadline: float | None) -> Callable[[optuna.Trial], list[float]]:
    stop = _median_stop(study)

    def objective(trial: optuna.Trial) -> list[float]:
        try:
            return evaluate_trial(trial)
        except KeyboardInterrupt:
            _mark(trial, "interrupted", "interrupted: Ctrl-C or SIGTERM")
            raise
        except _DeadlineReached as err:
            _mark(trial, "interrupted", f"interrupted: {err}")
            raise

    def evaluate_trial(trial: optuna.Trial) -> list[float]:
        if _STOP.is_set():
            raise KeyboardInterrupt
        trial.set_user_attr("budget_ms", s.budget_ms)
        try:
            config = space.sample(trial)
        except InvalidCandidate as err:
            _mark(trial, "failed", str(err))
            raise CandidateFailed(str(err)) from None
        config = config.replace(name=trial.user_attrs.get("seed", ""))
        trial.set_user_attr("arch_id", config.arch_id)  # claims the architecture for concurrent workers
        twin = _evaluated_twin(study, trial.number, config.arch_id, deadline)
        if twin is not None:  # evaluated before: never trained (or crashed) twice
            for k, v in twin.user_attrs.items():
                if k not in ("seed", "worker", "retry_of", "duplicate_of"):
                    trial.set_user_attr(k, v)
            trial.set_user_attr("duplicate_of", twin.user_attrs.get("duplicate_of", twin.number))
            if twin.state == optuna.trial.TrialState.FAIL:
                raise CandidateFailed(twin.user_attrs.get("reason") or "failed")
            trial.set_constraint("latency", twin.user_attrs["latency_ms"] - s.budget_ms)
            return list(twin.values)
        with _interruptible(True):
            metrics = evaluate(config, s, on_epoch=stop if s.proxy == "train" else None)
        if _STOP.is_set():
            raise KeyboardInterrupt
        metrics["budget_ms"] = s.budget_ms
        for k, v in metrics.items():
            trial.set_user_attr(k, v)
        if metrics["status"] in ("rejected", "pruned"):
            raise optuna.TrialPruned(metrics["reason"])
        if metrics["status"] == "failed":
            raise CandidateFailed(metrics["reason"])
        trial.set_constraint("latency", metrics["latency_ms"] - s.budget_ms)
        return objective_values(metrics, s.objectives)

    return objective


def _say(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _report_failure(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One line on stderr for a failed candidate (Optuna's own warning with its traceback is silenced)."""
    if trial.state == optuna.trial.TrialState.FAIL:
        twin = trial.user_attrs.get("duplicate_of")
        same = f" (same architecture as trial {twin})" if twin is not None else ""
        _say(f"nas.search: trial {trial.number} failed: {trial.user_attrs.get('reason') or 'no reason recorded'}{same}")


class _Progress:
    """trial n/N, best feasible accuracy, front size, ETA (tqdm on stderr)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=min(done, total), unit="trial", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.bar is None or trial.user_attrs.get("status") in ("rejected", "interrupted"):
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
             "settings": s.identity() | {"trials": s.trials, "timeout_s": s.timeout_s, "backend": s.backend},
             "storage": storage, "study_name": study_name, "python": sys.version.split()[0],
             "platform": platform.platform(), "torch": torch.__version__, "optuna": optuna.__version__,
             "threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    line = json.dumps(entry, allow_nan=False) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "runs.jsonl"
    with open(path, "a") as f:
        f.write(line)
    return path


def _requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    requeue_interrupted(study)


def run_optuna(s: SearchSettings, storage: str, study_name: str, progress: bool = True,
               on_open: Callable[[optuna.Study], None] | None = None) -> optuna.Study:
    """Run (or resume) the search until the study holds ``s.trials`` evaluated trials or the timeout.

    ``on_open`` is called once the storage is open and the settings match the study's.
    """
    deadline = time.monotonic() + s.timeout_s if s.timeout_s is not None else None
    space = load_space(s.space)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported in one line each
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    with _interruptible(False):
        study = open_study(s, storage, study_name)
        if on_open is not None:
            on_open(study)
        _enqueue_seeds(study, space)
        evaluated, finished = evaluated_count(study)
        bar = _Progress(s.trials, evaluated, progress)
        try:
            if evaluated < s.trials and finished < REJECTION_CAP * s.trials and not _STOP.is_set():
                study.optimize(
                    _objective(study, space, s, deadline), timeout=s.timeout_s, n_jobs=1, catch=(CandidateFailed,),
                    callbacks=[_report_failure, _requeue, _StopWhenDone(s.trials), _GateCalibration(s), bar],
                    gc_after_trial=True,
                )
        except _DeadlineReached:
            pass
        finally:
            bar.close()
    if _STOP.is_set():
        raise KeyboardInterrupt
    return study
