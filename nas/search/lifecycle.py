"""One trial's lifecycle, whichever backend drives it (Optuna's `study.optimize` or Ray Tune).

1. `open_study`: create or resume the study (same settings), with the sampler of `--sampler`
   seeded by `--seed` plus the trials already there; trials of dead processes are failed as
   ``interrupted`` and queued again (`fail_dead_trials`, `requeue_interrupted`).
2. `enqueue_seeds`: the canonical configs that are points of the space run first, named.
3. `claim`: the trial samples its architecture and records ``arch_id`` (concurrent trials see it).
4. `settle`: a twin (same ``arch_id``) that was evaluated is reused, a running one is waited for
   (bounded by the deadline and Ctrl-C); otherwise `evaluate` runs. A twin's latency that other
   work disturbed is measured again (`requeue_disturbed` queues them when a study resumes).
5. `outcome` / `record`: the evaluation status decides the trial's state, values, constraint and
   user attributes: ok -> COMPLETE; rejected (gate, budget) or pruned -> PRUNED; failed -> FAIL
   (a verdict); interrupted -> FAIL that does not count and runs again. A baseline is never
   rejected: over the budget it is COMPLETE with a positive latency constraint (infeasible).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..config import ArchConfig
from ..space import InvalidCandidate, SearchSpace
from .evaluate import evaluate, objective_values, remeasure
from .results import REJECTION_CAP, current, is_interrupted, trial_records, unmeasured
from .settings import VOLATILE, SearchSettings
from .storage import open_storage

__all__ = ["DeadlineReached", "Outcome", "claim", "enqueue_seeds", "evaluated_count", "evaluated_twin",
           "fail_dead_trials", "interrupt_now", "interrupted", "make_sampler", "open_study", "outcome", "record",
           "report_failure", "request_stop", "requeue_disturbed", "requeue_interrupted", "reuse", "say", "search_done",
           "settle", "stop_requested", "waiting_remeasures"]

_STOP = threading.Event()
_RAISE_OK = threading.Event()
_RAISE_OK.set()
_NOT_COPIED = ("seed", "worker", "retry_of", "duplicate_of")  # a twin's attributes that belong to the twin alone


def request_stop() -> None:
    """Ask a running search to stop: now if possible, else after the current epoch or trial.

    The CLI's SIGINT/SIGTERM handler calls this before raising KeyboardInterrupt, because an
    interrupt that lands inside a garbage-collection callback is swallowed by Python.
    """
    _STOP.set()


def stop_requested() -> bool:
    return _STOP.is_set()


def interrupt_now() -> bool:
    """Whether Ctrl-C may raise KeyboardInterrupt right now: not while the storage is being read or written.

    Otherwise `request_stop` alone ends the search at the next safe point (an epoch, a poll, a trial).
    """
    return _RAISE_OK.is_set()


@contextlib.contextmanager
def interruptible(ok: bool) -> Iterator[None]:
    """Allow (``ok``) or hold back Ctrl-C's KeyboardInterrupt inside the block."""
    before = _RAISE_OK.is_set()
    _RAISE_OK.set() if ok else _RAISE_OK.clear()
    try:
        if ok and _STOP.is_set():
            raise KeyboardInterrupt
        yield
    finally:
        _RAISE_OK.set() if before else _RAISE_OK.clear()


class DeadlineReached(Exception):
    """``--timeout`` ran out while a trial waited for another trial's result."""


