"""One candidate, end to end: cost, cheap gate, latency, proxy accuracy. Shared by both backends.

`evaluate` never raises for a bad candidate: it returns metrics with ``status`` one of
``ok``, ``rejected`` (the gate or the budget said no before training, with the reason) or
``failed`` (latency or training broke, with the reason).

A baseline (a canonical config, ``baseline=True``) is never rejected: it gets the same latency and
proxy accuracy as any candidate, also over the budget (``over_budget`` says so, and its constraint
marks it infeasible), and its proxy result is cached by arch_id + proxy settings + data + seed in
``runs/proxy_cache.db``, so it is paid once for all studies that share them.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from ..config import ArchConfig
from ..cost import analyze
from ..data import Dataset, load_dataset
from ..errors import failure_reason
from ..latency import LatencyCache, LatencyResult, measure, predict
from ..latency.devices import resolve_device
from ..latency.predict import predict_ms
from ..latency.profiles import DeviceProfile, resolve_profile
from ..latency.profiling import local_profile
from ..paths import runs_dir
from ..proxy import ProxyBudget, ProxyCache, train_eval, zero_cost
from .settings import SearchSettings

__all__ = ["METRIC_OF", "evaluate", "gate_profile", "measure_settled", "objective_values", "proxy_context"]

METRIC_OF = {"accuracy": "accuracy", "latency": "latency_ms", "cio": "cio", "macs": "macs", "params": "params"}
"""The metric that holds each objective's value."""


@lru_cache(maxsize=4)
def _dataset(spec: str, seed: int) -> Dataset:
    return load_dataset(None if spec == "digits" else spec, seed=seed)


@lru_cache(maxsize=1)
def _cache() -> LatencyCache:
    return LatencyCache(runs_dir() / "latency.db")


def _proxy_cache() -> ProxyCache:
    return ProxyCache(runs_dir() / "proxy_cache.db")


def proxy_context(s: SearchSettings) -> dict[str, Any]:
    """The settings a proxy figure depends on (the key of the baseline cache beside the arch_id)."""
    data = str(Path(s.data).resolve()) if s.data != "digits" and Path(s.data).exists() else s.data
    ctx: dict[str, Any] = {"proxy": s.proxy, "data": data, "seed": s.seed, "device": resolve_device(s.device).type}
    if s.proxy == "train":
        ctx["proxy_epochs"] = s.proxy_epochs
    else:
        ctx["zero_cost_metric"] = s.zero_cost_metric
    return ctx


def evaluate(config: ArchConfig, s: SearchSettings, on_epoch: Callable[[int, float], bool | None] | None = None,
             metrics: dict[str, Any] | None = None, baseline: bool = False) -> dict[str, Any]:
    """All metrics of one candidate as a flat dict of JSON-friendly values.

    Pass ``metrics`` to watch them fill in (latency is in it before the proxy training starts).
    Whatever a candidate does, this returns: an unexpected exception is a ``failed`` status.
    A ``baseline`` passes the gate and the budget, is never stopped early and uses the proxy cache.
    """
    m = metrics if metrics is not None else {}
    start = time.perf_counter()
    try:
        return _evaluate(config, s, None if baseline else on_epoch, m, baseline)
    except Exception as err:  # one bad candidate never ends the search
        m.update(arch_id=config.arch_id, config=config.to_json(indent=None), status="failed",
                 reason=failure_reason(err), wall_s=time.perf_counter() - start)
        return m


def gate_profile(s: SearchSettings) -> DeviceProfile:
    """The profile the gate, a disturbed measurement and budget-aware proposals predict with: the chosen
    published one, this CPU's, or the measuring GPU's own (`local_profile`: saved, else profiled once)."""
    if s.latency_kind == "predicted":
        return resolve_profile(s.latency_device)
    dev = resolve_device(s.device)
    return resolve_profile("cpu") if dev.type == "cpu" else local_profile(dev)


