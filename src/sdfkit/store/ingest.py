"""Ingest of existing corpora (JSONL and Parquet) into the store, with a column mapping.

Every row is validated (UTF-8, JSON, a non-empty text, a size bound); a bad row stops the
ingest with an error naming the file and line, and nothing is stored, unless the caller asks
for counted skips (``skip_bad=True``). Documents already stored (same content hash) are not
added again, so re-running an ingest adds nothing.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from sdfkit.errors import SdfError
from sdfkit.llm.tokens import canonical_name, get_tokenizer
from sdfkit.store.catalog import (
    DOCUMENT_COLUMNS,
    DOCUMENT_SCHEMA,
    DOCUMENTS,
    Store,
    doc_id_for,
    json_text,
    meta_json,
    read_part,
)
from sdfkit.store.duplicates import arrival, stored_provenance
from sdfkit.store.duplicates import record as record_duplicates
from sdfkit.store.records import utc_now

#: Store column -> input fields tried in order when no explicit mapping is given.
DEFAULT_ALIASES: dict[str, list[str]] = {
    "text": ["text", "content", "document", "completion"],
    "universe": ["universe", "universe_context_id", "universe_id"],
    "concept": ["concept"],
    "fact": ["fact", "key_fact"],
    "doc_type": ["doc_type", "document_type", "type"],
    "idea": ["idea", "doc_idea", "document_idea"],
    "model": ["model"],
    "prompt_hash": ["prompt_hash"],
    "run": ["run", "run_id"],
    "batch_id": ["batch_id"],
    "custom_id": ["custom_id"],
    "seed_names": ["seed_names"],
    "created_at": ["created_at"],
}
MAPPABLE = [c for c in DOCUMENT_COLUMNS if c not in {"doc_id", "chars", "n_tokens", "tokenizer"}]
DEFAULT_MAX_BYTES = 1_000_000
CHUNK_ROWS = 2048


class IngestError(SdfError, ValueError):
    """Bad input; ``str()`` names the file and line. Nothing was stored."""


@dataclass
class IngestResult:
    files: list[str]
    rows_read: int = 0
    added: int = 0
    already_present: int = 0  # not added: the next three together
    #: Exact duplicates (recorded in the ``duplicates`` table): the same text earlier in
    #: this input, or already stored from another source; and re-reads of rows this same
    #: source stored before (re-ingesting a file), which are not duplicates.
    duplicates_within_input: int = 0
    already_stored: int = 0
    reingested: int = 0
    skipped: int = 0
    skip_reasons: Counter[str] = field(default_factory=Counter)
    skip_examples: list[str] = field(default_factory=list)
    tokens_added: int = 0
    tokenizer: str = ""
    seconds: float = 0.0
    #: Things stored as asked but probably not as meant (printed apart from the summary).
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        s = (
            f"read {self.rows_read} rows from {len(self.files)} file(s): added {self.added} "
            f"documents ({self.tokens_added:,} tokens, {self.tokenizer}), "
            f"{self.duplicates_within_input} duplicates within this input, "
            f"{self.already_stored} already stored"
        )
        if self.reingested:
            s += f", {self.reingested} re-read from the same source (stored by an earlier ingest)"
        if self.skipped:
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.skip_reasons.items()))
            s += f", skipped {self.skipped} bad rows ({reasons})"
        return s + f" in {self.seconds:.1f}s"


def parse_assignments(items: list[str] | None, what: str) -> dict[str, str]:
    """Parse ``COLUMN=VALUE`` options (``--map``/``--set``)."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise IngestError(f"{what} {item!r}: expected COLUMN=VALUE")
        k, v = item.split("=", 1)
        k = k.strip()
        if k not in MAPPABLE:
            raise IngestError(
                f"{what} {item!r}: {k!r} is not a document column; one of: " + ", ".join(MAPPABLE)
            )
        out[k] = v.strip()
    return out


