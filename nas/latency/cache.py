"""SQLite cache of measurements, so a search never re-measures an architecture on the same device.

Keyed by arch_id + device fingerprint (hardware, threads, torch build) + shape + precision +
layout + deploy flag + runtime and its version (eager PyTorch's version is the torch build, so an
eager key is what it was before runtimes existed and old caches stay valid). Each row carries a checksum of its payload; a file SQLite cannot read, a
wrong schema or a row whose checksum fails means the cache is corrupt: it is reported (logged
as a warning and counted in `LatencyCache.rebuilt`), moved aside as ``*.corrupt-<time>`` and
rebuilt empty, never silently used.

Only clean figures measured with the interference guard are kept: `put` refuses a disturbed or
unguarded result, and `get` treats such a row (or one written before the guard existed) as a
miss, so a figure timed on a busy machine is never returned as a clean hit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from .result import LatencyResult

__all__ = ["LatencyCache", "cache_key"]

log = logging.getLogger("nas.latency")

_KEY_FIELDS = ("fingerprint", "precision", "resolution", "batch", "channels_last", "deploy", "torch")
_SCHEMA = ("CREATE TABLE IF NOT EXISTS measurements (key TEXT PRIMARY KEY, arch_id TEXT NOT NULL, "
           "fingerprint TEXT NOT NULL, payload TEXT NOT NULL, checksum TEXT NOT NULL, created REAL NOT NULL)")


def cache_key(arch_id: str, context: dict[str, Any]) -> str:
    """The identity of a measurement: architecture and every context field that changes timing."""
    fields = {k: context[k] for k in _KEY_FIELDS}
    if context.get("runtime", "eager") != "eager":
        fields.update(runtime=context["runtime"], runtime_version=context.get("runtime_version"))
    return hashlib.sha256(json.dumps([arch_id, fields], sort_keys=True).encode()).hexdigest()


def _checksum(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class LatencyCache:
    """A measurement cache in one SQLite file (safe to share between processes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rebuilt: list[str] = []
        self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
            cols = [r[1] for r in conn.execute("PRAGMA table_info(measurements)")]
            if cols != ["key", "arch_id", "fingerprint", "payload", "checksum", "created"]:
                conn.close()
                raise sqlite3.DatabaseError(f"unexpected columns {cols}")
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                conn.close()
                raise sqlite3.DatabaseError(ok)
            return conn
        except sqlite3.DatabaseError as err:
            return self._rebuild(f"{err}")

    def _rebuild(self, reason: str) -> sqlite3.Connection:
        if getattr(self, "_conn", None) is not None:
            self._conn.close()
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                src.replace(Path(f"{aside}{suffix}"))
        log.warning("latency cache %s is corrupt (%s); moved aside to %s and rebuilt empty", self.path, reason, aside.name)
        self.rebuilt.append(reason)
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(_SCHEMA)
        conn.commit()
        self._conn = conn
        return conn

    def get(self, key: str) -> LatencyResult | None:
        try:
            row = self._conn.execute("SELECT payload, checksum FROM measurements WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as err:
            self._rebuild(str(err))
            return None
        if row is None:
            return None
        payload, checksum = row
        try:
            if _checksum(payload) != checksum:
                raise ValueError("checksum mismatch")
            result = LatencyResult.from_dict(json.loads(payload))
        except (ValueError, TypeError) as err:
            self._rebuild(f"row {key[:12]}: {err}")
            return None
        if not (result.clean and result.guarded):  # disturbed, or from before the guard: re-measure
            return None
        return result

    def put(self, key: str, arch_id: str, fingerprint: str, result: LatencyResult) -> None:
        """Store a clean, guarded measurement; anything else (disturbed, failed, unguarded) is not stored."""
        if not (result.clean and result.guarded):
            log.debug("latency cache: not storing %s (disturbed, failed or unguarded)", arch_id)
            return
        payload = json.dumps(result.to_dict(), sort_keys=True)
        try:
            with self._conn:
                self._conn.execute("INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?, ?)",
                                   (key, arch_id, fingerprint, payload, _checksum(payload), time.time()))
        except sqlite3.DatabaseError as err:
            self._rebuild(str(err))

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]

    def close(self) -> None:
        self._conn.close()
