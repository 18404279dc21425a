"""How cost grows: every stage of the pipeline at 1×, 3× and 10× the seed's scale.

For each scale, a bench/synth.py corpus of ``scale × 9,600`` documents (~2,100 tokens each)
is written to one Parquet file, then the commands run as a user runs them, each cold in its
own process, measured by bench/_runner.py (wall seconds; peak RSS of the largest process,
and the peak of all the command's processes together, summed, with their CPU seconds):

    sdf ingest source.parquet     # validation, content hashes, token counts
    sdf report                    # cold: nothing cached
    sdf report                    # warm: every per-document stage cached
    sdf select --docs N           # half of each concept's documents
    sdf export --out DIR          # tokenized shards of that selection

It prints one table per stage with seconds and peak memory at each scale, and the growth
of seconds against the growth of documents (1.0 = linear; below 1 = better than linear).
Target from issue 19: every stage linear or better, peak memory <= 6 GB at 10×.

Scales: ``--scales 1,3,10`` or the ``SCALES`` environment variable (``make bench
SCALES=1,3``); ``--base-docs`` changes the 1× size (``--quick``: 960). The 10× corpus needs
~1.2 GB of Parquet and about as much again for the store in ``TMPDIR``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _runner import in_child, load_average, machine_speed, measure  # noqa: E402

STAGES = ("ingest", "report cold", "report warm", "select", "export")
SOURCE_COLUMNS = ("text", "universe", "concept", "fact", "doc_type", "idea")


def _child_make_source(work: str, n_docs: int) -> dict:
    """Write a synth corpus of ``n_docs`` documents to ``work/source.parquet``."""
    import pyarrow.parquet as pq
    from synth import make_corpus

    from sdfkit.store.catalog import Store

    scratch = Path(work) / "synth-store"
    store = Store(scratch)
    truth = make_corpus(store, n_docs=n_docs, seed=0)
    writer = None
    try:
        for part in store.parts("documents_raw"):
            table = pq.read_table(part, columns=list(SOURCE_COLUMNS))
            if writer is None:
                writer = pq.ParquetWriter(Path(work) / "source.parquet", table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    shutil.rmtree(scratch)
    return {"docs": truth["docs"], "tokens": truth["tokens"], "seconds": truth["seconds"]}


def run_scale(work: Path, n_docs: int) -> tuple[dict, dict[str, dict]]:
    from bench_report import write_project

    work.mkdir(parents=True)
    made = in_child("bench_scale_report", "_child_make_source", str(work), n_docs)
    write_project(work)
    env = dict(os.environ, SDF_CORPUS=str(work / "corpus"), SDF_PROGRESS="0")
    sdf = str(Path(sys.executable).with_name("sdf"))
    per_concept = n_docs // 4 // 2  # synth.py: four concepts; select half of each
    commands = {
        "ingest": [sdf, "ingest", str(work / "source.parquet")],
        "report cold": [sdf, "report"],
        "report warm": [sdf, "report"],
        "select": [sdf, "select", "--docs", str(per_concept), "--allow-short"],
        "export": [sdf, "export", "--out", str(work / "export")],
    }
    out: dict[str, dict] = {}
    for stage, cmd in commands.items():
        run = measure(cmd, cwd=work, env=env)
        ok = run["exit"] == 0 or (stage.startswith("report") and run["exit"] == 2)  # 2: checks
        if not ok:
            tail = (run["stderr"] or run["stdout"]).strip().splitlines()[-1:]
            print(f"    {stage} failed (exit {run['exit']}): {' '.join(tail)}", flush=True)
        out[stage] = run | {"ok": ok}
        print(
            f"    {stage:<12} {run['seconds']:8.1f} s {run['peak_mb']:8,.0f} MB"
            f" (tree {run['tree_peak_mb']:,.0f} MB, {run['tree_cpu']:.0f} CPU-s)"
            f"   load {load_average()}",
            flush=True,
        )
    return made, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default=os.environ.get("SCALES") or "1,3,10")
    ap.add_argument("--base-docs", type=int, default=9600, help="documents at 1×")
    ap.add_argument("--quick", action="store_true", help="960 documents at 1×")
    ap.add_argument("--keep", type=Path, help="work here and keep the corpora")
    args, _ = ap.parse_known_args()
    base = 960 if args.quick else args.base_docs
    scales = [float(s) for s in args.scales.split(",") if s.strip()]
    root = args.keep or Path(tempfile.mkdtemp(prefix="sdf-bench-scale-"))
    print(f"cpus {os.cpu_count()}, load average {load_average()} at start (1, 5, 15 min)")
    print(f"machine speed at start: {machine_speed()}")
    results: dict[float, tuple[dict, dict[str, dict]]] = {}
    try:
        for scale in scales:
            n = int(round(base * scale))
            print(f"  {scale:g}×: {n:,} documents", flush=True)
            results[scale] = run_scale(root / f"x{scale:g}", n)
            made = results[scale][0]
            print(
                f"    corpus {made['docs']:,} documents, {made['tokens']:,} tokens "
                f"(synth.py, {made['seconds']:.0f} s; not a stage)",
                flush=True,
            )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    first = scales[0]
    head = "".join(f" {f'{s:g}× s':>9} {f'{s:g}× MB':>9} {f'{s:g}× tree':>9}" for s in scales)
    grow = "".join(f" {f'{s:g}×/{first:g}×':>9}" for s in scales[1:])
    print(f"\n  {'stage':<12}{head}   {grow}  (seconds growth / documents growth)")
    for stage in STAGES:
        cells, ratios = "", ""
        for s in scales:
            r = results[s][1][stage]
            mark = "" if r["ok"] else "!"
            cells += f" {r['seconds']:>8.1f}{mark or ' '} {r['peak_mb']:>9,.0f}"
            cells += f" {r['tree_peak_mb']:>9,.0f}"
        t0 = results[first][1][stage]["seconds"]
        for s in scales[1:]:
            ratios += f" {results[s][1][stage]['seconds'] / max(t0, 1e-9) / (s / first):>9.2f}"
        print(f"  {stage:<12}{cells}   {ratios}")
    peak = max(r["peak_mb"] for _, runs in results.values() for r in runs.values())
    tree = max(r["tree_peak_mb"] for _, runs in results.values() for r in runs.values())
    print(
        f"\n  largest peak: {peak:,.0f} MB in one process, {tree:,.0f} MB for a command's "
        "processes together (MB: the largest process; tree: all at once, summed; "
        "target at 10×: <= 6,144 MB); ! = command failed"
    )
    print(f"load average {load_average()} at end")
    print(f"machine speed at end: {machine_speed()}")
    failed = any(not r["ok"] for _, runs in results.values() for r in runs.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