class _Mapper:
    """Turns one input record into store columns plus ``meta``."""

    def __init__(self, mapping: dict[str, str], constants: dict[str, str]):
        self.mapping = mapping
        self.constants = constants
        self._resolved: dict[frozenset[str], dict[str, str]] = {}

    def resolve(self, keys: frozenset[str]) -> dict[str, str]:
        got = self._resolved.get(keys)
        if got is None:
            got = {}
            for col in MAPPABLE:
                if col in self.mapping:
                    if self.mapping[col] in keys:
                        got[col] = self.mapping[col]
                    continue
                for alias in DEFAULT_ALIASES.get(col, [col]):
                    if alias in keys:
                        got[col] = alias
                        break
            self._resolved[keys] = got
        return got

    def text_field(self) -> str:
        return self.mapping.get("text", "text")


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any, int] | _RowError]:
    """Yields (line number, parsed object, bytes) per non-blank line, or a ``_RowError``."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield _RowError(lineno, "invalid_utf8", f"not valid UTF-8 (byte {exc.start})")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield _RowError(lineno, "malformed_json", f"malformed JSON: {exc.msg}")
                continue
            except RecursionError:  # Python's parser recurses once per level
                yield _RowError(lineno, "too_deep", TOO_DEEP)
                continue
            except ValueError as exc:  # an integer past Python's 4,300 digits
                first = str(exc).split(";")[0]
                yield _RowError(lineno, "number_too_long", f"a number too long to read: {first}")
                continue
            yield lineno, obj, len(raw)


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any, int] | _RowError]:
    """Rows of a Parquet file, a row group at a time: a row group whose pages do not
    decode is one ``_RowError`` for the rows it held that were not read."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise IngestError(f"{path}: not a readable Parquet file ({exc})") from None
    row = 0
    for group in range(pf.num_row_groups):
        end = row + pf.metadata.row_group(group).num_rows
        try:
            for batch in pf.iter_batches(batch_size=CHUNK_ROWS, row_groups=[group]):
                for obj in batch.to_pylist():
                    row += 1
                    yield row, obj, 0
        except (OSError, pa.ArrowException) as exc:
            text = str(exc).strip().splitlines()
            yield _RowError(
                row + 1,
                "unreadable_parquet",
                f"rows {row + 1:,}-{end:,} (row group {group + 1}) cannot be read: "
                f"{text[0] if text else type(exc).__name__}",
                rows=end - row,
            )
            row = end


TOO_DEEP = "JSON nested too deeply to read (more levels than Python's recursion limit)"


class _RowError(Exception):
    """A bad row (or ``rows`` rows: a Parquet row group that cannot be read)."""

    def __init__(self, line: int, reason: str, message: str, rows: int = 1):
        super().__init__(message)
        self.line, self.reason, self.message, self.rows = line, reason, message, rows