def say(line: str) -> None:
    """One line on stderr that does not break a progress bar."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


# -- the study ---------------------------------------------------------------------------------------

def make_sampler(s: SearchSettings, offset: int) -> optuna.samplers.BaseSampler:
    """The sampler of ``--sampler``, seeded by ``--seed`` + ``offset`` (the trials already in the study)."""
    seed = s.seed + offset  # a second process joining the study must not propose the same points
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.sampler in ("evolution", "budget", "hvi"):
        from ..space import load_space
        from .evolution import EvolutionSampler
        from .frontier import FrontierSampler

        if s.sampler == "hvi":
            return FrontierSampler(load_space(s.space), s, seed)
        return EvolutionSampler(load_space(s.space), s, seed, evolve=s.sampler == "evolution",
                                edge=s.sampler == "budget")
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, min(50, s.trials // 3)))
    # constraints come from trial.set_constraint("latency", ...) (Optuna 5's interface)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # multivariate, group
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=max(5, min(10, s.trials // 4)))


def open_study(s: SearchSettings, storage: str, study_name: str, heartbeat: bool = True) -> optuna.Study:
    """Create or resume; a resumed study must have been created with the same settings.

    Its ``sampler`` is the one every backend proposes with. Trials of processes that died are
    failed first and queued to run again (`requeue_interrupted`); on a resumed measured-latency study,
    latencies other work disturbed are queued to be measured again (`requeue_disturbed`).
    """
    st = open_storage(storage, heartbeat=heartbeat)
    try:
        existing = optuna.load_study(study_name=study_name, storage=st)
    except KeyError:
        existing = None
    if existing is not None:
        recorded = existing.user_attrs.get("settings")
        if recorded is not None:  # a study recorded before a setting became volatile holds it too
            recorded = {k: v for k, v in recorded.items() if k not in VOLATILE}
        if recorded is not None and recorded != s.identity():
            diff = sorted(k for k in s.identity() if recorded.get(k) != s.identity()[k])
            raise ValueError(f"study-name: {study_name!r} was created with other settings ({', '.join(diff)}); "
                             "rerun with the same settings to resume, or pass a new --study-name")
    offset = len(existing.trials) if existing is not None else 0
    study = optuna.create_study(study_name=study_name, storage=st, directions=s.directions, load_if_exists=True,
                                sampler=make_sampler(s, offset))
    if existing is None:
        study.set_user_attr("settings", s.identity())
        study.set_user_attr("objectives", list(s.objectives))
    fail_dead_trials(study, own_pid_is_dead=True)
    requeue_interrupted(study)
    if existing is not None and s.latency_kind == "measured":
        requeue_disturbed(study)
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
    """Fail RUNNING trials whose process is gone as ``interrupted``; returns their numbers.

    A trial of a dead process on this host is failed at once (its ``worker`` is host:pid); others
    by the storage heartbeat after its grace period. ``own_pid_is_dead`` is for a process that
    opens the study and runs no trial yet: a RUNNING trial with its own pid is a leftover.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        if not _worker_dead(worker, own_pid_is_dead):
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "status", "interrupted")
            study._storage.set_trial_user_attr(t._trial_id, "reason", f"interrupted: its process {worker} died")
            if study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
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


def requeue_disturbed(study: optuna.Study) -> list[int]:
    """Queue a re-measurement of every evaluated architecture whose latency is still a prediction standing in
    for a measurement other work disturbed (once per run; `settle` measures it again, reusing the training).

    Returns the trial numbers whose latency is measured again.
    """
    records = trial_records(study)
    params = {t.number: t.params for t in study.get_trials(deepcopy=False)}
    pending = {r.get("remeasure_of") for r in records if r["state"] in ("WAITING", "RUNNING")}
    queued, seen = [], set()
    for r in unmeasured(current(records)):
        if r.get("arch_id") in seen or r["number"] in pending:
            continue
        seen.add(r.get("arch_id"))
        attrs = {"remeasure_of": r["number"]} | ({"seed": r["seed"]} if r.get("seed") else {})
        study.enqueue_trial(params[r["number"]], user_attrs=attrs)
        queued.append(r["number"])
    return queued


