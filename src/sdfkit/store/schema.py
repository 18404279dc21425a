"""Catalog tables and views that every corpus has, created idempotently on open.

Stage modules that own further tables create them here too, so a fresh corpus always has
every table a query may name (empty until the stage runs).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from sdfkit.store import duplicates as _duplicates

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

# Each entry: one statement, safe to run on every open.
TABLES: list[str] = [
    # Typed empty stand-in for the record before the first ingest.
    """CREATE TABLE IF NOT EXISTS _documents_empty (
        doc_id VARCHAR, text VARCHAR, chars BIGINT, n_tokens BIGINT, tokenizer VARCHAR,
        universe VARCHAR, concept VARCHAR, fact VARCHAR, doc_type VARCHAR, idea VARCHAR,
        model VARCHAR, prompt_hash VARCHAR, run VARCHAR, batch_id VARCHAR, custom_id VARCHAR,
        seed_names VARCHAR[], source VARCHAR, created_at TIMESTAMPTZ, meta VARCHAR)""",
    # Grader verdicts, one row per (document, grading run); the newest wins in `documents`.
    """CREATE TABLE IF NOT EXISTS grades (
        doc_id VARCHAR, run VARCHAR, model VARCHAR, prompt_hash VARCHAR,
        passed BOOLEAN, verdict VARCHAR, parse_error VARCHAR, graded_at TIMESTAMPTZ)""",
    # Why a document must not be selected: near-duplicate loser, failed grade, user's SQL...
    """CREATE TABLE IF NOT EXISTS exclusions (
        doc_id VARCHAR, reason VARCHAR, source VARCHAR, created_at TIMESTAMPTZ,
        PRIMARY KEY (doc_id, reason))""",
    # Exact duplicates: every arrival of an already stored text, with provenance.
    *_duplicates.TABLES,
    # Ingest log: what each ingest read, added and skipped.
    """CREATE TABLE IF NOT EXISTS ingests (
        ingest_id VARCHAR, files VARCHAR[], rows_read BIGINT, added BIGINT,
        already_present BIGINT, skipped BIGINT, skip_reasons VARCHAR, tokenizer VARCHAR,
        seconds DOUBLE, created_at TIMESTAMPTZ)""",
]

#: The ``documents`` view's query: the record with its newest grade and its exclusions.
DOCUMENTS_SELECT = """SELECT d.*,
       g.passed AS grade_passed,
       g.verdict AS grade,
       x.exclusion_reason,
       (x.exclusion_reason IS NOT NULL) AS excluded
FROM documents_raw AS d
LEFT JOIN (
    SELECT doc_id, arg_max(passed, graded_at) AS passed, arg_max(verdict, graded_at) AS verdict
    FROM grades GROUP BY doc_id
) AS g USING (doc_id)
LEFT JOIN (
    SELECT doc_id, string_agg(DISTINCT reason, '; ' ORDER BY reason) AS exclusion_reason
    FROM exclusions GROUP BY doc_id
) AS x USING (doc_id)
"""
DOCUMENTS_VIEW = "\nCREATE OR REPLACE VIEW documents AS\n" + DOCUMENTS_SELECT


def _version() -> str:
    """The statements above and the views' template: a change refreshes every catalog's
    views on its next open (``Store.connect`` skips the refresh while parts are unchanged)."""
    import hashlib

    text = "\n".join([*TABLES, DOCUMENTS_VIEW, "read_parquet(glob, union_by_name = true)"])
    return hashlib.sha256(text.encode()).hexdigest()


VERSION = _version()


@functools.cache
def reserved_names() -> frozenset[str]:
    """Names no folder of Parquet parts may have: the tables every catalog keeps (its view
    would replace one of them) and the record's own views."""
    import re

    made = {m.group(1).lower() for m in re.finditer(r"TABLE IF NOT EXISTS (\w+)", "".join(TABLES))}
    return frozenset(made | {"documents", "documents_raw"})


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables every corpus has (``TABLES``) if missing, on an open connection."""
    for stmt in TABLES:
        con.execute(stmt)


def create_views(con: duckdb.DuckDBPyConnection, parquet_tables: set[str]) -> None:
    con.execute(DOCUMENTS_VIEW)
