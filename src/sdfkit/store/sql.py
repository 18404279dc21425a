"""SQL over the corpus: ad-hoc queries, the named queries of ``queries/``, and output formats.

A named query is a ``.sql`` file whose leading ``--`` comment says what it answers. Lookup
order for ``NAME``: ``$SDF_QUERIES/NAME.sql``, ``./queries/NAME.sql``, then the copies shipped
with sdfkit, so a user can edit a query in their own folder and the report picks it up.

A result leaves DuckDB as Arrow record batches and becomes polars frames. What DuckDB can
return but polars cannot take is mended on the way, for every caller: repeated column names
(a join's two ``doc_id``) are made unique as DuckDB's own clients make them (``doc_id``,
``doc_id_1``), and a column of a type polars holds no faithful equivalent of (INTERVAL,
UNION, MAP, UHUGEINT, BIT, TIMETZ, BIGNUM) arrives as DuckDB's own text of each value. The
batches stream: ``sdf sql`` fetches only the rows it prints, and ``--out`` is written batch
by batch, so neither holds a whole large result.
"""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdfkit.errors import SdfError
from sdfkit.store.catalog import Store
from sdfkit.store.durable import atomic_path, check_writable

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl
    import pyarrow as pa

PACKAGED_QUERIES = Path(__file__).resolve().parents[1] / "queries"
FORMATS = ("table", "csv", "json")
#: File types ``--out`` writes, by suffix.
OUT_TYPES = (".csv", ".parquet", ".json", ".jsonl", ".ndjson")
#: Rows a printed table shows; ``sdf sql`` fetches one more, to know whether there are more.
SHOWN_ROWS = 200
#: Rows per Arrow record batch of a streamed result (documents' text: a batch is tens of MB).
BATCH_ROWS = 16_384


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


