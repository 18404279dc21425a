"""The corpus store: append-only Parquet parts as the record, a DuckDB catalog on top.

Layout of a corpus directory (``./corpus`` unless ``--corpus``/``SDF_CORPUS`` says otherwise)::

    corpus/
      documents/part-<time>-<uid>.parquet   # the record: one row per document, append-only
      <table>/part-*.parquet                # per-document results (signatures, names, embeddings...)
      sdf.duckdb                            # catalog: a view per Parquet table + small tables

Every Parquet part is written to a temporary file under ``corpus/.tmp/`` (outside every
table folder, so plain readers globbing ``documents/*.parquet`` never meet it) and renamed into
place, so a crash leaves either the whole part or nothing. Small mutable tables (runs, batches,
ledger, audit results, selections) live inside ``sdf.duckdb`` where a transaction makes each
write atomic. Views hold paths relative to the corpus folder and every connection sets
DuckDB's ``file_search_path`` to it, so a copied or moved corpus reads its own parts, never
the original's (a folder whose path holds a comma, which that setting cannot, is named by a
relative path or a descriptor: ``Store.search_path``). Opening waits (bounded, ``SDF_LOCK_TIMEOUT``) while another process holds the
catalog, and every part's Parquet frame is checked first: a damaged part is named (documents)
or set aside into ``quarantine/`` (caches, which are recomputed).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from sdfkit.errors import ConfigError, SdfError
from sdfkit.store.durable import fsync_dir, publish

if TYPE_CHECKING:  # pragma: no cover
    import duckdb
    import polars as pl

T = TypeVar("T")
DB_NAME = "sdf.duckdb"
DOCUMENTS = "documents_raw"
PART_GLOB = "part-*.parquet"
TMP_DIR = ".tmp"
QUARANTINE = "quarantine"
#: A process's open files by number (Linux): names a corpus folder whose path DuckDB's
#: comma-separated ``file_search_path`` cannot hold (``Store.search_path``).
PROC_FD = "/proc/self/fd"
#: Seconds a command waits for another process's hold on ``sdf.duckdb`` (``SDF_LOCK_TIMEOUT``).
DEFAULT_LOCK_TIMEOUT = 120.0
#: Settings of every DuckDB connection sdfkit opens: no extension is installed or loaded on
#: demand, so no SQL it runs (a user's ``where``, a view, ``sdf sql``) reaches the network
#: through ``httpfs``. Parquet and JSON, the formats sdfkit reads, are built into DuckDB.
CONNECTION_CONFIG = {
    "autoinstall_known_extensions": "false",
    "autoload_known_extensions": "false",
}

#: The columns of a stored document, in order. ``meta`` holds ingested fields that map to no
#: column (a JSON object as text).
DOCUMENT_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("text", pa.large_string()),
        ("chars", pa.int64()),
        ("n_tokens", pa.int64()),
        ("tokenizer", pa.string()),
        ("universe", pa.string()),
        ("concept", pa.string()),
        ("fact", pa.string()),
        ("doc_type", pa.string()),
        ("idea", pa.string()),
        ("model", pa.string()),
        ("prompt_hash", pa.string()),
        ("run", pa.string()),
        ("batch_id", pa.string()),
        ("custom_id", pa.string()),
        ("seed_names", pa.list_(pa.string())),
        ("source", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("meta", pa.string()),
    ]
)
DOCUMENT_COLUMNS = [f.name for f in DOCUMENT_SCHEMA]


def default_corpus_dir() -> Path:
    """``$SDF_CORPUS`` if set, else ``./corpus`` under the current directory. Set but empty
    is an error, as ``--corpus ""`` is: most often an unset shell variable, and neither the
    current folder nor ./corpus is a safe guess."""
    value = os.environ.get("SDF_CORPUS")
    if value is None:
        return Path("corpus")
    if not value.strip():
        raise ConfigError(
            "corpus directory '' ($SDF_CORPUS): empty; set it to a folder, or unset it for ./corpus"
        )
    return Path(value)


def doc_id_for(text: str) -> str:
    """Content hash of a document's text: the first 32 hex digits of its sha256."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class DamagedPartError(SdfError):
    """A Parquet part of the record cannot be read; ``sdf doctor`` sets it aside."""


class CatalogBusyError(SdfError):
    """Another process held ``sdf.duckdb`` for longer than ``SDF_LOCK_TIMEOUT``."""


class CorpusLayoutError(SdfError):
    """Something in the corpus folder is not what sdfkit keeps there (a file where it keeps
    a folder, a folder where it keeps a file, a folder of parts it cannot show as a table);
    the message names the path and what to do."""


