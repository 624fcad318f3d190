"""Resolve device and precision arguments, and fingerprint the device a figure was measured on."""

from __future__ import annotations

import platform
import re

import torch

from ..errors import check_choice

__all__ = ["PRECISIONS", "bytes_per_element", "device_name", "fingerprint", "resolve_device", "resolve_precision"]

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not m:
        raise ValueError(f"device: {text!r} is not allowed; expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ValueError(f"device: {text!r} is not allowed; no CUDA GPU is available here (use cpu or auto)")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"device: {text!r} is not allowed; this machine has cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return torch.device("cuda", index)


def resolve_precision(precision: str, device: torch.device) -> str:
    check_choice("precision", precision, PRECISIONS)
    if device.type == "cpu" and precision == "fp16":
        raise ValueError("precision: 'fp16' is not allowed on cpu; expected fp32 or bf16 there (fp16 needs a CUDA device)")
    return precision


def bytes_per_element(precision: str) -> int:
    return _BYTES[precision]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """A readable name: the CPU model, or the GPU name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model()


def fingerprint(device: torch.device, threads: int | None = None) -> str:
    """What must match for two measurements to be comparable: hardware, threads, torch build."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        hw = f"cuda|{props.name}|sm{props.major}{props.minor}|{props.total_memory // 2**20}MiB|cuda{torch.version.cuda}"
    else:
        hw = f"cpu|{_cpu_model()}|{platform.machine()}|threads={threads or torch.get_num_threads()}"
    return f"{hw}|torch{torch.__version__}"
