"""SQL over the corpus: ad-hoc queries, the named queries of ``queries/``, and output formats.

A named query is a ``.sql`` file whose leading ``--`` comment says what it answers. Lookup
order for ``NAME``: ``$SDF_QUERIES/NAME.sql``, ``./queries/NAME.sql``, then the copies shipped
with sdfkit, so a user can edit a query in their own folder and the report picks it up.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdfkit.errors import SdfError
from sdfkit.store.catalog import Store
from sdfkit.store.durable import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

PACKAGED_QUERIES = Path(__file__).resolve().parents[1] / "queries"
FORMATS = ("table", "csv", "json")


class QueryError(SdfError, ValueError):
    """A query could not be found or run; the message says which and why."""


def query_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("SDF_QUERIES"):
        dirs.append(Path(os.environ["SDF_QUERIES"]))
    dirs += [Path("queries"), PACKAGED_QUERIES]
    return dirs


def find_query(name: str) -> Path:
    """The file of a named query (``NAME`` or ``NAME.sql``)."""
    stem = name[:-4] if name.endswith(".sql") else name
    for d in query_dirs():
        p = d / f"{stem}.sql"
        if p.is_file():
            return p
    raise QueryError(f"no query named {stem!r} in " + ", ".join(str(d) for d in query_dirs()))


def list_queries() -> dict[str, str]:
    """Named queries and the first line of their description."""
    out: dict[str, str] = {}
    for d in reversed(query_dirs()):
        if d.is_dir():
            for p in sorted(d.glob("*.sql")):
                out[p.stem] = describe(p.read_text(encoding="utf-8"))
    return dict(sorted(out.items()))


def describe(sql: str) -> str:
    for line in sql.splitlines():
        s = line.strip()
        if s.startswith("--"):
            return s.lstrip("-").strip()
        if s:
            break
    return ""


def resolve_sql(arg: str) -> str:
    """SQL text from a literal query, a path to a ``.sql`` file, or a named query."""
    s = arg.strip()
    if s.endswith(".sql") and "\n" not in s:
        p = Path(s)
        if p.is_file():
            return p.read_text(encoding="utf-8")
        return find_query(p.name).read_text(encoding="utf-8")
    if s and all(c.isalnum() or c in "_-" for c in s) and not s.upper().startswith("SELECT"):
        return find_query(s).read_text(encoding="utf-8")
    return arg


def run_sql(
    sql: str, store: Store | None = None, params: dict[str, Any] | None = None
) -> pl.DataFrame:
    """Run one query (text, file or name) against the corpus; a polars DataFrame.

    ``params`` fills DuckDB ``$name`` placeholders. The query runs on ``Store.reader``, a
    read-only connection, after ``sqlguard.check_read_query``: it cannot change the corpus.
    """
    import duckdb
    import polars as pl

    from sdfkit.store.sqlguard import check_read_query

    store = store or Store()
    text = check_read_query(resolve_sql(sql))
    try:
        with store.reader() as con:
            rel = con.sql(text, params=params) if params else con.sql(text)
            if rel is None:  # pragma: no cover - check_read_query admits queries only
                return pl.DataFrame()
            tbl = rel.to_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(_explain(str(exc).strip())) from None
    return pl.from_arrow(tbl)  # type: ignore[return-value]


#: Table-name prefix -> the command that makes such tables; the longest matching prefix
#: wins. Other parts add theirs with ``register_table_maker`` (the audit registry names each
#: audit's command), so the store knows no audit by name.
MADE_BY = {
    "eval_": "sdf eval",
    "belief_": "sdf eval --belief",
    "samples": "sdf sample",
    "capability_": "sdf eval --capabilities",
    "export_fact_tokens": "sdf eval",
    "train_": "sdf train",
    "checkpoints": "sdf train",
    "selection": "sdf select",
    "gen_": "sdf generate",
    "ledger": "sdf generate",
    "audit_": "sdf report",  # every audit; a registered audit names its own command
}


def register_table_maker(prefix: str, command: str) -> None:
    """Name the command that makes the tables starting with ``prefix`` (for the hint a query
    of a missing table gets)."""
    MADE_BY[prefix] = command


def _explain(message: str) -> str:
    """Add the command that creates a missing table to DuckDB's message; a query that needs
    an extension (httpfs for a URL) is one line, without DuckDB's advice to switch on the
    automatic installs this connection refuses."""
    import re

    from sdfkit.store.sqlguard import _first_line

    if "requires the extension" in message.splitlines()[0]:
        return _first_line(Exception(message))
    m = re.search(r"Table with name (\w+) does not exist", message)
    if not m:
        return message
    table, first = m.group(1), message.splitlines()[0]
    command = next(
        (MADE_BY[p] for p in sorted(MADE_BY, key=len, reverse=True) if table.startswith(p)),
        None,
    )
    if command is None:
        return message
    return f"{table} does not exist yet: it is made by `{command}`; run that first. ({first})"


def named(name: str, store: Store | None = None, **params: Any) -> pl.DataFrame:
    """Run a named query from ``queries/`` and return a polars DataFrame."""
    return run_sql(find_query(name).read_text(encoding="utf-8"), store, params or None)


# ------------------------------------------------------------------- output
def _cell(v: Any, width: int) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        s = f"{v:.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
    elif isinstance(v, (list, dict)):
        s = json.dumps(v, ensure_ascii=False, default=str)
    else:
        s = str(v)
    s = s.replace("\n", " ")
    return s if len(s) <= width else s[: width - 1] + "…"


def format_table(df: pl.DataFrame, max_width: int = 60, max_rows: int = 200) -> str:
    """A plain, aligned text table (right-aligned numbers), with a row count footer."""
    import polars as pl

    shown = df.head(max_rows)
    cols = shown.columns
    rows = [[_cell(v, max_width) for v in r] for r in shown.iter_rows()]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    numeric = [dt.is_numeric() for dt in shown.dtypes]

    def line(vals: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(vals, widths, numeric, strict=True)
        ).rstrip()

    out = [line(cols), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    more = f" (showing {max_rows})" if df.height > max_rows else ""
    out.append(f"({df.height} row{'s' if df.height != 1 else ''}{more})")
    del pl
    return "\n".join(out)


def to_text(df: pl.DataFrame, fmt: str) -> str:
    if fmt == "table":
        return format_table(df)
    if fmt == "csv":
        buf = io.StringIO()
        _csv_ready(df).write_csv(buf)
        return buf.getvalue().rstrip("\n")
    if fmt == "json":
        return json.dumps(df.to_dicts(), ensure_ascii=False, indent=2, default=str)
    raise QueryError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def _csv_ready(df: pl.DataFrame) -> pl.DataFrame:
    """CSV cannot hold nested values: lists and structs become JSON text."""
    import polars as pl

    exprs = []
    for name, dt in zip(df.columns, df.dtypes, strict=True):
        if dt.is_nested():
            exprs.append(
                pl.col(name).map_elements(
                    lambda v: json.dumps(v.to_list() if hasattr(v, "to_list") else v, default=str),
                    return_dtype=pl.String,
                )
            )
        else:
            exprs.append(pl.col(name))
    return df.select(exprs)


def write_out(df: pl.DataFrame, path: str | Path, store: Store | None = None) -> Path:
    """Write a result to CSV, Parquet, JSON or JSONL by the file's suffix, atomically.

    Never inside ``store``'s folder: a file there could join the record."""
    p = Path(path)
    if store is not None:
        root = store.root.resolve()
        target = p.resolve()
        if target == root or root in target.parents:
            raise QueryError(
                f"--out {p}: inside the corpus folder {store.root}; write results elsewhere"
            )
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".parquet", ".json", ".jsonl", ".ndjson"):
        raise QueryError(
            f"{p}: unknown output type {suffix!r}: use .csv, .parquet, .json or .jsonl"
        )
    with atomic_path(p) as tmp:
        if suffix == ".csv":
            _csv_ready(df).write_csv(tmp)
        elif suffix == ".parquet":
            df.write_parquet(tmp, compression="zstd")
        elif suffix == ".json":
            tmp.write_text(json.dumps(df.to_dicts(), ensure_ascii=False, indent=2, default=str))
        else:
            df.write_ndjson(tmp)
    return p
