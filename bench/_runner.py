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


def machine_speed() -> str:
    """How fast this machine is right now, to compare runs taken at different times.

    A shared virtual machine's speed moves with its neighbours even at load ~1 (measured
    here: a bf16 matrix product at 2.6 TFLOP/s one hour and 1.3-1.7 the next). Two probes,
    the best of several short rounds each (~1 s in all), in a fresh process: a pure-Python loop (the interpreter's speed) and a bf16
    8192 × 384 × 1536 matrix product (the cores' vector units, which the encoder uses).
    """
    code = (
        "import time\n"
        "def rounds(fn, n):\n"
        "    out = []\n"
        "    for _ in range(n):\n"
        "        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)\n"
        "    return sorted(out)\n"
        "def loop():\n"
        "    x = 0\n"
        "    for i in range(1_000_000): x += i\n"
        "py = rounds(loop, 5)\n"
        "py = f'{py[0] * 1e3:.0f} / {py[2] * 1e3:.0f} ns'\n"
        "try:\n"
        "    import torch\n"
        "    a = torch.randn(8192, 384, dtype=torch.bfloat16)\n"
        "    w = torch.randn(1536, 384, dtype=torch.bfloat16).t()\n"
        "    def mm():\n"
        "        for _ in range(5): a @ w\n"
        "    rounds(mm, 2)\n"
        "    r = [2 * 8192 * 384 * 1536 * 5 / s / 1e12 for s in rounds(mm, 9)]\n"
        "    mm = f'{r[0]:.2f} / {r[4]:.2f} TFLOP/s'\n"
        "except ImportError:\n"
        "    mm = 'no torch'\n"
        "print(f'python loop {py}/iteration, bf16 matmul {mm} (best / median)')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    return out.stdout.strip() or f"(probe failed: {out.stderr.strip()[-200:]})"


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[float, Any]:
    """(wall seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, out
