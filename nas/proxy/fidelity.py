"""Proxy fidelity study: does the short proxy rank a space's networks like a long reference training?

`study_networks` picks the networks (the space's canonical seeds, then seeded random points of the
space, all width-scaled by ``scale``); `run_study` trains each with the **reference** budget and with
the proxy budget, and records zero-cost scores, params and MACs. Everything goes into one JSON cache
(`FidelityCache`) that records the exact settings; it is rewritten atomically after every network, so
a killed run loses at most the network in progress and a rerun skips what is done. Proxy results are
kept per proxy budget, so changing the proxy only re-runs proxies. A cache made with other settings
is never mixed: the default file name carries a hash of the settings, and an explicit ``--out`` whose
settings differ is refused with one line. Several runners may share one file (one per core or machine
on a shared folder): each network is claimed by one runner, and each result is merged into the file
as it is on disk. The report (tau with intervals) is `fidelity_report`.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from ..config import ArchConfig
from ..cost import analyze
from ..data import Dataset
from ..errors import failure_reason
from ..export.files import write_atomic
from ..latency.devices import resolve_device
from ..model import build_model
from ..paths import runs_dir
from ..space import InvalidCandidate, SearchSpace
from .train import ProxyBudget, ProxyResult, _proxy_resolution, proxy_config, scale_width, train_eval
from .zero_cost import ZERO_COST_PROXIES, zero_cost

__all__ = ["CACHE_FORMAT", "MAX_REFERENCE_SEEDS", "FidelityCache", "StudySettings", "data_fingerprint", "default_cache_path",
           "iter_rows", "proxy_key", "reference_budget", "run_study", "study_networks", "trained_macs"]

CACHE_FORMAT = "hardnas-fidelity/1"
MAX_REFERENCE_SEEDS = 5
_MAX_DRAWS = 50  # random draws per wanted network before the space is called too narrow


def reference_budget(proxy: ProxyBudget | None = None, epochs: float = 10.0,
                     train_images: int | None = None) -> ProxyBudget:
    """The reference schedule: ``epochs`` over the whole training set (or ``train_images``), all of the
    held-out split, cosine, at the proxy's width and seed."""
    proxy = proxy or ProxyBudget()
    return dataclasses.replace(proxy, epochs=epochs, steps=None, seconds=None, max_train_samples=train_images,
                               max_eval_samples=None)


def data_fingerprint(ds: Dataset) -> str:
    """A hash of the images, labels and class names (two loads of the same data agree)."""
    h = hashlib.sha256()
    for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    h.update(json.dumps(ds.classes).encode())
    return h.hexdigest()[:16]


def _space_fingerprint(space: SearchSpace) -> str:
    path = Path(space.source)
    text = path.read_bytes() if path.is_file() else space.source.encode()
    return hashlib.sha256(text).hexdigest()[:16]


def _budget_dict(budget: ProxyBudget) -> dict[str, Any]:
    return dataclasses.asdict(budget)


@dataclass(frozen=True)
class StudySettings:
    """What a reference figure depends on; two caches are the same study only if these agree."""

    space: str
    space_fingerprint: str
    data: str
    data_fingerprint: str
    seed: int
    scale: float
    max_macs: float | None
    reference: Mapping[str, Any]
    device: str
    torch: str

    @classmethod
    def make(cls, space: SearchSpace, ds: Dataset, reference: ProxyBudget, *, seed: int = 0, scale: float = 0.25,
             max_macs: float | None = None, device: str = "cpu") -> "StudySettings":
        if not 0 < scale <= 4:
            raise ValueError(f"fidelity: scale {scale!r} is not allowed; expected a number in (0, 4]")
        if max_macs is not None and not max_macs > 0:
            raise ValueError(f"fidelity: max_macs {max_macs!r} is not allowed; expected a positive number or None")
        return cls(space.name, _space_fingerprint(space), ds.name, data_fingerprint(ds), seed, float(scale),
                   None if max_macs is None else float(max_macs), _budget_dict(reference), resolve_device(device).type,
                   torch.__version__)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"reference": dict(self.reference)}

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:10]

    def reference_budget(self) -> ProxyBudget:
        return ProxyBudget(**self.reference)

    def reference_seed_budgets(self, seeds: int) -> list[ProxyBudget]:
        """The reference schedule with each of ``seeds`` seeds, the study's own first; the others are trained
        and kept like proxies (a noise estimate of the reference, and a steadier reference: their mean)."""
        if not (isinstance(seeds, int) and 1 <= seeds <= MAX_REFERENCE_SEEDS):
            raise ValueError(f"fidelity: reference seeds {seeds!r} is not allowed; expected an integer in "
                             f"[1, {MAX_REFERENCE_SEEDS}]")
        first = self.reference_budget()
        return [dataclasses.replace(first, seed=first.seed + i) for i in range(seeds)]