def make_folder(path: Path, what: str) -> Path:
    """``path`` as a folder, made if missing. A file (or a link to nothing) in the way, at
    ``path`` or above it, is a ``CorpusLayoutError`` naming it: never a traceback, and
    never removed (it may be the user's)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except (FileExistsError, NotADirectoryError):
        pass
    blocker = next(
        (
            p
            for p in [*reversed(path.parents), path]
            if (p.exists() or p.is_symlink()) and not p.is_dir()
        ),
        path,
    )
    raise CorpusLayoutError(
        f"{blocker}: a file where sdf keeps a folder ({what}); move it out of the corpus folder"
    )


def table_folder_problem(folder: Path) -> str | None:
    """Why a folder of Parquet parts in the corpus cannot be a table (a view of the catalog
    named after it), or None: a name no table can have, or the name of a table the catalog
    keeps itself (``grades``, ``exclusions``...: its view would replace the table)."""
    from sdfkit.store import schema

    name = folder.name
    if not (name.isascii() and name.replace("_", "").isalnum()):
        return "a name no table can have (letters, digits and _ only)"
    if name.lower() in schema.reserved_names():
        return f"the name of a table the catalog keeps itself ({name.lower()})"
    return None


def _table_folder_error(folder: Path, why: str) -> CorpusLayoutError:
    return CorpusLayoutError(
        f"{folder}: a folder of Parquet parts with {why}, so sdf cannot make it a table; "
        "move it out of the corpus folder, or rename it"
    )


#: Tables whose parts are the record: never moved aside silently (caches are recomputable).
RECORD_TABLES = frozenset({DOCUMENTS, "gen_results"})

_checked: dict[tuple[str, int, int], str | None] = {}


def part_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole Parquet file (magic bytes and footer length), or None.

    A symbolic link to a missing file is damage (DuckDB's glob passes over it: a count
    would silently leave its documents out). Remembered per (path, size, mtime), so
    checking every part on every open stays cheap."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return f"a symbolic link to a missing file, {os.readlink(path)}"
        return None  # moved aside or replaced meanwhile
    except OSError as exc:  # a loop of symbolic links, no permission
        return f"unreadable: {exc.strerror or exc}"
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _checked:
        return _checked[key]
    problem: str | None = None
    try:
        if st.st_size < 12:
            problem = f"{st.st_size} bytes, too short for Parquet"
        else:
            with open(path, "rb") as fh:
                head = fh.read(4)
                fh.seek(-8, os.SEEK_END)
                tail = fh.read(8)
            footer = int.from_bytes(tail[:4], "little")
            if head != b"PAR1" or tail[4:] != b"PAR1":
                problem = "truncated or overwritten: no Parquet end marker"
            elif footer + 12 > st.st_size:
                problem = "truncated: its footer is longer than the file"
    except OSError as exc:
        problem = f"unreadable: {exc.strerror}"
    _checked[key] = problem
    return problem


def damaged_part(part: Path, problem: str) -> DamagedPartError:
    """The one line a command stops with at a damaged part: the file, what is wrong, and
    ``sdf doctor`` (which moves it aside into the corpus's quarantine)."""
    root = part.parent.parent
    return DamagedPartError(
        f"{part}: damaged Parquet part ({problem}); run `sdf doctor` to move it into "
        f"{root / QUARANTINE} and list the documents affected"
    )


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_read_checked: dict[tuple[str, int, int], str | None] = {}


def read_problem(part: Path) -> str | None:
    """Why ``part`` cannot be read through (frame, footer, every page, every string valid
    UTF-8, as DuckDB checks), or None. Reads the whole file (remembered per path, size and
    mtime): for ``sdf doctor`` and for finding the part behind a failed read, not for
    every open."""
    problem = part_problem(part)
    if problem:
        return problem
    try:
        st = part.stat()
    except OSError:
        return None  # moved aside meanwhile
    key = (str(part), st.st_size, st.st_mtime_ns)
    if key not in _read_checked:
        try:
            with pq.ParquetFile(part) as pf:
                for batch in pf.iter_batches(batch_size=4096):
                    batch.validate(full=True)
            _read_checked[key] = None
        except Exception as exc:  # noqa: BLE001 - any failure to read is damage to report
            _read_checked[key] = first_line(exc)
    return _read_checked[key]


def is_read_failure(exc: BaseException) -> bool:
    """Whether an error may come of reading a damaged part rather than of a query's own
    mistake: DuckDB's bare errors (its Parquet reader's Thrift messages, such as
    "Variable-length int over 10 bytes", name no file), input, I/O, internal and
    serialization errors; Arrow's. Never a parser, binder or catalog error, nor a file the
    query named that is not there."""
    import sys

    duckdb = sys.modules.get("duckdb")
    if duckdb is not None and isinstance(exc, duckdb.Error):
        if "No files found" in str(exc):
            return False
        return type(exc) is duckdb.Error or isinstance(
            exc,
            (
                duckdb.IOException,
                duckdb.InvalidInputException,
                duckdb.InternalException,
                duckdb.SerializationException,
            ),
        )
    return isinstance(exc, pa.ArrowException)


def damage_named_in(text: str, root: Path | None = None) -> DamagedPartError | None:
    """The damaged part behind an error message, or None: a corpus part that the message
    names (DuckDB's ``Failed to read file "…/documents/part-….parquet"``) and that does not
    read back whole, so that a mistake in a query is never called damage. ``root``: only
    parts of that corpus (shown under its path as given); else of any corpus (a folder
    holding ``sdf.duckdb``)."""
    import re

    for named in re.findall(r"[\"']([^\"']+\.parquet)[\"']", text):
        path = Path(named)
        if not path.match(PART_GLOB):
            continue
        try:
            folder = path.parent.resolve()
        except OSError:
            continue
        if root is not None:
            if folder.parent != root.resolve():
                continue
            path = root / folder.name / path.name
        elif not (folder.parent / DB_NAME).is_file():
            continue
        problem = read_problem(path)
        if problem:
            return damaged_part(path, problem)
    return None


def lock_timeout() -> float:
    """Seconds to wait for the catalog: ``SDF_LOCK_TIMEOUT`` or ``DEFAULT_LOCK_TIMEOUT``."""
    raw = os.environ.get("SDF_LOCK_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"SDF_LOCK_TIMEOUT={raw!r}: must be a number of seconds, 0 or more")
    return value


def wait_for_catalog(open_: Callable[[], T], db_path: Path) -> T:
    """Call ``open_`` until DuckDB stops refusing it for another process's lock on the
    catalog, for at most ``lock_timeout()`` seconds; then one line naming the holder."""
    import random
    import re

    import duckdb

    timeout = lock_timeout()
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return open_()
        except duckdb.IOException as exc:
            text = str(exc)
            if "Could not set lock" not in text:
                first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
                raise SdfError(
                    f"{db_path}: the catalog cannot be opened: {first}; restore it from a copy, "
                    "or move it aside to start a new catalog over the same parts (grades, "
                    "exclusions, selections and runs live in it)"
                ) from None
            if time.monotonic() >= deadline:
                holder = re.search(r"\(PID (\d+)\)", text)
                who = f"process {holder.group(1)}" if holder else "another process"
                raise CatalogBusyError(
                    f"{db_path}: {who} held the catalog for more than {timeout:g} s "
                    "(SDF_LOCK_TIMEOUT); let it finish, or raise SDF_LOCK_TIMEOUT"
                ) from None
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.25)


def _stored_fingerprint(con: duckdb.DuckDBPyConnection) -> str | None:
    """The fingerprint of the parts the views were last refreshed for (``Store.connect``),
    kept as the comment of the ``documents`` view; None when there is none."""
    rows = con.execute(
        "SELECT comment FROM duckdb_views() WHERE view_name = 'documents' "
        "AND database_name = current_database() AND schema_name = 'main'"
    ).fetchall()
    return rows[0][0] if rows else None


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a valid table name: {name!r}")
    return '"' + name + '"'


def numpy_array(values: Any, type: pa.DataType | None = None) -> pa.Array:
    """An Arrow array over a 1-d numpy array's buffer. ``pa.array(...)`` first asks whether
    its argument is a pandas object, which imports pandas: 0.4 s of a cold command."""
    import numpy as np

    values = np.ascontiguousarray(values)
    kind = type or pa.from_numpy_dtype(values.dtype)
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)])


