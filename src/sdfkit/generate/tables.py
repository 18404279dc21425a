"""The catalog tables a generation run records: ``gen_runs`` (one row per run: backend,
model, config, prompt hashes) and ``gen_universes`` (the universe files each run used).

Generation writes them and grading reads them; both create them through ``ensure_tables``
here, so grading does not import the generation stage for it.
"""

from __future__ import annotations

from typing import Any

from sdfkit.llm import batches

TABLES = [
    """CREATE TABLE IF NOT EXISTS gen_runs (
        run VARCHAR, started_at TIMESTAMPTZ, backend VARCHAR, model VARCHAR,
        universes VARCHAR[], config VARCHAR, prompt_hashes VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS gen_universes (
        universe VARCHAR, concept VARCHAR, content_hash VARCHAR, source_path VARCHAR,
        universe_json VARCHAR, run VARCHAR, stored_at TIMESTAMPTZ)""",
]


def ensure_tables(con: Any) -> None:
    """Create the generation tables (``TABLES``, and the batch tables they refer to) if
    missing, on an open connection."""
    batches.ensure_tables(con)
    for stmt in TABLES:
        con.execute(stmt)
