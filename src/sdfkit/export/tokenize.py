"""Tokenizing the selected documents for an export: a per-document engine stage, cached.

``DocumentTokensStage`` turns each stored document into its token ids (list<int32>) under one
tokenizer. It is an ordinary engine stage (``sdfkit.engine.local``), so its results are a
store table keyed by ``doc_id`` whose name encodes everything that changes them: the
tokenizer's name and the hash of its vocabulary (``document_tokens_<tokenizer>_<vocab>``).
Only the document body is cached; DOCTAG, eval prompts and EOS are added when the shards are
built, so every export switch but the tokenizer reuses the same cache, and re-exporting after
a changed selection tokenizes only the documents not seen before. ``--engine ray`` runs the
same stage on Ray Data.

``read_and_tokenize`` is the uncached route (``export(..., cache=False)``), for a store that
must not grow: reading and tokenizing overlap on a thread pool and nothing is written.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sdfkit.engine.stage import EngineError, Stage
from sdfkit.errors import SdfError
from sdfkit.llm.tokens import Tokenizer, get_tokenizer
from sdfkit.store.catalog import DOCUMENTS, Store, damaged_part, first_line

TOKENIZE_CHUNK = 256  # documents per tokenization task of the uncached route


class TokenizeError(SdfError, ValueError):
    """The selected documents could not be read or tokenized."""


def as_int32(flat: np.ndarray) -> np.ndarray:
    """``encode_batch``'s ids as int32, the shards' type: quicktok's uint32 reinterpreted in
    place (ids are far below 2**31), anything else converted."""
    return flat.view(np.int32) if flat.dtype == np.uint32 else flat.astype(np.int32)


class DocumentTokensStage(Stage):
    """Per-document stage: a document's token ids (plain text: special-token strings inside
    a document stay text) under one tokenizer, checked against its vocabulary hash."""

    name: ClassVar[str] = "document_tokens"
    columns: ClassVar[tuple[str, ...]] = ("doc_id", "text")

    def __init__(self, tokenizer: str, vocab_hash: str, threads: int = 0) -> None:
        self.tokenizer = tokenizer
        self.vocab_hash = vocab_hash
        self.threads = threads  # 0: every core (one local worker); 1 on Ray or in a pool

    @property
    def table(self) -> str:
        safe = "".join(c if c.isalnum() else "_" for c in self.tokenizer)
        return f"document_tokens_{safe}_{self.vocab_hash[:12]}"

    @property
    def output_schema(self) -> pa.Schema:
        # The ids as the bytes of little-endian int32s, not list<int32>: Parquet writes and
        # reads a binary column 3-4x faster (no per-value dictionary attempt, no list
        # levels), same size; ``token_ids`` turns a column back into arrays without copying.
        return pa.schema([("doc_id", pa.string()), ("tokens", pa.large_binary())])

    def setup(self) -> None:
        # A worker elsewhere (a Ray node) must hold the very vocabulary the cache is named by.
        tok = get_tokenizer(self.tokenizer)
        if tok.vocab_hash != self.vocab_hash:
            raise EngineError(
                f"tokenizer {self.tokenizer}: this worker's vocabulary hash differs from the "
                "driver's (another version of the tokenizer installed here?)"
            )
        self._tok = tok

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        flat, offsets = self._tok.encode_batch(
            batch.column("text").to_pylist(), threads=self.threads
        )
        ids = as_int32(flat).astype("<i4", copy=False)
        tokens = pa.Array.from_buffers(
            pa.large_binary(),
            len(offsets) - 1,
            [None, pa.py_buffer(offsets.astype(np.int64) * 4), pa.py_buffer(ids)],
        )
        out = pa.RecordBatch.from_arrays(
            [batch.column("doc_id"), tokens], schema=self.output_schema
        )
        kept = getattr(self, "_kept", None)
        if kept is not None:
            kept.append(out)
        return out

    def keep_results(self) -> list[pa.RecordBatch]:
        """Keep every result batch this instance computes in this process (the local
        engine's single worker), so the caller need not read them back from the store. Never
        pickled: pool and Ray workers keep nothing."""
        self._kept: list[pa.RecordBatch] = []
        return self._kept


def token_ids(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(flat int32 ids, per-row offsets into them) of a ``tokens`` column of the cache."""
    column = column.cast(pa.large_binary())
    _, offs, data = column.buffers()
    offsets = np.frombuffer(offs, dtype=np.int64)[column.offset : column.offset + len(column) + 1]
    flat = np.frombuffer(data, dtype="<i4") if data is not None else np.zeros(0, "<i4")
    return flat.astype(np.int32, copy=False), offsets // 4


@dataclass
class DocumentTokens:
    """Token ids of each selected document (in the order asked); ``finish`` says how many
    this call tokenized (the rest came from the cache) once they are stored."""

    tokens: list[np.ndarray]
    tokenized: int = 0
    _storing: threading.Thread | None = None
    _outcome: dict[str, Any] = field(default_factory=dict)

    def finish(self) -> int:
        """Wait until the documents tokenized by this call are stored in the cache (a
        failure to store them is raised here); returns how many there were."""
        if self._storing is not None:
            self._storing.join()
            self._storing = None
            if "error" in self._outcome:
                raise self._outcome["error"]
            self.tokenized = self._outcome["ran"].processed
        return self.tokenized


def tokenize_documents(
    store: Store,
    doc_ids: list[str],
    tok: Tokenizer,
    cache: bool = True,
    engine: str | None = None,
    **engine_options: Any,
) -> DocumentTokens:
    """Token ids (int32) of each stored document in ``doc_ids``, in that order.

    With ``cache`` the documents not tokenized before under ``tok`` are tokenized by
    ``DocumentTokensStage`` on ``engine`` and stored; the others' ids are read from the cache.
    On a process pool or Ray the new ones are read back from the cache too; on the local
    engine's single worker the engine runs on a thread of this process and its results are
    used as computed, so the caller builds shards while they are being stored: call
    ``finish()`` before relying on the cache. Without ``cache``, ``read_and_tokenize``
    (nothing is written).
    """
    if not cache:
        return DocumentTokens(read_and_tokenize(store, doc_ids, tok), len(doc_ids))
    from sdfkit.engine.local import env_workers, resolve_engine, run_stage
    from sdfkit.engine.stage import count_pending

    name = resolve_engine(engine)
    workers = engine_options.get("workers") or (env_workers() if name == "local" else 1)
    one_worker = name == "local" and workers <= 1
    stage = DocumentTokensStage(tok.name, tok.vocab_hash, threads=0 if one_worker else 1)
    where = set(doc_ids)
    result = DocumentTokens([])
    kept: list[pa.RecordBatch] = []
    if one_worker:
        kept = stage.keep_results()
        expected = count_pending(store, stage, where)
        outcome = result._outcome

        def run() -> None:
            try:
                outcome["ran"] = run_stage(store, stage, engine=name, where=where, **engine_options)
            except BaseException as exc:  # noqa: BLE001 - re-raised by finish()
                outcome["error"] = exc

        result._storing = threading.Thread(target=run, name="sdf-document-tokens", daemon=True)
        result._storing.start()
        # Every result computed (the engine then stores them while the caller goes on), or
        # the engine ended early (an error, or another process stored some meanwhile).
        while result._storing.is_alive() and sum(b.num_rows for b in kept) < expected:
            result._storing.join(0.005)
        if "error" in outcome:
            result.finish()
    else:
        result._outcome["ran"] = run_stage(store, stage, engine=name, where=where, **engine_options)
        result.tokenized = result._outcome["ran"].processed
    index = {d: i for i, d in enumerate(doc_ids)}
    tokens: list[np.ndarray | None] = [None] * len(doc_ids)
    for out in list(kept):
        values, offsets = token_ids(out.column("tokens"))
        for j, d in enumerate(out.column("doc_id").to_pylist()):
            tokens[index[d]] = values[offsets[j] : offsets[j + 1]]
    rest = [d for d, t in zip(doc_ids, tokens, strict=True) if t is None]
    if rest:
        result.finish()  # what the engine did not hand back must be in the cache first
        for d, ids in zip(rest, read_cached(store, stage, rest), strict=True):
            tokens[index[d]] = ids
    result.tokens = tokens  # type: ignore[assignment]
    return result


def read_cached(store: Store, stage: DocumentTokensStage, doc_ids: list[str]) -> list[np.ndarray]:
    """The cached token ids of ``doc_ids`` (in that order), part by part of the cache table;
    a document missing from it is an error."""
    index = {d: i for i, d in enumerate(doc_ids)}
    wanted = pa.array(doc_ids, type=pa.string())
    tokens: list[np.ndarray | None] = [None] * len(doc_ids)
    for part in store.parts(stage.table):
        try:
            pf = pq.ParquetFile(part)
            mask = pc.is_in(pf.read(columns=["doc_id"]).column(0), value_set=wanted)
            if not pc.any(mask).as_py():
                continue
            t = pf.read(columns=["doc_id", "tokens"]).filter(mask).combine_chunks()
        except (pa.ArrowException, OSError) as exc:
            raise damaged_part(part, first_line(exc)) from None
        if not t.num_rows:
            continue
        values, offsets = token_ids(t.column("tokens").chunk(0))
        for j, d in enumerate(t.column("doc_id").to_pylist()):
            tokens[index[d]] = values[offsets[j] : offsets[j + 1]]
    _check_found(tokens, f"the token cache {stage.table}")
    return tokens  # type: ignore[return-value]


def _check_found(tokens: list[np.ndarray | None], where: str) -> None:
    missing = sum(t is None for t in tokens)
    if missing:
        raise TokenizeError(
            f"{missing} selected documents were not found in {where} "
            "(the store changed while reading?)"
        )


def read_and_tokenize(store: Store, doc_ids: list[str], tok: Tokenizer) -> list[np.ndarray]:
    """Token ids (int32) of each stored document in ``doc_ids``, in that order, uncached.

    Reading and tokenizing overlap on one thread pool: each Parquet part of the record is read
    by a task (its ``doc_id`` column first, the text only if the part holds a selected
    document), and its selected texts are tokenized by further tasks of ``TOKENIZE_CHUNK``
    documents each, so no more than a few parts' text is ever held as Python strings. Parts
    are append-only, so every document the catalog vouched for is in one of them.
    """
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    from sdfkit.llm.tokens import _threads

    index = {d: i for i, d in enumerate(doc_ids)}
    wanted = pa.array(doc_ids, type=pa.string())
    tokens: list[np.ndarray | None] = [None] * len(doc_ids)

    def read(path: Path) -> tuple[str, list[str], list[str]]:
        try:
            pf = pq.ParquetFile(path)
            mask = pc.is_in(pf.read(columns=["doc_id"]).column(0), value_set=wanted)
            if not pc.any(mask).as_py():
                return "read", [], []
            t = pf.read(columns=["doc_id", "text"]).filter(mask)
        except (pa.ArrowException, OSError) as exc:
            raise damaged_part(path, first_line(exc)) from None
        return "read", t.column(0).to_pylist(), t.column(1).to_pylist()

    def encode(ids: list[str], texts: list[str]) -> tuple[str, list[str], np.ndarray, np.ndarray]:
        flat, offs = tok.encode_batch(texts, threads=1)
        return "tokens", ids, as_int32(flat), offs

    # quicktok releases the GIL; a Hugging Face tokenizer is called from one thread only.
    workers = _threads() if tok.backend == "quicktok" else 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sdf-read") as pool:
        pending: set[Future[Any]] = {pool.submit(read, p) for p in store.parts(DOCUMENTS)}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                res = fut.result()
                if res[0] == "read":  # a part was read: tokenize its texts in chunks
                    _, ids, texts = res
                    for k in range(0, len(ids), TOKENIZE_CHUNK):
                        pending.add(
                            pool.submit(
                                encode, ids[k : k + TOKENIZE_CHUNK], texts[k : k + TOKENIZE_CHUNK]
                            )
                        )
                    continue
                _, ids, flat, offs = res
                for j, d in enumerate(ids):  # a copy stored twice has the same text
                    tokens[index[d]] = flat[offs[j] : offs[j + 1]]
    _check_found(tokens, "the record's Parquet parts")
    return tokens  # type: ignore[return-value]
