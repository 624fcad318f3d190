"""`export`: from a name, a config, or a study's trial to a file on disk (and its weights next to it)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..config import ArchConfig
from ..errors import check_choice
from ..latency.runtimes import MEASURE_RUNTIMES
from ..resolution import Resolution
from .files import check_writable, write_atomic
from .formats import SUFFIXES, build_for_export, check_format, check_memory, export_bytes, weights_bytes
from .pyfile import export_resolution
from .source import config_from_study, load_weights, record_metadata

__all__ = ["default_filename", "export", "latency_metadata", "resolve_source"]

_WEIGHTS_SUFFIX = ".safetensors"
_EMBEDS_WEIGHTS = ("onnx", "torchscript")


def resolve_source(source: Any = None, *, storage: str | None = None, study_name: str | None = None,
                   trial: int | None = None, best: bool = False,
                   budget_ms: float | None = None) -> tuple[ArchConfig, dict | None]:
    """(config, trial record or None) for any source `export` accepts.

    ``source``: an `ArchConfig`; a ``(config, record)`` pair as `config_from_study` returns; a
    canonical model name; or a JSON/YAML config file. Or leave it None and name a study's trial
    with ``storage`` (+ ``study_name``, ``trial`` or ``best``, ``budget_ms``).
    """
    from ..cli import resolve_config

    study_args = storage is not None or study_name is not None or trial is not None or best or budget_ms is not None
    if source is not None and study_args:
        raise ValueError(f"source: {str(source)!r} is not allowed together with a study; give a model name or "
                         "config file, or --storage/--study-name/--trial/--best, not both")
    if source is None:
        if not study_args:
            raise ValueError("source: none given; expected a model name, a config file, or a study trial "
                             "(--storage URL with --trial N or --best)")
        if storage is None:
            from ..search.optuna_backend import default_storage

            storage = default_storage()
        return config_from_study(storage, study_name, trial, best, budget_ms)
    if isinstance(source, ArchConfig):
        return source, None
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], ArchConfig):
        return source[0], dict(source[1] or {})
    if isinstance(source, (str, os.PathLike)):
        return resolve_config(os.fspath(source)), None
    raise ValueError(f"source: {type(source).__name__} is not allowed; expected an ArchConfig, a model name "
                     "or a config file path")


def default_filename(config: ArchConfig, fmt: str, deploy: bool = False) -> str:
    """``<name>[-deploy].<suffix>``; a config without a name is called ``arch-<arch_id>``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", config.name).strip("._") or f"arch-{config.arch_id}"
    return f"{stem}{'-deploy' if deploy else ''}{SUFFIXES[check_format(fmt)][0]}"


def latency_metadata(config: ArchConfig, latency: str, resolution: Resolution, deploy: bool,
                     runtime: str = "eager") -> dict[str, Any]:
    """Docstring figures for ``latency``: ``measured`` (on this machine under ``runtime``, cached),
    ``predicted:DEVICE`` or ``none``."""
    from ..latency import LatencyCache, measure, predict
    from ..paths import runs_dir

    if latency == "none":
        return {"latency_note": "not recorded at export"}
    if latency == "measured":
        r = measure(config, device="auto", resolution=resolution, deploy=deploy, runtime=runtime,
                    cache=LatencyCache(runs_dir() / "latency.db"))
    elif latency.startswith("predicted:") and latency.split(":", 1)[1]:
        r = predict(config, latency.split(":", 1)[1], resolution, deploy=deploy)
    else:
        raise ValueError(f"latency: {latency!r} is not allowed; expected auto, none, measured or predicted:<device>")
    if not r.ok:
        return {"latency_note": f"{r.source} latency failed on {r.device}: {r.error}"}
    ctx = r.context
    device = r.device
    if r.source == "measured" and ctx.get("device_name") and ctx["device_name"] not in device:
        device = f"{device} ({ctx['device_name']}, {ctx.get('threads')} threads)"
    meta = {"latency_ms": r.median_ms, "latency_source": r.source, "device": device,
            "precision": ctx.get("precision"), "batch": ctx.get("batch"), "latency_resolution": resolution}
    if r.disturbed:
        meta.update(latency_disturbed=True, latency_slowdown=r.canary_slowdown)
    if deploy:
        meta["latency_deploy"] = True
    if r.source == "measured" and runtime != "eager":
        meta["latency_runtime"] = f"{runtime} {ctx.get('runtime_version') or ''}".strip()
    return meta


