"""Synthetic studies in the search's storage layout, for the app's tests and benchmark.

Real searches cost minutes; these write any number of trials in seconds with the same user
attributes `nas.search` stores (config, arch_id, params, MACs, CIO, MoC, latency with source and
device, accuracy and its per-epoch curve, status), so the app reads them exactly like a real
study. Architectures are real (`nas.sampling.random_config`, costs from `nas.analyze`, latency
predicted for the device); only the accuracy is made up: a noisy, saturating function of
log MACs, so fronts and correlations have a realistic shape.
"""

from __future__ import annotations

import math
import random
import json
import sqlite3
from datetime import datetime
from typing import Any, Sequence

from ..resolution import Resolution

__all__ = ["synthetic_study"]


def _metrics(config: Any, resolution: Resolution, device: str, rng: random.Random) -> dict[str, Any]:
    from ..cost import analyze
    from ..latency.predict import predict

    cost = analyze(config, resolution)
    lat = predict(config, device, resolution)
    acc = 0.55 + 0.05 * math.log10(max(cost.macs, 1)) + rng.gauss(0.0, 0.03)
    acc = min(0.99, max(0.1, acc))
    curve = [round(acc * f, 4) for f in (0.6, 0.85, 1.0)]
    return {"arch_id": config.arch_id, "config": config.to_json(indent=None), "params": cost.params, "macs": cost.macs,
            "thop_macs": cost.thop_macs, "cio": cost.cio, "moc": cost.moc, "latency_ms": lat.median_ms,
            "latency_source": "predicted", "latency_device": lat.device, "accuracy": curve[-1], "accuracy_curve": curve,
            "proxy": "train", "status": "ok", "reason": None, "wall_s": round(rng.uniform(0.5, 5.0), 3)}


def synthetic_study(storage: Any, name: str, n_trials: int, *, seed: int = 0, budget_ms: float = 0.6,
                    device: str = "v100", resolution: Resolution = 64, baselines: Sequence[str] = ("hardnet39ds", "hardnet68"),
                    reject_over: float = 2.0, bulk: bool = False) -> Any:
    """Create study ``name`` in ``storage`` (URL or Optuna storage) with ``n_trials`` trials; returns it.

    Baselines come first with their ``seed`` name, as the search enqueues them. A random
    architecture whose latency is over ``reject_over`` budgets becomes a PRUNED ``rejected``
    trial without accuracy (as the search's gate would); the others are COMPLETE, feasible or not.

    ``bulk=True`` (``sqlite:///`` URLs only) inserts the trials with one SQL transaction into
    Optuna's own tables instead of `optuna.Study.add_trials`, which costs ~30 ms per trial of this
    size on a 2-core VM (5 minutes for 10,000); the tests check both ways read back the same.
    """
    import optuna

    from ..registry import get_config
    from ..sampling import random_config

    if bulk and not (isinstance(storage, str) and storage.startswith("sqlite:///")):
        raise ValueError(f"bulk: only for sqlite:/// URLs, not {storage!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("settings", {"budget_ms": budget_ms, "space": "synthetic", "seed": seed, "device": "auto",
                                     "resolution": resolution, "batch": 1, "precision": "fp32",
                                     "latency": f"predicted:{device}", "proxy": "train", "data": "digits",
                                     "objectives": ["accuracy", "latency", "cio"], "sampler": "random"})
    study.set_user_attr("objectives", ["accuracy", "latency", "cio"])
    rng = random.Random(seed)
    trials = []
    configs: list[tuple[Any, dict[str, Any]]] = [(get_config(b), {"seed": b}) for b in baselines]
    i = 0
    while len(configs) < n_trials:
        cfg = random_config(rng.randrange(10**9), max_stages=3, max_width=32, max_depth=6)
        i += 1
        try:
            cfg.check_resolution(resolution)
        except ValueError:
            continue
        configs.append((cfg, {}))
    for cfg, extra in configs[:n_trials]:
        m = {**_metrics(cfg, resolution, device, rng), **extra, "budget_ms": budget_ms}
        over = m["latency_ms"] - budget_ms
        if not extra and m["latency_ms"] > reject_over * budget_ms:
            m.update(status="rejected", reason=f"over budget: predicted {m['latency_ms']:.2f} ms > {budget_ms:g} ms")
            for k in ("accuracy", "accuracy_curve"):
                m.pop(k)
            trials.append(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs=m,
                                                    system_attrs={"constraints:latency": over}))
            continue
        trials.append(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, values=[m["accuracy"], m["latency_ms"], float(m["cio"])],
            user_attrs=m, system_attrs={"constraints:latency": over}))
    if bulk:
        from ..search.storage import storage_file

        _bulk_insert(str(storage_file(storage)), study._study_id, trials)
        return optuna.load_study(study_name=name, storage=storage)
    study.add_trials(trials)
    return study


def _bulk_insert(path: str, study_id: int, trials: Sequence[Any]) -> None:
    """Rows of finished trials in Optuna's RDB schema (trials, values, user and system attributes)."""
    con = sqlite3.connect(path)
    try:
        with con:
            start = con.execute("SELECT COALESCE(MAX(number) + 1, 0) FROM trials WHERE study_id = ?", (study_id,)).fetchone()[0]
            now = datetime.now().isoformat(sep=" ")
            for i, t in enumerate(trials):
                cur = con.execute("INSERT INTO trials (number, study_id, state, datetime_start, datetime_complete) "
                                  "VALUES (?, ?, ?, ?, ?)", (start + i, study_id, t.state.name, now, now))
                tid = cur.lastrowid
                con.executemany("INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES (?, ?, ?, 'FINITE')",
                                [(tid, j, float(v)) for j, v in enumerate(t.values or [])])
                con.executemany("INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (?, ?, ?)",
                                [(tid, k, json.dumps(v)) for k, v in t.user_attrs.items()])
                con.executemany("INSERT INTO trial_system_attributes (trial_id, key, value_json) VALUES (?, ?, ?)",
                                [(tid, k, json.dumps(v)) for k, v in t.system_attrs.items()])
    finally:
        con.close()
