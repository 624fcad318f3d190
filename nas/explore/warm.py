"""Kernel rows of stored configs, kept per (config JSON, input shape) and built ahead of time in a child process.

Predicting every trial for a device is one vectorised evaluation (`nas.latency.predict_kernel_rows`)
once each config's kernel rows exist; building them costs a JSON parse and a cost trace per config,
Python work that holds the interpreter lock, so a background thread only moves it around. `warm`
therefore forks a child process that builds them on another core while the page is drawn and sends
them back through a pipe as plain arrays; a reader thread keeps them. The child runs at the lowest
priority, on a spare core: a device switch right after the page opens finds the rows ready on an
otherwise quiet machine, and on a busy one the page is drawn first. Where no child can be forked
(outside Linux) a background thread does the same work. `rows_for` returns the kept rows and
builds any missing one itself, so nothing waits on the child: a child that dies, stops mid-message
or falls silent for `SILENCE_S` is stopped and reaped, and its work is done here when needed.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
import threading
import warnings
from typing import Sequence

import numpy as np

from ..config import ArchConfig
from ..latency import kernel_rows
from ..resolution import Resolution

__all__ = ["FORKS", "FRAME", "MAX_KEPT", "SILENCE_S", "Shape", "kept", "rows_for", "warm"]

Shape = tuple[Resolution, int, str]  # canonical input size, batch, precision (eager PyTorch, not deployed)

FORKS = sys.platform.startswith("linux")  # a child process is forked here (elsewhere fork is missing or unsafe)
MAX_KEPT = 20_000  # rows of this many (config, shape) pairs are kept (~4 KB each): 10,000 trials at two shapes
FRAME = 200  # configs per message from the child
SILENCE_S = 60.0  # a child that sends nothing for this long is stopped
_KEPT: dict[tuple[str, Shape], np.ndarray | None] = {}  # None: unreadable, or the network does not take the shape
_MISSING = object()
_INT = np.dtype(np.int64)
_FLOAT = np.dtype(np.float64)


def _build(config_json: str, shape: Shape) -> np.ndarray | None:
    try:  # parsed afresh, not through analysis.arch_config's cache: thousands of configs kept alive would make
        # each full garbage collection longer and more frequent, for a parse needed once
        rows = kernel_rows(ArchConfig.from_json(config_json), *shape)
    except ValueError:  # a config this version cannot read, an input the network cannot take, a bad precision
        return None
    rows.flags.writeable = False  # shared by every later prediction
    return rows


def _keep(key: tuple[str, Shape], rows: np.ndarray | None) -> None:
    while len(_KEPT) >= MAX_KEPT:  # oldest first
        try:
            _KEPT.pop(next(iter(_KEPT)), None)
        except (StopIteration, RuntimeError):  # emptied, or changed by the other thread meanwhile
            break
    _KEPT[key] = rows


def kept(configs: Sequence[str], shape: Shape) -> list[bool]:
    """Whether each config's rows at ``shape`` are kept (built, or known not to exist)."""
    return [(c, shape) in _KEPT for c in configs]


def rows_for(configs: Sequence[str], shape: Shape) -> list[np.ndarray | None]:
    """Each stored config's `nas.latency.kernel_rows` at ``shape``: kept ones, the others built now (and kept);
    None for a config that cannot be read or does not take the input size."""
    out = []
    for c in configs:
        rows = _KEPT.get((c, shape), _MISSING)
        if rows is _MISSING:
            rows = _build(c, shape)
            _keep((c, shape), rows)
        out.append(rows)
    return out


def warm(jobs: Sequence[tuple[Sequence[str], Shape]]) -> threading.Thread | None:
    """Build and keep the rows of each job's configs in the background, last config first (a `rows_for` going
    forwards meets the work instead of repeating it): in a forked child process where `FORKS`, else in a thread.
    Returns the thread that ends once all is kept; None if nothing is left to build or no child could be forked."""
    jobs = [(list(configs), shape) for configs, shape in jobs if len(configs)]
    if not jobs:
        return None
    if FORKS:
        started = _fork(jobs)
    else:
        started = threading.Thread(target=_build_all, args=(jobs,), name="nas-explore-warm-up", daemon=True)
    if started is not None:
        started.start()
    return started


def _build_all(jobs: list[tuple[list[str], Shape]]) -> None:
    for configs, shape in jobs:
        rows_for(configs[::-1], shape)


def _fork(jobs: list[tuple[list[str], Shape]]) -> threading.Thread | None:
    read_end, write_end = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns that forking a multi-threaded process may deadlock the child: this child
            # takes no lock another thread may hold (it parses, traces, writes to a pipe and exits)
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    if pid == 0:  # the child: never returns
        os.close(read_end)
        _child(jobs, write_end)
    os.close(write_end)
    return threading.Thread(target=_receive, args=(jobs, read_end, pid), name="nas-explore-warm-up", daemon=True)


def _child(jobs: list[tuple[list[str], Shape]], fd: int) -> None:
    """Build the jobs' rows and write them to ``fd``, `FRAME` configs a message: the job, the count, the row count,
    then each config's position in its job and row count (-1: None), then the rows. Ends the process."""
    code = 1
    try:
        gc.freeze()  # the collector would walk (and so copy) every object inherited from the parent
        for sig in (signal.SIGINT, signal.SIGTERM):  # the server's handlers would act in the child too
            signal.signal(sig, signal.SIG_DFL)
        os.nice(19)  # a spare core, never the page's: on a busy machine the page is drawn first
        for j, (configs, shape) in enumerate(jobs):
            order = range(len(configs) - 1, -1, -1)
            for start in range(0, len(configs), FRAME):
                at = order[start:start + FRAME]
                rows = [_build(configs[i], shape) for i in at]
                counts = [-1 if r is None else len(r) for r in rows]
                data = [r for r in rows if r is not None]
                block = np.concatenate(data) if data else np.empty((0, 9))
                head = np.array([j, len(at), len(block), *at, *counts], _INT)
                _write_all(fd, head.tobytes() + block.tobytes())
        code = 0
    except BaseException:  # the parent builds whatever did not arrive
        pass
    finally:
        os._exit(code)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int) -> bytes | None:
    """``n`` bytes from ``fd``; None at the end of the stream or after `SILENCE_S` without any."""
    parts, got = [], 0
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    while got < n:
        if not poll.poll(1000 * SILENCE_S):
            return None
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _receive(jobs: list[tuple[list[str], Shape]], fd: int, pid: int) -> None:
    """Keep what the child sends until its stream ends, breaks off or falls silent; then reap (or stop) the child."""
    try:
        while (head := _read_exact(fd, 3 * _INT.itemsize)) is not None:
            j, n, total = (int(v) for v in np.frombuffer(head, _INT))
            meta = _read_exact(fd, 2 * n * _INT.itemsize)
            block = _read_exact(fd, total * 9 * _FLOAT.itemsize) if total else b""
            if meta is None or block is None:
                break
            at, counts = np.frombuffer(meta, _INT).reshape(2, n)
            data = np.frombuffer(block, _FLOAT).reshape(total, 9)  # read-only: backed by bytes
            configs, shape = jobs[j]
            for i, count, end in zip(at, counts, np.cumsum(np.maximum(counts, 0))):
                _keep((configs[i], shape), None if count < 0 else data[end - count:end])
    finally:
        os.close(fd)
        try:
            if os.waitpid(pid, os.WNOHANG) == (0, 0):  # still running: silent, or cut off mid-message
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        except ChildProcessError:  # reaped already
            pass
