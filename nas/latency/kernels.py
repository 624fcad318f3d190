"""Kernels: what the latency predictor times, one record per GPU/CPU kernel a network launches.

The interface other code builds on (stable names):

* `KERNEL_CLASSES` the predictor's kernel classes, each with its own efficiency in a
  `DeviceProfile`: ``conv3x3`` (dense 3x3 stride-1 conv: cuDNN/oneDNN run it as Winograd or
  implicit GEMM, so its *effective* efficiency may exceed 1), ``conv1x1`` (dense 1x1 stride-1:
  a GEMM), ``conv_strided`` (any other dense conv: strided, or another kernel size),
  ``dwconv`` (depthwise / grouped), ``linear`` and ``memory`` (norm, activation, add, pooling,
  SE gating, concatenation copies: bandwidth-bound).
* `Kernel` one kernel: its class, FLOPs, bytes, precision, runtime and the GEMM shape the
  tensor-core alignment and wave models need.
* `kernels_of` the kernels of a config (from the cost tracer's records, so the two cannot drift);
  `conv_kernel`, `linear_kernel`, `memory_kernel` the same record for one standalone op, so a
  micro-benchmark of one torch op becomes what the predictor uses.
* `kernels_ms` the predictor's time for a list of kernels on a profile.
* `RUNTIMES` what each runtime launches: eager ``pytorch`` runs every op as its own kernel;
  ``tensorrt`` folds norms, fuses activations and residual adds into the conv before them and
  writes concatenations in place, and has its own per-kernel overhead.

The time of one kernel (docs/latency.md has the derivation)::

    max(FLOPs' / (peak x class_eff [x tensor_eff]), bytes / (bandwidth x memory_eff x occupancy)) + overhead

where FLOPs' counts channels padded to the tensor-core (or SIMD) multiple and is divided by the
GEMM's utilisation on a GPU: the conv library picks the output tile (128x128 down to 32x32) that
runs fastest given how full the last wave of CTAs is (2 resident per SM), how much of the tile is
padding and how much less data a smaller tile reuses (`_tile_rate`), so small layers at batch 1
are not predicted as if they filled the GPU; a GEMV (at most 8 rows: a batch-1 linear layer)
spreads over every SM. Occupancy is the share of the GPU's resident threads (2048 per SM) a
kernel's parallel work (its outputs, or half the elements it moves) keeps busy; a depthwise conv's
compute uses it too. A CPU profile (``sm_count`` 0) has neither: its channels are padded to its
SIMD width.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..config import ArchConfig
from ..cost import analyze, checked_input, trace
from ..errors import check_choice, check_int
from ..resolution import Resolution, canonical_resolution
from ..tracer import KINDS, Tracer
from .devices import PRECISIONS, bytes_per_element

if TYPE_CHECKING:
    from .profiles import DeviceProfile

__all__ = ["KERNEL_CLASSES", "RUNTIMES", "Kernel", "Runtime", "conv_kernel", "kernel_rows", "kernels_ms", "kernels_of",
           "linear_kernel", "memory_kernel", "prepare", "prepare_samples", "rows_table", "table"]

KERNEL_CLASSES: tuple[str, ...] = ("conv3x3", "conv1x1", "conv_strided", "dwconv", "linear", "memory")
_CLASS_INDEX = {c: i for i, c in enumerate(KERNEL_CLASSES)}
_LINEAR, _MEMORY = _CLASS_INDEX["linear"], _CLASS_INDEX["memory"]


@dataclass(frozen=True)
class Runtime:
    """How a runtime turns the cost tracer's ops into kernels."""

    name: str
    fused: frozenset[str]  # tracer kinds that launch no kernel of their own
    overhead: str  # the DeviceProfile field holding its per-kernel overhead
    description: str


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime("pytorch", frozenset(), "overhead_us",
                "eager PyTorch: every op its own kernel (deploy=True folds BatchNorm into the conv)"),
        Runtime("tensorrt", frozenset({"norm", "pointwise", "concat"}), "engine_overhead_us",
                "TensorRT engine: BatchNorm folded, activations and residual adds fused into the conv "
                "before them, concatenations written in place"),
    )
}
assert all(r.fused <= set(KINDS) for r in RUNTIMES.values())

