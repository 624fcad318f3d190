"""Reading studies back: hypervolume and Pareto fronts, checked against brute force."""

from __future__ import annotations

import itertools
import random

import pytest

from nas.search.results import hypervolume, pareto_front


def _grid_volume(points, ref, steps=40):
    """Dominated volume counted on a grid of cell centres: slow, obviously right."""
    lo = [0.0] * len(ref)
    cell = [(ref[d] - lo[d]) / steps for d in range(len(ref))]
    count = 0
    for idx in itertools.product(range(steps), repeat=len(ref)):
        c = [lo[d] + (i + 0.5) * cell[d] for d, i in enumerate(idx)]
        if any(all(p[d] <= c[d] for d in range(len(ref))) for p in points):
            count += 1
    vol = 1.0
    for w in cell:
        vol *= w
    return count * vol


def test_hypervolume_of_simple_cases():
    assert hypervolume([], [1, 1]) == 0.0
    assert hypervolume([[0.5, 0.5]], [1, 1]) == pytest.approx(0.25)
    assert hypervolume([[0.2, 0.6], [0.6, 0.2]], [1, 1]) == pytest.approx(0.32 + 0.32 - 0.16)
    assert hypervolume([[0.5, 0.5, 0.5]], [1, 1, 1]) == pytest.approx(0.125)
    # a point at or beyond the reference adds nothing; a dominated point adds nothing
    assert hypervolume([[0.5, 0.5], [1.0, 0.1], [0.6, 0.6]], [1, 1]) == pytest.approx(0.25)


@pytest.mark.parametrize("dims", [2, 3])
def test_hypervolume_matches_a_grid_count(dims):
    rng = random.Random(dims)
    for _ in range(3):
        # points on the grid's cell edges make the grid count exact
        pts = [[rng.randrange(0, 20) / 20 for _ in range(dims)] for _ in range(6)]
        ref = [1.0] * dims
        assert hypervolume(pts, ref) == pytest.approx(_grid_volume(pts, ref, steps=20), rel=1e-9)


def test_pareto_front_keeps_non_dominated_feasible_unique_architectures():
    recs = [
        {"arch_id": "a", "state": "COMPLETE", "feasible": True, "accuracy": 0.9, "latency_ms": 10, "cio": 5},
        {"arch_id": "b", "state": "COMPLETE", "feasible": True, "accuracy": 0.8, "latency_ms": 12, "cio": 6},  # dominated
        {"arch_id": "c", "state": "COMPLETE", "feasible": True, "accuracy": 0.7, "latency_ms": 5, "cio": 5},
        {"arch_id": "a", "state": "COMPLETE", "feasible": True, "accuracy": 0.9, "latency_ms": 10, "cio": 5},  # twin
        {"arch_id": "d", "state": "COMPLETE", "feasible": False, "accuracy": 0.99, "latency_ms": 50, "cio": 1},
        {"arch_id": "e", "state": "PRUNED", "feasible": False, "accuracy": None, "latency_ms": 1, "cio": 1},
    ]
    assert [r["arch_id"] for r in pareto_front(recs)] == ["c", "a"]
    assert {r["arch_id"] for r in pareto_front(recs, feasible_only=False)} == {"a", "c", "d"}
