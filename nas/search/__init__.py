"""The search: Optuna (default) or Ray Tune over a declarative space, writing one storage layout."""

from typing import Any, Callable

from .results import format_table, pareto_front, trial_records, write_front
from .settings import OBJECTIVES, SearchSettings, check_study_name, parse_budget, parse_latency, parse_objectives
from .storage import open_storage, open_storage_readonly

__all__ = ["OBJECTIVES", "SearchSettings", "check_study_name", "format_table", "open_storage", "open_storage_readonly",
           "pareto_front", "parse_budget", "parse_latency", "parse_objectives", "run_search", "trial_records",
           "write_front"]


def run_search(settings: SearchSettings, storage: str | None = None, study_name: str | None = None,
               progress: bool = False, ray_address: str | None = None,
               on_open: Callable[[Any], None] | None = None) -> Any:
    """Run a search programmatically; returns the Optuna study holding every trial.

    ``on_open(study)`` runs once the storage is open and the settings match the study's.
    """
    from .optuna_backend import default_storage, run_optuna

    storage = storage or default_storage()
    study_name = check_study_name(study_name or settings.default_study_name())
    if settings.backend == "ray":
        from .ray_backend import run_ray

        return run_ray(settings, storage, study_name, ray_address, on_open)
    return run_optuna(settings, storage, study_name, progress, on_open)
