"""Row helpers shared by the stages (generation, batches, training, evaluation): content ids
for rows keyed by what was asked, the UTC clock of every stored timestamp, and reading/upserting rows as
dicts on an open catalog connection."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any


def content_id(*parts: Any) -> str:
    """A stable id for a row: sha256 of its parts as canonical JSON (first 24 hex digits)."""
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def utc_now() -> datetime:
    """Now, timezone-aware in UTC: the one clock every stored timestamp is read from."""
    return datetime.now(timezone.utc)


def fetch_dicts(con: Any, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    """The rows of ``sql`` as dicts keyed by column."""
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def upsert(con: Any, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert rows (dicts keyed by column) in one transaction; existing keys are replaced."""
    if not rows:
        return
    import pyarrow as pa

    names = list(rows[0])
    tbl = pa.table({n: [r[n] for r in rows] for n in names})
    con.register("_incoming_rows", tbl)
    try:
        con.execute("BEGIN")
        con.execute(f"INSERT OR REPLACE INTO {table} BY NAME SELECT * FROM _incoming_rows")
        con.execute("COMMIT")
    finally:
        con.unregister("_incoming_rows")
