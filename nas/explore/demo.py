"""The app's empty state: the command that creates a study, and a tiny demo search to try the app.

The demo runs ``python -m nas.search`` in a subprocess (so a crash or Ctrl-C in it cannot take
the app down) over a small space of harmonic and basic-block networks at 64x64, with latency
predicted for a V100 and the NASWOT zero-cost score as accuracy: 8 trials, about 15-30 s on two
shared CPU cores. Everything it writes goes next to the chosen storage (`demo_home`: the space
file and the search's ``<study>/`` folder), never into the folder the app was started from; a
study of that name that is not the demo's own is left alone (`demo_study_name`), and an
interrupted demo is resumed by running it again. Progress is read back from the storage the
search writes, the same way the app reads results.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from ..paths import runs_dir

__all__ = ["DEMO_SPACE", "DEMO_STUDY", "DEMO_TRIALS", "create_command", "demo_args", "demo_home", "demo_study_name",
           "run_demo"]

DEMO_STUDY = "demo"
DEMO_TRIALS = 8

#: a small space (two or three stages, harmonic or basic blocks, three link rules, SE or not)
DEMO_SPACE: dict = {
    "name": "demo",
    "description": "small harmonic / basic-block networks for the app's demo search",
    "layouts": [".R", ".RR"],
    "shared": {"link_rule": ["harmonic", "log", "dense"]},
    "stem": {"type": ["hardnet", "resnet"], "channels": {"hardnet": [[8, 16]], "resnet": [[16]]}, "activation": "relu"},
    "stages": [{
        "block": ["hard", "basic"],
        "hard": {"depth": [2, 4, 8], "growth_rate": {"low": 4, "high": 12, "step": 2},
                 "weight_factor": {"low": 1.5, "high": 1.8, "step": 0.1}, "link_rule": "shared",
                 "transition": [0, 16, 32], "activation": "relu", "downsample": ["maxpool", "blur"]},
        "basic": {"depth": {"low": 1, "high": 2}, "width": [8, 16, 24], "activation": "relu",
                  "downsample": ["conv", "blur"], "se": ["none", "output"], "se_reduction": [2, 4]},
    }],
}


def create_command(url: str, default_url: str | None = None) -> str:
    """The exact shell command that fills ``url`` with a study (the README's main job)."""
    cmd = "python -m nas.search --budget 30ms"
    return cmd if url == default_url else f"{cmd} --storage '{url}'"


def demo_args(url: str, space_file: Path, study: str = DEMO_STUDY, trials: int = DEMO_TRIALS) -> list[str]:
    """Arguments of ``python -m nas.search`` for the demo (seeded, so two demos give the same study)."""
    return ["--space", str(space_file), "--resolution", "64", "--latency", "predicted:v100", "--budget", "0.6ms",
            "--proxy", "zero-cost", "--trials", str(trials), "--seed", "0", "--no-progress", "--storage", url,
            "--study-name", study]


def demo_home(url: str) -> Path:
    """Where the demo writes: the folder of a file storage, else the search's runs folder."""
    from ..search.storage import storage_file

    path = storage_file(url)
    return path.expanduser().resolve().parent if path is not None else runs_dir().resolve()


def demo_study_name(url: str, studies: Mapping[str, Mapping[str, Any]]) -> str:
    """``demo``, or ``demo-2``, ``demo-3``...: the first name that is free in the storage or an earlier demo's own
    study (same space file: the search resumes it). ``studies``: name -> recorded settings."""
    space = str(demo_home(url) / "demo_space.yaml")
    for i in range(1, 1000):
        name = DEMO_STUDY if i == 1 else f"{DEMO_STUDY}-{i}"
        if name not in studies or str((studies[name] or {}).get("space")) == space:
            return name
    raise RuntimeError("demo search: no free study name demo..demo-999 in this storage")


class _Progress:
    """Evaluated trials of the demo study, read from its storage (opened once: polling stays cheap)."""

    def __init__(self, url: str, study: str) -> None:
        self.url, self.study, self.storage = url, study, None

    def __call__(self) -> int:
        import optuna

        from ..search.lifecycle import evaluated_count
        from ..search.storage import open_storage_readonly
        from .data import storage_is_missing

        try:
            if self.storage is None:
                if storage_is_missing(self.url):
                    return -1
                self.storage = open_storage_readonly(self.url)
            return evaluated_count(optuna.load_study(study_name=self.study, storage=self.storage))[0]
        except Exception:  # not created yet, or the writer holds the lock this instant
            return -1


def run_demo(url: str, on_progress: Callable[[int, int], None] | None = None, study: str = DEMO_STUDY,
             trials: int = DEMO_TRIALS, timeout_s: float = 300.0, poll_s: float = 1.0) -> str:
    """Run the demo search into ``url`` and return the study name; progress as (evaluated, trials).

    The space file and the search's outputs go to `demo_home` (the search runs with
    ``HARDNAS_RUNS`` there). Raises RuntimeError with one line (the search's own error line) if
    the search fails.
    """
    home = demo_home(url)
    space_file = home / "demo_space.yaml"
    text = yaml.safe_dump(DEMO_SPACE, sort_keys=False)
    if not space_file.exists() or space_file.read_text() != text:
        space_file.write_text(text)
    cmd = [sys.executable, "-m", "nas.search", *demo_args(url, space_file, study, trials)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HARDNAS_RUNS": str(home)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    start, last, evaluated = time.monotonic(), -2, _Progress(url, study)
    try:
        while proc.poll() is None:
            if time.monotonic() - start > timeout_s:
                proc.terminate()
                proc.wait(30)
                raise RuntimeError(f"demo search: no result after {timeout_s:g} s; stopped")
            done = evaluated()
            if on_progress is not None and done != last and done >= 0:
                on_progress(min(done, trials), trials)
                last = done
            time.sleep(poll_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        raise RuntimeError(f"demo search failed (exit {proc.returncode}): {lines[-1] if lines else 'no message'}")
    if on_progress is not None:
        on_progress(trials, trials)
    return study