def proxy_key(budget: ProxyBudget, device: str) -> str:
    """The key of a proxy's results inside a cache: its budget and the device type it ran on."""
    return hashlib.sha256(json.dumps([_budget_dict(budget), device], sort_keys=True).encode()).hexdigest()[:10]


def default_cache_path(settings: StudySettings) -> Path:
    """``runs/fidelity/<space>-<data>-<settings hash>.json``: other settings, another file."""
    data = "".join(c if c.isalnum() or c in "-_" else "_" for c in settings.data)
    return runs_dir() / "fidelity" / f"{settings.space}-{data}-{settings.key()}.json"


def trained_macs(cfg: ArchConfig, ds: Dataset, width_mult: float) -> int:
    """MACs of the network as the study trains it: data's channels and classes, width, proxy resolution."""
    return analyze(proxy_config(cfg, ds, width_mult), _proxy_resolution(cfg, ds, None)).macs


def study_networks(space: SearchSpace, count: int, *, seed: int = 0, scale: float = 0.25, max_macs: float | None = None,
                   ds: Dataset | None = None, width_mult: float = 0.5) -> list[ArchConfig]:
    """``count`` networks: the space's canonical seeds, then seeded random points of it, all width x ``scale``.

    With ``max_macs`` (needs ``ds``), networks whose `trained_macs` exceed it are left out, seeds
    included. The list for a larger ``count`` starts with the list for a smaller one, so a study can grow.
    """
    def fits(cfg: ArchConfig) -> bool:
        if max_macs is None:
            return True
        if ds is None:
            raise ValueError("fidelity: max_macs needs the dataset (ds) to count MACs on")
        return trained_macs(cfg, ds, width_mult) <= max_macs

    import optuna

    if not isinstance(count, int) or isinstance(count, bool) or count < 2:
        raise ValueError(f"fidelity: networks {count!r} is not allowed; expected an integer >= 2 (a ranking "
                         "needs two networks)")
    seeds = [c for c in (scale_width(c, scale).replace(name=f"{n}@{scale:g}") for n, c in space.seeds().items())
             if fits(c)]
    out = seeds[:count]
    seen = {c.arch_id for c in out}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    draws = 0
    while len(out) < count:
        draws += 1
        if draws > _MAX_DRAWS * count:
            raise ValueError(f"fidelity: space {space.name!r} gave only {len(out)} distinct valid networks in "
                             f"{draws - 1} draws; expected {count} (ask for fewer --networks)")
        trial = study.ask()
        try:
            cfg = scale_width(space.sample(trial), scale)
        except InvalidCandidate:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, 0.0)
        if cfg.arch_id in seen or not fits(cfg):
            continue
        seen.add(cfg.arch_id)
        out.append(cfg.replace(name=f"random{len(out) - len(seeds)}"))
    return out


