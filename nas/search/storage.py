"""Opening Optuna storages: one path for the search (a writer) and one read-only path for every reader.

* URLs: ``sqlite:///PATH``, any SQLAlchemy URL (``postgresql://user@host/db`` works with the
  ``[postgres]`` extra's psycopg2), or ``journal:PATH`` / ``PATH.log``.
* A writer may create the file (a 0-byte SQLite file counts as a new, empty storage) but refuses
  a file that is not an Optuna storage, a damaged database and a folder it cannot write.
* A reader (export, the explorer, reports) never creates or changes anything: a missing file, a
  0-byte file, a file without Optuna's tables or a damaged database is a one-line `ValueError`.
* A SQLite file a killed writer left mid-commit (a hot ``-journal`` beside it) is not damaged: the
  next writer rolls it back in place; a reader reads a private copy rolled back to the last commit.
* Every trial a writer creates records its ``worker`` (host:pid) in the same commit, so a trial
  of a process that died can be recognised at once on the same host.
"""

from __future__ import annotations

import datetime
import functools
import importlib.util
import os
import shutil
import socket
import sqlite3
import tempfile
import urllib.parse
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from ..errors import first_line
from ..paths import runs_dir

__all__ = ["WORKER", "default_storage", "normalize_url", "open_storage", "open_storage_readonly", "storage_file"]

WORKER = f"{socket.gethostname()}:{os.getpid()}"
"""Stamped on every trial, so a shared study shows which process evaluated what."""

HEARTBEAT_INTERVAL_S, GRACE_PERIOD_S = 20, 60
_OPTUNA_TABLES = frozenset({"studies", "trials", "version_info"})
_EXPECTED = "expected an RDB URL such as sqlite:///runs/nas.db or postgresql://user@host/db, or journal:PATH"