def waiting_remeasures(study: optuna.Study) -> int:
    """Queued re-measurements not yet run: a search runs them even when it already holds its trials."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
               if t.user_attrs.get("remeasure_of") is not None)


def search_done(study: optuna.Study, trials: int) -> bool:
    """Whether a search holds ``trials`` evaluated trials with no re-measurement waiting, or hit the cap of
    REJECTION_CAP times as many finished candidates."""
    evaluated, finished = evaluated_count(study)
    return (evaluated >= trials and not waiting_remeasures(study)) or finished >= REJECTION_CAP * trials


def enqueue_seeds(study: optuna.Study, space: SearchSpace) -> list[str]:
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
    """(trials that were evaluated, all finished trials): gate/budget rejections and interrupted trials are not
    evaluated; re-measurements of a latency are neither."""
    finished = [t for t in study.get_trials(deepcopy=False)
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    finished = [t for t in finished if t.user_attrs.get("remeasure_of") is None]  # not a candidate of its own
    evaluated = [t for t in finished if t.user_attrs.get("status") != "rejected"
                 and not is_interrupted(t.state.name, t.user_attrs)]
    return len(evaluated), len(finished)


# -- one trial ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """How a trial ends: its state, the user attributes to record, and for COMPLETE its values and constraint."""

    state: TrialState
    attrs: dict[str, Any] = field(default_factory=dict)
    values: list[float] | None = None
    constraint: float | None = None  # latency - budget: feasible when <= 0

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"state": self.state.name})

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        d = json.loads(text)
        return cls(**(d | {"state": TrialState[d["state"]]}))


def outcome(metrics: dict[str, Any], s: SearchSettings) -> Outcome:
    """The state an evaluation status maps to (`evaluate`'s metrics, or a twin's attributes)."""
    status = metrics.get("status")
    if status == "ok":
        values = objective_values(metrics, s.objectives)
        bad = next((f"{o} is {v}" for o, v in zip(s.objectives, values) if not math.isfinite(v)), None)
        if bad is not None:  # no verdict Optuna can store: the candidate failed
            return Outcome(TrialState.FAIL, metrics | {"status": "failed", "reason": f"objective {bad}"})
        return Outcome(TrialState.COMPLETE, metrics, values, metrics["latency_ms"] - s.budget_ms)
    if status in ("rejected", "pruned"):
        return Outcome(TrialState.PRUNED, metrics)
    if status in ("failed", "interrupted"):
        return Outcome(TrialState.FAIL, metrics)
    raise ValueError(f"status: {status!r} is not allowed; expected ok, rejected, pruned, failed or interrupted")


def interrupted(why: str) -> Outcome:
    """A trial stopped before its verdict (Ctrl-C, --timeout, its process or Tune trial died): runs again."""
    return Outcome(TrialState.FAIL, {"status": "interrupted", "reason": f"interrupted: {why}"})


def claim(trial: optuna.Trial, space: SearchSpace, s: SearchSettings) -> ArchConfig | Outcome:
    """Sample the trial's architecture and record its ``arch_id`` (or the FAIL of a candidate that cannot be built)."""
    trial.set_user_attr("budget_ms", s.budget_ms)
    try:
        config = space.sample(trial)
    except InvalidCandidate as err:
        return Outcome(TrialState.FAIL, {"status": "failed", "reason": str(err)})
    config = config.replace(name=trial.user_attrs.get("seed", ""))
    trial.set_user_attr("arch_id", config.arch_id)  # claims the architecture for concurrent trials
    return config


