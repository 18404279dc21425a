"""A fingerprint of everything a corpus holds, to assert that a command changed nothing.

Read with a plain read-only DuckDB connection (as a user would open the catalog), never
through sdfkit, so a fingerprint cannot itself refresh or repair anything.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb


def fingerprint(root: Path) -> dict[str, object]:
    """Row count and checksum of `documents` and of every catalog table, plus the files of
    every table folder (name and size)."""
    out: dict[str, object] = {}
    files = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "sdf.duckdb" and not p.name.startswith(".append"):
            files.append((str(p.relative_to(root)), p.stat().st_size))
    out["files"] = files
    if not (root / "sdf.duckdb").exists():
        return out
    con = duckdb.connect(
        str(root / "sdf.duckdb"), read_only=True, config={"file_search_path": str(root)}
    )
    try:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE NOT internal ORDER BY 1"
            ).fetchall()
        ]
        for name in [*tables, "documents"]:
            try:
                rows = con.execute(f'SELECT t::VARCHAR FROM "{name}" AS t').fetchall()
            except duckdb.Error:  # a damaged part under the view: its files are compared
                out[name] = "unreadable"
                continue
            text = "\n".join(sorted(r[0] for r in rows))
            out[name] = (len(rows), hashlib.sha256(text.encode()).hexdigest())
    finally:
        con.close()
    return out


def one_error(result) -> str:  # noqa: ANN001 - a click Result
    """The output's one ``error:`` line, which must be its last (no traceback after it)."""
    lines = result.output.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    assert "Traceback" not in result.output
    return errors[0]