def read_query(path: Path) -> str:
    """The text of a ``.sql`` file; one that is not UTF-8 is a one-line error naming it (a
    file saved in another encoding in ``./queries`` stopped ``sdf queries`` with a traceback)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise QueryError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the query as UTF-8"
        ) from None


def list_queries() -> dict[str, str]:
    """Named queries and the first line of their description."""
    out: dict[str, str] = {}
    for d in reversed(query_dirs()):
        if d.is_dir():
            for p in sorted(d.glob("*.sql")):
                if p.is_file():
                    out[p.stem] = describe(read_query(p))
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
            return read_query(p)
        return read_query(find_query(p.name))
    if s and all(c.isalnum() or c in "_-" for c in s) and not s.upper().startswith("SELECT"):
        return read_query(find_query(s))
    return arg


# ------------------------------------------------------------------- results
#: DuckDB types (``DuckDBPyType.id``) that reach polars through Arrow as the same values; a
#: LIST, ARRAY or STRUCT passes when its children do. Every other type is cast to VARCHAR by
#: DuckDB before it leaves: polars cannot import INTERVAL or UNION, UHUGEINT wraps past 2**127
#: in Arrow, BIT and BIGNUM arrive as bytes, TIMETZ loses its offset, and MAP is read
#: differently by different polars versions.
POLARS_TYPES = frozenset(
    {
        "boolean",
        "tinyint",
        "smallint",
        "integer",
        "bigint",
        "hugeint",  # Arrow decimal128(38, 0): what sum() returns, kept a number
        "utinyint",
        "usmallint",
        "uinteger",
        "ubigint",
        "float",
        "double",
        "decimal",
        "varchar",  # and JSON
        "blob",
        "uuid",
        "enum",
        "date",
        "time",
        "time_ns",
        "timestamp",
        "timestamp_s",
        "timestamp_ms",
        "timestamp_ns",
        "timestamp with time zone",
        "null",
    }
)


def polars_takes(dtype: Any) -> bool:
    """Whether a DuckDB type reaches polars faithfully (``POLARS_TYPES``, nested in lists,
    arrays and structs)."""
    if dtype.id in ("list", "array"):
        return polars_takes(dtype.children[0][1])
    if dtype.id == "struct":
        return all(polars_takes(child) for _, child in dtype.children)
    return dtype.id in POLARS_TYPES


def unique_names(names: list[str]) -> list[str]:
    """Column names made unique as DuckDB's own clients make them (``.df()``): the second
    ``doc_id`` becomes ``doc_id_1``, the third ``doc_id_2``, skipping a name already taken;
    names that differ only in case are repeats (DuckDB does not tell them apart)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        low = name.lower()
        if low not in seen:
            seen[low] = 1
            out.append(name)
            continue
        new = f"{name}_{seen[low]}"
        while new.lower() in seen:
            seen[low] += 1
            new = f"{name}_{seen[low]}"
        seen[low] += 1
        seen[new.lower()] = 1
        out.append(new)
    return out


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class QueryResult:
    """One query's answer, read while its connection is open (``open_query``): unique column
    names, and every column of a type polars cannot take as DuckDB's text of it."""

    def __init__(self, rel: Any) -> None:
        names = list(rel.columns)
        self.columns = unique_names(names)
        as_text = [not polars_takes(t) for t in rel.types]
        if self.columns != names or any(as_text):
            # positional references: a repeated name cannot be referred to by name
            rel = rel.project(
                ", ".join(
                    (f"CAST(#{i} AS VARCHAR)" if text else f"#{i}") + f" AS {_quote(name)}"
                    for i, (name, text) in enumerate(zip(self.columns, as_text, strict=True), 1)
                )
            )
        self._rel = rel

    def frame(self) -> pl.DataFrame:
        """The whole result."""
        return _frame(self._rel.to_arrow_table())

    def head(self, rows: int) -> pl.DataFrame:
        """The first ``rows`` rows, and only they are computed (DuckDB stops, or keeps the
        top rows of an ORDER BY)."""
        return _frame(self._rel.limit(rows).to_arrow_table())

    def batches(self, rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """The whole result, an Arrow record batch at a time, at least one (maybe empty: a
        writer always learns the columns)."""
        rel = self._rel
        # DuckDB 1.5 spells it fetch_arrow_reader; later versions deprecate that name
        reader = (
            rel.to_arrow_reader(rows)
            if hasattr(rel, "to_arrow_reader")
            else rel.fetch_arrow_reader(rows)
        )
        empty = True
        for batch in reader:
            empty = False
            yield batch
        if empty:
            yield _empty_batch(reader.schema)

    def frames(self, rows: int = BATCH_ROWS) -> Iterator[pl.DataFrame]:
        """``batches`` as polars frames."""
        return (_frame(b) for b in self.batches(rows))


def _empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    import pyarrow as pa

    return pa.RecordBatch.from_pylist([], schema=schema)


def _frame(data: Any) -> pl.DataFrame:
    import polars as pl

    return pl.from_arrow(data)  # type: ignore[return-value]


@contextmanager
def open_query(
    sql: str, store: Store | None = None, params: dict[str, Any] | None = None
) -> Iterator[QueryResult]:
    """Run one query (text, file or name) against the corpus; its ``QueryResult`` while
    the block lasts (the rows are read from DuckDB as the block asks for them).

    ``params`` fills DuckDB ``$name`` placeholders. The query runs on ``Store.reader``, a
    read-only connection, after ``sqlguard.check_read_query``: it cannot change the corpus.
    A DuckDB error, when the query is bound or while its rows are read, is a ``QueryError``.
    """
    import duckdb

    from sdfkit.store.sqlguard import check_read_query

    store = store or Store()
    text = check_read_query(resolve_sql(sql))
    try:
        with store.reader() as con:
            rel = con.sql(text, params=params) if params else con.sql(text)
            if rel is None:  # pragma: no cover - check_read_query admits queries only
                raise QueryError("sdf sql: the statement returned no result")
            yield QueryResult(rel)
    except duckdb.Error as exc:
        raise QueryError(_explain(str(exc).strip())) from None


def run_sql(
    sql: str, store: Store | None = None, params: dict[str, Any] | None = None
) -> pl.DataFrame:
    """Run one query (text, file or name) against the corpus; a polars DataFrame of it all
    (``open_query`` streams instead)."""
    with open_query(sql, store, params) as result:
        return result.frame()


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
    return run_sql(read_query(find_query(name)), store, params or None)


# ------------------------------------------------------------------- output
#: Python's dates (years 1 to 9999) as days since 1970-01-01, and its datetimes in
#: microseconds, a day inside either end so a time zone's offset stays in range.
_PY_DAYS = (-719_162, 2_932_896)
_PY_MICROS = (-62_135_596_800 * 10**6 + 86_400 * 10**6, 253_402_300_799 * 10**6 - 86_400 * 10**6)
_PER_MICRO = {"ms": 0.001, "us": 1, "ns": 1000}
#: DuckDB's ``infinity`` and ``-infinity`` timestamps in Arrow (any unit).
_INFINITE = (2**63 - 1, -(2**63 - 1))


def _needs_text(s: pl.Series) -> bool:
    """Whether a text output (table, CSV, JSON) must take ``s`` as DuckDB's text of it:
    bytes (polars writes no binary to CSV or JSON), dates and times Python cannot hold
    (DuckDB's ``infinity``, years past 9999: converting them aborted polars), times finer
    than the microsecond Python keeps, and decimals of more than 38 digits (a HUGEINT near
    its limit, which Python's Decimal would round)."""
    import polars as pl

    dt = s.dtype
    if dt == pl.Binary:
        return True
    if isinstance(dt, pl.List):
        return _needs_text(s.explode())
    if isinstance(dt, pl.Array):
        return _needs_text(s.arr.explode())
    if isinstance(dt, pl.Struct):
        return any(_needs_text(s.struct.field(f.name)) for f in dt.fields)
    if not (dt == pl.Date or dt == pl.Time or isinstance(dt, (pl.Datetime, pl.Decimal))):
        return False
    phys = s.drop_nulls().to_physical()
    if phys.len() == 0:
        return False
    low, high = phys.min(), phys.max()
    if dt == pl.Date:
        return bool(low < _PY_DAYS[0] or high > _PY_DAYS[1])
    if dt == pl.Time:
        return bool((phys % 1000 != 0).any())
    if isinstance(dt, pl.Decimal):
        return max(abs(low), abs(high)) >= 10**38
    unit = dt.time_unit or "us"  # type: ignore[union-attr]
    scale = _PER_MICRO[unit]
    return bool(
        low in _INFINITE
        or high in _INFINITE
        or low < _PY_MICROS[0] * scale
        or high > _PY_MICROS[1] * scale
        or (unit == "ns" and (phys % 1000 != 0).any())
    )


def text_ready(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with every column a text output cannot show as it is (``_needs_text``)
    replaced by DuckDB's text of its values (``infinity``, ``\\xAA``, all 39 digits)."""
    import duckdb
    import polars as pl

    bad = [c for c in df.columns if _needs_text(df[c])]
    if not bad:
        return df
    con = duckdb.connect()  # in memory: only to render values as DuckDB does
    try:
        values = con.from_arrow(df.select(bad).to_arrow()).project(
            ", ".join(f"CAST({_quote(c)} AS VARCHAR) AS {_quote(c)}" for c in bad)
        )
        rendered = pl.from_arrow(values.to_arrow_table())
    finally:
        con.close()
    return df.with_columns(rendered)  # type: ignore[arg-type]


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


def format_table(
    df: pl.DataFrame, max_width: int = 60, max_rows: int = SHOWN_ROWS, cut: bool = False
) -> str:
    """A plain, aligned text table (right-aligned numbers), with a row count footer.

    ``cut``: ``df`` holds only the first rows of a result (``sdf sql`` fetches
    ``max_rows + 1``), so more than ``max_rows`` rows means "more", not a total."""
    shown = text_ready(df.head(max_rows))
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
    if cut and df.height > max_rows:
        out.append(
            f"(more than {max_rows} rows; showing the first {max_rows}: --out FILE writes them all)"
        )
    else:
        more = f" (showing {max_rows})" if df.height > max_rows else ""
        out.append(f"({df.height} row{'s' if df.height != 1 else ''}{more})")
    return "\n".join(out)


def to_text(df: pl.DataFrame, fmt: str) -> str:
    if fmt == "table":
        return format_table(df)
    if fmt in ("csv", "json"):
        return "".join(text_chunks([df], fmt)).rstrip("\n")
    raise QueryError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def text_chunks(frames: Iterable[pl.DataFrame], fmt: str) -> Iterator[str]:
    """A result as CSV, JSON (one array, as ``json.dumps(rows, indent=2)`` writes it) or
    JSON lines ("jsonl"), a piece per frame: nothing holds the whole result."""
    if fmt == "csv":
        first = True
        for df in frames:
            yield _csv_ready(text_ready(df)).write_csv(include_header=first)
            first = False
    elif fmt == "json":
        rows = 0
        for df in frames:
            for row in text_ready(df).to_dicts():
                item = json.dumps(row, ensure_ascii=False, indent=2, default=str)
                yield ("[\n" if rows == 0 else ",\n") + textwrap.indent(item, "  ")
                rows += 1
        yield "\n]" if rows else "[]"
    elif fmt == "jsonl":
        for df in frames:
            yield text_ready(df).write_ndjson()
    else:
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


def check_out(path: str | Path, store: Store | None = None, overwrite: bool = False) -> Path:
    """``--out`` as a file a result may be written to, checked before the query runs (a bad
    path costs no query time and leaves nothing behind): a known type by suffix; never
    inside ``store``'s folder (a file there could join the record); a file or nothing yet,
    not a folder, a device or a path under a file (``durable.check_writable``); not an
    existing file unless ``overwrite`` (``--out in/a.jsonl`` had replaced the user's own
    input); and under a folder this user can create a file in (``/proc`` is not)."""
    p = Path(path)
    if store is not None and store.holds(p):
        raise QueryError(
            f"--out {p}: inside the corpus folder {store.root}; write results elsewhere"
        )
    suffix = p.suffix.lower()
    if suffix not in OUT_TYPES:
        raise QueryError(
            f"--out {p}: unknown output type {suffix!r}: use .csv, .parquet, .json or .jsonl"
        )
    try:
        check_writable(p)
    except SdfError as exc:
        raise QueryError(f"--out {exc}") from None
    if p.exists() and not overwrite:
        raise QueryError(f"--out {p}: exists; pass --overwrite to replace it")
    folder = next(a for a in p.absolute().parents if a.exists())
    probe = folder / f".sdf-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise QueryError(f"--out {p}: cannot write in {folder}: {exc.strerror or exc}") from None
    probe.unlink()
    return p


def write_out(
    result: QueryResult | pl.DataFrame,
    path: str | Path,
    store: Store | None = None,
    overwrite: bool = False,
) -> int:
    """Write a result to CSV, Parquet, JSON or JSONL by the file's suffix, atomically, and
    return its rows. A ``QueryResult`` is written a record batch at a time (Parquet: a row
    group each), so a result larger than memory can be saved. ``check_out`` first."""
    p = check_out(path, store, overwrite)
    suffix = p.suffix.lower()
    batches: Iterable[Any] = (
        result.batches() if isinstance(result, QueryResult) else [result.to_arrow()]
    )
    rows = 0

    def counted() -> Iterator[Any]:
        nonlocal rows
        for batch in batches:
            rows += batch.num_rows
            yield batch

    with atomic_path(p) as tmp:
        if suffix == ".parquet":
            _write_parquet(counted(), tmp)
        else:
            fmt = {".csv": "csv", ".json": "json"}.get(suffix, "jsonl")
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                for chunk in text_chunks((_frame(b) for b in counted()), fmt):
                    fh.write(chunk)
    return rows


def _write_parquet(batches: Iterable[Any], path: Path) -> None:
    """Arrow batches (or tables) of one schema as one Parquet file, zstd, a row group each."""
    import pyarrow.parquet as pq

    writer = None
    try:
        for batch in batches:
            if writer is None:
                writer = pq.ParquetWriter(path, batch.schema, compression="zstd")
            writer.write(batch)
    finally:
        if writer is not None:
            writer.close()
