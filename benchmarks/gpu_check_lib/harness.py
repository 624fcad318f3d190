"""Time-boxed sections for `gpu_check.py`: one global deadline shared out among the sections, every
section's exception caught as one line, the JSON + Markdown report rewritten atomically as work is
done, and a watchdog that writes the report and ends the process if a section overruns the deadline.

Statuses: ``ok``; ``partial: ...`` (ran out of time part-way, or some items failed); ``error: ...``
(one line); ``skipped: time`` (no time left to start it); ``skipped: not selected``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

OK = "ok"
SKIPPED_TIME = "skipped: time"
NOT_SELECTED = "skipped: not selected"
PENDING = "pending"
RUNNING = "running"
MIN_SECTION_S = 1.0
"""A section whose share of the remaining time is below this is not started."""


class SectionError(Exception):
    """A section's own one-line verdict (its message is the status text, without a type name)."""


class Stopped(BaseException):
    """SIGTERM reached the check: the running section ends and the report is written."""


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None and tuples as lists, so the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp's own is 0600)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def failure_line(err: BaseException) -> str:
    """``Type: first line`` (a `SectionError` is its message alone), at most 300 characters."""
    text = str(err).strip().splitlines()[0].strip() if str(err).strip() else ""
    line = text if isinstance(err, SectionError) else f"{type(err).__name__}: {text}".rstrip(": ")
    return line[:300]


def failure_site(err: BaseException) -> str | None:
    """``file:line in function`` of the innermost frame, to find a one-shot run's failure in the code."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return None
    f = frames[-1]
    here = Path.cwd()
    try:
        name = str(Path(f.filename).resolve().relative_to(here))
    except ValueError:
        name = f.filename
    return f"{name}:{f.lineno} in {f.name}"


class Report:
    """The check's report: one dict, guarded by a lock, written as ``gpu_check.json`` and ``.md``."""

    def __init__(self, out: Path, header: dict[str, Any], sections: list[str], selected: set[str],
                 render: Callable[[dict[str, Any]], str], start: float) -> None:
        self.lock = threading.RLock()
        self.start = start
        self.render = render
        self.json_path, self.md_path = out / "gpu_check.json", out / "gpu_check.md"
        self.children: list[subprocess.Popen] = []
        self.running: dict[str, float] = {}  # section in progress -> its start (monotonic)
        self._last_write = 0.0
        self.data: dict[str, Any] = {
            "check": "gpu_check", "format": 1, **header, "started_utc": utc_now(), "finished": False,
            "sections": {n: {"status": PENDING if n in selected else NOT_SELECTED, "result": {}} for n in sections},
        }

    def section(self, name: str) -> dict[str, Any]:
        return self.data["sections"][name]

    def update(self, name: str, **fields: Any) -> None:
        with self.lock:
            self.data["sections"][name].update(fields)

    def write(self, throttle_s: float = 0.0) -> None:
        """Rewrite both files atomically (at most every ``throttle_s`` seconds when given)."""
        now = time.monotonic()
        if throttle_s and now - self._last_write < throttle_s:
            return
        with self.lock:
            self.data["updated_utc"] = utc_now()
            self.data["elapsed_s"] = round(now - self.start, 1)
            data = json_safe(self.data)
            text = json.dumps(data, indent=2, allow_nan=False) + "\n"
        try:
            md = self.render(data)
        except Exception as err:  # a rendering bug must not cost the JSON
            md = f"# GPU check\n\nThe Markdown report could not be rendered ({failure_line(err)}); see {self.json_path.name}.\n"
        write_atomic(self.json_path, text)
        write_atomic(self.md_path, md)
        self._last_write = now

    def stop_running(self, status: str) -> None:
        """Mark the section in progress (if any) with ``status``, keeping what it recorded."""
        with self.lock:
            for name, started in self.running.items():
                self.data["sections"][name].update(status=status, seconds=round(time.monotonic() - started, 1))
            self.running.clear()

    def kill_children(self) -> None:
        for proc in list(self.children):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass


def log(start: float, text: str) -> None:
    print(f"[gpu_check {time.monotonic() - start:6.1f}s] {text}", flush=True)


