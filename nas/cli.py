"""Shared plumbing for the command-line shells: one-line errors and exit code 2 for usage errors."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from .config import ArchConfig
from .registry import get_config, list_models

__all__ = ["ArgumentParser", "UsageError", "quiet_swallowed_interrupt", "resolve_config", "run"]


class UsageError(ValueError):
    """A bad value the user gave; reported as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line naming the bad value (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def resolve_config(spec: str) -> ArchConfig:
    """A canonical model name, or a path to a JSON/YAML config file."""
    if spec in list_models():
        return get_config(spec)
    path = Path(spec)
    if path.suffix.lower() in (".json", ".yaml", ".yml") or path.exists():
        return ArchConfig.load(path)
    return get_config(spec)  # raises with the list of known names


def quiet_swallowed_interrupt(stopping: Callable[[], bool],
                              default: Callable[[Any], None] | None = None) -> Callable[[Any], None]:
    """A `sys.unraisablehook` that keeps quiet about a KeyboardInterrupt Python swallowed inside a
    garbage-collection callback once ``stopping()`` says the stop it stands for is recorded."""
    fallback = default or sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not (issubclass(unraisable.exc_type, KeyboardInterrupt) and stopping()):
            fallback(unraisable)

    return hook


def run(main: Callable[[Sequence[str] | None], int], prog: str, argv: Sequence[str] | None = None) -> NoReturn:
    """Call ``main`` and turn a `ValueError` into ``prog: error: ...`` with exit code 2.

    A reader that stops early (``| head``) ends the command quietly with exit code 0.
    """
    try:
        code = main(argv)
        sys.stdout.flush()  # a closed pipe surfaces here, not at interpreter exit
    except BrokenPipeError:
        # the standard recipe (Python docs, "Note on SIGPIPE"): nothing more can be written, and the
        # interpreter's own final flush must not fail again, so stdout goes to devnull
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except ValueError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