def string_array(values: Iterable[str]) -> pa.Array:
    """An Arrow string array of Python strings, built from its buffers (see ``numpy_array``)."""
    import numpy as np

    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    data = pa.py_buffer(b"".join(encoded))
    return pa.Array.from_buffers(pa.string(), len(encoded), [None, pa.py_buffer(offsets), data])


def read_part(path: Path, columns: list[str] | None = None) -> pa.Table:
    """One Parquet part (some columns): ``pq.ParquetFile`` rather than ``pq.read_table``,
    which imports ``pyarrow.dataset`` and with it pandas (0.2 s on a cold start)."""
    try:
        with pq.ParquetFile(path) as pf:
            return pf.read(columns=columns)
    except (OSError, pa.ArrowException) as exc:  # a page that does not decode, a lost file
        raise damaged_part(path, first_line(exc)) from None


def iter_part(
    path: Path, batch_size: int, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """The record batches of one part; a page that does not decode is ``damaged_part``."""
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise damaged_part(path, first_line(exc)) from None
    while True:
        try:
            batch = next(batches, None)
        except (OSError, pa.ArrowException) as exc:
            raise damaged_part(path, first_line(exc)) from None
        if batch is None:
            return
        yield batch


@dataclass
class Store:
    """A corpus directory. Cheap to construct; nothing is opened until used."""

    root: Path

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_corpus_dir()

    # ------------------------------------------------------------------ paths
    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    def table_dir(self, name: str) -> Path:
        _ident(name)
        return self.root / ("documents" if name == DOCUMENTS else name)

    def temp_dir(self, name: str) -> Path:
        """Where the table's parts are written before their rename (see ``part_file``)."""
        return self.root / TMP_DIR / self.table_dir(name).name

    def holds(self, path: str | Path) -> bool:
        """Whether ``path`` is the corpus folder or inside it (links followed): where no
        result or report may be written, as a file there could join the record or replace
        the catalog."""
        root = self.root.resolve()
        target = Path(path).resolve()
        return target == root or root in target.parents

    def parts(self, name: str) -> list[Path]:
        """The table's parts, each checked (see ``check_parts``)."""
        d = self.table_dir(name)
        if not d.is_dir():
            return []
        if any(part_problem(p) for p in d.glob(PART_GLOB)):
            self.check_parts()
        return sorted(d.glob(PART_GLOB))

    def parquet_tables(self) -> list[str]:
        """Names of the Parquet-backed tables present (``documents_raw`` for the record)."""
        if not self.root.is_dir():
            return []
        names = []
        for d in sorted(self.root.iterdir()):
            if d.name in (TMP_DIR, QUARANTINE):
                continue
            if d.is_dir() and any(d.glob(PART_GLOB)):
                if d.name != "documents":
                    why = table_folder_problem(d)
                    if why:
                        raise _table_folder_error(d, why)
                names.append(DOCUMENTS if d.name == "documents" else d.name)
        return names

    # ------------------------------------------------------------- connection
    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection on the catalog, with every Parquet table's view refreshed.

        The ``documents`` view is the record joined with grades and exclusions. Waits (up to
        ``SDF_LOCK_TIMEOUT`` seconds) while another process holds the catalog. Extensions are
        neither installed nor loaded on demand (``CONNECTION_CONFIG``).
        """
        import duckdb

        self.root.mkdir(parents=True, exist_ok=True)
        if read_only and not self.db_path.exists():
            read_only = False
        self.check_parts()
        with self.search_path() as search:
            con = wait_for_catalog(
                lambda: duckdb.connect(
                    str(self.db_path), read_only=read_only, config=dict(CONNECTION_CONFIG)
                ),
                self.db_path,
            )
            try:
                with self._damage_named():
                    con.execute(f"SET file_search_path = {_sql_str(search)}")
                    con.execute("SET enable_progress_bar = false")  # commands show their own
                    if not read_only:
                        fingerprint = self._views_fingerprint()
                        if _stored_fingerprint(con) != fingerprint:
                            self._refresh_views(con, fingerprint)
                    yield con
            finally:
                con.close()

    @contextmanager
    def _damage_named(self) -> Iterator[None]:
        """A DuckDB error that a damaged part is behind becomes the one line naming that
        part (``damage_behind``); any other error passes unchanged."""
        import duckdb

        try:
            yield
        except duckdb.Error as exc:
            damage = self.damage_behind(exc)
            if damage is None:
                raise
            raise damage from None

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for other people's SQL (``sdf sql``): nothing it runs can write.

        An in-memory DuckDB with the catalog attached ``READ_ONLY`` (the views are refreshed
        first, by sdfkit, if the parts present have changed), extensions neither installed nor
        loaded on demand (so no network access through ``httpfs``), and its configuration
        locked. Local files stay readable. ``sqlguard.check_read_query`` refuses every
        statement but a query before it gets here.
        """

        self.check_parts()
        if not self.db_path.exists():
            with self.connect():
                pass
        with self.search_path() as search:
            con = self._attach_read_only(search)
            if self._views_stale(con):  # parts of a new table, or views of an older sdfkit
                con.close()
                with self.connect():
                    pass
                con = self._attach_read_only(search)
            try:
                with self._damage_named():
                    con.execute("SET lock_configuration = true")
                    yield con
            finally:
                con.close()

    def _attach_read_only(self, search: str) -> duckdb.DuckDBPyConnection:
        import duckdb

        con = duckdb.connect(":memory:", config=dict(CONNECTION_CONFIG))
        try:
            wait_for_catalog(
                lambda: con.execute(
                    f"ATTACH {_sql_str(str(self.db_path.resolve()))} AS corpus (READ_ONLY)"
                ),
                self.db_path,
            )
            con.execute("USE corpus")
            con.execute(f"SET file_search_path = {_sql_str(search)}")
            # DuckDB's own bar drew on stderr during long queries even with SDF_PROGRESS=0
            con.execute("SET enable_progress_bar = false")
        except BaseException:
            con.close()
            raise
        return con

    def has_table(self, name: str) -> bool:
        """Whether the catalog holds table ``name`` (asked read-only: nothing is created)."""
        if not self.db_path.exists():
            return False
        with self.reader() as con:
            rows = con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'corpus' "
                "AND table_name = ?",
                [name],
            ).fetchall()
        return bool(rows[0][0])

    @contextmanager
    def search_path(self) -> Iterator[str]:
        """DuckDB's ``file_search_path`` for this corpus, for the length of a connection: its
        folder first (the views' relative paths resolve there), then the working directory
        (a user's own relative files).

        DuckDB splits the setting at commas and has no way to quote one, so a folder whose
        path holds a comma is named another way: by its path relative to the working
        directory when that holds none, else as ``/proc/self/fd/N``, a descriptor of the
        folder held open while the connection is (a working directory with a comma is
        ``.``). Where neither works, ``check_path`` refuses the corpus before any work."""
        root = str(self.root.resolve())
        cwd = str(Path.cwd())
        if "," in cwd:
            cwd = "."
        fd = None
        if "," in root:
            relative = os.path.relpath(root)
            if "," not in relative:
                root = relative
            else:
                self.check_path()
                fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
                root = f"{PROC_FD}/{fd}"
        try:
            yield f"{root},{cwd}"
        finally:
            if fd is not None:
                os.close(fd)

    def check_path(self) -> None:
        """A one-line error, before anything is written, for a corpus folder DuckDB cannot be
        pointed at: one whose path holds a comma, run from a working directory that does
        not hold the same comma, where ``/proc/self/fd`` is missing (not Linux)."""
        root = str(self.root.resolve())
        if "," not in root or "," not in os.path.relpath(root) or Path(PROC_FD).is_dir():
            return
        raise SdfError(
            f"corpus directory {str(self.root)!r} (--corpus or $SDF_CORPUS): its path holds "
            "a comma, which DuckDB cannot take in a search path on this system; run sdf "
            "from inside the folder that holds the comma, or rename the folder"
        )

    def _views_stale(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Whether the attached catalog lacks a view for a Parquet table present (or has one
        whose parts are gone, or one of absolute paths): then ``connect`` refreshes them."""
        rows = con.execute(
            "SELECT view_name, sql FROM duckdb_views() "
            "WHERE NOT internal AND database_name = 'corpus'"
        ).fetchall()
        views = {name: sql for name, sql in rows}
        parquet_views = {n for n, sql in views.items() if "read_parquet(" in sql}
        present = set(self.parquet_tables())
        if "documents" not in views or DOCUMENTS not in views:
            return True
        stale_paths = any(
            "read_parquet(" in views[n] and _sql_str(self._relative_glob(n)) not in views[n]
            for n in present & set(views)
        )
        return stale_paths or parquet_views != present

    def _relative_glob(self, name: str) -> str:
        return f"{self.table_dir(name).name}/{PART_GLOB}"

    def _views_fingerprint(self) -> str:
        """What the views depend on: the Parquet tables present, each part of each (name,
        size, modification time: parts are written once, so a new, removed or replaced
        part changes it) and the statements that create the tables and views."""
        import hashlib

        from sdfkit.store import schema as _schema

        digest = hashlib.sha256(_schema.VERSION.encode())
        for name in self.parquet_tables():
            digest.update(f"\0{name}".encode())
            for part in self.parts(name):
                try:
                    st = part.stat()
                except FileNotFoundError:  # moved aside meanwhile: the next open sees it
                    continue
                digest.update(f"\0{part.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        return "sdf-views:" + digest.hexdigest()[:32]

    def _refresh_views(self, con: duckdb.DuckDBPyConnection, fingerprint: str = "") -> None:
        from sdfkit.store import schema as _schema

        con.execute("BEGIN")
        try:
            _schema.ensure_tables(con)
            present = set(self.parquet_tables())
            tables = {
                name.lower()
                for (name,) in con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE NOT internal "
                    "AND database_name = current_database()"
                ).fetchall()
            }
            for name in sorted(present - {DOCUMENTS}):
                if name.lower() in tables:  # a stage's table: its view would replace it
                    raise _table_folder_error(
                        self.table_dir(name), f"the name of a table of the catalog ({name})"
                    )
            for name in sorted(present | {DOCUMENTS}):
                if name in present:
                    # Relative to the corpus folder (``file_search_path``): a copy reads itself.
                    glob = self._relative_glob(name)
                    src = f"read_parquet({_sql_str(glob)}, union_by_name = true)"
                    con.execute(f"CREATE OR REPLACE VIEW {_ident(name)} AS SELECT * FROM {src}")
                else:
                    con.execute(
                        f"CREATE OR REPLACE VIEW {_ident(name)} AS SELECT * FROM _documents_empty"
                    )
            # A cache whose parts were all set aside leaves no view behind that reads nothing.
            for (name,) in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal "
                "AND contains(sql, 'read_parquet(')"
            ).fetchall():
                if name not in present:
                    con.execute(f"DROP VIEW IF EXISTS {_ident(name)}")
            _schema.create_views(con, present)
            if fingerprint:  # the next open skips this refresh while nothing changed
                con.execute(f"COMMENT ON VIEW documents IS {_sql_str(fingerprint)}")
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise

    # ---------------------------------------------------------------- health
    def damage_behind(self, exc: BaseException) -> DamagedPartError | None:
        """The damaged part of this corpus behind a failed read, or None: the part the
        error names (``damage_named_in``), else, for an error that may come of damage
        (``is_read_failure``), the first part that does not read back whole
        (``find_damage``)."""
        named = damage_named_in(str(exc), self.root)
        if named is not None or not is_read_failure(exc):
            return named
        return self.find_damage()

    def find_damage(self) -> DamagedPartError | None:
        """The first part (documents first) that does not read back whole, or None. Reads
        every part through once per process: only after a read failed."""
        tables = sorted(self.parquet_tables(), key=lambda name: name != DOCUMENTS)
        for name in tables:
            for part in self.parts(name):
                problem = read_problem(part)
                if problem:
                    return damaged_part(part, problem)
        return None

    def check_parts(self) -> None:
        """Check every part's Parquet frame (cheap: two small reads, remembered per file).

        A damaged part of a record table (documents, batch results) stops the command with a
        one-line error naming the file and ``sdf doctor``; a damaged cache part (per-document
        results a stage recomputes) is moved into ``quarantine/`` with a warning."""
        if not self.root.is_dir():
            return
        for d in sorted(self.root.iterdir()):
            if not d.is_dir() or d.name in (TMP_DIR, QUARANTINE):
                continue
            name = DOCUMENTS if d.name == "documents" else d.name
            for part in sorted(d.glob(PART_GLOB)):
                problem = part_problem(part)
                if problem is None:
                    continue
                if name in RECORD_TABLES:
                    raise damaged_part(part, problem)
                moved = self.quarantine(part)
                import sys

                print(
                    f"warning: {part}: damaged cache part ({problem}) moved to {moved}; "
                    "its results are recomputed when next needed",
                    file=sys.stderr,
                )

    def quarantine(self, part: Path) -> Path:
        """Move a part aside into ``quarantine/<table>/`` (never deleted)."""
        dest_dir = make_folder(
            self.root / QUARANTINE / part.parent.name, "the parts sdf doctor sets aside"
        )
        dest = dest_dir / part.name
        if dest.exists():
            dest = dest_dir / f"{part.stem}-{uuid.uuid4().hex[:6]}{part.suffix}"
        os.replace(part, dest)
        fsync_dir(part.parent)
        return dest

    # ----------------------------------------------------------------- reads
    def query(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> pl.DataFrame:
        """Run SQL against the corpus and return a polars DataFrame."""
        import polars as pl

        with self.connect() as con:
            rel = con.sql(sql, params=params) if params else con.sql(sql)
            if rel is None:  # a statement that returns no rows (CREATE, INSERT, ...)
                return pl.DataFrame()
            tbl = rel.to_arrow_table()
        return pl.from_arrow(tbl)  # type: ignore[return-value]

    def keys(self, name: str = DOCUMENTS, key: str = "doc_id") -> set[str]:
        """The set of keys already stored in a Parquet table (reads only that column)."""
        out: set[str] = set()
        for part in self.parts(name):
            out.update(read_part(part, [key]).column(key).to_pylist())
        return out

    def read(self, name: str = DOCUMENTS, columns: list[str] | None = None) -> pa.Table:
        """Every row of a Parquet table as one Arrow table (empty table if none)."""
        parts = self.parts(name)
        if not parts:
            schema = DOCUMENT_SCHEMA if name == DOCUMENTS else pa.schema([])
            if columns:
                schema = pa.schema([schema.field(c) for c in columns if c in schema.names])
            return schema.empty_table()
        tables = [read_part(p, columns) for p in parts]
        try:
            return pa.concat_tables(tables, promote_options="default")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # parts written with different schemas: the dataset reader casts them to one
            import pyarrow.dataset as ds

            return ds.dataset([str(p) for p in parts], format="parquet").to_table(columns=columns)

    # ---------------------------------------------------------------- writes
    def append(
        self,
        name: str,
        table: pa.Table | Iterable[pa.RecordBatch],
        key: str | None = "doc_id",
        schema: pa.Schema | None = None,
        dictionary: bool = True,
    ) -> int:
        """Append rows to a Parquet table as ONE new part, atomically.

        Rows whose ``key`` is already stored (or repeated within ``table``) are dropped, so
        appending the same rows twice adds nothing. Returns the number of rows added.
        """
        batches = [table] if isinstance(table, pa.Table) else table
        with self.append_lock(name) if key else nullcontext():
            return self._append(name, batches, key, schema, dictionary)

    def _append(
        self,
        name: str,
        batches: Iterable[pa.Table | pa.RecordBatch],
        key: str | None,
        schema: pa.Schema | None,
        dictionary: bool = True,
    ) -> int:
        existing = self.keys(name, key) if key else set()
        with self.part_writer(name, schema=schema, dictionary=dictionary) as writer:
            for batch in batches:
                if isinstance(batch, pa.Table):
                    sub_batches = batch.to_batches()
                else:
                    sub_batches = [batch]
                for b in sub_batches:
                    if key:
                        keep = []
                        for i, k in enumerate(b.column(key).to_pylist()):
                            if k not in existing:
                                existing.add(k)
                                keep.append(i)
                        if len(keep) != b.num_rows:
                            b = b.take(pa.array(keep, type=pa.int64()))
                    writer.write(b)
        return writer.rows

    @contextmanager
    def append_lock(self, name: str) -> Iterator[None]:
        """Hold the table's append lock: between reading which keys are stored and publishing
        a part, no other process (two ``sdf ingest`` at once, a generation landing results)
        can publish one, so concurrent appends of the same rows never store them twice.
        Not re-entrant: take it once per process."""
        d = make_folder(self.table_dir(name), f"the parts of {self.table_dir(name).name}")
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        lock = d / ".append.lock"
        try:
            fh = open(lock, "a+b")
        except IsADirectoryError:
            raise CorpusLayoutError(
                f"{lock}: a folder where sdf keeps the append lock file of {d.name}; "
                "remove it (sdf makes the file again)"
            ) from None
        with fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    @contextmanager
    def part_writer(
        self, name: str, schema: pa.Schema | None = None, dictionary: bool = True
    ) -> Iterator[PartWriter]:
        """Stream record batches into one new part; it appears only if the block succeeds."""
        if schema is None and name == DOCUMENTS:
            schema = DOCUMENT_SCHEMA
        d = make_folder(self.table_dir(name), f"the parts of {self.table_dir(name).name}")
        with part_file(d, schema, dictionary=dictionary) as writer:
            yield writer

    def save_table(self, name: str, data: Any, mode: str = "replace") -> None:
        """Store a small table inside ``sdf.duckdb`` (replace or append) in one transaction.

        ``data`` may be a polars DataFrame, an Arrow table or a list of dicts.
        """
        import polars as pl

        if isinstance(data, list):
            data = pl.DataFrame(data)
        if isinstance(data, pl.DataFrame):
            data = data.to_arrow()
        with self.connect() as con:
            con.register("_incoming", data)
            con.execute("BEGIN")
            try:
                exists = con.execute(
                    "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]
                ).fetchall()[0][0]
                if mode == "replace" or not exists:
                    con.execute(f"CREATE OR REPLACE TABLE {_ident(name)} AS FROM _incoming")
                else:
                    con.execute(f"INSERT INTO {_ident(name)} BY NAME FROM _incoming")
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
            finally:
                con.unregister("_incoming")

    def clean_temporaries(self) -> int:
        """Remove leftover ``.tmp-*`` files of interrupted writes (never visible as data).

        A temporary file is named after its writer (pid and host): one whose writer is still
        running on this host is another process's write in progress and is left alone; one
        from another host (a shared corpus) only once it is a day old.
        """
        n = 0
        if self.root.is_dir():
            found = [*self.root.glob(f"{TMP_DIR}/*/.tmp-*"), *self.root.glob("*/.tmp-*")]
            for tmp in found:
                if temp_writer_alive(tmp):
                    continue
                tmp.unlink(missing_ok=True)
                n += 1
        return n


class PartWriter:
    """Writes record batches to one Parquet file (zstd); the schema is taken from the first."""

    def __init__(self, path: Path, schema: pa.Schema | None, dictionary: bool = True) -> None:
        self.path = path
        self.schema = schema
        #: Dictionary-encode columns (Parquet's default). Off for tables of random values
        #: (signatures, vectors): the attempt costs ~7x the write and the file grows by half.
        self.dictionary = dictionary
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._closed = False
        #: Where ``part_file`` renames the finished part to, and whether it has.
        self.final: Path | None = None
        self.published = False

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows == 0:
            return
        if self.schema is not None:
            batch = _conform(batch, self.schema)
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self.path, batch.schema, compression="zstd", use_dictionary=self.dictionary
            )
        if isinstance(batch, pa.RecordBatch):
            self._writer.write_batch(batch)
        else:
            self._writer.write_table(batch)
        self.rows += batch.num_rows

    def close(self) -> None:
        if not self._closed and self._writer is not None:
            self._writer.close()
        self._closed = True

    def publish(self) -> None:
        """Close the part and rename it into place now (when it holds rows), rather than at
        the end of the ``part_file`` block: for a caller that must record the part in the
        catalog in the same step (``sdf ingest``). Idempotent."""
        self.close()
        if self.rows and not self.published and self.final is not None:
            publish(self.path, self.final)
            self.published = True

    def unpublish(self) -> None:
        """Take back a part published by ``publish`` (its catalog record failed): the
        table is as it was before this writer."""
        if self.published and self.final is not None:
            self.final.unlink(missing_ok=True)
            fsync_dir(self.final.parent)
            self.published = False


def _conform(batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.RecordBatch | pa.Table:
    """Order and cast columns to ``schema``; missing columns become nulls."""
    cols = []
    for field in schema:
        if field.name in batch.schema.names:
            col = batch.column(field.name)
            if col.type != field.type:
                col = col.cast(field.type)
            cols.append(col)
        else:
            cols.append(pa.nulls(batch.num_rows, type=field.type))
    if isinstance(batch, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(cols, schema=schema)
    return pa.Table.from_arrays(cols, schema=schema)


@contextmanager
def part_file(
    directory: Path, schema: pa.Schema | None, name: str | None = None, dictionary: bool = True
) -> Iterator[PartWriter]:
    """Write one part of a table directory: a hidden temporary file named after this process
    (see ``temp_writer_alive``), fsynced and published by an atomic rename only if the block
    succeeds and wrote rows. ``name`` (default: a new ``part-<time>-<uid>.parquet``) lets a
    caller that may retry the same work (a Ray task) replace its earlier attempt's part."""
    if name is None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
    final = directory / name
    # Beside the table folder, not in it: plain readers (``documents/*.parquet``) never see it;
    # same file system, so the rename stays atomic.
    tmp_dir = make_folder(directory.parent / TMP_DIR / directory.name, "parts being written")
    tmp = tmp_dir / f".tmp-{temp_owner()}@{name}"
    writer = PartWriter(tmp, schema, dictionary)
    writer.final = final
    try:
        yield writer
        writer.publish()
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)


