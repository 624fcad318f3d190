"""The Optuna backend: a multi-objective study with the latency budget as a constraint.

* canonical configs that are points of the space are enqueued first (and marked as baselines);
* architectures are deduplicated by ``arch_id``: a repeat reuses the first evaluation;
* the cheap gate and the budget reject hopeless candidates before any training (PRUNED, with
  the reason); a crashing or NaN candidate becomes a FAIL with its reason and the search goes on;
* every metric is a trial user attribute; the storage is SQLite in ``runs/`` by default, any
  RDB URL (PostgreSQL...) or a journal file; heartbeats turn trials of a killed process into
  FAILs, so a rerun of the same command resumes with nothing lost.
"""

from __future__ import annotations

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
from typing import Any, Callable

import optuna

from ..errors import first_line
from ..latency.devices import resolve_device
from ..paths import runs_dir
from ..space import InvalidCandidate, SearchSpace, load_space
from .evaluate import evaluate, objective_values
from .settings import SearchSettings

__all__ = ["CandidateFailed", "default_storage", "make_storage", "open_study", "request_stop", "run_optuna"]

_STOP = threading.Event()


def request_stop() -> None:
    """Ask a running search to stop: now if possible, else after the current epoch or trial.

    The CLI's SIGINT/SIGTERM handler calls this before raising KeyboardInterrupt, because an
    interrupt that lands inside a garbage-collection callback is swallowed by Python.
    """
    _STOP.set()

_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


class CandidateFailed(Exception):
    """A candidate that crashed, went NaN or ran out of memory (the trial becomes FAIL)."""


def default_storage() -> str:
    return f"sqlite:///{runs_dir() / 'nas.db'}"


def make_storage(url: str, heartbeat: bool = False) -> Any:
    """An Optuna storage for a URL: ``sqlite:///...``, any SQLAlchemy URL, or ``journal:PATH`` / ``*.log``.

    ``heartbeat=True`` is for a process that runs trials with `Study.optimize`: a trial whose
    process died (kill -9) is then failed after a grace period instead of staying RUNNING.
    Readers (the app, export, Ray's searcher) open it without.
    """
    if url.startswith("journal:") or url.endswith((".log", ".jsonl")):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.split(":", 1)[1] if url.startswith("journal:") else url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ValueError(f"storage: {url!r} is not allowed; expected an RDB URL such as sqlite:///runs/nas.db or "
                         "postgresql://user@host/db, or journal:PATH")
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    beat: dict[str, Any] = {"heartbeat_interval": 20, "grace_period": 60} if heartbeat else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **beat)
    except Exception as err:
        raise ValueError(f"storage: {url!r} could not be opened ({first_line(err)})") from None


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
    """Create or resume; a resumed study must have been created with the same settings."""
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
    return study


def _enqueue_seeds(study: optuna.Study, space: SearchSpace) -> list[str]:
    if study.trials:
        return []
    names = []
    for name, cfg in space.seeds().items():
        params, _ = space.params_of(cfg)
        study.enqueue_trial(params, user_attrs={"seed": name})
        names.append(name)
    return names


def evaluated_count(study: optuna.Study) -> tuple[int, int]:
    """(trials that were evaluated, all finished trials): gate/budget rejections are not evaluations."""
    finished = [t for t in study.get_trials(deepcopy=False) if t.state in _FINISHED]
    evaluated = [t for t in finished if t.user_attrs.get("status") != "rejected"]
    return len(evaluated), len(finished)


class _StopWhenDone:
    """Stop at ``trials`` evaluated trials, or at 25x that many finished ones (all rejected)."""

    def __init__(self, trials: int) -> None:
        self.trials = trials

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        evaluated, finished = evaluated_count(study)
        if evaluated >= self.trials or finished >= 25 * self.trials or _STOP.is_set():
            study.stop()


