"""The Ray Tune backend: the trial lifecycle of `nas.search.lifecycle`, one Tune trial per candidate.

* `LifecycleSearch` is Ray's `OptunaSearch` with the ``--sampler`` sampler, define-by-run over the
  same `SearchSpace`, in the *same* Optuna storage and study the Optuna backend uses. A proposal
  is claimed (``arch_id``) when Tune asks for it; when Tune is done with the trial its outcome is
  recorded and told to the study, so the app and export read one layout.
* The trainable (`run_trial`) settles the claimed candidate (a twin's result, or the evaluation)
  and reports its outcome; ASHA stops trainings whose per-epoch accuracy lags (PRUNED).
* A Tune trial that crashed or was stopped before its verdict (``--timeout``, Ctrl-C) is
  ``interrupted``: it does not count and is queued again when the study is next opened.
* Local by default (an embedded Ray with ``workers`` CPUs); ``--ray-address`` joins a cluster. On
  CUDA every trial asks Ray for a GPU, or ``--gpus-per-trial`` of one.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import warnings
from typing import Any, Callable

import optuna
from optuna.trial import TrialState
from ray.tune import Stopper
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from ..config import ArchConfig
from ..errors import first_line
from ..paths import runs_dir
from ..space import load_space
from . import lifecycle as L
from .evaluate import METRIC_OF
from .results import REJECTION_CAP
from .settings import SearchSettings
from .storage import open_storage, open_storage_readonly, storage_file

__all__ = ["LifecycleSearch", "param_space", "run_ray", "run_trial", "trial_resources", "tune_outcome"]


def trial_resources(s: SearchSettings, cpus: int, cluster_gpus: float) -> dict[str, float]:
    """What one Tune trial asks Ray for: ``cpus`` CPUs and, on CUDA, a GPU (or ``--gpus-per-trial`` of one).

    ``--device auto`` means CUDA when the cluster has GPUs. A request the cluster can never meet is
    a one-line error (Tune would wait for it forever).
    """
    on_gpu = s.device.startswith("cuda") or (s.device == "auto" and cluster_gpus > 0)
    gpus = s.gpus_per_trial if s.gpus_per_trial is not None else 1.0
    if not on_gpu:
        if s.gpus_per_trial is not None:
            raise ValueError(f"gpus_per_trial: {s.gpus_per_trial:g} is not allowed; the Ray cluster has no GPU "
                             "(expected no --gpus-per-trial, or a cluster with GPUs)")
        return {"cpu": cpus}
    if cluster_gpus < gpus:
        if not cluster_gpus:
            raise ValueError(f"device: {s.device!r} is not allowed; the Ray cluster has no GPU (expected cpu or "
                             "auto, or --ray-address of a cluster with GPUs)")
        raise ValueError(f"gpus_per_trial: {gpus:g} is not allowed; the Ray cluster has {cluster_gpus:g} "
                         f"GPU{'s' if cluster_gpus > 1 else ''} (expected at most {cluster_gpus:g})")
    return {"cpu": cpus, "gpu": gpus}


def _final_epoch(s: SearchSettings) -> int:
    """The time step of a trial's last report: after every training epoch (ASHA's ``max_t``)."""
    return math.ceil(s.proxy_epochs) + 1


def _shared_storage(url: str) -> Any:
    """The study's storage as a trial on any Ray node opens it: a local file must be there already."""
    path = storage_file(url)
    if path is not None and not path.is_file():
        raise ValueError(f"storage: {url!r} is not reachable from Ray node {socket.gethostname()} ({path} does "
                         "not exist there); use a storage every node reaches, e.g. postgresql://user@host/db")
    return open_storage(url)


