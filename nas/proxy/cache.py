"""SQLite cache of proxy results, so a canonical baseline is trained once per data, proxy and seed.

Keyed by arch_id + every setting that changes a proxy figure (proxy kind, epochs, zero-cost
metric, data, seed, device type). A row carries its metrics as JSON (never a pickle) and a
checksum; SQLite's transactions make every write atomic and safe between processes. A file that
cannot be read, or a row whose checksum fails, is a miss and is reported once, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Mapping

__all__ = ["PROXY_FIELDS", "ProxyCache", "proxy_key"]

log = logging.getLogger("nas.proxy")

PROXY_FIELDS = ("accuracy", "accuracy_curve", "loss_curve", "eval_loss_curve", "proxy", "proxy_wall_s", "proxy_images_per_s",
                "proxy_resolution", "proxy_threads", "extrapolated_accuracy", "zc_synflow", "zc_naswot", "zc_grad_norm", "zc_error")
"""The metrics of an evaluation that come from the proxy (what the cache keeps)."""

_SCHEMA = ("CREATE TABLE IF NOT EXISTS proxy_results (key TEXT PRIMARY KEY, arch_id TEXT NOT NULL, "
           "context TEXT NOT NULL, payload TEXT NOT NULL, checksum TEXT NOT NULL, created REAL NOT NULL)")


def proxy_key(arch_id: str, context: Mapping[str, Any]) -> str:
    """The identity of a proxy result: the architecture and the settings that change its figures."""
    return hashlib.sha256(json.dumps([arch_id, dict(context)], sort_keys=True).encode()).hexdigest()


def _checksum(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class ProxyCache:
    """Proxy results in one SQLite file; `get` on a missing file creates nothing."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.warned = False

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if not create and not self.path.exists():
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30)
        if create:
            conn.execute(_SCHEMA)
        return conn

    def _warn(self, why: str) -> None:
        if not self.warned:
            log.warning("proxy cache %s: %s; the baseline is trained again", self.path, why)
            self.warned = True

    def get(self, arch_id: str, context: Mapping[str, Any]) -> dict[str, Any] | None:
        """The cached proxy metrics, or None (a miss, an unreadable file, a row that fails its checksum)."""
        try:
            conn = self._connect(create=False)
            if conn is None:
                return None
            try:
                row = conn.execute("SELECT payload, checksum FROM proxy_results WHERE key = ?",
                                   (proxy_key(arch_id, context),)).fetchone()
            finally:
                conn.close()
        except sqlite3.Error as err:
            self._warn(f"cannot be read ({err})")
            return None
        if row is None:
            return None
        if _checksum(row[0]) != row[1]:
            self._warn("a row fails its checksum")
            return None
        return json.loads(row[0])

    def put(self, arch_id: str, context: Mapping[str, Any], metrics: Mapping[str, Any]) -> bool:
        """Keep the proxy fields of ``metrics``; False (and one warning) when the file cannot be written."""
        try:
            payload = json.dumps({k: metrics[k] for k in PROXY_FIELDS if k in metrics}, allow_nan=False)
        except ValueError:  # a NaN curve is no figure to reuse
            return False
        try:
            conn = self._connect(create=True)
            assert conn is not None
            try:
                with conn:
                    conn.execute("INSERT OR REPLACE INTO proxy_results VALUES (?, ?, ?, ?, ?, ?)",
                                 (proxy_key(arch_id, context), arch_id, json.dumps(dict(context), sort_keys=True),
                                  payload, _checksum(payload), time.time()))
            finally:
                conn.close()
        except sqlite3.Error as err:
            self._warn(f"cannot be written ({err})")
            return False
        return True