def _check_latency(latency: str) -> None:
    ok = latency in ("auto", "none", "measured") or (
        isinstance(latency, str) and latency.startswith("predicted:") and bool(latency.split(":", 1)[1]))
    if not ok:
        raise ValueError(f"latency: {latency!r} is not allowed; expected auto, none, measured or predicted:<device>")


def _state_dict(weights: Any, config: ArchConfig) -> dict[str, torch.Tensor] | None:
    if weights is None:
        return None
    if isinstance(weights, Mapping):
        build_for_export(config, weights)  # names what does not fit
        return dict(weights)
    return load_weights(weights, config)


def export(source: Any, fmt: str, out: str | os.PathLike | None, *, deploy: bool = False, force: bool = False,
           weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None, metadata: dict | None = None,
           latency: str = "auto", resolution: Resolution | None = None, storage: str | None = None,
           study_name: str | None = None, trial: int | None = None, best: bool = False,
           budget_ms: float | None = None, runtime: str = "eager") -> Path:
    """Export an architecture to ``out`` in format ``fmt``; returns the path written.

    ``source`` is anything `resolve_source` takes (or None with ``storage``/``study_name``/``trial``/
    ``best``/``budget_ms`` for a study's trial). ``out`` is a file, or an existing folder (the file
    is then named by `default_filename`); None means the current folder. ``weights`` (a checkpoint
    path or a state dict of `nas.build_model(config)`) are embedded in onnx/torchscript and written
    next to a py/json/yaml export as ``<out>.safetensors``. ``latency``: ``auto`` (the trial's own
    figure for a study source, else ``measured``), ``measured`` (under ``runtime``: eager, compile or
    onnxruntime), ``predicted:DEVICE`` or ``none``.
    Existing files are refused unless ``force``; every file is written atomically.
    """
    fmt = check_format(fmt)
    _check_latency(latency)
    check_choice("runtime", runtime, MEASURE_RUNTIMES)
    config, record = resolve_source(source, storage=storage, study_name=study_name, trial=trial, best=best,
                                    budget_ms=budget_ms)
    target = Path(out) if out is not None else Path.cwd()
    if target.is_dir():
        target = target / default_filename(config, fmt, deploy)
    if target.suffix.lower() not in SUFFIXES[fmt]:
        raise ValueError(f"out: {str(target)!r} is not allowed for format {fmt!r}; expected a file ending in "
                         f"{' or '.join(SUFFIXES[fmt])}")
    weights_path = target.with_suffix(_WEIGHTS_SUFFIX) if weights is not None and fmt not in _EMBEDS_WEIGHTS else None
    check_writable([target] + ([weights_path] if weights_path else []), force)

    meta: dict[str, Any] = record_metadata(record) if record else {}
    given = dict(metadata or {})  # the caller's figures win over the trial's and over measuring
    if resolution is not None:
        given["resolution"] = resolution
    res = export_resolution(config, given.get("resolution") or meta.get("resolution"))
    meta["resolution"] = res
    measure = fmt in ("py", "onnx", "torchscript") and "latency_ms" not in given and (
        latency != "auto" or "latency_ms" not in meta)
    if fmt in _EMBEDS_WEIGHTS or weights is not None or (measure and latency in ("auto", "measured")):
        check_memory(config, fmt, res, deploy)  # before any model is built
    state_dict = _state_dict(weights, config)  # before any measurement: a bad checkpoint fails at once
    if measure:
        for key in ("latency_ms", "latency_source", "device", "precision", "batch", "latency_resolution",
                    "latency_disturbed", "latency_slowdown", "latency_runtime"):
            meta.pop(key, None)
        meta.update(latency_metadata(config, "measured" if latency == "auto" else latency, res, deploy, runtime))
    meta.update(given)

    data = export_bytes(config, fmt, deploy=deploy, metadata=meta, state_dict=state_dict)
    if weights_path is not None:
        write_atomic(weights_path, weights_bytes(config, state_dict, deploy=deploy), force=force)
    return write_atomic(target, data, force=force)
