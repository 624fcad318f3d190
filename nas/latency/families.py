"""Architecture-family efficiencies fitted on published GPU latencies, and their leave-one-device-out test.

``data/published.yaml`` holds every published latency the config space can express (the
HarDNet and TResNet tables of /work/shared/REFERENCE.md, with the setting and the assumptions
each needs); nothing else is fitted on. The fit, in two steps (`fit_families`):

1. **pooled**: one parameter set for all figures, each figure timed on its own device's spec
   (peaks, bandwidth, SMs), pulled weakly towards `DEFAULT_EFFICIENCIES` (ridge ``POOLED_PRIOR``);
2. **per family** with figures (Pascal: GTX 1080 / 1080 Ti, Volta: V100, Maxwell: Jetson Nano):
   the family's figures only, pulled towards the pooled fit (ridge ``FAMILY_PRIOR``), so a family
   with two figures refines the pooled fit instead of overfitting.

A family without figures borrows from its neighbour (``devices.yaml``; `profiles.family_efficiencies`).
`leave_one_device_out` refits without each device in turn and predicts that device's figures with
what is left (its family refitted without it, or borrowed from a neighbour): the honest test of a
GPU nobody measured. ``python -m nas.latency.families --write`` rewrites ``data/families.yaml``;
a test checks the shipped file equals a fresh fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..config import ArchConfig
from ..registry import get_config
from .fit import fit_profile
from .kernels import Kernel, kernels_of
from .profiles import (DATA, DEFAULT_EFFICIENCIES, FITTABLE, PROFILES, DeviceProfile, _refresh, _yaml,
                       family_efficiencies)

__all__ = ["FAMILY_PRIOR", "POOLED_PRIOR", "Figure", "fit_families", "figure_config", "leave_one_device_out",
           "published_figures", "write_families"]

#: ridge weights (per parameter, on the log scale, against a figure's log residual of weight 1)
POOLED_PRIOR = 0.01
FAMILY_PRIOR = 0.05


@dataclass(frozen=True)
class Figure:
    """One published latency and the setting it was measured in."""

    setting: str  # key in published.yaml
    source: str  # REFERENCE.md source key
    table: str
    device: str
    model: str
    runtime: str
    precision: str
    resolution: int
    batch: int
    value: float
    unit: str  # "ms" (latency of one batch) or "img/s"
    assumptions: str

    @property
    def ms(self) -> float:
        """The published time of one batch in ms (a throughput converted at the assumed batch)."""
        return self.value if self.unit == "ms" else 1e3 * self.batch / self.value

    @property
    def canonical(self) -> bool:
        """A figure of one of the 8 canonical models (the issue's 25), not of a ResNet added by override."""
        return self.model in _canonical()

    @property
    def label(self) -> str:
        return f"{self.device} {self.model} b{self.batch} {self.precision} {self.runtime} @{self.resolution}"


@lru_cache(maxsize=1)
def _canonical() -> frozenset[str]:
    from ..registry import list_models

    return frozenset(list_models())


@lru_cache(maxsize=1)
def _published() -> dict[str, Any]:
    return _yaml(DATA / "published.yaml", "published figures")


@lru_cache(maxsize=64)
def figure_config(model: str) -> ArchConfig:
    """A canonical config, or a published model defined in published.yaml as overrides of one."""
    models = _published().get("models", {})
    if model not in models:
        return get_config(model)
    spec = models[model]
    data = get_config(spec["base"]).to_dict()
    data["name"] = model
    for key, value in spec.get("stages", {}).items():
        for i, stage in enumerate(data["stages"]):
            stage[key] = value[i] if isinstance(value, list) else value
    return ArchConfig.from_dict(data)


@lru_cache(maxsize=1)
def _figures() -> tuple[Figure, ...]:
    out = []
    for key, s in _published()["settings"].items():
        for model, entry in s["figures"].items():
            entry = entry if isinstance(entry, dict) else {"value": entry}
            values = entry["value"] if isinstance(entry["value"], list) else [entry["value"]]
            batches = entry.get("batch", s.get("batch", 1))
            batches = batches if isinstance(batches, list) else [batches] * len(values)
            for value, batch in zip(values, batches):
                out.append(Figure(key, s["source"], s["table"], s["device"], model, s["runtime"], s["precision"],
                                  int(s["resolution"]), int(batch), float(value), s["unit"], s["assumptions"]))
    return tuple(out)


def published_figures(canonical_only: bool = False) -> list[Figure]:
    """Every published figure of published.yaml (``canonical_only``: the 8 canonical models' only)."""
    return [f for f in _figures() if f.canonical or not canonical_only]


def figure_kernels(f: Figure) -> list[Kernel]:
    return kernels_of(figure_config(f.model), f.resolution, f.batch, f.precision, False, f.runtime)


def _spec(device: str) -> DeviceProfile:
    """The device's spec (peaks, bandwidth, SMs) with default efficiencies: what a fit starts from."""
    return _with(PROFILES[device], DEFAULT_EFFICIENCIES)


def _with(profile: DeviceProfile, values: dict[str, float]) -> DeviceProfile:
    return dataclasses.replace(profile, **{k: values[k] for k in FITTABLE})


def _family_of(device: str) -> str:
    return PROFILES[device].family


def _fit(figures: Sequence[Figure], start: dict[str, float], prior: dict[str, float], weight: float) -> dict[str, float]:
    devices = [_with(_spec(f.device), start) for f in figures]
    samples = [(figure_kernels(f), f.ms) for f in figures]
    base = devices[0]
    fitted = fit_profile(base, samples, prior=_with(base, prior), prior_weight=weight, devices=devices)
    return {k: float(getattr(fitted, k)) for k in FITTABLE}


def fit_families(figures: Sequence[Figure]) -> dict[str, dict[str, Any]]:
    """Fitted parameters per family with figures, plus ``pooled`` (see the module docstring)."""
    pooled = _fit(figures, DEFAULT_EFFICIENCIES, DEFAULT_EFFICIENCIES, POOLED_PRIOR)
    out: dict[str, dict[str, Any]] = {"pooled": {**pooled, "figures": len(figures)}}
    for family in sorted({_family_of(f.device) for f in figures}):
        own = [f for f in figures if _family_of(f.device) == family]
        params = _fit(own, pooled, pooled, FAMILY_PRIOR)
        out[family] = {**params, "figures": len(own), "devices": sorted({f.device for f in own}),
                       "settings": sorted({f.setting for f in own})}
    return out


def _resolve(family: str, fitted: dict[str, dict[str, Any]]) -> tuple[dict[str, float], str]:
    """A family's parameters in ``fitted`` and the fit they come from (`family_efficiencies`' rule)."""
    values, prov = family_efficiencies(family, fitted)
    return values, prov["efficiencies_from"]


def predict_figure(f: Figure, params: dict[str, float]) -> float:
    """The predicted time of one published figure's batch, in ms, with parameters ``params``."""
    from .kernels import kernels_ms

    return kernels_ms(figure_kernels(f), _with(_spec(f.device), params))


def leave_one_device_out(figures: Sequence[Figure] | None = None) -> list[tuple[Figure, float, str]]:
    """(figure, predicted ms, where its efficiencies came from) for every figure, each predicted by
    a fit that never saw its device."""
    figures = list(figures or published_figures())
    out = []
    for device in sorted({f.device for f in figures}):
        train = [f for f in figures if f.device != device]
        fitted = fit_families(train)
        params, used = _resolve(_family_of(device), fitted)
        out += [(f, predict_figure(f, params), used) for f in figures if f.device == device]
    return out


def shipped_predictions(figures: Sequence[Figure] | None = None) -> list[tuple[Figure, float]]:
    """(figure, predicted ms) with the shipped profiles (fitted on every figure, the device's own included)."""
    figures = list(figures or published_figures())
    return [(f, predict_figure(f, {k: getattr(PROFILES[f.device], k) for k in FITTABLE})) for f in figures]


def _provenance(family: str, entry: dict[str, Any]) -> str:
    settings = ", ".join(entry["settings"])
    return (f"fitted on {entry['figures']} published figures of {', '.join(entry['devices'])} ({settings}; "
            f"nas/latency/data/published.yaml), pulled towards the pooled fit of all families")


def write_families(path: Path = DATA / "families.yaml") -> dict[str, dict[str, Any]]:
    """Fit on every published figure and write the family efficiencies (the shipped data file)."""
    fitted = fit_families(published_figures())
    doc = {"generated_by": "python -m nas.latency.families --write", "prior": {"pooled": POOLED_PRIOR, "family": FAMILY_PRIOR}, "families": {}}
    for family, entry in fitted.items():
        record = {k: float(f"{entry[k]:.4g}") for k in FITTABLE}
        if family == "pooled":
            record["fit"] = f"pooled fit of all {entry['figures']} published figures (every family, weak prior)"
        else:
            record["fit"] = _provenance(family, entry)
        doc["families"][family] = record
    header = ("# Architecture-family efficiencies of the latency predictor, fitted on data/published.yaml.\n"
              "# Generated: do not edit by hand; `python -m nas.latency.families --write` rewrites it and\n"
              "# tests/test_predict_v2.py checks it equals a fresh fit. docs/latency.md explains the fit.\n")
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=110))
    _refresh()
    return fitted


def _rows(pairs: Sequence[tuple[Figure, float]]) -> list[str]:
    return [f"  {f.label:<48} published {f.ms:9.2f} ms  predicted {p:9.2f} ms  ratio {p / f.ms:5.2f}"
            for f, p in pairs]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nas.latency.families", description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="refit on every published figure and rewrite data/families.yaml")
    args = p.parse_args(argv)
    if args.write:
        write_families()
        print(f"wrote {DATA / 'families.yaml'}")
    for line in _rows(shipped_predictions()):
        print(line)
    ratios = [pred / f.ms for f, pred, _ in leave_one_device_out()]
    within = sum(abs(r - 1) <= 0.25 for r in ratios)
    print(f"leave-one-device-out: {within}/{len(ratios)} within +-25 % (benchmarks/bench_predict.py has the rest)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
