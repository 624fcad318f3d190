"""The Ray Tune backend: the same objective as a Tune trainable, OptunaSearch and ASHA.

* `OptunaSearch` (multi-objective, define-by-run over the same `SearchSpace`) proposes
  architectures and writes them into the *same* Optuna storage and study the Optuna backend
  uses; a small subclass also stores every metric as trial user attributes and marks rejected,
  early-stopped and failed candidates as PRUNED / FAIL, so the app and export read one layout.
* ASHA stops trainings whose per-epoch accuracy lags (Tune reports after every epoch).
* Local by default (an embedded Ray with ``workers`` CPUs); ``--ray-address`` joins a cluster.
  In this backend, candidates the gate rejects count toward ``--trials``.
"""

from __future__ import annotations

import math
import os
import socket
from typing import Any, Callable

import optuna

from ..config import ArchConfig
from ..errors import first_line
from ..paths import runs_dir
from ..space import InvalidCandidate, load_space
from .evaluate import evaluate
from .optuna_backend import evaluated_count, make_storage, open_study
from .storage import open_storage_readonly
from .settings import SearchSettings

__all__ = ["run_ray"]

_METRIC = {"accuracy": "accuracy", "latency": "latency_ms", "cio": "cio", "macs": "macs", "params": "params"}


def _trainable(config: dict[str, Any]) -> None:
    """One Tune trial: evaluate the architecture, reporting accuracy after every epoch."""
    from ray import tune

    s = SearchSettings(**config["settings"])
    if config.get("invalid"):
        tune.report({"status": "failed", "reason": config["invalid"]})
        return
    arch = ArchConfig.from_json(config["arch"])
    study = optuna.load_study(study_name=config["study_name"], storage=open_storage_readonly(config["storage"]))
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if t.user_attrs.get("arch_id") == arch.arch_id:  # evaluated before: never trained twice
            attrs = {k: v for k, v in t.user_attrs.items() if k not in ("config", "seed")}
            tune.report({**attrs, "arch_config": t.user_attrs["config"], "duplicate_of": t.number, "epoch": 0})
            return
    live: dict[str, Any] = {}

    def on_epoch(epoch: int, acc: float) -> bool:
        # latency and CIO are known before training: every report carries all objectives
        known = {k: live[k] for k in ("latency_ms", "cio", "macs", "params", "arch_id") if k in live}
        tune.report({**known, "arch_config": live.get("config"), "accuracy": acc, "epoch": epoch, "status": "training"})
        return False

    m = evaluate(arch, s, on_epoch=on_epoch if s.proxy == "train" else None, metrics=live)
    # Tune puts its own trial config under "config": ours travels as "arch_config"
    final = {k: v for k, v in m.items() if k != "config"}
    tune.report({**final, "arch_config": m["config"], "budget_ms": s.budget_ms, "epoch": math.ceil(s.proxy_epochs) + 1})


class _RecordingOptunaSearch:
    """OptunaSearch that also records metrics as user attributes and non-OK states properly."""

    def __new__(cls, *args: Any, seeds: dict[str, str], **kwargs: Any) -> Any:
        from ray.tune.search.optuna import OptunaSearch

        class Recording(OptunaSearch):
            def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
                ot_trial = self._ot_trials.get(trial_id)
                if ot_trial is None or result is None:
                    return super().on_trial_complete(trial_id, result, error)
                keep = {k: v for k, v in result.items() if _jsonable(v)
                        and not k.startswith(("time_", "training_it", "config/", "checkpoint"))
                        and k not in ("config", "trial_id", "date", "hostname", "node_ip", "pid", "done",
                                      "timestamp", "iterations_since_restore", "experiment_tag")}
                for k, v in keep.items():
                    ot_trial.set_user_attr("config" if k == "arch_config" else k, v)
                if keep.get("arch_id") in seeds:
                    ot_trial.set_user_attr("seed", seeds[keep["arch_id"]])
                status = result.get("status")
                if status == "ok" and not error:
                    ot_trial.set_constraint("latency", result["latency_ms"] - result.get("budget_ms", 0.0))
                    return super().on_trial_complete(trial_id, result, error)
                if "duplicate_of" in result and result.get("accuracy") is not None:
                    return super().on_trial_complete(trial_id, result, error)
                state = optuna.trial.TrialState.FAIL if (error or status == "failed") else optuna.trial.TrialState.PRUNED
                if status == "training":
                    ot_trial.set_user_attr("status", "pruned")
                    ot_trial.set_user_attr("reason", "stopped early by ASHA")
                self._ot_study.tell(ot_trial, state=state)
                self._ot_trials.pop(trial_id, None)

        return Recording(*args, **kwargs)


class _DefineByRun:
    """The space as Optuna define-by-run function (a class, so Tune can pickle its searcher)."""

    def __init__(self, space: str) -> None:
        self.space = space
        self._loaded = None

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        if self._loaded is None:
            self._loaded = load_space(self.space)
        try:
            cfg = self._loaded.sample(trial)
        except InvalidCandidate as err:
            return {"invalid": str(err)}
        return {"arch": cfg.to_json(indent=None)}

    def __getstate__(self) -> dict[str, Any]:
        return {"space": self.space, "_loaded": None}


def _jsonable(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool)) or (
        isinstance(v, list) and all(isinstance(x, (int, float)) for x in v))



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

def run_ray(s: SearchSettings, storage: str, study_name: str, address: str | None = None,
            on_open: Callable[[optuna.Study], None] | None = None) -> optuna.Study:
    """Run (or resume) the search on Ray Tune; returns the Optuna study both backends share.

    ``on_open`` is called once the storage is open and the settings match the study's.
    """
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    space = load_space(s.space)
    study = open_study(s, storage, study_name, heartbeat=False)  # validates settings against an existing study
    if on_open is not None:
        on_open(study)
    evaluated, _ = evaluated_count(study)
    remaining = s.trials - evaluated
    if remaining <= 0:
        return study
    seeds = {cfg.arch_id: name for name, cfg in space.seeds().items()}
    points = [] if study.trials else [space.params_of(cfg)[0] for cfg in space.seeds().values()]

    settings = {f: getattr(s, f) for f in s.__dataclass_fields__}
    search = _RecordingOptunaSearch(
        space=_DefineByRun(s.space), metric=[_METRIC[o] for o in s.objectives],
        mode=["max" if d == "maximize" else "min" for d in s.directions],
        points_to_evaluate=points or None, sampler=optuna.samplers.TPESampler(seed=s.seed + len(study.trials)),
        study_name=study_name, storage=make_storage(storage), seeds=seeds,
    )
    scheduler = ASHAScheduler(time_attr="epoch", metric="accuracy", mode="max",
                              max_t=math.ceil(s.proxy_epochs) + 1, grace_period=1, reduction_factor=2)
    # rejected and failed candidates end without every objective; they are recorded as
    # PRUNED / FAIL by the searcher above instead of failing Tune's strict metric check
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
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
    tuner = tune.Tuner(
        tune.with_resources(_trainable, {"cpu": threads}),
        param_space={"settings": settings, "storage": storage, "study_name": study_name},
        tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler, num_samples=remaining,
                                    max_concurrent_trials=s.workers),
        run_config=tune.RunConfig(name=study_name, storage_path=str((runs_dir() / "ray_results").resolve()),
                                  verbose=0),
    )
    tuner.fit()
    return optuna.load_study(study_name=study_name, storage=open_storage_readonly(storage))