def _evaluate(config: ArchConfig, s: SearchSettings, on_epoch: Callable[[int, float], bool | None] | None,
              m: dict[str, Any], baseline: bool) -> dict[str, Any]:
    start = time.perf_counter()
    cost = analyze(config, s.resolution, s.batch)
    m.update({"arch_id": config.arch_id, "config": config.to_json(indent=None), "params": cost.params,
                         "macs": cost.macs, "thop_macs": cost.thop_macs, "cio": cost.cio, "moc": cost.moc,
                         "status": "ok", "reason": None})

    def done(status: str, reason: str | None) -> dict[str, Any]:
        m.update(status=status, reason=reason, wall_s=time.perf_counter() - start)
        return m

    gate = gate_profile(s)
    gate_ms = predict_ms(config, gate, s.resolution, s.batch, s.precision)
    m["gate_predicted_ms"] = gate_ms
    if gate_ms > s.gate_factor * s.budget_ms and not baseline:
        return done("rejected", f"gate: predicted {gate_ms:.1f} ms on {gate.name} is over "
                                f"{s.gate_factor:g}x the {s.budget_ms:g} ms budget")
    if s.latency_kind == "measured":
        lat = measure_settled(config, s)
        m.update(_measurement_fields(lat, s))
        if lat.ok and lat.disturbed:
            # a figure timed while other work ran can be 100x off (thread stalls grow with the network, so no
            # slowdown factor corrects it): keep it aside and decide on this device's prediction, labelled so
            m.update(latency_raw_ms=lat.median_ms, latency_interference=lat.interference,
                     latency_prediction_calibrated=gate.fitted_to_networks)
            lat = predict(config, gate, s.resolution, s.batch, s.precision)
    else:
        lat = predict(config, s.latency_device, s.resolution, s.batch, s.precision)
    if not lat.ok:
        m.update(latency_source=lat.source, latency_device=lat.device, latency_rel_iqr=lat.rel_iqr)
        return done("failed", f"latency: {lat.error}")
    m.update(_latency_fields(lat, s))
    if m["over_budget"] and not baseline:
        return done("rejected", _over_budget(m, s))

    if baseline:
        cached = _proxy_cache().get(config.arch_id, proxy_context(s))
        if cached is not None:
            m.update(cached, proxy_cached=True)
            return done("ok", None)
    _proxy(config, s, on_epoch, m)
    if baseline and m["status"] == "ok":
        _proxy_cache().put(config.arch_id, proxy_context(s), m)
    m["wall_s"] = time.perf_counter() - start
    return m


def _measurement_fields(lat: LatencyResult, s: SearchSettings) -> dict[str, Any]:
    """What a measurement records besides its figure: the runtime, and whether other work disturbed it."""
    fields = {"latency_runtime": lat.context.get("runtime", s.runtime),
              "latency_runtime_version": lat.context.get("runtime_version")}
    if lat.ok:
        fields.update(latency_disturbed=lat.disturbed, latency_slowdown=lat.canary_slowdown)
    return fields


def _latency_fields(lat: LatencyResult, s: SearchSettings) -> dict[str, Any]:
    """The latency a candidate is judged by (measured, or predicted) and whether it is over the budget."""
    return {"latency_source": lat.source, "latency_device": lat.device, "latency_rel_iqr": lat.rel_iqr,
            "latency_ms": lat.median_ms, "over_budget": lat.median_ms > s.budget_ms}


def _over_budget(m: dict[str, Any], s: SearchSettings) -> str:
    flag = " (the measurement was disturbed by other work)" if m.get("latency_disturbed") else ""
    return f"over budget: {m['latency_source']} {m['latency_ms']:.1f} ms > {s.budget_ms:g} ms{flag}"


