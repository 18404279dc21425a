"""Exact duplicates: every arrival of a text the store already holds, with its provenance.

The store keeps one row per text (``doc_id`` is the content hash), so an exact duplicate,
the most extreme collapse, would vanish at ingest and at landing without a trace. Each such
arrival is recorded in the catalog table ``duplicates`` instead:

    doc_id, kind ('within_input' | 'already_stored'), run, universe, concept, doc_type,
    source, line, custom_id, created_at

``within_input``: the same text came earlier in the same ingest (or the same landing of
generated answers); ``already_stored``: the store held it before. Re-reading the very same
row (re-ingesting a file, a resumed run landing an answer again) is not a duplicate: an
arrival is identified by (doc_id, source, line, custom_id) and recorded once, and an
already stored text arriving from the source (ingest) or custom_id (generation) that stored
it is a re-read, not counted.

``report.json`` shows them under ``near_duplicates``: ``exact_duplicate_rows`` and counts
per run and concept (``exact_duplicates_by_run``, ``exact_duplicates_by_concept``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from sdfkit.store.records import utc_now

if TYPE_CHECKING:  # pragma: no cover
    from sdfkit.store.catalog import Store

TABLES = [
    """CREATE TABLE IF NOT EXISTS duplicates (
    doc_id VARCHAR, kind VARCHAR, run VARCHAR, universe VARCHAR, concept VARCHAR,
    doc_type VARCHAR, source VARCHAR, line BIGINT, custom_id VARCHAR, created_at TIMESTAMPTZ)""",
]


def ensure_tables(con: Any) -> None:
    """Create this module's catalog tables (``TABLES``) if missing, on an open connection."""
    for stmt in TABLES:
        con.execute(stmt)


COLUMNS = (
    "doc_id", "kind", "run", "universe", "concept", "doc_type", "source", "line", "custom_id",
)  # fmt: skip


def arrival(rec: dict[str, Any], kind: str, line: int | None = None) -> dict[str, Any]:
    """A ``duplicates`` row for a document record (ingest or landing) that was not stored."""
    out = {c: rec.get(c) for c in COLUMNS if c not in ("kind", "line")}
    out["kind"] = kind
    out["line"] = line
    return out


def stored_provenance(store: Store, doc_ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """doc_id -> (source, custom_id) of the stored row of each of ``doc_ids``."""
    import pyarrow.compute as pc

    from sdfkit.store.catalog import DOCUMENTS, read_part

    wanted = set(doc_ids)
    out: dict[str, tuple[str | None, str | None]] = {}
    if not wanted:
        return out
    # straight from the Parquet parts: no catalog connection (another process may hold it)
    for part in store.parts(DOCUMENTS):
        t = read_part(part, ["doc_id", "source", "custom_id"])
        t = t.filter(pc.is_in(t.column("doc_id"), value_set=pa_array(wanted)))
        for d, src, cid in zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True):
            out.setdefault(d, (src, cid))
    return out


def pa_array(values: set[str]):  # noqa: ANN201 - a pyarrow string array
    import pyarrow as pa

    return pa.array(sorted(values), pa.string())


def record(store: Store, rows: list[dict[str, Any]], con: Any = None) -> int:
    """Add duplicate arrivals (each (doc_id, source, line, custom_id) once); returns how many
    were new. On ``con``, a catalog connection the caller holds with its transaction open
    (``sdf ingest`` records them in the step that publishes its part), else in a
    transaction of its own."""
    import pyarrow as pa

    if not rows:
        return 0
    now = utc_now()
    table = pa.table(
        {
            **{c: pa.array([r.get(c) for r in rows], pa.string()) for c in COLUMNS if c != "line"},
            "line": pa.array([r.get("line") for r in rows], pa.int64()),
        }
    )
    own = con is None
    with _catalog(store) if own else nullcontext(con) as con:
        ensure_tables(con)
        con.register("_dups", table)
        try:
            if own:
                con.execute("BEGIN")
            before = con.execute("SELECT count(*) FROM duplicates").fetchall()[0][0]
            con.execute(
                "INSERT INTO duplicates SELECT DISTINCT ON (doc_id, source, line, custom_id) "
                f"{', '.join(COLUMNS)}, ?::TIMESTAMPTZ FROM _dups n WHERE NOT EXISTS ("
                "SELECT 1 FROM duplicates d WHERE d.doc_id = n.doc_id "
                "AND d.source IS NOT DISTINCT FROM n.source AND d.line IS NOT DISTINCT FROM n.line "
                "AND d.custom_id IS NOT DISTINCT FROM n.custom_id)",
                [now],
            )
            after = con.execute("SELECT count(*) FROM duplicates").fetchall()[0][0]
            if own:
                con.execute("COMMIT")
        except BaseException:
            if own:
                con.execute("ROLLBACK")
            raise
        finally:
            con.unregister("_dups")
    return int(after - before)


@contextmanager
def _catalog(store: Store, wait: float = 30.0) -> Iterator[Any]:
    """A catalog connection, waiting (up to ``wait`` seconds) while another process holds
    the catalog's file lock (concurrent ingests record their duplicates one after another)."""
    import duckdb

    deadline = time.monotonic() + wait
    delay = 0.02
    while True:
        try:
            cm = store.connect()
            con = cm.__enter__()
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
            continue
        try:
            yield con
        finally:
            cm.__exit__(None, None, None)
        return


def figures(store: Store, con: Any = None) -> dict[str, Any]:
    """``exact_duplicate_rows`` and counts per run and per concept, for the report (on
    ``con`` when the caller has a catalog connection open already)."""
    with store.connect() if con is None else nullcontext(con) as con:
        ensure_tables(con)
        total = con.execute("SELECT count(*) FROM duplicates").fetchall()[0][0]
        by_run = con.execute(
            "SELECT coalesce(run, '(ingested)'), count(*) FROM duplicates GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall()
        by_concept = con.execute(
            "SELECT coalesce(concept, '(none)'), count(*) FROM duplicates "
            "GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall()
        by_kind = con.execute(
            "SELECT kind, count(*) FROM duplicates GROUP BY 1 ORDER BY 1"
        ).fetchall()
    return {
        "exact_duplicate_rows": int(total),
        "exact_duplicates_by_kind": {k: int(n) for k, n in by_kind},
        "exact_duplicates_by_run": {k: int(n) for k, n in by_run},
        "exact_duplicates_by_concept": {k: int(n) for k, n in by_concept},
    }