def evaluated_twin(study: optuna.Study, number: int, arch_id: str, deadline: float | None = None,
                   poll_s: float = 1.0) -> FrozenTrial | None:
    """A finished evaluation of the same architecture (COMPLETE, or a FAIL of the candidate itself).

    Another trial may be evaluating the very same architecture; the trial with the lower number
    goes ahead and the later one waits for its result instead of training it a second time.
    While waiting, twins of dead processes are failed (then this one runs); ``deadline``
    (`time.time`, so it holds across processes) raises `DeadlineReached`, Ctrl-C KeyboardInterrupt.
    """
    wanted = (TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING)
    while True:
        waiting_for = None
        failed = None
        predicted = None  # a twin whose latency is a prediction: one measured cleanly is preferred
        for t in study.get_trials(deepcopy=False, states=wanted):
            if t.number == number or t.user_attrs.get("arch_id") != arch_id:
                continue
            if t.state == TrialState.COMPLETE and not t.user_attrs.get("latency_disturbed"):
                return t
            if t.state == TrialState.COMPLETE:
                predicted = predicted or t
            if t.state == TrialState.FAIL:
                if not is_interrupted(t.state.name, t.user_attrs) and failed is None:
                    failed = t
            elif t.number < number and waiting_for is None:
                waiting_for = t
        if predicted is not None:
            return predicted
        if failed is not None:
            return failed
        if waiting_for is None:
            return None
        if _STOP.is_set():
            raise KeyboardInterrupt
        if deadline is not None and time.time() >= deadline:
            raise DeadlineReached(f"--timeout reached while waiting for trial {waiting_for.number} "
                                  f"({waiting_for.user_attrs.get('worker')}) to evaluate the same architecture")
        with interruptible(True):
            time.sleep(poll_s)
        fail_dead_trials(study)


def _twin_attrs(twin: FrozenTrial) -> dict[str, Any]:
    """A twin's user attributes that carry over to a trial reusing its result."""
    return {k: v for k, v in twin.user_attrs.items() if k not in _NOT_COPIED}


def reuse(twin: FrozenTrial, s: SearchSettings) -> Outcome:
    """A twin's result as this trial's: never trained (or crashed) twice; ``duplicate_of`` names the first."""
    attrs = _twin_attrs(twin)
    attrs["duplicate_of"] = twin.user_attrs.get("duplicate_of", twin.number)
    if twin.state == TrialState.FAIL:
        return Outcome(TrialState.FAIL, attrs | {"reason": twin.user_attrs.get("reason") or "failed"})
    return Outcome(TrialState.COMPLETE, attrs, list(twin.values), twin.user_attrs["latency_ms"] - s.budget_ms)


def settle(study: optuna.Study, number: int, config: ArchConfig, s: SearchSettings, deadline: float | None = None,
           on_epoch: Callable[[int, float], bool | None] | None = None,
           metrics: dict[str, Any] | None = None) -> Outcome:
    """A claimed trial's outcome: a twin's result, or the evaluation's (``metrics`` fills in as it runs).

    A config named after a seed (`claim` names it) is a baseline: evaluated whatever its latency.
    A twin whose latency other work disturbed is measured again (its training reused): measured
    cleanly, this trial carries the figure (``remeasure_of``) and supersedes the twin's prediction.
    """
    twin = evaluated_twin(study, number, config.arch_id, deadline)
    if twin is not None and twin.state == TrialState.COMPLETE and twin.user_attrs.get("latency_disturbed") \
            and s.latency_kind == "measured":
        with interruptible(True):
            m = remeasure(_twin_attrs(twin), config, s, baseline=bool(config.name))
        if m is not None:
            return outcome(m | {"remeasure_of": twin.number, "budget_ms": s.budget_ms}, s)
    if twin is not None:
        return reuse(twin, s)
    with interruptible(True):
        m = evaluate(config, s, on_epoch=on_epoch, metrics=metrics, baseline=bool(config.name))
    if _STOP.is_set():
        raise KeyboardInterrupt
    m["budget_ms"] = s.budget_ms
    return outcome(m, s)


def record(trial: optuna.Trial, result: Outcome) -> None:
    """Write an outcome's user attributes and constraint on the trial (its state is the backend's to set)."""
    for k, v in result.attrs.items():
        trial.set_user_attr(k, v)
    if result.constraint is not None:
        trial.set_constraint("latency", result.constraint)


def report_failure(number: int, attrs: dict[str, Any]) -> None:
    """One line on stderr for a trial that ended FAIL (Optuna's and Ray's own tracebacks are silenced)."""
    twin = attrs.get("duplicate_of")
    same = f" (same architecture as trial {twin})" if twin is not None else ""
    what = "failed: " if attrs.get("status") == "failed" else ""
    say(f"nas.search: trial {number} {what}{attrs.get('reason') or 'no reason recorded'}{same}")
