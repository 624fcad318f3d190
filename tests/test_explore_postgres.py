"""The explorer on a real PostgreSQL storage: study list, the SQL fast path, the change marker.

Uses `test_postgres`'s throw-away server (Debian's `postgresql`, installed by `.ci/run`); skips
with the reason when no server or no psycopg2 is installed.
"""

from __future__ import annotations

import optuna
import pytest

pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install 'hardnas[postgres]')")

from test_explore import PLAN, make_study  # noqa: E402
from test_postgres import postgres_url  # noqa: E402,F401  (the module-scoped server fixture)

from nas.explore import data as D  # noqa: E402


def test_the_explorer_reads_a_postgresql_storage(postgres_url):  # noqa: F811
    from nas.search.storage import normalize_url

    writer = normalize_url(postgres_url)  # the driver the extra installs (the explorer normalises by itself)
    make_study(writer, name="explore-pg")
    D.clear_storage_cache()
    studies = {s.name: s for s in D.list_studies(postgres_url)}
    assert studies["explore-pg"].n_trials == len(PLAN) and studies["explore-pg"].budget_ms == 0.5
    fast = D.load_records(postgres_url, ["explore-pg"])
    slow = D.load_records(postgres_url, ["explore-pg"], fast=False)
    assert fast == slow
    frame = D.records_frame(fast)
    assert frame.loc[1, "why"].startswith("rejected: over budget")
    marker = D.storage_marker(postgres_url)
    assert marker.startswith("rdb:") and D.storage_marker(postgres_url) == marker
    optuna.load_study(study_name="explore-pg", storage=writer).ask()
    assert D.storage_marker(postgres_url) != marker
