"""Loading studies for the app: storages, study lists, one flat row per trial with design features.

Everything here is plain Python + pandas (pandas ships with streamlit) and is independent of
streamlit, so it is unit-tested on its own and the app only caches it. Errors reaching the user
are `StorageError`s with a one-line message naming the storage URL and what went wrong: the page
shows that line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from ..errors import first_line

__all__ = [
    "DESIGN_CHOICES",
    "StorageError",
    "accuracy_proxies",
    "StudyInfo",
    "clear_storage_cache",
    "default_storage_url",
    "design_features",
    "list_studies",
    "load_records",
    "outcome",
    "proxy_name",
    "records_frame",
    "resolve_storage_url",
    "storage_is_missing",
    "storage_location",
    "storage_marker",
    "studies_by_proxy",
]

#: design choices derived from every config (whatever space it came from), in display order;
#: numeric ones are NaN for a network without harmonic blocks (k, m)
DESIGN_CHOICES: tuple[str, ...] = ("stem", "family", "k", "m", "link_rule", "depth", "se", "stages")
NUMERIC_CHOICES: frozenset[str] = frozenset({"k", "m", "depth", "stages"})


class StorageError(Exception):
    """A storage that cannot be opened or read; ``str(err)`` is one line naming the URL."""


@dataclass(frozen=True)
class StudyInfo:
    """What the study picker shows: name, trial count and the settings the search recorded."""

    name: str
    n_trials: int
    directions: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    objectives: tuple[str, ...] = ()

    @property
    def budget_ms(self) -> float | None:
        value = self.settings.get("budget_ms")
        return float(value) if value is not None else None


def default_storage_url() -> str:
    """The search's default storage, ``sqlite:///<runs>/nas.db`` (``$HARDNAS_RUNS`` moves it)."""
    from ..search.optuna_backend import default_storage

    return default_storage()


