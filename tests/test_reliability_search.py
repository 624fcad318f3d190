"""Issue 11: the search survives kill -9, Ctrl-C and bad storages, as a user runs it (subprocesses, real files)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

import forked

MICRO = "layouts: ['.R']\nstem: {type: resnet, channels: [[8]]}\n" \
        "stages: [{block: basic, basic: {depth: [1, 2], width: [8, 16, 24, 32], downsample: conv}}]\n"
ONE = "layouts: ['.R']\nstem: {type: resnet, channels: [[8]]}\n" \
      "stages: [{block: basic, basic: {depth: 1, width: 8, downsample: conv}}]\n"


def _space(tmp_path: Path, text: str, name: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n{text}")
    return str(path)


def _args(space: str, *extra: str) -> list[str]:
    """Fast, deterministic settings: 32 px, predicted latency, zero-cost proxy."""
    return ["--space", space, "--resolution", "32", "--latency", "predicted:1080ti", "--budget", "5ms",
            "--proxy", "zero-cost", "--no-progress", *extra]


def _env(runs: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "HARDNAS_RUNS": str(runs), "PYTHONUNBUFFERED": "1", **extra}


def _cli(args: list[str], runs: Path, module: str = "nas.search", timeout: float = 240, fork: bool = False,
         **env: str) -> subprocess.CompletedProcess:
    """The CLI in its own process; ``fork=True`` for a usage error (`forked`: without the start-up cost)."""
    argv = [sys.executable, "-m", module, *args]
    if fork:
        return forked.run(argv, env=_env(runs, **env), timeout=timeout)
    return subprocess.run(argv, capture_output=True, text=True, env=_env(runs, **env), timeout=timeout)


def _popen(args: list[str], runs: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nas.search", *args], env=_env(runs), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


def _trials(db: Path, study: str) -> list[tuple[int, str, dict]]:
    """(number, state, user attrs) of every trial, read with plain sqlite3 (never blocks on Optuna)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            rows = con.execute("SELECT t.trial_id, t.number, t.state FROM trials t JOIN studies s "
                               "ON t.study_id = s.study_id WHERE s.study_name = ?", (study,)).fetchall()
            attrs: dict[int, dict] = {tid: {} for tid, _, _ in rows}
            for tid, key, value in con.execute("SELECT trial_id, key, value_json FROM trial_user_attributes"):
                if tid in attrs:
                    attrs[tid][key] = json.loads(value)
    except sqlite3.OperationalError:
        return []
    return sorted((n, st, attrs[tid]) for tid, n, st in rows)


def _wait_running(db: Path, study: str, proc: subprocess.Popen, after: int = -1, limit: float = 120) -> int:
    """Wait until a trial numbered above ``after`` is RUNNING with its architecture claimed; its number."""
    start = time.time()
    while True:
        for n, st, attrs in _trials(db, study):
            if n > after and st == "RUNNING" and "arch_id" in attrs:
                return n
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "search ended early"
        assert time.time() - start < limit, "no trial started"
        time.sleep(0.02)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(db: Path, study: str) -> optuna.Study:
    from nas.search.storage import open_storage_readonly

    return optuna.load_study(study_name=study, storage=open_storage_readonly(f"sqlite:///{db}"))


# -- 2: study names are folder names -------------------------------------------------------------

@pytest.mark.parametrize("name", ["/tmp/hardnas-escape", "../up", ".hidden"])
def test_a_study_name_that_leaves_runs_is_refused(name, tmp_path):
    runs = tmp_path / "runs"
    proc = _cli(["--budget", "5ms", "--study-name", name], runs, timeout=120, fork=True)
    _one_line(proc, f"study-name: {name!r} is not allowed", "letters, digits")
    assert not runs.exists() and not Path("/tmp/hardnas-escape").exists()


# -- 9: finite, sane budgets; strict JSON ---------------------------------------------------------

def test_an_infinite_budget_is_refused_and_nothing_is_written(tmp_path):
    proc = _cli(["--budget", "1e999ms", "--study-name", "inf"], tmp_path / "runs", timeout=120, fork=True)
    _one_line(proc, "budget: '1e999ms' is not allowed", "at most 1 hour")
    assert not (tmp_path / "runs").exists()


# -- 8 / 12: storages ------------------------------------------------------------------------------