#: GPU implicit-GEMM model: the output tiles (pixels x output channels) a conv library chooses
#: from, resident tiles per SM, and resident threads per SM for memory-bound kernels
TILES = ((128, 128), (128, 64), (64, 64), (64, 32), (32, 32))
CTAS_PER_SM, THREADS_PER_SM, GEMV_WIDTH = 2, 2048, 8


def _tile_rate(tm: int, tn: int) -> float:
    """Share of the peak a tile sustains: its data reuse (tm x tn / (tm + tn) FLOPs per element
    loaded) relative to a 128 x 64 tile's, capped at 1: smaller tiles fill more SMs, each slower."""
    return min(1.0, (tm * tn / (tm + tn)) / (128 * 64 / 192))


#: channel multiple tensor cores need (cuDNN pads other counts up to it)
TENSOR_ALIGN = {"fp16": 8, "bf16": 8, "tf32": 4}


@dataclass(frozen=True)
class Kernel:
    """One kernel as the predictor sees it.

    ``flops`` = 2 x MACs on the real channel counts; ``bytes`` moved at ``precision``. For a conv or
    linear kernel, ``pixels`` x ``cout`` is the GEMM output (pixels = batch x output height x
    width; a linear layer: batch) and ``cin`` x ``kernel``^2 its depth, per group; ``elements`` is
    the output size (the parallel work of a memory-bound or depthwise kernel).
    """

    kernel_class: str
    flops: float
    bytes: float
    precision: str = "fp32"
    runtime: str = "pytorch"
    pixels: int = 0
    cin: int = 0
    cout: int = 0
    kernel: int = 1
    groups: int = 1
    elements: int = 0
    name: str = ""


def _conv_class(kernel: int, stride: int, groups: int) -> str:
    if groups > 1:
        return "dwconv"
    if stride == 1 and kernel in (1, 3):
        return "conv3x3" if kernel == 3 else "conv1x1"
    return "conv_strided"


def _check(precision: str, runtime: str) -> None:
    check_choice("precision", precision, PRECISIONS)
    check_choice("runtime", runtime, tuple(RUNTIMES))


