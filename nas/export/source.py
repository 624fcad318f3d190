"""Where an exported architecture comes from: a name, a config file, or a trial of a study.

Studies are read through `nas.search.results.trial_records`, the same view the search's own
report uses, so a trial's config, accuracy and latency (with its source and device) come out as
the search stored them. Every lookup that fails names what was asked for and what exists.
"""

from __future__ import annotations

import re

import math
from pathlib import Path
from typing import Any, Mapping

import torch

from ..config import ArchConfig
from ..errors import first_line

__all__ = ["config_from_study", "load_weights", "record_metadata"]


def _open_storage(url: str) -> Any:
    """The Optuna storage, read-only: a missing, empty, foreign or damaged file is a one-line error."""
    from ..search.storage import open_storage_readonly

    return open_storage_readonly(url)


def _ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def config_from_study(storage: str, study_name: str | None, trial: int | None = None, best: bool = False,
                      budget_ms: float | None = None) -> tuple[ArchConfig, dict]:
    """The architecture of one trial of a study, and that trial's record.

    Give ``trial`` (its number) or ``best=True``: the completed trial with the highest accuracy
    whose latency is within ``budget_ms`` (default: the budget the study was searched under;
    ties go to the faster one). ``study_name`` may be None when the storage holds one study. The
    record is the trial's row from `nas.search.results.trial_records` plus ``study_name`` and
    the study's ``settings``. A config without a name is named ``<study>-trial<N>``.
    """
    import optuna

    from ..search.results import trial_records

    if trial is not None and best:
        raise ValueError(f"trial: {trial!r} is not allowed together with best; pass --trial N or --best, not both")
    if trial is None and not best:
        raise ValueError("trial: none given; expected --trial N (a trial number) or --best")
    if budget_ms is not None and not best:
        raise ValueError(f"budget: {budget_ms!r} is not allowed without --best; it chooses the best trial")
    st = _open_storage(storage)
    names = sorted(optuna.get_all_study_names(st))
    if study_name is None:
        if len(names) != 1:
            held = f"it holds {', '.join(names)}" if names else "it holds no study"
            raise ValueError(f"study-name: none given and {storage!r} does not hold exactly one study ({held}); "
                             "pass --study-name")
        study_name = names[0]
    if study_name not in names:
        held = ", ".join(names) if names else "none"
        raise ValueError(f"study-name: {study_name!r} is not in {storage!r}; studies there: {held}")
    study = optuna.load_study(study_name=study_name, storage=st)
    records = trial_records(study)
    settings = dict(study.user_attrs.get("settings") or {})

    if best:
        rec = _best(records, study_name, budget_ms if budget_ms is not None else settings.get("budget_ms"))
    else:
        if isinstance(trial, bool) or not isinstance(trial, int):
            raise ValueError(f"trial: {trial!r} is not allowed; expected a trial number")
        by_number = {r["number"]: r for r in records}
        if trial not in by_number:
            there = _ranges(list(by_number)) if by_number else "none"
            raise ValueError(f"trial: {trial} is not in study {study_name!r}; trials there: {there}")
        rec = by_number[trial]
    raw = rec.get("config")
    if raw is None:
        raise ValueError(f"trial: {rec['number']} of study {study_name!r} holds no architecture "
                         f"(state {rec.get('state')}, no 'config' attribute); pick another trial")
    config = ArchConfig.from_json(raw) if isinstance(raw, str) else ArchConfig.from_dict(raw)
    if not config.name:
        config = config.replace(name=f"{study_name}-trial{rec['number']}")
    return config, {**rec, "study_name": study_name, "settings": settings}


def _best(records: list[dict], study_name: str, budget_ms: float | None) -> dict:
    done = [r for r in records if r.get("state") == "COMPLETE" and r.get("config") is not None
            and _finite(r.get("accuracy")) and _finite(r.get("latency_ms"))]
    within = [r for r in done if budget_ms is None or r["latency_ms"] <= budget_ms]
    if not within:
        limit = f"within the {budget_ms:g} ms budget" if budget_ms is not None else "with accuracy and latency"
        fastest = f"; the fastest takes {min(r['latency_ms'] for r in done):.2f} ms" if done else ""
        raise ValueError(f"best: no completed trial of study {study_name!r} is {limit} "
                         f"({len(done)} completed of {len(records)} trials{fastest})")
    return min(within, key=lambda r: (-r["accuracy"], r["latency_ms"], r["number"]))


def record_metadata(record: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of a trial record that belong in an export's docstring (`nas.search.results.trial_metadata`)."""
    from ..search.results import trial_metadata

    return trial_metadata(record)


def _without_unsafe_advice(err: BaseException) -> str:
    """Why torch refused the file, without its hint to retry with ``weights_only=False`` (that runs the file's code)."""
    refused = re.search(r"(?:unsupported|Unsupported global:) GLOBAL (\S+)", str(err))
    if refused:
        return f"it holds a pickled {refused.group(1)!r}, which is never loaded"
    text = first_line(err, 400)
    cut = min((i for i in (text.find("In PyTorch"), text.find("weights_only")) if i >= 0), default=-1)
    return (text[:cut].rstrip(" .,(`") if cut > 0 else text)[:200] or type(err).__name__


def load_weights(path: str | Path, config: ArchConfig) -> dict[str, torch.Tensor]:
    """A checkpoint file as the state dict of `nas.build_model(config)`.

    Reads safetensors, or a ``torch.save`` file with ``weights_only=True`` (tensors only, never
    pickled code); hardnas' own layout loads by name, official HarDNet / TResNet / ResNet-50
    checkpoints through `nas.load_reference_weights`. A file that does not fit raises `ValueError`.
    """
    from ..model import build_model
    from ..weights import detect_source, load_reference_weights, unwrap_checkpoint

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights: {str(path)!r} does not exist or is not a file; expected a checkpoint "
                         "(.safetensors, or a state dict saved with torch.save)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"weights: {str(path)!r} could not be read as tensors only ({_without_unsafe_advice(err)}); "
                         "expected a safetensors file or a torch.save file of tensors") from None
    model = build_model(config)
    try:
        flat = unwrap_checkpoint(raw)  # {"state_dict": ...} / {"model": ...} / DataParallel's "module." prefix
        own = model.state_dict()
        if set(flat) == set(own):
            bad = [k for k in own if tuple(own[k].shape) != tuple(flat[k].shape)]
            if bad:
                raise ValueError(f"{len(bad)} tensors have the wrong shape (e.g. {', '.join(bad[:3])})")
            return {k: flat[k].to(own[k].dtype) for k in own}
        if detect_source(flat) == "nas":
            missing = [k for k in own if k not in flat]
            unexpected = [k for k in flat if k not in own]
            raise ValueError(f"{len(missing)} missing (e.g. {', '.join(missing[:3])}), "
                             f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        load_reference_weights(model, flat, strict=True)
    except ValueError as err:
        raise ValueError(f"weights: {str(path)!r} does not fit architecture {config.arch_id} "
                         f"({first_line(err)})") from None
    return model.state_dict()

