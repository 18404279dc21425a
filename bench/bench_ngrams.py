"""The n-gram audit, cold and warm, against an older version of the code: same figures?

Each route runs in its own fresh process on its own fresh copy of the corpus's documents
(nothing cached), then once more warm (token cache filled). Printed per route: wall seconds,
CPU seconds (all threads), peak RSS, and whether its figures and tables are identical to
the first route's (the figures without ``timings``; every table row by row).

Routes: this checkout on every core (default threads), on one thread, and with
``--baseline REF`` the code of a git revision (its ``src/`` extracted with ``git archive``
into a temporary folder; the repository is not touched), e.g. the commit before a change.

Usage: ``python bench/bench_ngrams.py [--corpus DIR | --docs 9600 | --quick] [--baseline REF]``.
Other engineers may share the cores: compare CPU seconds back to back, and read the load
average printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _runner import MARK, load_average  # noqa: E402

os.environ.setdefault("SDF_PROGRESS", "0")


def _child(corpus: str, out: str, threads: int | None) -> dict:
    """In a fresh process: the audit cold, then warm; figures and tables to ``out``."""
    import resource
    import time

    from sdfkit.audits import ngrams
    from sdfkit.store.catalog import Store

    config = ngrams.Config(threads=threads) if threads else ngrams.Config()
    runs = []
    for _ in ("cold", "warm"):
        t, cpu = time.perf_counter(), time.process_time()
        result = ngrams.run(Store(corpus), config)
        runs.append({"seconds": time.perf_counter() - t, "cpu": time.process_time() - cpu})
    figures = {k: v for k, v in result.figures.items() if k != "timings"}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "figures.json").write_text(json.dumps(figures, sort_keys=True))
    for name, table in result.tables.items():
        table.write_parquet(Path(out) / f"{name}.parquet")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"cold": runs[0], "warm": runs[1], "peak_mb": peak}


def _run_child(src: Path, corpus: Path, out: Path, threads: int | None) -> dict:
    code = (
        f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import bench_ngrams as b; "
        f"print({MARK!r} + json.dumps(b._child({str(corpus)!r}, {str(out)!r}, {threads!r})))"
    )
    env = dict(os.environ, PYTHONPATH=str(src), SDF_PROGRESS="0")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    line = [x for x in proc.stdout.splitlines() if x.startswith(MARK)][-1]
    return json.loads(line[len(MARK) :])


def _same(a: Path, b: Path) -> str:
    import polars as pl

    if (a / "figures.json").read_text() != (b / "figures.json").read_text():
        return "FIGURES DIFFER"
    names = sorted(p.name for p in a.glob("*.parquet"))
    if names != sorted(p.name for p in b.glob("*.parquet")):
        return "TABLES DIFFER (names)"
    for name in names:
        if not pl.read_parquet(a / name).equals(pl.read_parquet(b / name)):
            return f"TABLE {name} DIFFERS"
    return "identical"


def _fresh(src: Path, dst: Path) -> Path:
    (dst / "documents").mkdir(parents=True)
    for p in sorted((src / "documents").glob("*.parquet")):
        shutil.copy(p, dst / "documents" / p.name)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description="n-gram audit: routes side by side")
    ap.add_argument("--corpus", type=Path, help="a bench/synth.py corpus (only read)")
    ap.add_argument("--docs", type=int, default=9600, help="without --corpus: synthesise")
    ap.add_argument("--baseline", help="git revision whose src/ is the baseline route")
    ap.add_argument("--quick", action="store_true", help="1,200 documents")
    args, _ = ap.parse_known_args()  # `make bench` passes the same arguments to every bench
    if args.quick:
        args.docs = 1200

    tmp = Path(tempfile.mkdtemp(prefix="sdf-bench-ngrams-"))
    try:
        src = args.corpus
        if src is None or not (src / "documents").is_dir():
            from synth import make_corpus

            from sdfkit.store.catalog import Store

            src = tmp / "source"
            make_corpus(Store(src), n_docs=args.docs, seed=0)
        routes: list[tuple[str, Path, int | None]] = []
        if args.baseline:
            base = tmp / "baseline"
            base.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.baseline, "src"],
                capture_output=True,
                check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
            routes.append((f"baseline {args.baseline}", base / "src", None))
        routes += [
            ("this checkout", ROOT / "src", None),
            ("this checkout, 1 thread", ROOT / "src", 1),
        ]
        print(f"load average {load_average()} at start (2 cores)")
        print(
            f"  {'route':<28} {'cold s':>7} {'cpu s':>7} {'warm s':>7} {'cpu s':>7} "
            f"{'peak RSS':>9}  figures"
        )
        first: Path | None = None
        for k, (label, code, threads) in enumerate(routes):
            out = tmp / f"out{k}"
            got = _run_child(code, _fresh(src, tmp / f"c{k}"), out, threads)
            same = "(reference)" if first is None else _same(first, out)
            first = first or out
            c, w = got["cold"], got["warm"]
            print(
                f"  {label:<28} {c['seconds']:>6.1f}s {c['cpu']:>6.1f}s {w['seconds']:>6.1f}s "
                f"{w['cpu']:>6.1f}s {got['peak_mb']:>6,.0f} MB  {same}"
            )
        print(f"load average {load_average()} at end")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
