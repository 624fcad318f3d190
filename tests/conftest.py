"""Shared fixtures. Slow tests run when CI=true (as in CI) or with --runslow."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow") or os.environ.get("CI", "").lower() == "true":
        return
    skip = pytest.mark.skip(reason="slow: runs with CI=true or --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def reference_layouts() -> dict:
    """Layouts recorded from the official implementations (see tests/data/README.md)."""
    with gzip.open(DATA / "reference_layouts.json.gz", "rt") as f:
        return json.load(f)


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test writes its runs/ (caches, profiles, studies) into a fresh temporary folder."""
    path = tmp_path_factory.mktemp("runs")
    monkeypatch.setenv("HARDNAS_RUNS", str(path))
    return path


class _Load:
    def __init__(self, cores: float) -> None:
        self.cores = cores

    def __call__(self) -> float:
        return self.cores


@pytest.fixture
def quiet_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """profile_device sees no other process on the CPU (for tests of what happens to a quiet profile)."""
    monkeypatch.setattr("nas.latency.profiling.ForeignLoad", lambda: _Load(0.0))


@pytest.fixture
def steady_cpu(monkeypatch: pytest.MonkeyPatch, quiet_cpu: None) -> None:
    """This CPU's automatic profile made by the real micro-benchmark with each probe timed by a fixed synthetic CPU
    (`helpers.synthetic_cpu`) on a quiet CPU: the profile, and whatever is fitted on or predicted with it, is the
    same at any load. Its budget is the largest allowed: it bounds real time, which no longer decides the result."""
    from helpers import synthetic_clock, synthetic_cpu

    from nas.latency import profiling

    profile_device, clock = profiling.profile_device, synthetic_clock(synthetic_cpu())

    def steady(device: str = "cuda", budget_s: float = 60.0, save: bool = True, **kwargs):
        return profile_device(device, 600.0, save, **{**kwargs, "timer": clock})

    monkeypatch.setattr(profiling, "profile_device", steady)


@pytest.fixture
def busy_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """profile_device sees other processes using 1.5 cores."""
    monkeypatch.setattr("nas.latency.profiling.ForeignLoad", lambda: _Load(1.5))