class Section:
    """One running section: its time box, its result dict and its item counts."""

    def __init__(self, report: Report, name: str, allowance_s: float | None) -> None:
        self.report, self.name = report, name
        self.started = time.monotonic()
        self.deadline = math.inf if allowance_s is None else self.started + allowance_s
        self.result: dict[str, Any] = report.section(name)["result"]
        self.total = self.done = self.failed = 0
        self.out_of_time = False
        self.first_failure: str | None = None
        self.partial_reason: str | None = None

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def has_time(self, need_s: float = 0.0) -> bool:
        """True while the box has more than ``need_s`` seconds; once False, the section is out of time."""
        if self.left() > need_s:
            return True
        self.out_of_time = True
        return False

    def set(self, key: str, value: Any) -> None:
        with self.report.lock:
            self.result[key] = value

    def add(self, key: str, item: Any) -> None:
        with self.report.lock:
            self.result.setdefault(key, []).append(item)
        self.report.write(throttle_s=5.0)

    def item(self, ok: bool, reason: str | None = None) -> None:
        self.done += 1
        if not ok:
            self.failed += 1
            self.first_failure = self.first_failure or reason

    def log(self, text: str) -> None:
        log(self.report.start, f"{self.name}: {text}")

    def status(self) -> str:
        if self.out_of_time and self.done == 0:
            return SKIPPED_TIME
        if self.failed and self.failed == self.done:
            raise SectionError(f"all {self.done} items failed; first: {self.first_failure}")
        parts = []
        if self.out_of_time:
            parts.append(f"time ({self.done} of {self.total or self.done} done)")
        if self.failed:
            parts.append(f"{self.failed} of {self.done} failed; first: {self.first_failure}")
        if self.partial_reason:
            parts.append(self.partial_reason)
        return f"partial: {'; '.join(parts)}" if parts else OK


SectionFn = Callable[[Section], None]


def run_sections(report: Report, plan: list[tuple[str, float | None, SectionFn]], selected: set[str],
                 deadline_at: float, inject: dict[str, str]) -> None:
    """Run the selected sections in order; each gets its weight's share of the time left (a section
    with weight None is not time-boxed). A section's failure is recorded and the next one runs."""
    for i, (name, weight, fn) in enumerate(plan):
        if name not in selected:
            continue
        remaining = deadline_at - time.monotonic()
        later = sum(w for n, w, _ in plan[i:] if n in selected and w)
        allowance = None if weight is None else remaining * weight / later
        if allowance is not None and allowance < MIN_SECTION_S:
            report.update(name, status=SKIPPED_TIME, seconds=0.0, allowance_s=round(max(allowance, 0.0), 1))
            log(report.start, f"{name}: skipped, no time left")
            report.write()
            continue
        sec = Section(report, name, allowance)
        report.running[name] = sec.started
        report.update(name, status=RUNNING, allowance_s=None if allowance is None else round(allowance, 1))
        log(report.start, f"{name}: start" + ("" if allowance is None else f" ({allowance:.0f} s allowed)"))
        report.write()
        fields: dict[str, Any] = {}
        try:
            if inject.get(name) == "error":
                raise SectionError(f"injected failure (--inject error:{name})")
            while inject.get(name) == "hang":  # stands for a call that never returns: only the watchdog ends it
                time.sleep(0.2)
            fn(sec)
            status = sec.status()
        except Exception as err:
            status = f"error: {failure_line(err)}"
            fields["error_at"] = failure_site(err)
            traceback.print_exc()
        fields.update(status=status, seconds=round(time.monotonic() - sec.started, 1))
        with report.lock:
            report.running.pop(name, None)
            report.update(name, **fields)
        log(report.start, f"{name}: {status} ({fields['seconds']:.1f} s)")
        report.write()


def start_watchdog(report: Report, hard_at: float) -> threading.Thread:
    """At ``hard_at`` (monotonic) end the check: the running section becomes ``partial: time``, child
    processes are killed, the report is written, and the process exits with code 1."""

    def watch() -> None:
        while (left := hard_at - time.monotonic()) > 0:
            time.sleep(min(left, 0.5))
        report.kill_children()
        got = report.lock.acquire(timeout=10)
        try:
            report.stop_running("partial: time (stopped at the hard deadline; the section overran its share)")
            report.data["stopped"] = "hard deadline"
            report.write()
        except Exception as err:  # nothing else can be done this late; say so and go
            print(f"gpu_check: report not written at the hard deadline: {failure_line(err)}", file=sys.stderr)
        finally:
            if got:
                report.lock.release()
        log(report.start, "hard deadline reached: report written, stopping")
        sys.stdout.flush()
        os._exit(1)

    thread = threading.Thread(target=watch, name="gpu_check-watchdog", daemon=True)
    thread.start()
    return thread