def _finite(v: Any) -> Any:
    """JSON has no NaN: a non-finite float is stored as null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


class FidelityCache:
    """The JSON file of one study: settings, per-network reference results and per-proxy results.

    Opening checks the settings (a different study is refused with one line, the file untouched);
    `save` writes a temporary file and renames it, so the file on disk is always a whole one.
    `commit` merges one network's results into the file as other runners left it; `claim` keeps two
    runners off the same network.
    """

    def __init__(self, path: str | Path, settings: StudySettings | None = None) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {"format": CACHE_FORMAT, "settings": settings.to_dict() if settings else None,
                                     "networks": {}, "proxies": {}}
        if self.path.exists():
            self.data = self._read()
            if settings is not None and self.data["settings"] != settings.to_dict():
                differ = sorted(k for k, v in settings.to_dict().items() if self.data["settings"].get(k) != v)
                raise ValueError(f"fidelity: cache {str(self.path)!r} holds another study (its {', '.join(differ)} "
                                 "differ); expected the same settings, or another --out (the default file name "
                                 "carries the settings)")
        elif settings is None:
            raise ValueError(f"fidelity: cache {str(self.path)!r} does not exist; expected a study's JSON file")

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise ValueError(f"fidelity: cache {str(self.path)!r} is not readable JSON "
                             f"({type(err).__name__}); expected a study file written by python -m nas.proxy "
                             "fidelity") from None
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(
                data.get("settings"), dict) or not isinstance(data.get("networks"), dict) or not isinstance(
                data.get("proxies"), dict):
            raise ValueError(f"fidelity: cache {str(self.path)!r} is not a fidelity study; expected format "
                             f"{CACHE_FORMAT!r} with settings, networks and proxies")
        return data

    @property
    def settings(self) -> dict[str, Any]:
        return self.data["settings"]

    @property
    def networks(self) -> dict[str, dict[str, Any]]:
        return self.data["networks"]

    def proxy_results(self, budget: ProxyBudget, device: str) -> dict[str, Any]:
        """The results of one proxy budget (created empty in memory when new)."""
        entry = self.data["proxies"].setdefault(proxy_key(budget, device), {
            "budget": _budget_dict(budget), "device": device, "results": {}})
        return entry["results"]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(_finite(self.data), indent=1, allow_nan=False).encode(), force=True)

    def lock(self) -> "_Lock":
        """The file's write lock (held for a read-merge-write, milliseconds)."""
        return _Lock(self.path.with_name(self.path.name + ".lock"))

    def claim(self, name: str, *, wait: bool) -> "_Lock":
        """One network's training lock; with ``wait=False`` it is not taken (``held`` False) if another runner has it."""
        key = hashlib.sha256(name.encode()).hexdigest()[:16]
        return _Lock(self.path.with_name(f".{self.path.name}.claims") / f"{key}.lock", wait=wait)

    def reload(self) -> None:
        """Read what other runners have written (the file as it is on disk, if there is one)."""
        if self.path.exists():
            data = self._read()
            if data["settings"] != self.settings:
                raise ValueError(f"fidelity: cache {str(self.path)!r} was replaced by another study while this "
                                 "run used it; expected one study per file")
            self.data = data

    def commit(self, name: str, entry: dict[str, Any] | None = None, proxy: ProxyBudget | None = None,
               device: str = "cpu", row: dict[str, Any] | None = None) -> None:
        """Merge a network's entry and/or one proxy row into the file as it is on disk, and save it."""
        with self.lock():
            self.reload()
            if entry is not None:
                self.networks[name] = entry
            if row is not None and proxy is not None:
                self.proxy_results(proxy, device)[name] = row
            self.save()


class _Lock:
    """An exclusive ``flock`` on a side file; ``held`` says whether it was taken (only ``wait=False`` can fail)."""

    def __init__(self, path: Path, wait: bool = True) -> None:
        self.path = path
        self.wait = wait
        self.fd: int | None = None
        self.held = False

    def __enter__(self) -> "_Lock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ValueError(f"fidelity: cannot write the study file's lock {str(self.path)!r} "
                             f"({err.strerror or type(err).__name__}); expected a writable folder") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            self.held = True
        except BlockingIOError:
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            if self.held:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd, self.held = None, False


def _result_row(r: ProxyResult) -> dict[str, Any]:
    keep = ("accuracy", "status", "reason", "epochs_done", "steps_done", "wall_s", "images_per_s", "loss_curve",
            "accuracy_curve", "eval_loss_curve", "extrapolated_accuracy")
    return {k: getattr(r, k) for k in keep} | {"params": r.proxy.get("params")}


