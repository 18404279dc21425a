"""bench/_runner.py's TreeSampler: the memory of a process tree summed, and its CPU seconds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from _runner import TreeSampler  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc (Linux)")

#: A grandchild holds 200 MB (touched) and burns 0.5 s of its own CPU, then waits for stdin.
GRANDCHILD = (
    "import sys, time\n"
    "block = bytearray(200 * 2**20)\n"
    "for i in range(0, len(block), 4096): block[i] = 1\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < 0.5: pass\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)
#: Its parent (our child) holds 100 MB and only waits: the tree is three processes deep.
CHILD = (
    "import subprocess, sys\n"
    "block = bytearray(100 * 2**20)\n"
    "for i in range(0, len(block), 4096): block[i] = 1\n"
    f"p = subprocess.Popen([sys.executable, '-c', {GRANDCHILD!r}], stdout=subprocess.PIPE, "
    "stdin=subprocess.PIPE, text=True)\n"
    "print(p.stdout.readline().strip(), flush=True)\n"
    "sys.stdin.read()\n"
    "p.communicate('')\n"
)


def test_the_sampler_sums_every_descendant_and_counts_their_cpu() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        with TreeSampler(child.pid, interval=0.05) as tree:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            time.sleep(0.2)  # a few samples while both blocks are held
            tree.sample()
            largest = max(
                int(Path(f"/proc/{pid}/statm").read_text().split()[1])
                for pid in (child.pid, *_children(child.pid))
            ) * os.sysconf("SC_PAGE_SIZE")
        # both blocks at once: more than either process alone, at least their sum
        assert tree.peak_bytes >= 300 * 2**20
        assert tree.peak_bytes > largest + 90 * 2**20
        assert tree.peak_mb == pytest.approx(tree.peak_bytes / 2**20)
        # the grandchild's 0.5 CPU-s, seen before it goes on waiting
        assert tree.cpu >= 0.5
    finally:
        child.communicate("")


def test_a_process_that_exits_keeps_the_cpu_it_was_seen_to_use() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
    proc = subprocess.Popen([sys.executable, "-c", burn])
    with TreeSampler(proc.pid, interval=0.01) as tree:
        proc.wait()
    seen = tree.cpu
    tree.sample()  # the process is gone: a later look neither fails nor forgets it
    assert tree.cpu == seen
    assert seen >= 0.3  # all but the last interval of its 0.4 s


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                raw = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            if int(raw[raw.rfind(")") + 2 :].split()[1]) == pid:
                out.append(int(entry.name))
    return out