def test_a_journal_in_a_folder_that_cannot_be_made_is_one_line_and_writes_nothing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    url = f"journal:{blocker / 'sub' / 'nas.log'}"
    proc = _cli([*_args(_space(tmp_path, ONE, "one"), "--trials", "1"), "--storage", url, "--study-name", "j"],
                tmp_path / "runs", timeout=120, fork=True)
    _one_line(proc, f"storage: {url!r} is not allowed", "could not be created")
    assert not (tmp_path / "runs" / "j").exists() and blocker.read_text() == "x"


@pytest.mark.slow
def test_a_damaged_database_is_one_line_for_search_and_export_and_stays_as_it_was(tmp_path):
    runs = tmp_path / "runs"
    space = _space(tmp_path, MICRO, "micro")
    assert _cli([*_args(space, "--trials", "16"), "--study-name", "d"], runs, timeout=400).returncode == 0
    db = runs / "nas.db"
    pages = db.stat().st_size // 4096
    rng = random.Random(11)
    with open(db, "r+b") as f:  # garbage over a few pages in the middle, the header and schema intact
        for page in range(pages // 2, pages // 2 + 3):
            f.seek(page * 4096)
            f.write(bytes(rng.randrange(256) for _ in range(4096)))
    before, runs_jsonl = _sha(db), (runs / "d" / "runs.jsonl").read_text()
    url = f"sqlite:///{db}"
    _one_line(_cli([*_args(space, "--trials", "17"), "--study-name", "d"], runs), f"storage: {url!r} is damaged")
    _one_line(_cli(["--storage", url, "--study-name", "d", "--best", "-o", str(tmp_path / "x.py")], runs,
                   module="nas.export"), f"storage: {url!r} is damaged")
    assert _sha(db) == before and (runs / "d" / "runs.jsonl").read_text() == runs_jsonl
    assert not (tmp_path / "x.py").exists()


@pytest.mark.parametrize("kind", ["empty", "missing", "foreign"])
def test_export_never_creates_or_changes_a_storage(kind, tmp_path):
    db = tmp_path / "nas.db"
    if kind == "empty":
        db.touch()
    elif kind == "foreign":
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE notes (x TEXT)")
    before = _sha(db) if db.exists() else None
    url = f"sqlite:///{db}"
    proc = _cli(["--storage", url, "--best", "-o", str(tmp_path / "x.py")], tmp_path / "runs", module="nas.export",
                timeout=120, fork=True)
    expected = {"empty": "is not a hardnas/Optuna storage", "missing": "does not exist",
                "foreign": "is not a hardnas/Optuna storage"}[kind]
    _one_line(proc, f"storage: {url!r}", expected)
    assert (_sha(db) if db.exists() else None) == before
    assert kind != "empty" or db.stat().st_size == 0


def test_readers_open_storages_read_only(tmp_path):
    from nas.explore.data import StorageError, list_studies
    from nas.search.storage import open_storage_readonly

    empty, journal = tmp_path / "empty.db", tmp_path / "missing.log"
    empty.touch()
    with pytest.raises(StorageError, match="not a hardnas/Optuna storage"):
        list_studies(f"sqlite:///{empty}")
    with pytest.raises(ValueError, match="does not exist"):
        open_storage_readonly(f"journal:{journal}")
    assert empty.stat().st_size == 0 and not journal.exists()


_KILLED_MID_COMMIT = """
import os, signal, sqlite3, sys
con = sqlite3.connect(sys.argv[1])
con.execute("PRAGMA cache_size=1")  # pages spill into the file before the commit, as in a large write
con.execute("BEGIN")
con.executemany("INSERT INTO study_user_attributes (study_id, key, value_json) VALUES (1, ?, ?)",
                [(f"k{i}", "x" * 500) for i in range(5000)])
con.execute("DELETE FROM trials")
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_mid_commit(tmp_path: Path) -> tuple[Path, list[float]]:
    """An Optuna SQLite storage whose writer was killed in the middle of a commit (a hot journal beside it)."""
    db = tmp_path / "nas.db"
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{db}")
    for x in (1.0, 2.0, 3.0):
        study.enqueue_trial({"x": x})
        study.optimize(lambda t: t.suggest_float("x", 0, 5), n_trials=1)
    del study
    proc = subprocess.run([sys.executable, "-c", _KILLED_MID_COMMIT, str(db)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL and Path(f"{db}-journal").stat().st_size > 0
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # what a plain read-only open says
        sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("SELECT count(*) FROM trials").fetchone()
    return db, [1.0, 2.0, 3.0]


def test_a_reader_reads_the_last_commit_of_a_file_a_killed_writer_left_and_changes_nothing(tmp_path):
    from nas.explore.data import _STORAGES, list_studies
    from nas.search.storage import open_storage_readonly

    db, values = _killed_mid_commit(tmp_path)
    url, journal = f"sqlite:///{db}", Path(f"{db}-journal")
    before = (_sha(db), _sha(journal))
    storage = open_storage_readonly(url)
    assert [t.value for t in optuna.load_study(study_name="s", storage=storage).trials] == values
    assert [s.name for s in list_studies(url)] == ["s"] and url not in _STORAGES  # a copy is not cached
    copy = Path(storage.snapshot.name)
    del storage
    assert not copy.exists() and (_sha(db), _sha(journal)) == before


def test_a_search_resumes_a_file_its_killed_writer_left_mid_commit(tmp_path):
    from nas.search.storage import open_storage, open_storage_readonly

    db, values = _killed_mid_commit(tmp_path)
    storage = open_storage(f"sqlite:///{db}")  # SQLite rolls the file back: not "damaged"
    assert [t.value for t in optuna.load_study(study_name="s", storage=storage).trials] == values
    assert not Path(f"{db}-journal").exists()
    assert open_storage_readonly(f"sqlite:///{db}").snapshot is None


def test_a_search_that_cannot_start_records_no_run(tmp_path):
    runs = tmp_path / "runs"
    space = _space(tmp_path, ONE, "one")
    assert _cli([*_args(space, "--trials", "1"), "--study-name", "r"], runs).returncode == 0
    first = (runs / "r" / "runs.jsonl").read_text()
    assert [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in runs.jsonl"))
            for line in first.splitlines()]
    proc = _cli([*_args(space, "--trials", "1"), "--budget", "4ms", "--study-name", "r"], runs)
    _one_line(proc, "study-name: 'r' was created with other settings (budget_ms)")
    assert (runs / "r" / "runs.jsonl").read_text() == first


# -- 7 / 14: one line per failure, a deterministic failure is not tried twice --------------------

def test_a_crashing_candidate_is_one_line_and_is_not_trained_twice(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    calls = tmp_path / "calls.txt"
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "def _oom(config, *a, **k):\n"
        f"    open({str(calls)!r}, 'a').write(config.arch_id + '\\n')\n"
        "    raise RuntimeError('CUDA out of memory. Tried to allocate 2.00 GiB')\n"
        "import nas.search.evaluate as E\n"
        "E.train_eval = _oom\n")
    space = _space(tmp_path, ONE, "one")
    args = ["--space", space, "--resolution", "32", "--latency", "predicted:1080ti", "--budget", "5ms",
            "--proxy-epochs", "1", "--no-progress", "--trials", "3", "--study-name", "oom"]
    proc = _cli(args, tmp_path / "runs", PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and len(lines) == 3, proc.stderr[-3000:]
    assert all(ln.startswith("nas.search: trial ") and "CUDA out of memory" in ln for ln in lines), lines
    assert len(calls.read_text().splitlines()) == 1  # the same architecture is not run out of memory again
    study = _load(tmp_path / "runs" / "nas.db", "oom")
    assert [t.state.name for t in study.trials] == ["FAIL"] * 3
    assert [t.user_attrs.get("duplicate_of") for t in study.trials] == [None, 0, 0]
    assert "3 failed candidates count toward --trials" in proc.stdout


# -- 4 / 5 / 6: dead and live twins, Ctrl-C, stale trials ------------------------------------------

HOLD = """
import sys, time, optuna
from nas.search.settings import SearchSettings
from nas.search.lifecycle import open_study
from nas.space import load_space
s = SearchSettings(space=sys.argv[1], resolution=32, latency="predicted:1080ti", budget_ms=5.0, proxy="zero-cost")
study = open_study(s, sys.argv[2], "twin")
space = load_space(sys.argv[1])
trial = study.ask()
trial.set_user_attr("arch_id", space.sample(trial).arch_id)
print("holding", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_waiting_for_a_twin_respects_the_timeout_and_a_dead_twin_is_failed_at_once(tmp_path):
    runs, space = tmp_path / "runs", _space(tmp_path, ONE, "one")
    url = f"sqlite:///{runs / 'nas.db'}"
    runs.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, space, url], env=_env(runs), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
        t0 = time.time()
        waited = _cli([*_args(space, "--trials", "1", "--timeout", "5"), "--study-name", "twin"], runs, timeout=120)
        assert waited.returncode == 3 and time.time() - t0 < 60, waited.stderr[-2000:]  # fell short, said why
        assert "0 of 1 trials evaluated; stopped by --timeout 5 s" in waited.stderr.splitlines()[-1]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    done = _cli([*_args(space, "--trials", "1", "--timeout", "60"), "--study-name", "twin"], runs, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    states = {t.number: (t.state.name, t.user_attrs.get("status")) for t in _load(runs / "nas.db", "twin").trials}
    assert states[0] == ("FAIL", "interrupted") and states[1] == ("FAIL", "interrupted"), states
    assert [s for s in states.values() if s[0] == "COMPLETE"] and "RUNNING" not in str(states)


@pytest.mark.slow
def test_a_rerun_right_after_kill_9_does_not_wait_for_the_dead_trial(tmp_path):
    runs, space = tmp_path / "runs", _space(tmp_path, ONE, "one")
    args = [*_args(space, "--trials", "1"), "--study-name", "dead"]
    proc = _popen(args, runs)
    number = _wait_running(runs / "nas.db", "dead", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [st for n, st, _ in _trials(runs / "nas.db", "dead") if n == number] == ["RUNNING"]
    t0 = time.time()
    rerun = _cli([*args, "--timeout", "60"], runs, timeout=150)
    assert rerun.returncode == 0 and time.time() - t0 < 90, rerun.stderr[-2000:]
    trials = _load(runs / "nas.db", "dead").trials
    assert trials[number].state.name == "FAIL" and trials[number].user_attrs["status"] == "interrupted"
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 1 and done[0].user_attrs["arch_id"] == trials[number].user_attrs["arch_id"]
    assert not [t for t in trials if t.state.name == "RUNNING"]


def test_ctrl_c_inside_a_garbage_collection_callback_prints_no_traceback(monkeypatch):
    """Python swallows an interrupt raised in a weakref callback and prints it as "Exception ignored" (CI saw
    SQLAlchemy's): the stop is requested all the same, and nothing but the search's own line may show."""
    import weakref

    import nas.search.__main__ as cli
    from nas.cli import quiet_swallowed_interrupt
    from nas.search import lifecycle

    reported = []
    monkeypatch.setattr(sys, "unraisablehook",
                        quiet_swallowed_interrupt(lifecycle.stop_requested, default=lambda u: reported.append(u.exc_type)))
    old = signal.signal(signal.SIGINT, cli._interrupt)
    lifecycle._RAISE_OK.set()
    try:
        class Node:
            pass

        node = Node()
        ref = weakref.ref(node, lambda _: (signal.raise_signal(signal.SIGINT), sum(range(10_000))))
        del node
        assert ref() is None and lifecycle.stop_requested()

        def broken(_):
            raise ValueError("a callback's own error")

        node = Node()
        ref = weakref.ref(node, broken)
        del node
    finally:
        signal.signal(signal.SIGINT, old)
        lifecycle._RAISE_OK.clear()
        lifecycle._STOP.clear()
    assert reported == [ValueError]  # the swallowed interrupt is not printed; other errors still are


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_the_interrupted_trial_is_run_again(tmp_path):
    runs, space = tmp_path / "runs", _space(tmp_path, MICRO, "micro")
    args = [*_args(space, "--trials", "4"), "--study-name", "intr"]
    proc = _popen(args, runs)
    number = _wait_running(runs / "nas.db", "intr", proc, after=0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines() == ["nas.search: interrupted; completed trials are saved, rerun the same "
                                        "command to resume"], err[-3000:]
    assert "Pareto front" in out
    again = _cli(args, runs)
    assert again.returncode == 0, again.stderr[-2000:]
    trials = _load(runs / "nas.db", "intr").trials
    # the trial running at SIGINT stopped inside its evaluation (interrupted) or, when the signal came
    # during a storage write, completed first; an interrupted one is run again with the same parameters
    assert trials[number].state.name == "COMPLETE" or trials[number].user_attrs["status"] == "interrupted"
    for t in trials:
        if t.user_attrs.get("status") == "interrupted" and t.params:
            assert [r.params for r in trials if r.user_attrs.get("retry_of") == t.number] == [t.params]
    from nas.search.lifecycle import evaluated_count

    assert evaluated_count(_load(runs / "nas.db", "intr"))[0] == 4


@pytest.mark.slow
def test_a_killed_last_trial_does_not_stay_running_on_a_journal(tmp_path):
    runs, space = tmp_path / "runs", _space(tmp_path, MICRO, "micro")
    log = tmp_path / "nas.log"
    base = [*_args(space), "--storage", f"journal:{log}", "--study-name", "last"]
    proc = _popen([*base, "--trials", "30"], runs)
    from nas.search.storage import open_storage_readonly

    deadline = time.time() + 120
    while True:
        try:
            trials = optuna.load_study(study_name="last", storage=open_storage_readonly(f"journal:{log}")).trials
        except (KeyError, ValueError):
            trials = []
        if any(t.number > 0 and t.state.name == "RUNNING" and "arch_id" in t.user_attrs for t in trials):
            break
        assert proc.poll() is None and time.time() < deadline, "no trial started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _cli([*base, "--trials", "1"], runs)  # the study already holds enough: only the cleanup runs
    assert done.returncode == 0, done.stderr[-2000:]
    study = optuna.load_study(study_name="last", storage=open_storage_readonly(f"journal:{log}"))
    assert not [t.number for t in study.trials if t.state.name == "RUNNING"]
    assert any(t.user_attrs.get("status") == "interrupted" for t in study.trials)
    assert "Traceback" not in done.stderr


def test_a_killed_seed_is_queued_again_with_its_name(tmp_path):
    from nas.search.lifecycle import evaluated_count, open_study
    from nas.search.settings import SearchSettings

    s = SearchSettings(space=_space(tmp_path, ONE, "one"), resolution=32, latency="predicted:1080ti", budget_ms=5.0,
                       proxy="zero-cost")
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    study = open_study(s, url, "seed", heartbeat=False)
    study.enqueue_trial({}, user_attrs={"seed": "base"})
    trial = study.ask()
    trial.suggest_int("x", 0, 3)
    study._storage.set_trial_user_attr(trial._trial_id, "worker", f"{os.uname().nodename}:999999999")
    resumed = open_study(s, url, "seed", heartbeat=False)  # what a rerun does first
    t0, t1 = resumed.trials
    assert t0.state.name == "FAIL" and t0.user_attrs["status"] == "interrupted"
    assert t1.state.name == "WAITING" and t1.user_attrs == {"seed": "base", "retry_of": 0}
    assert t1.system_attrs["fixed_params"] == t0.params
    assert evaluated_count(resumed) == (0, 1)


# -- the crash-resume loop ---------------------------------------------------------------------------

@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_ends_with_exactly_the_trials(tmp_path):
    runs, space, trials = tmp_path / "runs", _space(tmp_path, MICRO, "micro"), 6
    args = [*_args(space, "--trials", str(trials)), "--study-name", "loop"]
    rng = random.Random(2024)
    for _ in range(5):
        proc = _popen(args, runs)
        time.sleep(rng.uniform(3.0, 9.0))  # python and torch take ~3 s to start on this VM
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = _cli(args, runs, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    study = _load(runs / "nas.db", "loop")
    from nas.search.lifecycle import evaluated_count

    assert evaluated_count(study)[0] == trials
    assert not [t.number for t in study.trials if t.state.name == "RUNNING"]
    evaluated = [t.user_attrs["arch_id"] for t in study.trials if t.state.name in ("COMPLETE", "FAIL")
                 and t.user_attrs.get("status") not in ("interrupted", None) and "duplicate_of" not in t.user_attrs]
    assert len(evaluated) == len(set(evaluated)), evaluated
    front = json.loads((runs / "loop" / "pareto.json").read_text())
    assert front["front"] and all(r["latency_ms"] <= 5.0 for r in front["front"])