def remeasure(attrs: dict[str, Any], config: ArchConfig, s: SearchSettings, baseline: bool = False) -> dict[str, Any] | None:
    """A twin's metrics (``attrs``) with the latency that other work disturbed measured again, the training kept.

    Measured cleanly now, the figure and its verdict replace the prediction that stood in for it
    (a candidate over the budget is now rejected, a baseline never); None while the device is still busy.
    """
    lat = measure_settled(config, s)
    if not lat.ok or lat.disturbed:
        return None
    m = {k: v for k, v in attrs.items()
         if k not in ("latency_raw_ms", "latency_interference", "latency_prediction_calibrated")}
    m.update(_measurement_fields(lat, s), **_latency_fields(lat, s), status="ok", reason=None)
    if m["over_budget"] and not baseline:
        m.update(status="rejected", reason=_over_budget(m, s))
    return m


def _proxy(config: ArchConfig, s: SearchSettings, on_epoch: Callable[[int, float], bool | None] | None,
           m: dict[str, Any]) -> None:
    """The proxy accuracy (training or zero-cost) into ``m``; its status too when it is not ok."""
    def done(status: str, reason: str | None) -> None:
        m.update(status=status, reason=reason)

    data = _dataset(s.data, s.seed)
    try:
        zc = zero_cost(config, data, seed=s.seed)
        m.update({f"zc_{k}": v for k, v in zc.items() if k != "params"})
    except Exception as err:  # a zero-cost failure only matters when it is the objective
        m["zc_error"] = f"{type(err).__name__}: {err}"[:200]
        if s.proxy == "zero-cost":
            return done("failed", f"zero-cost proxy: {m['zc_error']}")
    if s.proxy == "zero-cost":
        m["accuracy"] = m[f"zc_{s.zero_cost_metric}"]
        m["proxy"] = f"zero-cost:{s.zero_cost_metric}"
        return done("ok", None)
    r = train_eval(config, data, ProxyBudget(epochs=s.proxy_epochs, seed=s.seed), device=s.device, callback=on_epoch)
    m.update(proxy="train", accuracy=r.accuracy, accuracy_curve=r.accuracy_curve, loss_curve=r.loss_curve,
             eval_loss_curve=r.eval_loss_curve,
             proxy_wall_s=r.wall_s, proxy_images_per_s=r.images_per_s, proxy_resolution=r.proxy.get("resolution"),
             proxy_threads=(r.proxy.get("threads") or {}).get("fewest"), extrapolated_accuracy=r.extrapolated_accuracy)
    if r.status == "failed":
        return done("failed", f"proxy training: {r.reason}")
    if r.status == "pruned":
        return done("pruned", r.reason)
    return done("ok", None)


class _Backoff:
    """How long to wait before re-measuring a disturbed figure: doubling while disturbed results keep
    coming (rejections would pile up), from ``first_s`` up to ``max_s``; one re-measurement per candidate."""

    first_s, max_s = 1.0, 8.0

    def __init__(self) -> None:
        self.streak = 0  # consecutive candidates whose measurement was disturbed

    def wait_s(self) -> float:
        return min(self.max_s, self.first_s * 2 ** min(self.streak, 3))


_BACKOFF = _Backoff()


def measure_settled(config: ArchConfig, s: SearchSettings, sleep: Callable[[float], None] = time.sleep) -> LatencyResult:
    """`measure`, and once more after a back-off when the first result is disturbed (the later one is kept)."""
    def once() -> LatencyResult:
        return measure(config, device=s.device, resolution=s.resolution, batch=s.batch, precision=s.precision,
                       runtime=s.runtime, cache=_cache())

    lat = once()
    if lat.ok and lat.disturbed:
        sleep(_BACKOFF.wait_s())
        lat = once()
    _BACKOFF.streak = _BACKOFF.streak + 1 if lat.ok and lat.disturbed else 0
    return lat


def objective_values(m: dict[str, Any], objectives: tuple[str, ...]) -> list[float]:
    return [float(m[METRIC_OF[o]]) for o in objectives]