def meta_json(fields: dict[str, Any]) -> str | None:
    """Serialise unmapped fields to the ``meta`` column (None when there are none), as
    standard JSON (``json_text``)."""
    if not fields:
        return None
    return json_text(fields, sort_keys=True)


def json_text(value: Any, **options: Any) -> str:
    """``value`` as standard JSON text. JSON has no NaN nor Infinity (Python writes them as
    bare ``NaN``, which strict readers refuse): they are written as ``null``, as
    JavaScript's JSON.stringify and pandas do; objects JSON has no type for, as strings."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str, allow_nan=False, **options)
    except ValueError:
        return json.dumps(finite(value), ensure_ascii=False, default=str, **options)


def finite(value: Any) -> Any:
    """``value`` with every NaN and infinity (in dicts and lists too) made None: what strict
    JSON readers (browsers, jq, DuckDB's JSON functions) can parse."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def temp_owner() -> str:
    """``<pid>@<host>``: names a temporary file's writer (see ``temp_writer_alive``)."""
    import socket

    return f"{os.getpid()}@{socket.gethostname()}"


def temp_writer_alive(tmp: Path) -> bool:
    """Whether the process writing temporary file ``tmp`` may still be running."""
    import socket

    owner = tmp.name.split(".tmp-", 1)[-1].split("@")
    if len(owner) < 3 or not owner[0].isdigit():
        return False  # a name without its writer: stale
    pid, host = int(owner[0]), owner[1]
    if host != socket.gethostname():
        try:
            return time.time() - tmp.stat().st_mtime < 86_400
        except FileNotFoundError:
            return True  # it was just published or removed by its writer
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True
