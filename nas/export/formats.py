"""One architecture as bytes in each export format: py, json, yaml, onnx, torchscript.

`export_bytes` is the single entry point (the command line and the app both go through it).
Formats that carry weights (onnx, torchscript) embed the given state dict, or the fresh
initialisation when there is none; py/json/yaml carry none, and `weights_bytes` writes the
state dict that fits them as safetensors (tensors only, never pickled code).

ONNX and TorchScript files are checked before they are returned: the ONNX graph runs in
onnxruntime and the TorchScript module is loaded back, each on a seeded input, and both must
reproduce the PyTorch outputs; a file that does not is an `ExportError`, never a silent output.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from math import prod
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from ..config import ArchConfig
from ..cost import analyze
from ..fuse import fuse_model
from ..model import build_model
from ..resolution import Resolution, parse_resolution
from .pyfile import export_resolution, render_py

__all__ = ["FORMATS", "SUFFIXES", "ExportError", "available_memory", "build_for_export", "check_format",
           "check_memory", "export_bytes", "memory_estimate", "trace_onnx", "weights_bytes"]

#: format -> file suffixes it is written with (the first is the default)
SUFFIXES: dict[str, tuple[str, ...]] = {
    "py": (".py",),
    "json": (".json",),
    "yaml": (".yaml", ".yml"),
    "onnx": (".onnx",),
    "torchscript": (".pt", ".ts", ".torchscript"),
}
FORMATS: tuple[str, ...] = tuple(SUFFIXES)
_DEPLOYABLE = ("py", "onnx", "torchscript")
_ONNX_HINT = "pip install 'hardnas[onnx]'"
# how far an exported graph may drift from PyTorch, relative to the largest output magnitude
_ONNX_TOL = 1e-4
_TS_TOL = 1e-5
#: copies of the weights an export holds at once: the model, the serialised buffer and its copy, the
#: reloaded module (onnx: also the parsed and re-serialised proto and onnxruntime's session)
_WEIGHT_COPIES = {"onnx": 6, "torchscript": 4}
_MEMORY_FRACTION = 0.5


class ExportError(RuntimeError):
    """An export that ran but whose result failed its check (not the user's to fix by a flag)."""


def check_format(fmt: str) -> str:
    """``fmt`` if it is a known format, else a `ValueError` naming the allowed ones."""
    if fmt not in SUFFIXES:
        raise ValueError(f"format: {fmt!r} is not allowed; expected one of {', '.join(FORMATS)}")
    return fmt


def memory_estimate(config: ArchConfig, fmt: str, resolution: Resolution, deploy: bool = False) -> int:
    """Peak bytes an export of ``config`` needs, from the cost model: weight copies plus one forward's activations."""
    report = analyze(config, resolution)
    copies = _WEIGHT_COPIES.get(fmt, 2) + int(deploy)
    activations = sum(prod(layer.out_shape) for layer in report.layers)
    return 4 * (report.params * copies + activations)


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def available_memory() -> int | None:
    """Bytes this process may still allocate: free RAM, capped by its cgroup's and its address-space limits."""
    limits = []
    try:
        with open("/proc/meminfo") as f:
            limits += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except OSError:
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    cap, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if cap is not None and used is not None:
        limits.append(max(0, cap - used))
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    except (ImportError, ValueError, OSError):
        pass
    return min(limits) if limits else None


def check_memory(config: ArchConfig, fmt: str, resolution: Resolution, deploy: bool = False) -> None:
    """Refuse, in one line, an export whose estimated memory exceeds half of what is available now."""
    available = available_memory()
    if available is None:
        return
    need, limit = memory_estimate(config, fmt, resolution, deploy), int(available * _MEMORY_FRACTION)
    if need > limit:
        name, params = config.name or f"arch-{config.arch_id}", analyze(config, resolution).params
        raise ValueError(f"config: {name} needs about {need / 2**30:,.1f} GiB of memory to export as {fmt} "
                         f"({params / 1e6:,.0f} M parameters, estimated by the cost model), "
                         f"over the limit of {limit / 2**30:,.1f} GiB (half of the {available / 2**30:,.1f} GiB "
                         "available); expected a smaller architecture, or --format json/yaml (they build no model)")


def _require_onnx() -> None:
    missing = []
    for module in ("onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ValueError(f"format: 'onnx' needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                         f"not installed; {_ONNX_HINT}")


def build_for_export(config: ArchConfig, state_dict: Mapping[str, torch.Tensor] | None = None,
                     deploy: bool = False) -> nn.Module:
    """The in-package model in eval mode, with ``state_dict`` loaded (strictly) and BN folded if ``deploy``.

    ``state_dict`` is that of `nas.build_model(config)` (the training layout); a deploy export
    folds it. A state dict that does not fit raises `ValueError` naming the first differences.
    """
    model = build_model(config)
    if state_dict is not None:
        own = model.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        shapes = [k for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or shapes:
            parts = []
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
                if keys:
                    parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
            raise ValueError(f"state_dict: does not fit architecture {config.arch_id}: {'; '.join(parts)}")
        model.load_state_dict(dict(state_dict))
    model.eval()
    return fuse_model(model) if deploy else model


def weights_bytes(config: ArchConfig, state_dict: Mapping[str, torch.Tensor] | None = None, *,
                  deploy: bool = False) -> bytes:
    """A safetensors file of the weights that fit the exported .py (the fused ones for ``deploy``).

    The header's metadata names the architecture, so a file cannot silently meet the wrong model.
    """
    from safetensors.torch import save

    model = build_for_export(config, state_dict, deploy)
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": "hardnas-export", "arch_id": config.arch_id, "deploy": str(bool(deploy)).lower(),
            "config": config.to_json(indent=None)}
    return save(tensors, metadata=meta)


def _example(config: ArchConfig, resolution: Resolution, batch: int = 2) -> torch.Tensor:
    """A seeded ``batch x C x H x W`` input. The checks run on a batch of two at a small size (twice
    the network's stride), unlike the traced example: that proves the dynamic axes and keeps the check cheap."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, config.in_channels, *parse_resolution(resolution), generator=g)


def _close(got: torch.Tensor, want: torch.Tensor, tol: float) -> tuple[bool, float]:
    err = float((got.float() - want.float()).abs().max())
    scale = max(1.0, float(want.abs().max()))
    return err <= tol * scale, err


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Exporter chatter (deprecations, constant-folding notes) is not the user's business."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def trace_onnx(model: nn.Module, x1: torch.Tensor, dynamic: bool = True) -> bytes:
    """``model`` as an ONNX graph traced on the example ``x1``, with a dynamic batch (and, by the
    TorchScript-based exporter, dynamic height and width) unless ``dynamic=False`` fixes ``x1``'s
    shape (what a latency measurement runs); nothing checked yet."""
    names = dict(input_names=["input"], output_names=["logits"])
    buf = io.BytesIO()
    with _quiet(), torch.no_grad():
        try:
            # the TorchScript-based exporter: seconds where the dynamo one takes tens of them, and
            # available across the torch versions hardnas supports
            axes = {"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}} if dynamic else None
            torch.onnx.export(model, (x1,), buf, dynamo=False, opset_version=17, do_constant_folding=True,
                              dynamic_axes=axes, **names)
            return buf.getvalue()
        except Exception as legacy_error:  # a torch without it (or a model it cannot trace): dynamo
            try:
                import onnxscript  # noqa: F401
            except ImportError:
                raise ValueError(f"format: 'onnx' needs onnxscript here, which is not installed; {_ONNX_HINT}") from None
            batch = torch.export.Dim("batch", min=1, max=1024)
            try:
                program = torch.onnx.export(model, (x1,), dynamo=True,
                                            dynamic_shapes={"x": {0: batch}} if dynamic else None, **names)
            except Exception as err:
                raise ExportError(f"onnx: export failed ({type(legacy_error).__name__}: {legacy_error}; "
                                  f"then {type(err).__name__}: {err})".splitlines()[0]) from err
            return program.model_proto.SerializeToString()


def _onnx_bytes(model: nn.Module, config: ArchConfig, resolution: Resolution, meta: dict[str, str]) -> bytes:
    _require_onnx()
    import onnx
    import onnxruntime as ort

    data = trace_onnx(model, _example(config, resolution, batch=1))
    proto = onnx.load_from_string(data)
    onnx.helper.set_model_props(proto, meta)
    data = proto.SerializeToString()
    # the check: onnxruntime against PyTorch on another input shape than the traced one
    x = _example(config, 2 * config.reduction)
    with torch.no_grad():
        want = model(x)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    ok, err = _close(got, want, _ONNX_TOL)
    if not ok or got.shape != want.shape:
        raise ExportError(f"onnx: onnxruntime output differs from PyTorch by {err:.3g} (shape {tuple(got.shape)} vs "
                          f"{tuple(want.shape)}); the file was not written")
    return data


def _torchscript_bytes(model: nn.Module, config: ArchConfig, resolution: Resolution, meta: dict[str, str]) -> bytes:
    x = _example(config, 2 * config.reduction)
    with _quiet():
        try:
            scripted = torch.jit.script(model)
        except Exception:  # scripting is the better artefact (no baked-in shapes); tracing always works
            with torch.no_grad():
                scripted = torch.jit.trace(model, (x,))
        buf = io.BytesIO()
        torch.jit.save(scripted, buf, _extra_files={f"hardnas/{k}": v for k, v in meta.items()})
        data = buf.getvalue()
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    with torch.no_grad():
        want, got = model(x), loaded(x)
    ok, err = _close(got, want, _TS_TOL)
    if not ok:
        raise ExportError(f"torchscript: the saved module's output differs from PyTorch by {err:.3g}; "
                          "the file was not written")
    return data


def export_bytes(config: ArchConfig, fmt: str, *, deploy: bool = False, metadata: dict | None = None,
                 state_dict: dict | None = None) -> bytes:
    """The architecture in format ``fmt`` (py, json, yaml, onnx, torchscript), as bytes.

    * ``py``: a standalone PyTorch file (imports only torch) with the config, cost figures and the
      figures in ``metadata`` in its docstring; ``state_dict``, if given, is checked to fit.
    * ``json`` / ``yaml``: the config, loadable by `nas.ArchConfig.load` / `nas.build_model`.
    * ``onnx`` / ``torchscript``: the model with ``state_dict`` (or its fresh initialisation),
      dynamic batch size (and spatial size for ONNX), checked against PyTorch before returning.

    ``deploy`` folds BatchNorm into the convs (py, onnx, torchscript only). ``metadata`` may hold
    ``latency_ms``, ``latency_source``, ``device``, ``accuracy``, ``resolution`` (the input size, 224 or
    "HxW", of the cost figures and of the traced example; default 224 rounded up to the network's stride) and any
    other scalar figures.
    """
    if not isinstance(config, ArchConfig):
        raise ValueError(f"config: {type(config).__name__} is not allowed; expected an ArchConfig")
    check_format(fmt)
    if deploy and fmt not in _DEPLOYABLE:
        raise ValueError(f"deploy: not allowed with format {fmt!r}; BatchNorm folding applies to "
                         f"{', '.join(_DEPLOYABLE)} (a config has no weights to fold)")
    meta = dict(metadata or {})
    if fmt == "json":
        return (config.to_json() + "\n").encode()
    if fmt == "yaml":
        return config.to_yaml().encode()
    if fmt == "py":
        if state_dict is not None:
            build_for_export(config, state_dict)  # fails early, by name, if the weights do not fit
        return render_py(config, deploy=deploy, metadata=meta).encode()
    resolution = export_resolution(config, meta.get("resolution"))
    check_memory(config, fmt, resolution, deploy)
    model = build_for_export(config, state_dict, deploy)
    props = {"hardnas_config": config.to_json(indent=None), "hardnas_arch_id": config.arch_id,
             "hardnas_deploy": str(bool(deploy)).lower(),
             "hardnas_metadata": json.dumps({k: v for k, v in meta.items() if _jsonable(v)})}
    if fmt == "onnx":
        return _onnx_bytes(model, config, resolution, props)
    return _torchscript_bytes(model, config, resolution, props)


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True