def run_trial(config: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> None:
    """One Tune trial: settle the claimed candidate, reporting accuracy after every epoch and the outcome last."""
    s = SearchSettings(**config["settings"])
    live: dict[str, Any] = {}
    curve: list[float] = []

    def on_epoch(epoch: int, acc: float) -> bool:
        curve.append(acc)
        report({"epoch": epoch, "accuracy": acc, "attrs": json.dumps(live | {"accuracy_curve": curve})})
        return False  # ASHA decides, on these reports

    try:
        study = optuna.load_study(study_name=config["study_name"], storage=_shared_storage(config["storage"]))
        result = L.settle(study, config["number"], ArchConfig.from_json(config["arch"]), s, config["deadline"],
                          on_epoch=on_epoch if s.proxy == "train" else None, metrics=live)
    except (L.DeadlineReached, ValueError) as err:
        result = L.interrupted(first_line(err))
    final: dict[str, Any] = {"epoch": _final_epoch(s), "outcome": result.to_json()}
    if isinstance(result.attrs.get("accuracy"), float):
        final["accuracy"] = result.attrs["accuracy"]
    report(final)


def param_space(s: SearchSettings, storage: str, study_name: str, deadline: float | None) -> dict[str, Any]:
    """What every Tune trial's config holds besides its proposal (``number`` and ``arch``)."""
    return {"settings": {f: getattr(s, f) for f in s.__dataclass_fields__}, "storage": storage,
            "study_name": study_name, "deadline": deadline}


def _trainable(config: dict[str, Any]) -> None:
    from ray import tune

    run_trial(config, tune.report)


def tune_outcome(result: dict[str, Any] | None, error: bool, s: SearchSettings) -> L.Outcome:
    """How a Tune trial ended, from its last result: the trainable's outcome, ASHA's stop (PRUNED), or interrupted."""
    result = result or {}
    if error:
        return L.interrupted("its Tune trial crashed (Ray's log: runs/ray_results/)")
    if "outcome" in result:
        return L.Outcome.from_json(result["outcome"])
    if result.get("done") and "attrs" in result:
        return L.outcome(json.loads(result["attrs"]) | {
            "accuracy": result.get("accuracy"), "budget_ms": s.budget_ms, "status": "pruned",
            "reason": f"stopped early by ASHA after epoch {result.get('epoch')}"}, s)
    return L.interrupted("Tune stopped the trial before its verdict (--timeout or Ctrl-C)")


class _Claim:
    """The define-by-run space: each proposal is claimed (`lifecycle.claim`) and its trial kept for Tune."""

    def __init__(self, s: SearchSettings) -> None:
        self.s, self.space = s, load_space(s.space)
        self.claimed: dict[int, Any] = {}

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        result = L.claim(trial, self.space, self.s)
        self.claimed[trial.number] = trial
        if isinstance(result, L.Outcome):
            return {"number": trial.number, "outcome": result.to_json()}
        return {"number": trial.number, "arch": result.to_json(indent=None)}


class LifecycleSearch(OptunaSearch):
    """OptunaSearch over the lifecycle: claimed when proposed, recorded and told when Tune is done with a trial.

    It proposes nothing more once the study holds ``--trials`` evaluated trials (rejections do not
    count, up to REJECTION_CAP times as many finished ones), and waits while those in flight could
    reach that. ``study`` is the search's own handle on the study (`lifecycle.open_study`).
    """

    def __init__(self, s: SearchSettings, study: optuna.Study, storage: str) -> None:
        self.s, self.study = s, study
        self._claim = _Claim(s)
        self._live: dict[str, Any] = {}  # Tune trial id -> its Optuna trial
        self._max_live = s.workers
        self._counts: tuple[int, int] | None = None
        super().__init__(space=self._claim, metric=[METRIC_OF[o] for o in s.objectives],
                         mode=["max" if d == "maximize" else "min" for d in s.directions],
                         sampler=study.sampler, study_name=study.study_name, storage=open_storage(storage))

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self._max_live = max_concurrent
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if len(self._live) >= self._max_live:
            return None
        if self._counts is None:
            self._counts = L.evaluated_count(self.study)
        evaluated, finished = self._counts
        if L.stop_requested() or finished >= REJECTION_CAP * self.s.trials:
            return Searcher.FINISHED
        if evaluated + len(self._live) >= self.s.trials and not L.waiting_remeasures(self.study):
            # done, or the trials in flight may be enough (queued re-measurements run whatever the count)
            return Searcher.FINISHED if evaluated >= self.s.trials else None
        proposal = super().suggest(trial_id)
        trial = self._claim.claimed.pop(proposal["number"])
        if "outcome" in proposal:  # a candidate that cannot be built needs no Tune trial
            self._finish(trial, L.Outcome.from_json(proposal["outcome"]))
            return None
        self._live[trial_id] = trial
        return {"number": proposal["number"], "arch": proposal["arch"]}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        trial = self._live.pop(trial_id, None)
        if trial is not None:  # a line for a crash or the trial's own failure, none for Tune's stop at --timeout
            self._finish(trial, tune_outcome(result, error, self.s), report=error or "outcome" in (result or {}))

    def release(self) -> None:
        """Record the trials Tune never handed back (it ended on ``--timeout`` or Ctrl-C first) as interrupted."""
        why = "Ctrl-C or SIGTERM" if L.stop_requested() else "Tune ended before its verdict (--timeout)"
        for trial_id in list(self._live):
            self._finish(self._live.pop(trial_id), L.interrupted(why), report=False)

    def _finish(self, trial: Any, result: L.Outcome, report: bool = True) -> None:
        L.record(trial, result)
        trial.study.tell(trial.number, result.values, result.state, skip_if_finished=True)
        self._counts = None
        if report and result.state == TrialState.FAIL:
            L.report_failure(trial.number, result.attrs)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in one line when nothing listens at ``host:port``; ``ray.init`` would retry for minutes."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"ray-address: {address!r} is not allowed; expected HOST:PORT of a Ray head (or 'auto')")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ValueError(f"ray-address: {address!r} could not be reached ({err.strerror or err}); start a head "
                         f"with `ray start --head` and pass its address, or leave --ray-address out") from None


