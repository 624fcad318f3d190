"""CPU threads for training that other processes leave free.

torch's CPU pool starts with a thread per core; while other processes keep those cores busy, its
threads wait on each other at every op whenever one of them is descheduled, and a training with as
many threads as cores runs several times slower than with one (`benchmarks/bench_train_threads.py`).
`FairThreads` caps the pool at the cores other processes leave free, judged before training starts (over
the window since the previous training when it ended within 10 s, else a 0.05 s idle one) and then every
second of it, and never raises it above what the caller set.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import torch

from ..latency.interference import ForeignLoad

__all__ = ["FairThreads", "usable_cores"]


_FRESH_S = 10.0  # a window since the last reading up to this long still tells the load of now
_SHARED: ForeignLoad | None = None


def _shared_load() -> ForeignLoad:
    """One reader per process: back-to-back trainings read the window since the previous one, without a wait."""
    global _SHARED
    if _SHARED is None:
        _SHARED = ForeignLoad()
    return _SHARED


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS says, else the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class FairThreads:
    """Context manager: torch's threads capped at ``round(cores - other processes' cores)`` (at least 1, at most
    the threads set on entry), judged on entry (over the window since the process's last reading when that is
    ``first_s`` to 10 s old, else over ``first_s`` idle seconds) and then by `check` every ``every_s`` seconds;
    restored on exit. ``fewest`` is the fewest threads used, ``base`` the count on entry."""

    def __init__(self, every_s: float = 1.0, first_s: float = 0.05, *, load: Callable[[], float | None] | None = None,
                 cores: int | None = None, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.every_s, self.first_s, self._given_load, self._cores = every_s, first_s, load, cores
        self._clock, self._sleep = clock, sleep

    def __enter__(self) -> "FairThreads":
        self.base = self.fewest = torch.get_num_threads()
        self.cores = self._cores or usable_cores()
        self._load = self._given_load or _shared_load()
        self._next = 0.0
        if self.base > 1:
            if not isinstance(self._load, ForeignLoad):
                self._sleep(self.first_s)
            elif not self.first_s <= (self._load.age() or 0.0) <= _FRESH_S:  # else the window since the last will do
                self._load()
                self._sleep(self.first_s)
            self.check()
        return self

    def check(self) -> None:
        """Between two steps: set the thread count the last window's foreign load leaves room for."""
        now = self._clock()
        if now < self._next or self.base == 1:
            return
        self._next = now + self.every_s
        foreign = self._load()
        if foreign is None:
            return
        want = max(1, min(self.base, round(self.cores - foreign)))
        if want != torch.get_num_threads():
            torch.set_num_threads(want)
        self.fewest = min(self.fewest, want)

    def __exit__(self, *exc: object) -> None:
        if torch.get_num_threads() != self.base:
            torch.set_num_threads(self.base)
