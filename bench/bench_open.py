"""What the corpus guards cost a query: `sdf sql`'s read path vs a plain DuckDB connection.

Corpus: N parts (default 200, one per ingest) of small documents. Baseline: stock DuckDB
opening the catalog read-only (with the corpus as ``file_search_path``) and counting
`documents`. sdfkit: ``sdfkit.store.sql.run_sql`` — the statement check, every part's frame checked
(first time in a process, then remembered), the views' staleness check, the read-only
attached connection, then the same relation-to-Arrow call as the second baseline (stock
DuckDB through ``con.sql(q).to_arrow_table()``, the API ``run_sql`` used before the guards), so
the last two rows differ by the guards alone. All run the same query; figures are medians of repeated runs in one
process, so the part check is remembered after the first (the first run is shown apart).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def build(root: Path, parts: int) -> None:
    from sdfkit.store.catalog import DOCUMENTS, Store
    from sdfkit.store.ingest import build_documents

    store = Store(root)
    for i in range(parts):
        docs = [
            {"text": f"part {i} document {j} " + "word " * 50, "concept": "c"} for j in range(5)
        ]
        store.append(DOCUMENTS, build_documents(docs))
    with store.connect():
        pass


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.parts, args.repeat = 50, 7
    import duckdb

    from sdfkit.store.catalog import Store
    from sdfkit.store.sql import run_sql

    query = "SELECT count(*) AS n FROM documents"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "corpus"
        build(root, args.parts)
        store = Store(root)

        def plain() -> int:
            con = duckdb.connect(
                str(root / "sdf.duckdb"), read_only=True, config={"file_search_path": str(root)}
            )
            try:
                return con.execute(query).fetchall()[0][0]
            finally:
                con.close()

        def plain_arrow() -> int:
            con = duckdb.connect(
                str(root / "sdf.duckdb"), read_only=True, config={"file_search_path": str(root)}
            )
            try:
                return con.sql(query).to_arrow_table().column(0)[0].as_py()
            finally:
                con.close()

        def guarded() -> int:
            return int(run_sql(query, store).item())

        t0 = time.perf_counter()
        first = guarded()
        first_s = time.perf_counter() - t0
        assert first == plain() == args.parts * 5
        times: dict[str, list[float]] = {"plain": [], "arrow": [], "sdfkit": []}
        for _ in range(args.repeat):
            for name, fn in (("plain", plain), ("arrow", plain_arrow), ("sdfkit", guarded)):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    base = statistics.median(times["plain"])
    arrow = statistics.median(times["arrow"])
    ours = statistics.median(times["sdfkit"])
    print(f"corpus: {args.parts} parts, {args.parts * 5} documents; {args.repeat} runs each")
    print(f"{'route':34s} {'median s':>9s} {'ratio':>7s}")
    print(f"{'stock DuckDB, read-only connect':34s} {base:9.4f} {1.0:7.2f}")
    print(f"{'stock DuckDB, con.sql().to_arrow':34s} {arrow:9.4f} {arrow / base:7.2f}")
    print(f"{'sdf sql read path (run_sql)':34s} {ours:9.4f} {ours / base:7.2f}")
    print(f"{'  first call in a process':34s} {first_s:9.4f} {first_s / base:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
