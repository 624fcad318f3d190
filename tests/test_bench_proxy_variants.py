"""benchmarks/bench_proxy_variants.py: the reference agreement it infers and its seed pairs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_proxy_variants", ROOT / "benchmarks" / "bench_proxy_variants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_twins(bench):
    assert bench._seed_twin("seed1") == "default" and bench._seed_twin("img20k-1ep-seed2") == "img20k-1ep"
    assert bench._seed_twin("reference-seed1") == "reference" and bench._seed_twin("batch64") is None


@pytest.mark.parametrize("agreement, reference, seeds", [(0.6, 0.5, 3), (0.73, 0.6, 1), (0.4, 0.9, 2)])
def test_the_reference_floor_inverts_the_ceiling(bench, agreement, reference, seeds):
    tau = bench.tau_ceiling(agreement, reference, seeds)
    assert bench.reference_agreement_floor(tau, agreement, seeds) == pytest.approx(reference)
    assert bench.reference_agreement_floor(tau - 0.1, agreement, seeds) < reference  # a biased proxy: lower bound
    assert bench.reference_agreement_floor(1.0, agreement, seeds) == 1.0