def _network_facts(cfg: ArchConfig, ds: Dataset, width_mult: float) -> dict[str, Any]:
    """Zero-cost scores, params and MACs of the network as the study trains it (no training)."""
    facts: dict[str, Any] = {"config": cfg.to_dict(), "arch_id": cfg.arch_id}
    try:
        z = zero_cost(cfg, ds)
        facts["zero_cost"] = {k: z[k] for k in ZERO_COST_PROXIES}
        facts["params"] = sum(p.numel() for p in build_model(proxy_config(cfg, ds, width_mult)).parameters())
        facts["macs"] = trained_macs(cfg, ds, width_mult)
    except Exception as err:  # a network that cannot even be built is a recorded failure
        facts["error"] = failure_reason(err)
    return facts


Log = Callable[[str], None]


def run_study(cache: FidelityCache, networks: list[ArchConfig], ds: Dataset, proxy: ProxyBudget, *,
              device: str = "cpu", log: Log = print, train: Callable[..., ProxyResult] = train_eval,
              should_stop: Callable[[], bool] = lambda: False, label: str = "proxy") -> None:
    """Train what the cache lacks, one network at a time, saving after each; prints one line per network
    (``label`` names ``proxy`` there: another reference seed is trained as a proxy too).

    Networks another runner is training are skipped and, once nothing else is left, waited for, so
    every runner ends with the whole study in its cache. ``should_stop()`` true before a network
    raises KeyboardInterrupt there (a stop whose interrupt was swallowed still ends the run).
    """
    reference = StudySettings(**cache.settings).reference_budget()
    dev = resolve_device(device).type
    order = {cfg.name: i for i, cfg in enumerate(networks, 1)}
    pending = list(networks)
    while pending:
        busy = []
        for cfg in pending:
            if should_stop():
                raise KeyboardInterrupt
            with cache.claim(cfg.name, wait=False) as claim:
                if not claim.held:
                    busy.append(cfg)
                    continue
                _train_network(cache, cfg, ds, proxy, reference, dev, device, train, f"[{order[cfg.name]}/"
                               f"{len(networks)}]", log, label)
        if busy:  # only networks in other runners' hands are left: wait for the first, then look again
            if should_stop():
                raise KeyboardInterrupt
            with cache.claim(busy[0].name, wait=True):
                pass
        pending = busy


def _train_network(cache: FidelityCache, cfg: ArchConfig, ds: Dataset, proxy: ProxyBudget, reference: ProxyBudget,
                   dev: str, device: str, train: Callable[..., ProxyResult], tag: str, log: Log,
                   label: str = "proxy") -> None:
    cache.reload()
    done = cache.networks.get(cfg.name)
    if done is not None and done.get("arch_id") != cfg.arch_id:
        raise ValueError(f"fidelity: cache {str(cache.path)!r} has another network named {cfg.name!r}; "
                         "expected the networks this version draws (use another --out)")
    fresh = []
    if done is None or "reference" not in done:
        entry = _network_facts(cfg, ds, reference.width_mult)
        entry["reference"] = _result_row(train(cfg, ds, reference, device=device))
        cache.commit(cfg.name, entry=entry)
        fresh.append("reference")
    if cfg.name not in cache.proxy_results(proxy, dev):
        cache.commit(cfg.name, proxy=proxy, device=dev, row=_result_row(train(cfg, ds, proxy, device=device)))
        fresh.append(label)
    ref, px = cache.networks[cfg.name]["reference"], cache.proxy_results(proxy, dev)[cfg.name]
    what = "trained " + "+".join(fresh) if fresh else "cached"
    log(f"{tag} {cfg.name:<18} reference {_acc(ref)} ({ref.get('wall_s', 0):6.0f} s)  "
        f"{label} {_acc(px)} ({px.get('wall_s', 0):4.0f} s)  {what}")


def _acc(row: Mapping[str, Any]) -> str:
    return f"{row['accuracy']:.3f}" if row.get("status") == "ok" and row.get("accuracy") is not None \
        else f"{row.get('status', '?')}"


def iter_rows(cache: FidelityCache, proxy: ProxyBudget, device: str) -> Iterator[tuple[str, dict, dict]]:
    """(name, network entry, proxy row) of every network with both a reference and a proxy result."""
    proxies = cache.data["proxies"].get(proxy_key(proxy, device), {}).get("results", {})
    for name, entry in cache.networks.items():
        if "reference" in entry and name in proxies:
            yield name, entry, proxies[name]
