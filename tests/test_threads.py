"""Proxy training on a busy CPU uses the cores other processes leave free (`nas.proxy.threads`)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

import nas
from nas.proxy import ProxyBudget, train_eval
from nas.proxy.threads import FairThreads, usable_cores


@pytest.fixture
def four_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(saved)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_pool_is_capped_at_the_free_cores_judged_every_second_and_restored(four_threads):
    loads = iter([2.6, None, 0.0, 3.9, 1.2])
    clock, slept = Clock(), []
    with FairThreads(load=lambda: next(loads), cores=4, clock=clock, sleep=slept.append) as fair:
        assert slept == [0.05] and torch.get_num_threads() == 1  # 4 - 2.6 rounds to 1, judged before training
        fair.check()
        assert torch.get_num_threads() == 1  # not a second yet: not judged again
        clock.t = 1.0
        fair.check()
        assert torch.get_num_threads() == 1  # no reading (None): left as it is
        clock.t = 2.0
        fair.check()
        assert torch.get_num_threads() == 4  # the cores free again: back to what was set, never above it
        clock.t = 3.0
        fair.check()
        assert torch.get_num_threads() == 1  # at least one thread, however busy
        clock.t = 4.0
        fair.check()
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == 4 and fair.base == 4 and fair.fewest == 1


def test_one_thread_is_left_alone_without_a_wait():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        calls = []
        with FairThreads(load=lambda: calls.append(1) or 0.0, cores=8, sleep=calls.append) as fair:
            fair.check()
        assert calls == [] and torch.get_num_threads() == 1 and fair.fewest == 1
    finally:
        torch.set_num_threads(saved)


def test_a_failing_training_still_restores_the_pool(four_threads):
    with pytest.raises(RuntimeError):
        with FairThreads(load=lambda: 3.5, cores=4, sleep=lambda s: None):
            assert torch.get_num_threads() == 1
            raise RuntimeError("a candidate that crashes")
    assert torch.get_num_threads() == 4


@pytest.mark.slow
@pytest.mark.skipif(usable_cores() < 2, reason="needs 2 cores to have threads to give up")
def test_training_beside_busy_processes_gives_up_threads():
    """The real thing: one busy process per core; the training runs with fewer threads than set and ends ok."""
    saved = torch.get_num_threads()
    torch.set_num_threads(usable_cores())
    cfg, budget = nas.get_config("hardnet39ds"), ProxyBudget(epochs=1, max_train_samples=512)
    hog = "import time\nt = time.time()\nwhile time.time() - t < 120: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(usable_cores())]
    try:
        time.sleep(0.5)
        busy = train_eval(cfg, None, budget, device="cpu")
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        torch.set_num_threads(saved)
    assert busy.status == "ok", busy.reason
    assert busy.proxy["threads"]["set"] == usable_cores() and busy.proxy["threads"]["fewest"] < usable_cores()
    assert torch.get_num_threads() == saved


@pytest.mark.parametrize("age, waits", [(2.0, False), (0.01, True), (30.0, True), (None, True)])
def test_a_recent_reading_spares_the_wait_and_a_stale_one_does_not(four_threads, age, waits):
    from nas.latency.interference import ForeignLoad

    class Reader(ForeignLoad):
        def age(self):
            return age

        def __call__(self):
            return 0.0

    slept = []
    with FairThreads(load=Reader(), cores=4, sleep=slept.append):
        assert torch.get_num_threads() == 4
    assert slept == ([0.05] if waits else [])
