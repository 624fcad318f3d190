"""Shared search storage on a real PostgreSQL server: two search processes, one study.

The server is Debian's `postgresql` (installed by `.ci/run`), started here on loopback in a
throw-away data directory; the test skips with the reason only when no server is installed.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import optuna
import pytest
from helpers import FAST, free_port

psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install 'hardnas[postgres]')")


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_server_user(cmd: list[str]) -> list[str]:
    # the server refuses to run as root; Debian's package creates the `postgres` user
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server installed (Debian package `postgresql`; .ci/run installs it)")
    root = Path(tempfile.mkdtemp(prefix="hardnas-pg-"))
    data, port = root / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    try:
        init = subprocess.run(_as_server_user([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U",
                                               "postgres", "--no-sync"]), capture_output=True, text=True, timeout=120)
        assert init.returncode == 0, init.stderr
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=50"
        start = subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l",
                                                str(root / "server.log"), "-w", "-t", "60", "start"]),
                               capture_output=True, text=True, timeout=120)
        assert start.returncode == 0, start.stderr + (root / "server.log").read_text(errors="replace")
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE nas")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/nas"  # exactly the README's form
    finally:
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _popen(args: list[str], runs: Path) -> subprocess.Popen:
    env = {**os.environ, "HARDNAS_RUNS": str(runs), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "nas.search", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _load(name: str, url: str) -> optuna.Study:
    from nas.search.storage import open_storage_readonly

    return optuna.load_study(study_name=name, storage=open_storage_readonly(url))


def test_the_documented_url_works_with_the_extras_driver():
    from nas.search.storage import normalize_url

    url = "postgresql://user@host/db"
    have_psycopg3 = importlib.util.find_spec("psycopg") is not None
    assert normalize_url(url) == (url if have_psycopg3 else "postgresql+psycopg2://user@host/db")
    assert normalize_url("postgresql+psycopg2://u@h/d") == "postgresql+psycopg2://u@h/d"


def test_a_search_writes_its_study_to_postgresql(postgres_url, tmp_path):
    from nas.search.__main__ import main

    assert postgres_url.startswith("postgresql://")
    assert main([*FAST, "--trials", "2", "--storage", postgres_url, "--study-name", "pg-one"]) == 0
    study = _load("pg-one", postgres_url)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) >= 2 and all("arch_id" in t.user_attrs and "latency_ms" in t.user_attrs for t in done)


@pytest.mark.slow
def test_two_processes_share_one_postgresql_study(postgres_url, tmp_path):
    storage = ["--storage", postgres_url, "--study-name", "pg-shared"]
    first = _popen([*FAST, "--trials", "1", *storage], tmp_path)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    t0 = time.time()
    procs = [_popen([*FAST, "--trials", "8", *storage], tmp_path / f"w{i}") for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    study = _load("pg-shared", postgres_url)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) == len(study.trials)
    assert all(t.state.name != "RUNNING" for t in study.trials)
    evaluated = [t for t in study.trials if t.user_attrs.get("status") != "rejected"]
    assert len(evaluated) >= 8
    # both workers contributed: each process stamps the trials it ran with its own pid
    workers = {t.user_attrs.get("worker") for t in study.trials if t.datetime_start.timestamp() >= t0 - 1}
    assert len(workers - {None}) == 2, workers
    # no architecture trained twice across the two processes
    trained = [t.user_attrs["arch_id"] for t in study.trials
               if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]
    assert len(trained) == len(set(trained))