def _records(path: Path) -> Iterator[tuple[int, Any, int] | _RowError]:
    """Rows of one file; a bad row is yielded as a ``_RowError`` so the caller decides."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _iter_parquet(path)
    if suffix not in {".jsonl", ".json", ".ndjson"}:
        raise IngestError(
            f"{path}: unsupported file type {suffix or '(none)'!r}: use .jsonl or .parquet"
        )
    return _iter_jsonl(path)


def ingest_files(
    paths: list[str | Path],
    store: Store | None = None,
    mapping: dict[str, str] | None = None,
    constants: dict[str, str] | None = None,
    tokenizer: str | None = None,
    skip_bad: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: Callable[[int], None] | None = None,
) -> IngestResult:
    """Validate, hash, token-count and store the documents of JSONL/Parquet files.

    All files go into one new Parquet part: either every new document lands or none does.
    ``mapping`` maps store columns to input fields (``{"text": "content"}``); ``constants``
    sets a column for every row (``{"concept": "eu_trycatch"}``). Unmapped input fields are
    kept in the ``meta`` JSON column.
    """
    store = store or Store()
    mapping = dict(mapping or {})
    constants = dict(constants or {})
    tok = get_tokenizer(tokenizer)
    t0 = time.perf_counter()
    result = IngestResult(files=[str(p) for p in paths], tokenizer=tok.name)
    files = [Path(p) for p in paths]
    for f in files:
        if f.is_dir():
            raise IngestError(
                f"{f}: is a directory; give the JSONL/Parquet files in it (e.g. {f}/*.jsonl)"
            )
        if not f.is_file():
            raise IngestError(f"{f}: no such file")
    if max_bytes <= 0:
        raise IngestError(f"--max-bytes {max_bytes}: must be a positive number of bytes")
    store.clean_temporaries()
    mapper = _Mapper(mapping, constants)
    now = utc_now()

    def bad(path: Path, line: int, reason: str, message: str, rows: int = 1) -> None:
        where = f"{path}:{line}" if path.suffix.lower() != ".parquet" else f"{path}: row {line}"
        if not skip_bad:
            raise IngestError(f"{where}: {message}")
        result.skipped += rows
        result.skip_reasons[reason] += rows
        if len(result.skip_examples) < 20:
            result.skip_examples.append(f"{where}: {message}")

    no_concept = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal no_concept
        for path in files:
            source = f"ingest:{path.name}"
            before = result.rows_read
            for item in _records(path):
                if isinstance(item, _RowError):
                    result.rows_read += item.rows
                    bad(path, item.line, item.reason, item.message, item.rows)
                    continue
                line, obj, nbytes = item
                result.rows_read += 1
                if progress:
                    progress(1)
                if not isinstance(obj, dict):
                    bad(path, line, "not_object", "expected a JSON object per line")
                    continue
                cols = mapper.resolve(frozenset(obj))
                if "text" not in cols:
                    wanted = mapping.get("text") or " or ".join(DEFAULT_ALIASES["text"])
                    raise IngestError(
                        f"{path}:{line}: no text column: the row has no field {wanted!r} "
                        f"(fields: {', '.join(sorted(obj)) or 'none'}); "
                        "map one with --map text=FIELD"
                    )
                text = obj[cols["text"]]
                if not isinstance(text, str):
                    bad(path, line, "text_not_string", f"field {cols['text']!r} is not a string")
                    continue
                if not text.strip():
                    bad(path, line, "empty_text", f"field {cols['text']!r} is empty")
                    continue
                size = nbytes or len(text.encode("utf-8", "surrogatepass"))
                if size > max_bytes:
                    bad(
                        path,
                        line,
                        "too_large",
                        f"row of {size:,} bytes exceeds --max-bytes {max_bytes:,} (raise "
                        "--max-bytes to keep it, or --skip-bad to skip such rows)",
                    )
                    continue
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    bad(path, line, "invalid_utf8", "text holds unpaired surrogates")
                    continue
                rec: dict[str, Any] = {}
                used = set()
                for col, fld in cols.items():
                    used.add(fld)
                    rec[col] = obj[fld]
                rec.update(constants)
                rec["text"] = text
                try:
                    rec["meta"] = meta_json({k: v for k, v in obj.items() if k not in used})
                    rec.setdefault("source", source)
                    rec = _normalise(rec, now, path, line)
                except RecursionError:  # deep, yet read: written back from a deeper stack
                    bad(path, line, "too_deep", TOO_DEEP)
                    continue
                if rec.get("concept") is None:
                    no_concept += 1
                rec["_line"] = line
                yield rec
            if result.rows_read == before:
                if not skip_bad:
                    raise IngestError(
                        f"{path}: empty: no rows to ingest (--skip-bad passes over empty files)"
                    )
                result.warnings.append(f"{path}: empty file, nothing read from it")

    # Under the append lock from reading the stored ids to publishing the part: two ingests
    # of the same file at once store each document once.
    with store.append_lock(DOCUMENTS), store.part_writer(DOCUMENTS) as writer:
        existing, stored_rows = _stored_ids(store)
        if stored_rows > len(existing):
            result.warnings.append(
                f"{stored_rows - len(existing):,} stored documents are second copies (the "
                f"same doc_id in two parts of {store.table_dir(DOCUMENTS)}, as when a part "
                "set aside is put back after its documents were ingested again): run "
                "`sdf doctor` to set them aside"
            )
        stored_before = set(existing)
        seen_here: set[str] = set()
        dups: list[dict[str, Any]] = []
        stored_arrivals: list[dict[str, Any]] = []
        chunk: list[dict[str, Any]] = []
        for rec in rows():
            line = rec.pop("_line", None)
            did = doc_id_for(rec["text"])
            if did in seen_here or did in existing:
                result.already_present += 1
                row = arrival({**rec, "doc_id": did}, "within_input", line)
                if did in seen_here and did not in stored_before:
                    dups.append(row)
                else:
                    row["kind"] = "already_stored"
                    stored_arrivals.append(row)
                seen_here.add(did)
                continue
            seen_here.add(did)
            existing.add(did)
            rec["doc_id"] = did
            chunk.append(rec)
            if len(chunk) >= CHUNK_ROWS:
                result.tokens_added += _flush(chunk, writer, tok)
                chunk = []
        if chunk:
            result.tokens_added += _flush(chunk, writer, tok)
        result.added = writer.rows
        # Already stored texts: a duplicate unless this same source stored them (a re-read).
        # Read from the parts stored before: the new part is not published yet.
        prov = stored_provenance(store, [r["doc_id"] for r in stored_arrivals])
        for row in stored_arrivals:
            if prov.get(row["doc_id"], (None, None))[0] == row["source"]:
                result.reingested += 1
            else:
                dups.append(row)
                result.already_stored += 1
        result.duplicates_within_input = sum(r["kind"] == "within_input" for r in dups)
        result.seconds = time.perf_counter() - t0
        _commit(store, writer, dups, result)
    if no_concept:
        result.warnings.append(
            f"{no_concept:,} rows have no concept (nor universe): they are grouped as concept "
            "'(none)' in audits and selections; give one with --set concept=NAME "
            "(or --map concept=FIELD) when ingesting"
        )
    return result


def _stored_ids(store: Store) -> tuple[set[str], int]:
    """The doc_ids stored, and how many rows hold them (more when a document is stored
    twice, which only the doctor mends)."""
    ids: set[str] = set()
    rows = 0
    for part in store.parts(DOCUMENTS):
        column = read_part(part, ["doc_id"]).column("doc_id").to_pylist()
        rows += len(column)
        ids.update(column)
    return ids, rows


def _commit(store: Store, writer: Any, dups: list[dict[str, Any]], result: IngestResult) -> None:
    """Publish the new part and record the ingest (its duplicates, its ``ingests`` row) as
    one step. The catalog is opened first, waiting up to ``SDF_LOCK_TIMEOUT`` for another
    process: a catalog that cannot be opened, or that stays held, stops the ingest with
    nothing stored (a part published before would be stored with no ``ingests`` row, and a
    re-run would call its documents re-reads). The part is renamed into place inside the
    catalog transaction, and taken back if the commit fails."""
    import duckdb

    from sdfkit.store import schema

    with store.connect() as con:
        con.execute("BEGIN")
        try:
            schema.ensure_tables(con)
            record_duplicates(store, dups, con=con)
            _log(con, result)
            writer.publish()
            con.execute("COMMIT")
        except BaseException:
            writer.unpublish()
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:  # DuckDB already ended it (a failed COMMIT)
                pass
            raise


def _normalise(rec: dict[str, Any], now: datetime, path: Path, line: int) -> dict[str, Any]:
    for col in (
        "universe",
        "concept",
        "fact",
        "doc_type",
        "idea",
        "model",
        "prompt_hash",
        "run",
        "batch_id",
        "custom_id",
        "source",
    ):
        v = rec.get(col)
        if isinstance(v, float) and not math.isfinite(v):
            rec[col] = None  # NaN, Infinity: as in meta (``meta_json``)
        elif v is not None and not isinstance(v, str):
            rec[col] = json_text(v) if isinstance(v, (dict, list)) else str(v)
    if rec.get("concept") is None:
        rec["concept"] = rec.get("universe")
    names = rec.get("seed_names")
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) for n in names)
    ):
        raise IngestError(f"{path}:{line}: field seed_names must be a list of strings")
    ts = rec.get("created_at")
    if isinstance(ts, str):
        try:
            ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            raise IngestError(f"{path}:{line}: created_at {ts!r} is not an ISO time") from None
    if isinstance(ts, datetime) and ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    rec["created_at"] = ts if isinstance(ts, datetime) else now
    return rec


def _flush(chunk: list[dict[str, Any]], writer: Any, tok: Any) -> int:
    texts = [r["text"] for r in chunk]
    counts = tok.count_batch(texts)
    for r, n in zip(chunk, counts.tolist(), strict=True):
        r["n_tokens"] = n
        r["chars"] = len(r["text"])
        r["tokenizer"] = tok.name
    batch = pa.RecordBatch.from_pylist(chunk, schema=DOCUMENT_SCHEMA)
    writer.write(batch)
    return int(counts.sum())


def build_documents(records: list[dict[str, Any]], tokenizer: str | None = None) -> pa.Table:
    """Complete records (text + provenance) into a document table: id, chars, tokens.

    Used by generation to land documents exactly as ingest does.
    """
    tok = get_tokenizer(tokenizer)
    now = utc_now()
    out = []
    for r in records:
        r = dict(r)
        r["doc_id"] = doc_id_for(r["text"])
        r.setdefault("created_at", now)
        if r.get("concept") is None:
            r["concept"] = r.get("universe")
        out.append(r)
    counts = tok.count_batch([r["text"] for r in out]) if out else []
    for r, n in zip(out, list(counts), strict=True):
        r["n_tokens"] = int(n)
        r["chars"] = len(r["text"])
        r["tokenizer"] = tok.name
    return pa.Table.from_pylist(out, schema=DOCUMENT_SCHEMA)


def _log(con: Any, result: IngestResult) -> None:
    """The ingest's row of the ``ingests`` table, on the caller's open transaction."""
    con.execute(
        "INSERT INTO ingests (ingest_id, files, rows_read, added, already_present, skipped, "
        "skip_reasons, tokenizer, seconds, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            uuid.uuid4().hex[:12],
            result.files,
            result.rows_read,
            result.added,
            result.already_present,
            result.skipped,
            json.dumps(dict(result.skip_reasons)),
            canonical_name(result.tokenizer),
            result.seconds,
            utc_now(),
        ],
    )
