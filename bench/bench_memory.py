"""Peak memory of a cold `sdf report` at seed scale, and of each audit on its own.

Every audit runs cold (nothing cached: a fresh copy of the corpus's documents) in its own
child process, which reports its peak RSS (``ru_maxrss``: the largest process of the tree).
Then the whole `sdf report` runs cold the same way, as `make report` runs it. Target from the
issue: the cold report at seed scale peaks at <= 1.5 GB.

Usage: ``python bench/bench_memory.py [--docs 9600] [--corpus DIR] [--audits a,b]``
(``--corpus`` reuses a bench/synth.py corpus; its documents are copied, never modified).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _runner import TreeSampler, in_child, machine_speed, measure  # noqa: E402

os.environ.setdefault("SDF_PROGRESS", "0")
AUDITS = ("shape", "keywords", "ngrams", "names", "dedup", "diversity")


def _child_audit(corpus: str, name: str) -> dict:
    import importlib
    import resource

    from sdfkit.store.catalog import Store

    module = importlib.import_module(f"sdfkit.audits.{name}")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    tree = TreeSampler(os.getpid())
    tree.sample()
    cpu_before = tree.cpu
    with tree:  # this process and its workers (forkserver children too), summed
        if name == "dedup":
            module.run(Store(corpus), module.Config(write_exclusions=False))
        else:
            module.run(Store(corpus))
        seconds = time.perf_counter() - t
        tree.sample()
    usage = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    return {
        "seconds": seconds,
        "cpu": tree.cpu - cpu_before,
        "peak_mb": usage / 1024,
        "tree_peak_mb": tree.peak_mb,
        "imports_mb": before,
    }


def _in_child(fn: str, *args: object) -> dict:
    return in_child("bench_memory", fn, *args, check=False)


def _fresh(src: Path, dst: Path) -> Path:
    (dst / "documents").mkdir(parents=True)
    for p in sorted((src / "documents").glob("*.parquet")):
        shutil.copy(p, dst / "documents" / p.name)
    return dst


def _report(corpus: Path, work: Path) -> dict:
    from bench_report import write_project

    write_project(work)
    env = dict(os.environ, SDF_CORPUS=str(corpus), SDF_PROGRESS="0")
    sdf = Path(sys.executable).with_name("sdf")
    run = measure([str(sdf), "report"], cwd=work, env=env)
    timings = {}
    if run["exit"] in (0, 2):
        data = json.loads((work / "reports" / "report.json").read_text())
        timings = {k: round(v.get("seconds") or 0, 1) for k, v in data.get("audits", {}).items()}
    return {
        "seconds": run["seconds"],
        "peak_mb": run["peak_mb"],
        "tree_peak_mb": run["tree_peak_mb"],
        "tree_cpu": run["tree_cpu"],
        "exit": run["exit"],
        "timings": timings,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="peak memory per audit and of a cold report")
    ap.add_argument("--docs", type=int, default=9600)
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--audits", default=",".join(AUDITS))
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--quick", action="store_true", help="1,200 documents")
    args, _ = ap.parse_known_args()
    if args.quick:
        args.docs = 1200

    from sdfkit.store.catalog import Store

    tmp = Path(tempfile.mkdtemp(prefix="sdf-bench-memory-"))
    src = args.corpus
    if src is None or not (src / "documents").is_dir():
        from synth import make_corpus

        src = src or tmp / "source"
        make_corpus(Store(src), n_docs=args.docs, seed=0)
    # Counted from the parts' footers: opening the source's catalog would refresh its views,
    # writing into a corpus this bench only reads.
    import pyarrow.parquet as pq

    n = sum(pq.ParquetFile(p).metadata.num_rows for p in (src / "documents").glob("*.parquet"))
    print(f"corpus: {n:,} documents; load average {os.getloadavg()[0]:.1f} at start (2 cores)")
    print(f"machine speed at start: {machine_speed()}")
    head = f"  {'audit (cold, own process)':<28} {'seconds':>9} {'cpu s':>8}"
    print(f"{head} {'peak RSS':>10} {'tree peak':>10} {'imports':>9}")
    print(
        "  (cpu s: the audit's process and its workers; peak RSS: the largest process; "
        "tree peak: all of them at once, summed)"
    )
    for name in args.audits.split(","):
        got = _in_child("_child_audit", str(_fresh(src, tmp / f"a-{name}")), name)
        if "error" in got:
            print(f"  {name:<28} failed: {got['error']}")
            continue
        print(
            f"  {name:<28} {got['seconds']:>8.1f}s {got['cpu']:>7.1f}s {got['peak_mb']:>7,.0f} MB "
            f"{got['tree_peak_mb']:>7,.0f} MB {got['imports_mb']:>6,.0f} MB"
        )
    if not args.no_report:
        rep = _report(_fresh(src, tmp / "report"), tmp / "work")
        print(
            f"  {'sdf report, cold':<28} {rep['seconds']:>8.1f}s {rep['tree_cpu']:>7.1f}s "
            f"{rep['peak_mb']:>7,.0f} MB {rep['tree_peak_mb']:>7,.0f} MB"
            f"   (target <= 1,536 MB; exit {rep['exit']}; {rep['timings']})"
        )
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    print(f"machine speed at end: {machine_speed()}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