def default_storage() -> str:
    """``sqlite:///<runs>/nas.db`` (``$HARDNAS_RUNS`` moves it)."""
    return f"sqlite:///{runs_dir() / 'nas.db'}"


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg2 (the ``[postgres]`` extra) unless psycopg 3 is installed.

    SQLAlchemy 2.1 maps a driver-less ``postgresql://`` to psycopg 3; the documented URL must
    work with whichever of the two drivers is present.
    """
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def storage_file(url: str) -> Path | None:
    """The local file behind a SQLite or journal URL (None for server databases and in-memory SQLite)."""
    if url.startswith("journal:"):
        return Path(url.split(":", 1)[1]).expanduser()
    if "://" not in url and url.endswith((".log", ".jsonl")):
        return Path(url).expanduser()
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):].split("?", 1)[0]
        return None if path in ("", ":memory:") else Path(path).expanduser()
    return None


def _is_journal(url: str) -> bool:
    return url.startswith("journal:") or ("://" not in url and url.endswith((".log", ".jsonl")))


def _check_url(url: Any) -> None:
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"storage: {url!r} is not allowed; {_EXPECTED}")
    if not _is_journal(url) and "://" not in url:
        raise ValueError(f"storage: {url!r} is not allowed; {_EXPECTED}")
    if _is_journal(url) and not str(storage_file(url)).strip():
        raise ValueError(f"storage: {url!r} is not allowed; journal: needs a file path, e.g. journal:runs/nas.log")


class _Interrupted(Exception):
    """The file has a hot journal: its writer was killed mid-commit, and a read-only opener cannot roll it back."""


def _interrupted(err: sqlite3.Error, path: Path) -> bool:
    name = getattr(err, "sqlite_errorname", None)  # Python >= 3.11
    if name is not None:
        return name == "SQLITE_READONLY_ROLLBACK"
    return "readonly database" in str(err) and Path(f"{path}-journal").exists()


def _sqlite_tables(url: str, path: Path, mode: str) -> set[str]:
    """The tables of an existing SQLite file, after SQLite's own check that no page is damaged.

    ``mode="rw"`` (a writer) lets SQLite roll back what a killed writer left mid-commit;
    ``mode="ro"`` (a reader) raises `_Interrupted` instead.
    """
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode={mode}"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=60)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            problems = [r[0] for r in con.execute("PRAGMA quick_check(3)")]
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        if "not a database" in str(err):
            raise ValueError(f"storage: {url!r} is not a hardnas/Optuna storage ({path} is not a database "
                             "SQLite can read)") from None
        if mode == "ro" and _interrupted(err, path):
            raise _Interrupted() from None
        raise ValueError(f"storage: {url!r} is damaged ({first_line(err)}); restore {path} from a backup "
                         "or pass another --storage") from None
    if problems != ["ok"]:
        lines = [ln.strip() for ln in "\n".join(map(str, problems)).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if not ln.startswith("***")), lines[0] if lines else "failed")
        raise ValueError(f"storage: {url!r} is damaged (SQLite integrity check: {detail}); restore {path} "
                         "from a backup or pass another --storage")
    return tables


def _journal_stamp(journal: Path) -> tuple[int, int] | None:
    try:
        st = journal.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def _private_copy(url: str, path: Path) -> tuple[Path, tempfile.TemporaryDirectory]:
    """A copy of ``path`` and its hot journal in a private folder (the first read-write open rolls it back).

    The journal is copied first: rolling it back onto a file a writer has meanwhile recovered
    restores the same pages. A journal that changed while the file was copied means a writer
    was at work; the copy is then taken again.
    """
    journal = Path(f"{path}-journal")
    for _ in range(5):
        folder = tempfile.TemporaryDirectory(prefix="hardnas-storage-")
        copy = Path(folder.name) / path.name
        before = _journal_stamp(journal)
        try:
            if before is not None:
                shutil.copyfile(journal, f"{copy}-journal")
            shutil.copyfile(path, copy)
        except FileNotFoundError:
            folder.cleanup()
            continue
        except OSError as err:
            folder.cleanup()
            raise ValueError(f"storage: {url!r} could not be read ({err.strerror or first_line(err)}: "
                             f"{err.filename or path})") from None
        if _journal_stamp(journal) == before:
            return copy, folder
        folder.cleanup()
    raise ValueError(f"storage: {url!r} could not be read (a writer kept changing {path} while it was "
                     "copied); try again")


def _not_optuna(url: str, path: Path, tables: set[str]) -> ValueError:
    held = f"it holds the tables {', '.join(sorted(tables))}" if tables else "it holds no tables"
    return ValueError(f"storage: {url!r} is not a hardnas/Optuna storage ({path}: {held}); "
                      "expected a storage a search wrote, e.g. sqlite:///runs/nas.db")


def _stamped(template_trial: FrozenTrial | None) -> FrozenTrial:
    if template_trial is not None:
        return template_trial
    return FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, values=None,
                       datetime_start=datetime.datetime.now(), datetime_complete=None, params={}, distributions={},
                       user_attrs={"worker": WORKER}, system_attrs={}, intermediate_values={}, trial_id=-1)


class _StampsWorker:
    """A storage whose new trials carry ``worker`` from their first commit (popped WAITING trials right after)."""

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return super().create_new_trial(study_id, _stamped(template_trial))  # type: ignore[misc]

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)  # type: ignore[misc]
        if changed and state == TrialState.RUNNING:
            self.set_trial_user_attr(trial_id, "worker", WORKER)  # type: ignore[attr-defined]
        return changed


class _RDBStorage(_StampsWorker, RDBStorage):
    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        return super()._create_new_trial(study_id, _stamped(template_trial))  # Optuna's cache calls this one


class _JournalStorage(_StampsWorker, JournalStorage):
    pass


def _journal(url: str, path: Path, write: bool) -> JournalStorage:
    from optuna.storages.journal import JournalFileBackend

    try:
        backend = JournalFileBackend(str(path))
        return (_JournalStorage if write else JournalStorage)(backend)
    except OSError as err:
        raise ValueError(f"storage: {url!r} could not be opened ({err.strerror or first_line(err)}: "
                         f"{err.filename or path})") from None
    except Exception as err:
        raise ValueError(f"storage: {url!r} is not a hardnas/Optuna storage ({path} is not an Optuna journal: "
                         f"{first_line(err)})") from None


def _writable_folder(url: str, path: Path) -> None:
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"storage: {url!r} is not allowed; {str(folder)!r} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"storage: {url!r} is not allowed; folder {str(folder)!r} could not be created "
                         f"({err.strerror or first_line(err)})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"storage: {url!r} is not allowed; folder {str(folder)!r} is not writable")
    if path.exists() and (path.is_dir() or not os.access(path, os.R_OK | os.W_OK)):
        what = "a folder" if path.is_dir() else "not writable"
        raise ValueError(f"storage: {url!r} is not allowed; {str(path)!r} is {what}")


def _rdb(url: str, write: bool, heartbeat: bool, engine_kwargs: dict[str, Any]) -> RDBStorage:
    beat: dict[str, Any] = {}
    if heartbeat:
        beat = {"heartbeat_interval": HEARTBEAT_INTERVAL_S, "grace_period": GRACE_PERIOD_S}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if write:
                return _RDBStorage(normalize_url(url), engine_kwargs=engine_kwargs, **beat)
            return RDBStorage(normalize_url(url), engine_kwargs=engine_kwargs, skip_table_creation=True)
    except ImportError:
        raise ValueError(f"storage: {url!r} could not be opened (its database driver is not installed; for "
                         "PostgreSQL: pip install 'hardnas[postgres]')") from None
    except Exception as err:
        raise ValueError(f"storage: {url!r} could not be opened ({first_line(err)})") from None


def open_storage(url: str, heartbeat: bool = False) -> Any:
    """The storage a search writes into; creates a missing file (and its folder), refuses anything else odd.

    ``heartbeat=True`` is for a process that runs trials with `Study.optimize`: a trial whose
    process died is then failed after a grace period even on another host.
    """
    _check_url(url)
    path = storage_file(url)
    if _is_journal(url):
        _writable_folder(url, path)
        return _journal(url, path, write=True)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
        if path is not None:
            _writable_folder(url, path)
            if path.exists() and path.stat().st_size > 0:
                tables = _sqlite_tables(url, path, "rw")
                if tables and not _OPTUNA_TABLES <= tables:
                    raise _not_optuna(url, path, tables)
    return _rdb(url, True, heartbeat, engine_kwargs)


def open_storage_readonly(url: str) -> Any:
    """The storage for reading only: never creates a file or a table, never writes.

    A missing file, a 0-byte file, a file without Optuna's tables or a damaged database is a
    one-line `ValueError` naming the URL. A SQLite file a killed writer left mid-commit is read
    from a private rolled-back copy (the storage's ``snapshot`` attribute then holds it).
    """
    _check_url(url)
    path = storage_file(url)
    if path is not None:
        if not path.exists():
            raise ValueError(f"storage: {url!r} is not allowed; {str(path)!r} does not exist (expected the storage "
                             "a search wrote, e.g. sqlite:///runs/nas.db)")
        if not path.is_file():
            raise ValueError(f"storage: {url!r} is not allowed; {str(path)!r} is a folder, expected a storage file")
    if _is_journal(url):
        return _journal(url, path, write=False)
    if url.startswith("sqlite:"):
        if path is None:
            raise ValueError(f"storage: {url!r} is not allowed for reading; expected a file, e.g. sqlite:///runs/nas.db")
        if path.stat().st_size == 0:
            raise ValueError(f"storage: {url!r} is not a hardnas/Optuna storage ({path} is an empty file)")
        source, keep = path, None
        try:
            tables = _sqlite_tables(url, path, "ro")
        except _Interrupted:
            source, keep = _private_copy(url, path)
            tables = _sqlite_tables(url, source, "rw")  # rolls the copy back to the last commit
        if not _OPTUNA_TABLES <= tables:
            raise _not_optuna(url, path, tables)
        uri = f"file:{urllib.parse.quote(str(source.resolve()))}?mode=ro"
        connect: Callable[[], sqlite3.Connection] = functools.partial(
            sqlite3.connect, uri, uri=True, timeout=60, check_same_thread=False)
        storage = _rdb(url, False, False, {"creator": connect})
        storage.snapshot = keep  # the copy lives as long as the storage; a cache should not keep it
        return storage
    storage = _rdb(url, False, False, {})
    try:
        from sqlalchemy import inspect

        tables = set(inspect(storage.engine).get_table_names())
    except Exception as err:
        raise ValueError(f"storage: {url!r} could not be read ({first_line(err)})") from None
    if not _OPTUNA_TABLES <= tables:
        raise ValueError(f"storage: {url!r} is not a hardnas/Optuna storage (no Optuna tables there)")
    return storage