def conv_kernel(cin: int, cout: int, k: int, stride: int, groups: int, h: int, w: int, batch: int = 1,
                precision: str = "fp32", runtime: str = "pytorch", padding: int | None = None) -> Kernel:
    """A ``cin -> cout`` conv (kernel ``k``, ``groups``) on a ``batch x cin x h x w`` input, as `kernels_of` records it."""
    _check(precision, runtime)
    for name, value in (("cin", cin), ("cout", cout), ("k", k), ("stride", stride), ("groups", groups), ("h", h),
                        ("w", w), ("batch", batch)):
        check_int(name, value)
    if cin % groups or cout % groups:
        raise ValueError(f"groups: {groups} is not allowed; expected a divisor of cin {cin} and cout {cout}")
    p = k // 2 if padding is None else padding
    ho, wo = (h + 2 * p - k) // stride + 1, (w + 2 * p - k) // stride + 1
    pixels, out = batch * ho * wo, batch * cout * ho * wo
    macs = out * (cin // groups) * k * k
    elements = batch * cin * h * w + out + cout * (cin // groups) * k * k
    return Kernel(_conv_class(k, stride, groups), 2.0 * macs, float(elements * bytes_per_element(precision)),
                  precision, runtime, pixels, cin // groups, cout // groups, k, groups, out)


def linear_kernel(features: int, out: int, batch: int = 1, precision: str = "fp32", runtime: str = "pytorch") -> Kernel:
    """A ``features -> out`` linear layer on ``batch`` rows."""
    _check(precision, runtime)
    for name, value in (("features", features), ("out", out), ("batch", batch)):
        check_int(name, value)
    elements = batch * features + batch * out + features * out + out
    return Kernel("linear", 2.0 * batch * features * out, float(elements * bytes_per_element(precision)), precision,
                  runtime, batch, features, out, 1, 1, batch * out)


def memory_kernel(elements_read_written: int, precision: str = "fp32", runtime: str = "pytorch",
                  outputs: int | None = None) -> Kernel:
    """A bandwidth-bound kernel moving ``elements_read_written`` elements (an add of two n-element
    tensors: 3n); ``outputs`` (default a third of them) is its parallel work."""
    _check(precision, runtime)
    check_int("elements_read_written", elements_read_written)
    par = max(1, elements_read_written // 3) if outputs is None else outputs
    return Kernel("memory", 0.0, float(elements_read_written * bytes_per_element(precision)), precision, runtime,
                  elements=par)


def _fields(kind: str, x: tuple[int, ...], y: tuple[int, ...], macs: int, groups: int, nbytes: int, kernel: int,
            stride: int) -> tuple[int, float, float, int, int, int, int, int, int]:
    """The kernel of one traced op (the tracer recorded its kind, traffic, kernel size and stride) as
    (class index, flops, bytes, pixels, cin, cout, kernel size, groups, elements): a `Kernel`'s numbers."""
    elements = math.prod(y)
    if kind == "conv" or kind == "depthwise":
        n, cout, ho, wo = y
        return (_CLASS_INDEX[_conv_class(kernel, stride, groups)], 2.0 * macs, float(nbytes), n * ho * wo,
                x[1] // groups, cout // groups, kernel, groups, elements)
    if kind == "matmul":
        return _LINEAR, 2.0 * macs, float(nbytes), x[0], x[1], y[1], 1, 1, elements
    return _MEMORY, 0.0, float(nbytes), 0, 0, 0, 1, 1, elements


def _dropped(deploy: bool, runtime: str) -> frozenset[str]:
    """Tracer kinds that launch no kernel of their own under ``runtime`` (and BatchNorm when deployed)."""
    return RUNTIMES[runtime].fused | ({"norm"} if deploy else frozenset())


@lru_cache(maxsize=4096)
def _kernels(config: ArchConfig, resolution: int | str, batch: int, precision: str, deploy: bool,
             runtime: str) -> tuple[Kernel, ...]:
    report = analyze(config, resolution, batch, bytes_per_element(precision))
    dropped = _dropped(deploy, runtime)
    out = []
    for r in report.layers:
        if r.kind not in dropped:
            cls, flops, nbytes, pixels, cin, cout, kernel, groups, elements = _fields(
                r.kind, r.in_shape, r.out_shape, r.macs, r.groups, r.bytes, r.kernel, r.stride)
            out.append(Kernel(KERNEL_CLASSES[cls], flops, nbytes, precision, runtime, pixels, cin, cout, kernel, groups,
                              elements, r.name))
    return tuple(out)


def kernels_of(config: ArchConfig, resolution: Resolution = 224, batch: int = 1, precision: str = "fp32",
               deploy: bool = False, runtime: str = "pytorch") -> list[Kernel]:
    """The kernels ``config`` launches for a ``batch x C x H x W`` input (``resolution``: 224 or "HxW")."""
    _check(precision, runtime)
    check_int("batch", batch)
    return list(_kernels(config, canonical_resolution(resolution), batch, precision, deploy, runtime))


# --- the time model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """Kernels as arrays (one row each), the form the time model evaluates fast."""

    cls: np.ndarray  # index into KERNEL_CLASSES
    flops: np.ndarray
    bytes: np.ndarray
    pixels: np.ndarray
    cin: np.ndarray
    cout: np.ndarray
    ksq: np.ndarray  # kernel size squared
    groups: np.ndarray
    elements: np.ndarray
    precision: np.ndarray  # index into PRECISIONS
    runtime: np.ndarray  # index into RUNTIMES
    owner: np.ndarray  # which sample each kernel belongs to (0 for a single list)

    def __len__(self) -> int:
        return len(self.cls)


_RUNTIME_INDEX = {r: i for i, r in enumerate(RUNTIMES)}
_PRECISION_INDEX = {p: i for i, p in enumerate(PRECISIONS)}
_BYTES = np.array([bytes_per_element(p) for p in PRECISIONS], float)


def table(groups_of_kernels: Sequence[Sequence[Kernel]]) -> Table:
    """One `Table` of several kernel lists (``owner`` tells them apart)."""
    rows, labels = [], []
    for owner, kernels in enumerate(groups_of_kernels):
        for k in kernels:
            if k.kernel_class not in _CLASS_INDEX:
                raise ValueError(f"kernel class: {k.kernel_class!r} is not allowed; expected one of "
                                 f"{', '.join(KERNEL_CLASSES)}")
            if k.runtime not in _RUNTIME_INDEX or k.precision not in _PRECISION_INDEX:
                _check(k.precision, k.runtime)
            rows.append((_CLASS_INDEX[k.kernel_class], k.flops, k.bytes, k.pixels, k.cin, k.cout, k.kernel, k.groups,
                         k.elements))
            labels.append((_PRECISION_INDEX[k.precision], _RUNTIME_INDEX[k.runtime], owner))
    ints = np.array(labels, int).reshape(-1, 3)
    return _from_rows(np.array(rows, float).reshape(-1, 9), ints[:, 0], ints[:, 1], ints[:, 2])


def _from_rows(a: np.ndarray, precision: np.ndarray, runtime: np.ndarray, owner: np.ndarray) -> Table:
    """A `Table` of `_fields` rows (one per kernel, as floats) and their precision, runtime and owner indices."""
    return Table(a[:, 0].astype(int), a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5], a[:, 6] * a[:, 6], a[:, 7], a[:, 8],
                 precision, runtime, owner)


class _RowTracer(Tracer):
    """A `Tracer` that keeps only the `_fields` of each op launching a kernel: no `LayerCost` or `Kernel` objects."""

    def __init__(self, batch: int, bytes_per_element: int, dropped: frozenset[str]) -> None:
        super().__init__(batch, bytes_per_element)
        self.dropped = dropped
        self.rows: list[tuple] = []

    def record(self, name: str, op: str, x: tuple[int, ...], y: tuple[int, ...], params: int, macs: int, cio: int,
               extra: int, mem: int, groups: int, kind: str, traffic: int, kernel: int, stride: int) -> None:
        if kind not in self.dropped:
            self.rows.append(_fields(kind, x, y, macs, groups, traffic * self.bytes_per_element, kernel, stride))


def kernel_rows(config: ArchConfig, resolution: Resolution = 224, batch: int = 1, precision: str = "fp32",
                deploy: bool = False, runtime: str = "pytorch") -> np.ndarray:
    """The kernels of `kernels_of` as one float array, a row each (class index, flops, bytes, pixels, cin, cout,
    kernel size, groups, elements), traced straight into rows: no `LayerCost` or `Kernel` object per op, the
    cheap way to the kernels of thousands of configs. `rows_table` makes a `Table` of such arrays."""
    _check(precision, runtime)
    bpe = bytes_per_element(precision)
    h, w = checked_input(config, resolution, batch, bpe)
    rows = trace(config, h, w, _RowTracer(batch, bpe, _dropped(deploy, runtime))).rows
    return np.array(rows, float).reshape(len(rows), 9)


def rows_table(rows: Sequence[np.ndarray], precision: str = "fp32", runtime: str = "pytorch") -> Table:
    """One `Table` of several configs' `kernel_rows` (each at ``precision`` under ``runtime``), ``rows[i]`` owned by ``i``."""
    _check(precision, runtime)
    a = np.concatenate(rows) if len(rows) else np.empty((0, 9))
    n = len(a)
    return _from_rows(a, np.full(n, _PRECISION_INDEX[precision]), np.full(n, _RUNTIME_INDEX[runtime]),
                      np.repeat(np.arange(len(rows)), [len(r) for r in rows]))


def _pad(x: np.ndarray, block: np.ndarray | int) -> np.ndarray:
    return np.ceil(x / block) * block


def compute_path(profile: "DeviceProfile", kernel_class: str, precision: str) -> tuple[float, bool]:
    """(peak GFLOP/s, on tensor cores?) for a kernel class at a precision on a profile.

    Dense convs in fp32 run as TF32 where the device has it (cuDNN's and TensorRT's default);
    linear layers stay fp32 (PyTorch's matmul default); depthwise convs never use tensor cores and
    run at the fp32 rate; fp16/bf16 dense kernels use the tensor peak where the device has tensor cores.
    """
    peaks = profile.peak_gflops
    if kernel_class in ("dwconv", "memory"):
        return peaks["fp32"], False
    if precision == "fp32":
        if kernel_class != "linear" and profile.tensor_cores and "tf32" in peaks:
            return peaks["tf32"], True
        return peaks["fp32"], False
    return peaks.get(precision, peaks["fp32"]), profile.tensor_cores and precision in peaks


@dataclass(frozen=True)
class Prepared:
    """The profile-dependent, efficiency-free part of the model: per kernel, the seconds its
    compute and its traffic would take at 100 % efficiency (padding, waves and occupancy applied)."""

    work_s: np.ndarray
    memory_s: np.ndarray
    cls: np.ndarray
    tensor: np.ndarray
    runtime: np.ndarray
    owner: np.ndarray
    samples: int


def prepare(t: Table, profile: "DeviceProfile", samples: int = 1) -> Prepared:
    """Evaluate what does not depend on the fitted efficiencies (see `Prepared`)."""
    n = len(t)
    peak = np.empty(n)
    tensor = np.zeros(n, bool)
    align = np.full(n, float(max(1, profile.channel_block)))
    combo = t.cls * len(PRECISIONS) + t.precision
    for key in np.unique(combo):  # a handful of (class, precision) pairs
        on = combo == key
        precision = PRECISIONS[key % len(PRECISIONS)]
        peak[on], tensor[on] = compute_path(profile, KERNEL_CLASSES[key // len(PRECISIONS)], precision)
        if tensor[on][0]:
            align[on] = TENSOR_ALIGN["tf32" if precision == "fp32" else precision]
    dense = (t.cls != _CLASS_INDEX["dwconv"]) & (t.cls != _CLASS_INDEX["memory"])
    dw = t.cls == _CLASS_INDEX["dwconv"]
    cin = np.maximum(t.cin, 1)
    cout = np.maximum(t.cout, 1)
    cout_p = _pad(cout, align)
    cin_p = _pad(cin, align)
    groups = np.maximum(t.groups, 1)
    padding = np.where(dense, (cout_p / cout) * (cin_p / cin), np.where(dw, _pad(groups, align) / groups, 0.0))
    flops = t.flops * padding  # a depthwise conv pads its channel count, a dense one both GEMM sides
    occupancy = np.ones(n)
    util = np.ones(n)
    if profile.sm_count > 0:
        threads = profile.sm_count * THREADS_PER_SM
        parallel = np.maximum(t.elements, t.bytes / _BYTES[t.precision] / 2)  # outputs, or half the elements moved (a reduction, a GEMV)
        occupancy = np.minimum(1.0, np.maximum(parallel, 1) / threads)
        slots = profile.sm_count * CTAS_PER_SM
        m = np.maximum(t.pixels, 1)
        long, short = np.maximum(m, cout_p), np.minimum(m, cout_p)  # a GEMV (batch-1 linear) tiles its long side
        best = np.zeros(n)
        for tm, tn in TILES:  # the library picks the tile that runs the GEMM fastest
            tiles_m, tiles_n = np.ceil(long / tm), np.ceil(short / tn)
            tiles = tiles_m * tiles_n
            wave_fill = tiles / (np.ceil(tiles / slots) * slots)
            tile_fill = (long * short) / (tiles_m * tm * tiles_n * tn)
            best = np.maximum(best, wave_fill * tile_fill * _tile_rate(tm, tn))
        # a matrix-vector product (a batch-1 linear layer, an SE gate's 1x1 convs) runs as a GEMV over every SM
        best = np.where(short <= GEMV_WIDTH, np.maximum(best, occupancy * short / TILES[-1][1] * _tile_rate(*TILES[-1])),
                        best)
        util = np.where(dense, best, np.where(dw, occupancy, 1.0))
    work = flops / (peak * 1e9 * util)
    memory = t.bytes / (profile.bandwidth_gbs * 1e9 * occupancy)
    return Prepared(work, memory, t.cls, tensor, t.runtime, t.owner, samples)


def prepare_samples(kernel_lists: Sequence[Sequence[Kernel]], profiles: Sequence["DeviceProfile"]) -> Prepared:
    """`prepare` for samples measured on different devices (one profile per kernel list)."""
    if len(kernel_lists) != len(profiles):
        raise ValueError(f"{len(profiles)} profiles for {len(kernel_lists)} kernel lists; expected one each")
    parts, order = [], {}
    for i, prof in enumerate(profiles):
        order.setdefault(id(prof), (prof, []))[1].append(i)
    for prof, idx in order.values():
        part = prepare(table([kernel_lists[i] for i in idx]), prof, len(idx))
        parts.append(dataclasses.replace(part, owner=np.asarray(idx)[part.owner]))
    cat = {f: np.concatenate([getattr(p, f) for p in parts]) for f in ("work_s", "memory_s", "cls", "tensor",
                                                                        "runtime", "owner")}
    return Prepared(**cat, samples=len(kernel_lists))


#: the efficiency parameters of a profile the time model reads, in this order
EFFICIENCIES: tuple[str, ...] = tuple(f"{c}_eff" for c in KERNEL_CLASSES) + ("tensor_eff",)
OVERHEADS: tuple[str, ...] = tuple(r.overhead for r in RUNTIMES.values())


def evaluate(p: Prepared, eff: np.ndarray, tensor_eff: float, overheads: np.ndarray) -> np.ndarray:
    """Milliseconds per sample for class efficiencies ``eff`` (in `KERNEL_CLASSES` order), the
    tensor-core factor and per-runtime overheads in µs (in `RUNTIMES` order)."""
    compute_eff = eff[p.cls] * np.where(p.tensor, tensor_eff, 1.0)
    t = np.maximum(p.work_s / compute_eff, p.memory_s / eff[_CLASS_INDEX["memory"]]) + overheads[p.runtime] * 1e-6
    return np.bincount(p.owner, weights=t, minlength=p.samples) * 1e3


def profile_parameters(profile: "DeviceProfile") -> tuple[np.ndarray, float, np.ndarray]:
    """(class efficiencies, tensor factor, per-runtime overheads) of a profile, as `evaluate` takes them."""
    eff = np.array([getattr(profile, f"{c}_eff") for c in KERNEL_CLASSES], float)
    return eff, float(profile.tensor_eff), np.array([getattr(profile, o) for o in OVERHEADS], float)


def kernels_ms(kernels: Sequence[Kernel], profile: "DeviceProfile", precision: str | None = None) -> float:
    """The predicted milliseconds of ``kernels`` run one after another on ``profile``.

    Each kernel carries its own precision; ``precision``, when given, must match them (it is
    there so a caller can state what it expects)."""
    if precision is not None:
        check_choice("precision", precision, PRECISIONS)
        other = {k.precision for k in kernels} - {precision}
        if other:
            raise ValueError(f"precision: {precision!r} does not match the kernels' {', '.join(sorted(other))}")
    if not kernels:
        return 0.0
    return float(evaluate(prepare(table([kernels]), profile), *profile_parameters(profile))[0])
