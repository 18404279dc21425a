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

``TreeSampler`` adds what ``ru_maxrss`` leaves out: the peak of the *summed* resident memory
of a process and all its descendants (worker pools, forkserver children, alive at once),
and their CPU seconds, read from ``/proc`` every 0.1 s on a thread. ``measure`` reports both
(``tree_peak_mb``, ``tree_cpu``).
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


class TreeSampler:
    """The peak of the summed RSS of ``pid`` and its descendants, and their CPU seconds,
    sampled every ``interval`` seconds on a thread (Linux ``/proc``; elsewhere zeros).

    CPU is each process's own user + system time (``/proc/PID/stat``), the last value seen
    before it exited: at most ``interval`` of a short-lived process's time is missed. The
    memory is the sum of each process's RSS, which counts pages processes share (libraries,
    a forkserver's copy-on-write pages) once per process: an upper bound of what they hold."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        import threading

        self.pid, self.interval = pid, interval
        self.peak_bytes = 0
        self._cpu: dict[tuple[int, str], float] = {}  # (pid, start time) -> CPU seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _stats(self) -> dict[int, list[str]]:
        out = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as fh:
                    raw = fh.read()
            except OSError:
                continue
            # fields after "(comm)", which may hold spaces: state, ppid, ...
            out[int(entry.name)] = raw[raw.rfind(")") + 2 :].split()
        return out

    def sample(self) -> None:
        """One look at the tree (nothing where there is no ``/proc``)."""
        if not os.path.isdir("/proc"):
            return
        stats = self._stats()
        kids: dict[int, list[int]] = {}
        for pid, f in stats.items():
            kids.setdefault(int(f[1]), []).append(pid)
        tree, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            if pid in stats:
                tree.append(pid)
                todo.extend(kids.get(pid, []))
        total = 0
        for pid in tree:
            f = stats[pid]
            # utime, stime: fields 14 and 15 of stat (11 and 12 after the comm); start: 22
            self._cpu[(pid, f[19])] = (int(f[11]) + int(f[12])) / self._tick
            try:
                with open(f"/proc/{pid}/statm", encoding="ascii") as fh:
                    total += int(fh.read().split()[1]) * self._page
            except (OSError, IndexError, ValueError):
                continue
        self.peak_bytes = max(self.peak_bytes, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20

    @property
    def cpu(self) -> float:
        return sum(self._cpu.values())


def _watch(cmd: list[str]) -> None:
    """``measure``'s watcher: run ``cmd``, print its figures as one JSON line."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeSampler(p.pid) as tree:
        out, err = p.communicate()
    s = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": s,
                "peak_mb": peak,
                "tree_peak_mb": tree.peak_mb,
                "tree_cpu": tree.cpu,
                "exit": p.returncode,
                "stdout": out[-20000:],
                "stderr": err[-20000:],
            }
        )
    )


def measure(
    cmd: list[str], cwd: str | Path | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``cmd``; return ``{"seconds", "peak_mb", "tree_peak_mb", "tree_cpu", "exit",
    "stdout", "stderr"}`` (``peak_mb``: the largest process; ``tree_peak_mb``: the peak of
    the tree's summed memory; ``tree_cpu``: the tree's CPU seconds)."""
    watcher = f"import sys; sys.path.insert(0, {str(HERE)!r}); import _runner; _runner._watch(sys.argv[1:])"
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
