"""`make bench`: run every bench/bench_*.py as a script, one after another, and keep their output.

Each benchmark prints its own table of figures with ratios against a baseline run side by
side. Arguments are passed through (e.g. `python bench/run.py --quick`); `--only NAME` runs
one benchmark (`--only ingest`). Output is also saved to bench/out/<name>.txt.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    only = None
    if "--only" in argv:
        i = argv.index("--only")
        only = argv[i + 1]
        argv = argv[:i] + argv[i + 2 :]
    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        name = script.stem.removeprefix("bench_")
        if only and name != only:
            continue
        print(f"\n=== bench {name} ===", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(script), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        sys.stdout.write(proc.stdout)
        (out_dir / f"{name}.txt").write_text(proc.stdout)
        print(f"--- {name}: {time.perf_counter() - t0:.1f}s, exit {proc.returncode}")
        if proc.returncode:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