def resolve_storage_url(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> str:
    """The storage the app opens first: ``--storage URL`` after ``--``, else ``$NAS_STORAGE``, else the default."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--storage", default=None)
    args, _ = parser.parse_known_args(list(argv))
    env = os.environ if environ is None else environ
    return args.storage or env.get("NAS_STORAGE") or default_storage_url()


def storage_is_missing(url: str) -> bool:
    """True when the URL names a local file that does not exist yet (no search has written it).

    The app treats that as "no runs yet" without creating the file, so a typo in the URL does not
    leave an empty database behind.
    """
    from ..search.storage import storage_file

    path = storage_file(url)
    return path is not None and not path.exists()


def storage_location(url: str) -> str | None:
    """Where a file storage's path resolves to, in words (``/abs/path.db``, plus the folder a relative path
    is read from); None for server storages."""
    from ..search.storage import storage_file

    path = storage_file(url)
    if path is None:
        return None
    where = str(path.expanduser().resolve())
    return where if path.expanduser().is_absolute() else f"{where} (relative to {Path.cwd()}, where the app started)"


_STORAGES: dict[str, Any] = {}


def clear_storage_cache() -> None:
    """Forget opened storages (the refresh button calls this, e.g. after a file was replaced)."""
    _STORAGES.clear()


def _storage(url: str) -> Any:
    if url in _STORAGES:
        return _STORAGES[url]
    from ..search.storage import open_storage_readonly

    try:
        storage = open_storage_readonly(url)
    except Exception as err:  # bad URL, missing driver, unreachable server, not a storage, damaged file
        msg = first_line(err)
        prefix = f"storage: {url!r} "
        if msg.startswith(prefix):  # the opener already names the URL
            msg = msg[len(prefix):]
        raise StorageError(f"storage {url}: {msg}") from None
    if getattr(storage, "snapshot", None) is None:  # a copy of a file left mid-commit would go stale
        _STORAGES[url] = storage
    return storage


def storage_marker(url: str) -> str:
    """A cheap fingerprint of what the storage holds: it changes when a trial is added, finishes or records a
    figure, when a study is created or deleted, or when a file storage is written.

    The app caches study data under it instead of for a few seconds: a rerun costs one small query
    (three ``MAX``/``COUNT`` over Optuna's tables on an RDB storage, a ``stat`` for a journal file),
    and a search writing meanwhile shows up on the next interaction. ``names`` limits the trial
    part to those studies (all when empty). A storage that cannot be asked gives a marker that
    changes every 5 seconds (the app's former time-to-live).
    """
    import time

    from ..search.storage import storage_file

    path = storage_file(url)
    if path is not None and not path.exists():
        return "missing"
    if _is_journal(url):
        st = path.stat()
        return f"journal:{st.st_size}:{st.st_mtime_ns}"
    try:
        import optuna
        from sqlalchemy import text

        storage = _storage(url)
        if isinstance(storage, optuna.storages.RDBStorage):
            with storage.engine.connect() as con:
                row = con.execute(text(
                    "SELECT (SELECT COUNT(*) FROM studies), (SELECT MAX(study_id) FROM studies), COUNT(*), "
                    "MAX(trial_id), MAX(datetime_complete), SUM(CASE WHEN state = 'RUNNING' THEN 1 ELSE 0 END), "
                    "(SELECT MAX(trial_user_attribute_id) FROM trial_user_attributes) FROM trials")).fetchone()
            return "rdb:" + ":".join(str(v) for v in row)
    except StorageError:
        raise
    except Exception:  # another schema, or the server is busy this instant: fall back on time
        pass
    return f"time:{int(time.time() // 5)}"


def _is_journal(url: str) -> bool:
    return url.startswith("journal:") or ("://" not in url and url.endswith((".log", ".jsonl")))


def list_studies(url: str) -> list[StudyInfo]:
    """Studies in the storage, by name; an empty list for a local file that does not exist yet.

    A file whose folder does not exist either is a `StorageError` saying where the path resolved to
    (a mistyped path, not an empty storage)."""
    if storage_is_missing(url):
        from ..search.storage import storage_file

        folder = storage_file(url).expanduser().resolve().parent
        if not folder.is_dir():
            raise StorageError(f"storage {url}: the folder {folder} does not exist (the path resolves to "
                               f"{storage_location(url)}); expected an existing folder")
        return []

    storage = _storage(url)
    out = []
    try:
        for fs in storage.get_all_studies():  # names, directions, attributes: no trials loaded
            attrs = fs.user_attrs or {}
            out.append(StudyInfo(
                name=fs.study_name,
                n_trials=_count_trials(storage, fs._study_id),
                directions=tuple(d.name.lower() for d in fs.directions),
                settings=dict(attrs.get("settings") or {}),
                objectives=tuple(attrs.get("objectives") or ()),
            ))
    except Exception as err:
        _STORAGES.pop(url, None)
        raise StorageError(f"storage {url}: could not list studies ({first_line(err)})") from None
    return sorted(out, key=lambda s: s.name)


def load_records(url: str, study_names: Iterable[str], fast: bool = True) -> list[dict[str, Any]]:
    """`nas.search.results.trial_records` of each study, with ``study`` and the study's settings added.

    With ``fast`` (the default) an RDB storage is read with three SQL queries over Optuna's
    tables instead of building a `FrozenTrial` per trial: 10,000 trials load in about a second
    instead of ~20 s on this VM. The rows go through the same `trial_records`, and any surprise
    in the schema falls back to Optuna's API, so the result is the same either way (tested).
    """
    import optuna

    from ..search.results import trial_records

    storage = _storage(url)
    out: list[dict[str, Any]] = []
    for name in study_names:
        try:
            records, settings = None, None
            if fast and isinstance(storage, optuna.storages.RDBStorage):
                try:
                    view = _sql_study(storage, name)
                except KeyError:
                    raise
                except Exception:  # another schema version: Optuna's API below
                    view = None
                if view is not None:
                    records, settings = trial_records(view), dict(view.user_attrs.get("settings") or {})
            if records is None:
                study = optuna.load_study(study_name=name, storage=storage)
                records, settings = trial_records(study), dict(study.user_attrs.get("settings") or {})
        except KeyError:
            raise StorageError(f"storage {url}: no study named {name!r}") from None
        except Exception as err:
            _STORAGES.pop(url, None)
            raise StorageError(f"storage {url}: could not read study {name!r} ({first_line(err)})") from None
        for r in records:
            r["study"] = name
            r["_settings"] = settings
        out.extend(records)
    return out


def _count_trials(storage: Any, study_id: int) -> int:
    """Trials in a study: one SQL COUNT on an RDB storage (Optuna's own count loads every trial:
    16 s for 10,000 of them on this VM), else through the storage API."""
    import optuna

    if isinstance(storage, optuna.storages.RDBStorage):
        try:
            from sqlalchemy import text

            with storage.engine.connect() as con:
                return int(con.execute(text("SELECT COUNT(*) FROM trials WHERE study_id = :s"), {"s": study_id}).scalar())
        except Exception:  # another schema version
            pass
    return len(storage.get_all_trials(study_id, deepcopy=False))


@dataclass
class _State:
    name: str


@dataclass
class _Trial:
    """The part of `optuna.trial.FrozenTrial` that `trial_records` reads."""

    number: int
    state: _State
    user_attrs: dict[str, Any]


@dataclass
class _StudyView:
    """The part of `optuna.Study` that `trial_records` reads."""

    user_attrs: dict[str, Any]
    trials: list[_Trial]

    def get_trials(self, deepcopy: bool = False) -> list[_Trial]:
        return self.trials


def _sql_study(storage: Any, name: str) -> _StudyView:
    """Read one study's trials and user attributes straight from Optuna's RDB tables."""
    from sqlalchemy import text

    with storage.engine.connect() as con:
        row = con.execute(text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": name}).fetchone()
        if row is None:
            raise KeyError(name)
        sid = row[0]
        attrs = {k: json.loads(v) for k, v in con.execute(
            text("SELECT key, value_json FROM study_user_attributes WHERE study_id = :s"), {"s": sid})}
        trials: dict[int, _Trial] = {}
        for tid, number, state in con.execute(
                text("SELECT trial_id, number, state FROM trials WHERE study_id = :s ORDER BY number"), {"s": sid}):
            trials[tid] = _Trial(int(number), _State(str(state)), {})
        for tid, key, value in con.execute(text(
                "SELECT a.trial_id, a.key, a.value_json FROM trial_user_attributes a JOIN trials t "
                "ON a.trial_id = t.trial_id WHERE t.study_id = :s"), {"s": sid}):
            trials[tid].user_attrs[key] = json.loads(value)
    return _StudyView(attrs, sorted(trials.values(), key=lambda t: t.number))


@lru_cache(maxsize=100_000)
def _features_of_json(config_json: str) -> tuple[tuple[str, Any], ...]:
    return tuple(design_features(json.loads(config_json)).items())


def design_features(config: Mapping[str, Any] | str) -> dict[str, Any]:
    """The design choices of one architecture, comparable across spaces and studies.

    ``stem`` (type, ``_ds`` when depthwise), ``family`` (the block types, ``+``-joined: ``hard``,
    ``basic+bottleneck``...), ``k`` and ``m`` (mean growth rate and weighting factor of the
    harmonic stages, NaN without one), ``link_rule`` (of the harmonic stages: one rule, ``mixed``
    or ``none``), ``depth`` (layers/blocks summed over stages), ``se`` (placements used, or
    ``none``) and ``stages``. Derived from the config rather than from the trial's Optuna
    parameters, so studies of different spaces can be overlaid and compared.
    """
    if isinstance(config, str):
        return dict(_features_of_json(config))
    stem = config.get("stem") or {}
    stages = list(config.get("stages") or [])
    hard = [s for s in stages if s.get("block", "hard") == "hard"]
    rules = sorted({s.get("link_rule", "harmonic") for s in hard})
    se = sorted({s.get("se", "none") for s in stages} - {"none"})
    return {
        "stem": str(stem.get("type", "hardnet")) + ("_ds" if stem.get("depthwise") else ""),
        "family": "+".join(sorted({s.get("block", "hard") for s in stages})) or "none",
        "k": sum(s.get("growth_rate", 0) for s in hard) / len(hard) if hard else math.nan,
        "m": sum(float(s.get("weight_factor", 1.7)) for s in hard) / len(hard) if hard else math.nan,
        "link_rule": rules[0] if len(rules) == 1 else ("mixed" if rules else "none"),
        "depth": int(sum(int(s.get("depth", 1)) for s in stages)),
        "se": "+".join(se) if se else "none",
        "stages": len(stages),
    }


_NUMBERS = ("accuracy", "latency_ms", "cio", "macs", "params", "moc", "wall_s")


def _num(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x


def records_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per trial: identity, numbers, latency provenance, study settings and design features.

    Columns: ``key`` (``study#number``, unique across overlaid studies), ``study``, ``number``,
    ``state``, ``name`` (baseline name or ""), ``baseline``, ``arch_id``, ``config`` (JSON text),
    the numbers in ``_NUMBERS`` (NaN when absent), ``latency_source``/``latency_device``,
    ``latency_disturbed``/``latency_slowdown`` (a measurement taken while other work ran),
    ``latency_runtime``/``latency_runtime_version`` (what a measured latency ran under, else ""),
    ``proxy``, ``status``, ``reason``, ``budget_ms``/``resolution`` (canonical: 224 or
    ``"1080x1920"``)/``batch``/``precision`` of the study, ``curve`` (per-epoch proxy accuracy),
    ``superseded_by`` (`nas.search.results.trial_records`: the trial that stands instead, else NaN), `DESIGN_CHOICES`
    and ``why`` (`outcome`).
    """
    from ..search.results import measured_runtime

    rows = []
    for r in records:
        settings = r.get("_settings") or {}
        runtime, runtime_version = measured_runtime(r, settings)
        cfg = r.get("config")
        if isinstance(cfg, Mapping):
            cfg = json.dumps(cfg)
        row: dict[str, Any] = {
            "key": f"{r.get('study', '')}#{r.get('number')}",
            "study": r.get("study", ""),
            "number": int(r.get("number", -1)),
            "state": r.get("state", ""),
            "name": str(r.get("name") or r.get("seed") or ""),
            "baseline": bool(r.get("seed")) and r.get("superseded_by") is None,  # a re-measurement stands for it
            "arch_id": r.get("arch_id") or "",
            "config": cfg or "",
            "latency_source": r.get("latency_source") or "",
            "latency_device": r.get("latency_device") or "",
            "latency_disturbed": bool(r.get("latency_disturbed")),
            "latency_slowdown": _num(r.get("latency_slowdown")),
            "latency_runtime": runtime,
            "latency_runtime_version": runtime_version,
            "proxy": proxy_name(r.get("proxy"), settings),
            "status": r.get("status") or "",
            "reason": r.get("reason") or "",
            "budget_ms": _num(settings.get("budget_ms", r.get("budget_ms"))),
            "resolution": _resolution(settings.get("resolution")),
            "batch": int(settings.get("batch") or 1),
            "precision": str(settings.get("precision") or "fp32"),
            "curve": list(r.get("accuracy_curve") or []),
            "superseded_by": _num(r.get("superseded_by")),
        }
        for k in _NUMBERS:
            row[k] = _num(r.get(k))
        feats = design_features(cfg) if cfg else {c: (math.nan if c in NUMERIC_CHOICES else "") for c in DESIGN_CHOICES}
        row.update(feats)
        rows.append(row)
    columns = ["key", "study", "number", "state", "name", "baseline", "arch_id", "config", *_NUMBERS,
               "latency_source", "latency_device", "latency_disturbed", "latency_slowdown", "latency_runtime",
               "latency_runtime_version", "proxy", "status", "reason",
               "budget_ms", "resolution", "batch", "precision", "curve", "superseded_by", *DESIGN_CHOICES]
    frame = pd.DataFrame(rows, columns=columns)
    frame["why"] = outcome(frame)
    return frame


def _resolution(value: Any) -> int | str:
    """A study's input size in `nas.resolution`'s canonical form (224, the search's default, when it recorded none)."""
    from ..resolution import canonical_resolution

    return canonical_resolution(value if value not in (None, "") else 224)


def proxy_name(recorded: Any, settings: Mapping[str, Any]) -> str:
    """The accuracy proxy of a trial as completed trials record it (``train``, ``zero-cost:naswot``).

    A trial rejected before its evaluation records none; it gets the study's setting, named the
    same way (the setting ``zero-cost`` with its metric), so one study never looks like two proxies.
    """
    if recorded:
        return str(recorded)
    proxy = str(settings.get("proxy") or "")
    return f"zero-cost:{settings.get('zero_cost_metric') or 'naswot'}" if proxy == "zero-cost" else proxy


def accuracy_proxies(frame: pd.DataFrame) -> list[str]:
    """The proxies behind the accuracies shown (rows with an accuracy only), sorted."""
    return sorted(set(frame.loc[frame["accuracy"].notna(), "proxy"]) - {""})


def studies_by_proxy(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Each accuracy proxy and the studies whose accuracies it gave (a study may appear under several)."""
    rows = frame.loc[frame["accuracy"].notna() & (frame["proxy"] != ""), ["proxy", "study"]].drop_duplicates()
    return {p: sorted(g["study"]) for p, g in rows.groupby("proxy", sort=True)}


def outcome(frame: pd.DataFrame) -> pd.Series:
    """What became of each trial in a few words: ``ok``, ``rejected: over budget: measured 48.2 ms > 40 ms``,
    ``failed: proxy training: loss is NaN``, ``running``..."""
    status = frame["status"].where(frame["status"] != "", frame["state"].str.lower())
    status = status.where(frame["state"] != "RUNNING", "running")
    status = status.where(frame["reason"] == "", status + ": " + frame["reason"])
    later = frame["superseded_by"]
    return status.where(later.isna(), "superseded by trial " + later.fillna(-1).astype(int).astype(str))
