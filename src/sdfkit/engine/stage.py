"""The shape of a per-document stage, and the store-side plumbing every engine shares.

A ``Stage`` turns a batch of documents (an Arrow record batch of the columns it asks for)
into exactly one result row per document, keyed by ``doc_id``; its results live in the store
table its ``table`` names, a cache by content hash. The local engine
(``sdfkit.engine.local``) and Ray (``sdfkit.engine.ray_data``) both run stages through this
module, so neither engine imports the other's module to get them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from sdfkit.errors import SdfError
from sdfkit.store.catalog import (
    DOCUMENT_SCHEMA,
    DOCUMENTS,
    Store,
    iter_part,
    read_part,
    string_array,
)


class EngineError(SdfError):
    pass


class Stage:
    """Base of a per-document stage. Subclasses set ``name``, ``columns`` and
    ``output_schema`` (which must start with ``doc_id``), may override ``setup`` to load a
    model, and implement ``process``. Instances must be picklable before ``setup``."""

    name: ClassVar[str] = "stage"
    columns: ClassVar[tuple[str, ...]] = ("doc_id", "text")
    #: True when the stage loads a model: Ray runs it as an actor pool.
    loads_model: ClassVar[bool] = False
    #: Dictionary-encode the result columns in Parquet (off for random values such as
    #: signatures, where it only costs time and space).
    parquet_dictionary: ClassVar[bool] = True

    @property
    def output_schema(self) -> pa.Schema:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def table(self) -> str:
        """Store table holding this stage's results; encodes every setting that changes them."""
        return self.name

    def setup(self) -> None:
        """Load models or build state; called once per worker before the first batch."""

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:  # pragma: no cover
        raise NotImplementedError

    # Engines call this: setup on first use, then check the one-row-per-document rule.
    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if not getattr(self, "_ready", False):
            self.setup()
            self._ready = True
        out = self.process(batch)
        if out.num_rows != batch.num_rows:
            raise EngineError(
                f"stage {self.name} returned {out.num_rows} rows for {batch.num_rows} documents"
            )
        return out

    def __getstate__(self) -> dict[str, Any]:
        # Never ship loaded models between processes; each worker sets itself up.
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        return state


def pending_documents(
    store: Store,
    stage: Stage,
    batch_rows: int = 1024,
    where: set[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Documents whose result is not stored yet, as record batches of the stage's columns,
    each of ``batch_rows`` rows but the last: rows left after filtering are gathered into
    full batches (a stage that pads its batches, like the embeddings, wastes less work).

    ``where``: restrict to these doc ids (e.g. a selection).
    """

    done = store.keys(stage.table) if stage.table in store.parquet_tables() else set()
    seen: set[str] = set()
    # Parts written by sdfkit share DOCUMENT_SCHEMA; a part copied in from elsewhere may
    # carry string for large_string: batches are cast to one schema before they are joined.
    target = pa.schema(
        [DOCUMENT_SCHEMA.field(c) for c in stage.columns if c in DOCUMENT_SCHEMA.names]
    )
    held: list[pa.RecordBatch] = []
    rows = 0
    for part in store.parts(DOCUMENTS):
        for batch in iter_part(part, batch_rows, list(stage.columns)):
            ids = batch.column("doc_id").to_pylist()
            keep = [
                i
                for i, d in enumerate(ids)
                if d not in done and d not in seen and (where is None or d in where)
            ]
            seen.update(ids[i] for i in keep)
            if not keep:
                continue
            if len(keep) != batch.num_rows:
                batch = batch.take(pa.array(keep, type=pa.int64()))
            if len(target) == batch.num_columns and batch.schema != target:
                batch = batch.cast(target)
            held.append(batch)
            rows += batch.num_rows
            if rows >= batch_rows:
                whole = pa.concat_batches(held) if len(held) > 1 else held[0]
                yield whole.slice(0, batch_rows)
                rest = whole.slice(batch_rows)
                held, rows = ([rest] if rest.num_rows else []), rest.num_rows
    if held:
        yield pa.concat_batches(held) if len(held) > 1 else held[0]


def document_texts(store: Store, doc_ids: list[str]) -> dict[str, str]:
    """doc_id -> text of some stored documents, read straight from the Parquet parts (no
    catalog connection: a third of the time of the same query through DuckDB's views)."""
    if not doc_ids:
        return {}
    wanted = string_array(doc_ids)
    out: dict[str, str] = {}
    for part in store.parts(DOCUMENTS):
        tbl = read_part(part, ["doc_id", "text"])
        tbl = tbl.filter(pc.is_in(tbl.column("doc_id"), value_set=wanted))
        for doc_id, text in zip(
            tbl.column("doc_id").to_pylist(), tbl.column("text").to_pylist(), strict=True
        ):
            out.setdefault(doc_id, text)
    return out


def count_pending(store: Store, stage: Stage, where: set[str] | None = None) -> int:
    done = store.keys(stage.table) if stage.table in store.parquet_tables() else set()
    ids: set[str] = set()
    for part in store.parts(DOCUMENTS):
        ids.update(read_part(part, ["doc_id"]).column("doc_id").to_pylist())
    ids -= done
    if where is not None:
        ids &= where
    return len(ids)


def read_results(store: Store, stage: Stage, doc_ids: set[str] | None = None) -> pa.Table:
    """The stored results of a stage (optionally for some documents only)."""
    tbl = store.read(stage.table)
    if doc_ids is not None and tbl.num_rows:
        mask = pc.is_in(tbl.column("doc_id"), value_set=string_array(sorted(doc_ids)))
        tbl = tbl.filter(mask)
    return tbl