def _start_ray(s: SearchSettings, address: str | None) -> dict[str, float]:
    """Join the cluster (or start a local Ray); the resources each trial asks for."""
    import ray

    if not ray.is_initialized():
        if address:
            _check_reachable(address)
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise ValueError(f"ray-address: {address!r} could not be joined ({first_line(err)}); start a head with "
                                 f"`ray start --head` and pass its address, or leave --ray-address out "
                                 f"for a local Ray") from None
        else:
            ray.init(num_cpus=s.workers, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    threads = max(1, int(ray.available_resources().get("CPU", s.workers)) // max(1, s.workers))
    return trial_resources(s, threads, ray.cluster_resources().get("GPU", 0.0))


def run_ray(s: SearchSettings, storage: str, study_name: str, address: str | None = None,
            on_open: Callable[[optuna.Study], None] | None = None) -> optuna.Study:
    """Run (or resume) the search on Ray Tune; returns the Optuna study both backends share.

    ``on_open`` is called once Ray is up, the storage is open and the settings match the study's.
    """
    with L.interruptible(False):  # Ctrl-C asks Tune to stop (`_StopWhenAsked`), never inside a storage write
        study = _run(s, storage, study_name, address, on_open)
    if L.stop_requested():
        raise KeyboardInterrupt
    return study


class _StopWhenAsked(Stopper):
    """Ends the Tune run at its next step once Ctrl-C or SIGTERM asked the search to stop."""

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return L.stop_requested()


def _run(s: SearchSettings, storage: str, study_name: str, address: str | None,
         on_open: Callable[[optuna.Study], None] | None) -> optuna.Study:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    deadline = time.time() + s.timeout_s if s.timeout_s is not None else None
    study = L.open_study(s, storage, study_name, heartbeat=False)
    _, finished = L.evaluated_count(study)
    done = L.search_done(study, s.trials)
    resources = None if done else _start_ray(s, address)  # a cluster that cannot run the trials records no run
    if on_open is not None:
        on_open(study)
    if done:
        return study
    L.enqueue_seeds(study, load_space(s.space))
    scheduler = ASHAScheduler(time_attr="epoch", metric="accuracy", mode="max", max_t=_final_epoch(s),
                              grace_period=1, reduction_factor=2)
    # a rejected or failed candidate ends without every objective: its outcome is recorded by the searcher
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # the search's own handler stops it (and says so in one line)
    warnings.filterwarnings("ignore", message="Define-by-run function")  # claiming writes to the storage
    search = LifecycleSearch(s, study, storage)
    tuner = tune.Tuner(
        tune.with_resources(_trainable, resources),
        param_space=param_space(s, storage, study_name, deadline),
        tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler,
                                    num_samples=REJECTION_CAP * s.trials - finished, max_concurrent_trials=s.workers,
                                    time_budget_s=s.timeout_s, reuse_actors=True),
        run_config=tune.RunConfig(name=study_name, storage_path=str((runs_dir() / "ray_results").resolve()),
                                  stop=_StopWhenAsked(), verbose=0),
    )
    try:
        tuner.fit()
    finally:
        search.release()
    return optuna.load_study(study_name=study_name, storage=open_storage_readonly(storage))
