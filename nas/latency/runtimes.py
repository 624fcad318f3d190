"""The runtimes a latency is measured under: eager PyTorch, ``torch.compile`` (inductor) and ONNX Runtime.

`prepare` turns a built, eval-mode model and its example input into the callable that is timed;
everything it costs (compiling, exporting, building a session) happens there, before warm-up, so
the timed runs see only inference. `runtime_version` is what a result and its cache key record.
A runtime that cannot run a candidate raises here; `nas.latency.measure` makes that a failed
measurement with one line, never a crash.

ONNX Runtime runs the graph `nas.export` writes (traced at the measured shape), with every graph
optimisation on (``ORT_ENABLE_ALL``: constant folding, conv+BN+activation fusion, layout
transforms), the CPU execution provider here and the TensorRT/CUDA providers on a GPU where the
installed onnxruntime has them.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

__all__ = ["MEASURE_RUNTIMES", "prepare", "runtime_version", "session_options"]

#: runtime name -> what it is (for --help and the docs)
MEASURE_RUNTIMES: dict[str, str] = {
    "eager": "PyTorch eager, one kernel per op",
    "compile": "torch.compile with the inductor backend (fused kernels, generated code)",
    "onnxruntime": "the exported ONNX graph in ONNX Runtime, all graph optimisations on",
}
_ORT_HINT = "pip install 'hardnas[onnx]'"
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def session_options(threads: int) -> "onnxruntime.SessionOptions":
    """ONNX Runtime settings for a latency measurement: all graph optimisations, ``threads`` intra-op
    threads, sequential, quiet, and worker threads that sleep when idle.

    By default they spin after each run and take the cores from whatever is timed next (the
    interference canary, another runtime: tens of percent slower on a small CPU), while the
    session itself gains nothing measurable (docs/export.md).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def runtime_version(runtime: str) -> str | None:
    """The version a result under ``runtime`` records (None: the runtime is not installed)."""
    if runtime in ("eager", "compile"):
        return torch.__version__
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


def prepare(runtime: str, model: nn.Module, x: torch.Tensor, threads: int, precision: str) -> Callable[[Any], Any]:
    """The callable that runs ``model`` on ``x`` under ``runtime`` (``model`` in eval mode, on ``x``'s device)."""
    if runtime == "eager":
        return model
    if runtime == "compile":
        return _compiled(model)
    return _onnxruntime(model, x, threads, precision)


def _compiled(model: nn.Module) -> Callable[[Any], Any]:
    import torch._dynamo

    # one candidate after another would each add a guarded entry to the same forward code and,
    # past dynamo's cache limit, silently fall back to eager: start every candidate afresh
    torch._dynamo.reset()
    return torch.compile(model, backend="inductor", dynamic=False)


def _onnxruntime(model: nn.Module, x: torch.Tensor, threads: int, precision: str) -> Callable[[Any], Any]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError(f"onnxruntime is not installed; {_ORT_HINT}") from None
    if precision != "fp32":
        raise RuntimeError(f"onnxruntime runs the fp32 graph here, not {precision}")
    from ..export.formats import trace_onnx

    cuda = x.device.type == "cuda"
    providers = ["CPUExecutionProvider"]
    if cuda:
        gpu = [p for p in _GPU_PROVIDERS if p in ort.get_available_providers()]
        if not gpu:
            raise RuntimeError(f"this onnxruntime has no GPU execution provider (it has "
                               f"{', '.join(ort.get_available_providers())}); pip install onnxruntime-gpu")
        providers = gpu + providers
    xc = x.contiguous()
    data = trace_onnx(model, xc, dynamic=False)
    session = ort.InferenceSession(data, session_options(threads), providers=providers)
    name = session.get_inputs()[0].name
    if not cuda:
        feed = {name: xc.numpy()}
        return lambda _x: session.run(None, feed)
    binding = session.io_binding()
    index = x.device.index or 0
    binding.bind_input(name, "cuda", index, np.float32, tuple(xc.shape), xc.data_ptr())
    binding.bind_output(session.get_outputs()[0].name, "cuda", index)
    keep = xc  # the bound input must outlive the session's runs

    def run(_x: Any) -> Any:
        session.run_with_iobinding(binding)
        return keep

    return run