class _GateCalibration:
    """Refit this CPU's latency profile on the search's own measurements every 8 of them.

    The cheap gate predicts CPU latency from the micro-benchmarked profile, which is optimistic
    by 1.5-2x before calibration; refitting on measured candidates makes the gate sharper as the
    search goes, and later searches on this machine start from the calibrated profile.
    """

    def __init__(self, s: SearchSettings) -> None:
        self.s = s
        self.fitted_at = 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from ..config import ArchConfig
        from ..latency import calibrate

        if self.s.latency_kind != "measured" or resolve_device(self.s.device).type != "cpu":
            return
        seen = {}
        for t in study.get_trials(deepcopy=False):
            if t.user_attrs.get("latency_source") == "measured" and t.user_attrs.get("latency_ms"):
                seen[t.user_attrs["arch_id"]] = (t.user_attrs["config"], t.user_attrs["latency_ms"])
        if len(seen) >= 8 and len(seen) >= self.fitted_at + 8:
            configs = [ArchConfig.from_json(c) for c, _ in seen.values()]
            calibrate(configs, [ms for _, ms in seen.values()], "cpu", resolution=self.s.resolution,
                      batch=self.s.batch, precision=self.s.precision, save=True)
            self.fitted_at = len(seen)


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



WORKER = f"{socket.gethostname()}:{os.getpid()}"
"""Stamped on every trial, so a shared study shows which process evaluated what."""


def _evaluated_twin(study: optuna.Study, number: int, arch_id: str,
                    poll_s: float = 1.0) -> optuna.trial.FrozenTrial | None:
    """A completed trial of the same architecture, waiting for one that is running right now.

    Another process sharing the study may be evaluating the very same architecture; the trial
    with the lower number goes ahead and the later one waits for its result instead of training
    it a second time. A twin that dies is failed by the storage heartbeat, and then this one runs.
    """
    running = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
    while True:
        waiting = False
        for t in study.get_trials(deepcopy=False, states=running):
            if t.number == number or t.user_attrs.get("arch_id") != arch_id:
                continue
            if t.state == optuna.trial.TrialState.COMPLETE:
                return t
            waiting = waiting or t.number < number
        if not waiting or _STOP.is_set():
            return None
        time.sleep(poll_s)

def _objective(study: optuna.Study, space: SearchSpace, s: SearchSettings) -> Callable[[optuna.Trial], list[float]]:
    stop = _median_stop(study)

    def objective(trial: optuna.Trial) -> list[float]:
        trial.set_user_attr("budget_ms", s.budget_ms)
        try:
            config = space.sample(trial)
        except InvalidCandidate as err:
            trial.set_user_attr("status", "failed")
            trial.set_user_attr("reason", str(err))
            raise CandidateFailed(str(err)) from None
        config = config.replace(name=trial.user_attrs.get("seed", ""))
        trial.set_user_attr("arch_id", config.arch_id)  # claims the architecture for concurrent workers
        trial.set_user_attr("worker", WORKER)
        twin = _evaluated_twin(study, trial.number, config.arch_id)
        if twin is not None:  # evaluated before: never trained twice
            for k, v in twin.user_attrs.items():
                if k not in ("seed", "worker"):
                    trial.set_user_attr(k, v)
            trial.set_user_attr("duplicate_of", twin.number)
            trial.set_constraint("latency", twin.user_attrs["latency_ms"] - s.budget_ms)
            return list(twin.values)
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


class _Progress:
    """trial n/N, best feasible accuracy, front size, ETA (tqdm on stderr)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=min(done, total), unit="trial", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.bar is None or trial.user_attrs.get("status") == "rejected":
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
    """The exact command and environment, appended for every run of the study."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "runs.jsonl"
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv, "cwd": os.getcwd(),
             "settings": s.identity() | {"trials": s.trials, "timeout_s": s.timeout_s, "backend": s.backend},
             "storage": storage, "study_name": study_name, "python": sys.version.split()[0],
             "platform": platform.platform(), "torch": torch.__version__, "optuna": optuna.__version__,
             "threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")
    return path


def run_optuna(s: SearchSettings, storage: str, study_name: str, progress: bool = True) -> optuna.Study:
    """Run (or resume) the search until the study holds ``s.trials`` evaluated trials or the timeout."""
    space = load_space(s.space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = open_study(s, storage, study_name)
    _enqueue_seeds(study, space)
    evaluated, finished = evaluated_count(study)
    bar = _Progress(s.trials, evaluated, progress)
    try:
        if evaluated < s.trials and finished < 25 * s.trials:
            study.optimize(
                _objective(study, space, s), timeout=s.timeout_s, n_jobs=1, catch=(CandidateFailed,),
                callbacks=[_StopWhenDone(s.trials), _GateCalibration(s), bar], gc_after_trial=True,
            )
    finally:
        bar.close()
    if _STOP.is_set():
        raise KeyboardInterrupt
    return study
