"""Shared by the benchmarks: run work in a fresh child process and measure its peak memory.

Two ways in:

- ``in_child(module, fn, *args)`` imports ``bench/<module>.py`` in a new Python process, calls
  ``fn(*args)`` there (JSON-able arguments) and returns what it returns (a JSON-able dict).
  Each call starts cold: nothing imported, nothing cached in memory.
- ``measure(cmd, cwd=..., env=...)`` runs a command (e.g. ``sdf report``) under a small
  watcher process and returns its wall seconds, exit code, output and peak RSS.

Peak RSS is ``ru_maxrss``: the largest single process of the tree (worker pools are not
summed). ``measure`` reads it in a watcher whose only child is the command, because a
process's ``RUSAGE_CHILDREN`` is the maximum over every child it has ever waited for: read
in the bench itself, a second command would report the first one's peak when that was larger.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MARK = "@@"


def peak_rss_mb(children: bool = True) -> float:
    """Peak RSS in MB of this process, or of the largest of this process and its children."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if children:
        own = max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return own / 1024


def in_child(module: str, fn: str, *args: object, check: bool = True) -> dict[str, Any]:
    """``bench/<module>.fn(*args)`` in a fresh process. On failure: raise (``check``) or
    return ``{"error": <last line of stderr>}``."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import {module} as b; "
        f"print({MARK!r} + json.dumps(b.{fn}(*{args!r})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        if check:
            raise RuntimeError(proc.stderr[-3000:])
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
    line = [x for x in proc.stdout.splitlines() if x.startswith(MARK)][-1]
    return json.loads(line[len(MARK) :])


def measure(
    cmd: list[str], cwd: str | Path | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``cmd``; return ``{"seconds", "peak_mb", "exit", "stdout", "stderr"}``."""
    watcher = (
        "import json, resource, subprocess, sys, time; "
        "t = time.perf_counter(); "
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "s = time.perf_counter() - t; "
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024; "
        "print(json.dumps({'seconds': s, 'peak_mb': peak, 'exit': p.returncode, "
        "'stdout': p.stdout[-20000:], 'stderr': p.stderr[-20000:]}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", watcher, *map(str, cmd)],
        cwd=cwd,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout)


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, for the header of a table of wall times."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[float, Any]:
    """(wall seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, out
