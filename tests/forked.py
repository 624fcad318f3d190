"""Run ``python -m MODULE ...`` or ``python SCRIPT ...`` in a fresh process without paying for Python's and
torch's start-up each time (~3 s of the ~3.5 s a usage-error test took on the 2-core VM).

A zygote process imports the slow third-party modules (torch, scipy, optuna, SQLAlchemy) once; each
`run` forks it, and the child takes the working folder, environment, ``sys.path``, stdio and memory
limit of the request, then runs the module or script as the interpreter would. nas itself is
imported fresh in every child, so no state of one run reaches another. The child is a real process:
its exit code, stdout, stderr and files are what the tests judge. Not emulated: ``sitecustomize``
hooks, interpreter flags and environment variables that libraries read when they load (OpenMP's
``OMP_NUM_THREADS`` is applied with ``torch.set_num_threads``); tests that need them, and anything
that trains or times, use `subprocess.run`.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

_ZYGOTE = r'''
import json, os, resource, signal, sys, time
import numpy, scipy.linalg, scipy.optimize, scipy.stats, statistics, fractions, yaml, sqlalchemy, optuna
import torch, torch.nn, torch.nn.functional
own = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
base = [p for p in sys.path[1:] if p not in own]
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, req["out"]), (2, req["err"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        if req["memory_limit"]:
            resource.setrlimit(resource.RLIMIT_AS, (req["memory_limit"], req["memory_limit"]))
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        if req["env"].get("OMP_NUM_THREADS", "").isdigit():  # OpenMP read the zygote's environment when it loaded
            torch.set_num_threads(max(1, int(req["env"]["OMP_NUM_THREADS"])))
        extra = [p for p in req["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        import runpy
        argv = req["argv"]
        if argv[0] == "-m":
            sys.path[:] = [os.getcwd(), *extra, *base]
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.path[:] = [os.path.dirname(os.path.abspath(argv[0])), *extra, *base]
            sys.argv = list(argv)
            runpy.run_path(argv[0], run_name="__main__")
        sys.exit(0)
    deadline, status = time.monotonic() + req["timeout"], None
    while status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(st)
        elif time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = "timeout"
        else:
            time.sleep(0.005)
    print(json.dumps({"rc": status}), flush=True)
'''

_zygote: subprocess.Popen | None = None


def _start() -> subprocess.Popen:
    global _zygote
    if _zygote is None or _zygote.poll() is not None:
        _zygote = subprocess.Popen([sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True)
        atexit.register(_zygote.kill)
    return _zygote


def run(args: Sequence[str], *, cwd: str | Path | None = None, env: Mapping[str, str] | None = None,
        timeout: float = 120, memory_limit: int | None = None) -> subprocess.CompletedProcess:
    """Like ``subprocess.run(args, capture_output=True, text=True, ...)`` for ``[sys.executable, "-m", MODULE, ...]``
    or ``[sys.executable, SCRIPT, ...]``; raises `subprocess.TimeoutExpired` after ``timeout`` s."""
    if len(args) < 2 or args[0] != sys.executable or args[1].startswith("-") and args[1] != "-m":
        raise ValueError(f"forked.run: {list(args)[:3]!r} is not allowed; expected [sys.executable, '-m', MODULE, ...] "
                         "or [sys.executable, SCRIPT, ...]")
    zygote = _start()
    with tempfile.TemporaryDirectory(prefix="hardnas-forked-") as tmp:
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        request = {"argv": list(args[1:]), "cwd": str(cwd or os.getcwd()), "env": dict(os.environ if env is None else env),
                   "timeout": timeout, "memory_limit": memory_limit, "out": str(out), "err": str(err)}
        assert zygote.stdin is not None and zygote.stdout is not None
        zygote.stdin.write(json.dumps(request) + "\n")
        zygote.stdin.flush()
        rc = json.loads(zygote.stdout.readline())["rc"]
        stdout, stderr = (p.read_text(errors="replace") if p.exists() else "" for p in (out, err))
    if rc == "timeout":
        raise subprocess.TimeoutExpired(list(args), timeout, stdout, stderr)
    return subprocess.CompletedProcess(list(args), rc, stdout, stderr)
