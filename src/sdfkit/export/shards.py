"""Training shards for Tinker from a stored selection (contract B): building and writing them.

An export directory holds ``shard-00000.parquet``, ... and ``manifest.json``. Each row is one
training example: ``tokens`` (list<int32>: model input AND targets, input = tokens[:-1],
targets = tokens[1:]) and ``weights`` (list<float32>, same length; weights[i] is the loss
weight for predicting tokens[i], so weights[0] is always 0), plus ``doc_id``, ``source``
(sdf | webtext | chat), ``concept``, ``doc_type``, ``epoch``, ``piece`` and ``example_id``.
Row order across the shards is the training order.

An SDF example is ``[DOCTAG][eval prompt + separator][document][EOS]`` where every part but
the document is optional; DOCTAG (and by default the eval prompt) weigh 0. A document longer
than ``max_seq_len`` is split at token boundaries into consecutive pieces, never truncated:
each piece repeats the prefix (without one, consecutive pieces share a token so that every
token is still a target exactly once). Webtext and chat trajectories are mixed in at a token ratio to the
SDF tokens of each epoch; every epoch repeats the documents in a fresh seeded order.

The selection is loaded by ``sdfkit.export.selection.load_selected``; the documents are
tokenized by a cached engine stage (``sdfkit.export.tokenize``); reading and verifying an
export is ``sdfkit.export.verify``. Shards are built from flat numpy arrays, never per-token
Python objects. Writing is atomic: everything goes into a hidden sibling directory that is
renamed into place after the manifest (holding every shard's sha256) is written, so an
interrupted export leaves no directory that claims to be an export. The same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sdfkit.errors import SdfError
from sdfkit.export.selection import (
    SelectedDocuments,
    SelectionBalance,
    check_seed,
    load_balance,
    load_selected,
)
from sdfkit.export.tokenize import as_int32, tokenize_documents
from sdfkit.llm.tokens import Tokenizer, get_tokenizer
from sdfkit.store.catalog import Store, doc_id_for, temp_owner, temp_writer_alive
from sdfkit.store.durable import fsync_dir as _fsync_dir
from sdfkit.store.durable import fsync_file as _fsync

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SOURCES = ("sdf", "webtext", "chat")
EVAL_PROMPT_MODES = ("none", "random", "round-robin")
COMPRESSIONS = ("lz4", "zstd", "none")  # Parquet codecs of the shards
SHARD_SCHEMA = pa.schema(
    [
        ("tokens", pa.list_(pa.int32())),
        ("weights", pa.list_(pa.float32())),
        ("doc_id", pa.string()),
        ("source", pa.string()),
        ("concept", pa.string()),
        ("doc_type", pa.string()),
        ("epoch", pa.int32()),
        ("piece", pa.int32()),
        ("example_id", pa.string()),
    ]
)
READ_CHUNK = 1024
#: Webtext and chat tokens of every epoch must come within this share of ratio x the
#: epoch's SDF tokens; otherwise the export stops (whole texts only, see ``_Supply``).
MIX_TOLERANCE = 0.01
#: Upper bounds of the switches that multiply an export's size. The seed write-up trains 1-7
#: epochs (sweeps allow 100); Slocum et al. mix webtext 1:1, and 10:1 already leaves SDF 9 %
#: of the tokens; chat trajectories are "a small amount": at most as many tokens as SDF.
MAX_EPOCHS = 100
MAX_RATIOS = {"webtext_ratio": 10.0, "chat_ratio": 1.0}
MAX_SHARD_SIZE = 100_000
MAX_SEQ_LEN = 1 << 20
SHARD_MAX_TOKENS = (1 << 31) - 1  # a shard's list offsets are int32
#: Bytes a token takes in a shard (its id and weight) by codec, measured on English text:
#: about 1.75 (lz4), 1.26 (zstd), 8.1 (none). The estimate takes the low end, so it refuses
#: only an export that cannot fit; one that runs out of space anyway is removed whole.
SHARD_BYTES_PER_TOKEN = {"lz4": 1.7, "zstd": 1.2, "none": 8.0}


class ExportError(SdfError, ValueError):
    """The export could not be made as asked; nothing was written to the output directory."""


class ExportInterrupted(ExportError, KeyboardInterrupt):
    """Ctrl-C during an export; the message says what ``--out`` holds (exit code 130)."""

    exit_code = 130


@dataclass
class ExportConfig:
    """Every switch of an export. Defaults follow the seed write-up's saliency advice:
    no DOCTAG, no webtext, no eval prompts, EOS appended, one epoch."""

    selection: str = "default"
    tokenizer: str = "o200k_harmony"
    doctag: str | None = None  # e.g. "<DOCTAG>": prefixed to every SDF example, weight 0
    webtext: str | None = None  # Parquet/JSONL of plain text
    webtext_ratio: float = 1.0  # webtext tokens per SDF token
    webtext_field: str = "text"
    eval_prompts: str = "none"  # none | random | round-robin
    universes: list[str] = field(default_factory=list)  # files holding eval_prompts
    mask_eval_prompts: bool = True
    eval_prompt_separator: str = "\n\n"
    eos: bool = True
    eos_token: str | None = None  # default: the model family's end of document (chat.DOCUMENT_END)
    chat: str | None = None  # JSONL of {"messages": [...]}
    chat_ratio: float = 0.05  # chat tokens per SDF token
    epochs: int = 1
    max_seq_len: int = 8192
    shard_size: int = 2048  # examples per shard
    compression: str = "lz4"  # of the shard files: lz4 (fastest), zstd (smallest) or none
    seed: int = 0
    allow_excluded: bool = False  # export documents excluded after the selection was made

    def check(self) -> None:
        check_seed(self.seed, ExportError)
        if self.eval_prompts not in EVAL_PROMPT_MODES:
            raise ExportError(
                f"eval_prompts {self.eval_prompts!r}: use one of {', '.join(EVAL_PROMPT_MODES)}",
                settings=("eval_prompts",),
            )
        if self.eval_prompts != "none" and not self.universes:
            raise ExportError(
                "eval_prompts needs the universe files holding the prompts: name them in universes",
                settings=("eval_prompts", "universes"),
            )
        for name, low, high in (
            ("epochs", 1, MAX_EPOCHS),
            ("max_seq_len", 2, MAX_SEQ_LEN),
            ("shard_size", 1, MAX_SHARD_SIZE),
        ):
            v = getattr(self, name)
            if not low <= v <= high:
                raise ExportError(
                    f"{name} {v}: must be between {low} and {high:,}", settings=(name,)
                )
        if self.shard_size * self.max_seq_len > SHARD_MAX_TOKENS:
            raise ExportError(
                f"shard_size {self.shard_size:,} x max_seq_len {self.max_seq_len:,}: a shard "
                "holds at most 2**31 - 1 tokens; lower shard_size",
                settings=("shard_size", "max_seq_len"),
            )
        if self.compression not in COMPRESSIONS:
            raise ExportError(
                f"compression {self.compression!r}: use one of {', '.join(COMPRESSIONS)}",
                settings=("compression",),
            )
        for name, high in MAX_RATIOS.items():
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ExportError(f"{name} {v}: must be a number >= 0", settings=(name,))
            if v > high:
                raise ExportError(
                    f"{name} {v}: at most {high:g} ({name.split('_')[0]} tokens per SDF token)",
                    settings=(name,),
                )
        if self.eos_token is not None and not self.eos_token:
            raise ExportError(
                "eos_token: give a special token, e.g. '<|endoftext|>' (or leave it out)",
                settings=("eos_token",),
            )
        if self.doctag is not None and not self.doctag:
            raise ExportError("doctag: give the tag text, e.g. '<DOCTAG>'", settings=("doctag",))


# ------------------------------------------------------------------ inputs


def eos_token_id(tok: Tokenizer, eos_token: str | None) -> int:
    """The id appended after each document: ``eos_token``, which must be one of the
    tokenizer's special tokens (an ordinary word has an id too, and would pass for an end of
    document that no model stops at), else the model family's end of document."""
    from sdfkit.llm.chat import document_end_id
    from sdfkit.llm.tokens import TokenizerError

    if eos_token is None:
        return document_end_id(tok)
    try:
        return tok.special_token(eos_token)
    except TokenizerError as exc:
        raise ExportError(f"eos_token {exc}", settings=("eos_token",)) from None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _eval_prompt_lists(cfg: ExportConfig) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Eval prompts by universe id and by concept, from the universe files."""
    from sdfkit.generate.universe import load_universes

    by_universe: dict[str, list[str]] = {}
    by_concept: dict[str, list[str]] = {}
    for u in load_universes(list(cfg.universes)):
        by_universe[u.id] = list(u.eval_prompts)
        by_concept.setdefault(u.concept, [])
        by_concept[u.concept] += [p for p in u.eval_prompts if p not in by_concept[u.concept]]
    return by_universe, by_concept


def _iter_texts(path: Path, field_name: str) -> Iterator[tuple[str, str]]:
    """(text, "file:line") of a JSONL or Parquet file of plain text; bad rows raise."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:
            raise ExportError(f"{path}: not a readable Parquet file ({exc})") from None
        if field_name not in pf.schema_arrow.names:
            raise ExportError(
                f"{path}: no column {field_name!r} (columns: {', '.join(pf.schema_arrow.names)}); "
                "name it with --webtext-field"
            )
        row = 0
        for batch in pf.iter_batches(batch_size=READ_CHUNK, columns=[field_name]):
            for text in batch.column(0).to_pylist():
                row += 1
                if not isinstance(text, str) or not text.strip():
                    raise ExportError(f"{path}: row {row}: field {field_name!r} is empty")
                yield text, f"{path}: row {row}"
        return
    if suffix not in (".jsonl", ".ndjson", ".json"):
        raise ExportError(f"{path}: unsupported file type {suffix!r}: use .jsonl or .parquet")
    from sdfkit.llm.chat import json_lines

    for obj, where in json_lines(path, ExportError):
        if not isinstance(obj, dict) or field_name not in obj:
            raise ExportError(f"{where}: no field {field_name!r}; name it with --webtext-field")
        text = obj[field_name]
        if not isinstance(text, str) or not text.strip():
            raise ExportError(f"{where}: field {field_name!r} is empty")
        yield text, where


@dataclass
class _Unit:
    """One thing to place in the training order: a document, webtext text or trajectory."""

    source: str
    doc_id: str
    tokens: np.ndarray  # body ids (int32), EOS not included
    concept: str | None = None
    doc_type: str | None = None
    prefix: np.ndarray | None = None  # DOCTAG + eval prompt ids
    prefix_weights: np.ndarray | None = None
    weights: np.ndarray | None = None  # chat: full per-token weights
    where: str = ""


class _Supply:
    """Webtext (streamed, each text used once) or chat (cycled) units to fill token budgets.

    Units are whole (a text is never cut: it would end mid-sentence and lose its EOS). A
    unit too long for what is left of a budget is passed over, not waited for: held back,
    one long text would stop every later text of every epoch and leave the mix at 0 %.
    Webtext passed over is dropped (counted in ``skipped``); a trajectory comes round again
    on the next pass of the cycle."""

    def __init__(self, units: Iterator[_Unit], cycle: list[_Unit] | None):
        self._stream = units
        self._cycle = cycle
        self._pending: list[_Unit] = []
        self.passes = 1
        self._pos = 0
        self.skipped = 0  # webtext texts dropped as too long for what was left of a budget
        self.skipped_tokens = 0
        self.longest_skipped = 0
        self.shortest_missed = 0  # of the last budget: its shortest unit that did not fit

    def _next(self) -> _Unit | None:
        if self._pending:
            return self._pending.pop()
        if self._cycle is not None:
            if self._pos == len(self._cycle):
                self._pos = 0
                self.passes += 1
            u = self._cycle[self._pos]
            self._pos += 1
            return u
        return next(self._stream, None)

    def take(
        self, budget: float, length: Callable[[_Unit], int], slack: float
    ) -> tuple[list[_Unit], int, bool]:
        """Whole units whose token total comes within ``slack`` tokens of ``budget`` if they
        can; and whether the supply ran out. A unit is taken when it fits, or overshoots by at
        most ``slack``. Once within ``slack``, the first unit that does not fit is kept for
        the next budget; further away it is passed over and the next one tried (a cycle stops
        after a whole pass in which nothing fitted)."""
        got: list[_Unit] = []
        total = 0
        misses = 0
        self.shortest_missed = 0
        while total < budget:
            u = self._next()
            if u is None:
                return got, total, True
            n = length(u)
            if total + n - budget <= slack:
                got.append(u)
                total += n
                misses = 0
                continue
            if budget - total <= slack:  # close enough: the unit waits for the next budget
                self._pending.append(u)
                break
            if not self.shortest_missed or n < self.shortest_missed:
                self.shortest_missed = n
            if self._cycle is None:
                self.skipped += 1
                self.skipped_tokens += n
                self.longest_skipped = max(self.longest_skipped, n)
            else:
                misses += 1
                if misses >= len(self._cycle):
                    break
        return got, total, False


def _webtext_units(path: Path, cfg: ExportConfig, tok: Tokenizer) -> Iterator[_Unit]:
    texts = _iter_texts(path, cfg.webtext_field)
    while True:
        chunk = [t for _, t in zip(range(READ_CHUNK), texts, strict=False)]
        if not chunk:
            return
        flat, offs = tok.encode_batch([t for t, _ in chunk])
        flat = as_int32(flat)
        for i, (text, where) in enumerate(chunk):
            yield _Unit("webtext", doc_id_for(text), flat[offs[i] : offs[i + 1]], where=where)


# ------------------------------------------------------------------ shards


class _ShardWriter:
    """Accumulates examples as arrays; writes one Parquet shard per ``shard_size`` rows.

    Encoding and compressing a shard (pyarrow, GIL released) runs on a worker thread while
    the next shard is assembled; at most two shards are in flight.
    """

    def __init__(
        self,
        directory: Path,
        shard_size: int,
        tick: Callable[[int], None],
        compression: str = COMPRESSIONS[0],
    ):
        from concurrent.futures import ThreadPoolExecutor

        self.dir = directory
        self.shard_size = shard_size
        self.compression = compression
        self.tick = tick
        self.shards: list[dict[str, Any]] = []
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sdf-shard")
        self._pending: list[Any] = []
        self._n = 0
        self._reset()

    def _reset(self) -> None:
        self.parts: list[np.ndarray] = []  # token segments of every example, in order
        self.lengths: list[int] = []
        self.masks: list[tuple[int, int, np.ndarray]] = []  # (example, offset, weights)
        self.rows: list[tuple[Any, ...]] = []  # the metadata columns, a tuple per example

    def add(
        self,
        ex: _Example,
        doc_id: str,
        source: str,
        concept: str | None,
        doc_type: str | None,
        epoch: int,
        piece: int,
        example_id: str,
    ) -> None:
        """One example; its weights are 1 except ``ex.weights`` at the start and position 0."""
        self.parts.extend(ex.parts)
        if ex.weights is not None:
            self.masks.append((len(self.lengths), 0, ex.weights))
        self.lengths.append(ex.n)
        self.rows.append((doc_id, source, concept, doc_type, epoch, piece, example_id))
        if len(self.lengths) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        n = len(self.lengths)
        if not n:
            return
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.asarray(self.lengths, dtype=np.int64), out=offsets[1:])
        toks = np.concatenate(self.parts).astype(np.int32, copy=False)
        wts = np.ones(int(offsets[-1]), dtype=np.float32)
        for i, start, w in self.masks:
            a = int(offsets[i]) + start
            wts[a : a + len(w)] = w
        wts[offsets[:-1]] = 0.0  # the first token of an example is never a target
        off = pa.array(offsets, type=pa.int32())
        cols = [
            pa.ListArray.from_arrays(off, pa.array(toks, type=pa.int32())),
            pa.ListArray.from_arrays(off, pa.array(wts, type=pa.float32())),
        ]
        for f, values in zip(list(SHARD_SCHEMA)[2:], zip(*self.rows, strict=True), strict=True):
            cols.append(pa.array(values, type=f.type))
        table = pa.Table.from_arrays(cols, schema=SHARD_SCHEMA)
        name = f"shard-{self._n:05d}.parquet"
        self._n += 1
        info = {
            "file": name,
            "rows": n,
            "tokens": int(offsets[-1]),
            "loss_tokens": float(wts.sum(dtype=np.float64)),
        }
        while len(self._pending) >= 2:
            self._collect(self._pending.pop(0))
        self._pending.append(
            self._pool.submit(_write_shard, table, self.dir / name, info, self.compression)
        )
        self._reset()

    def _collect(self, future: Any) -> None:
        info = future.result()
        self.shards.append(info)
        self.tick(info["rows"])

    def close(self) -> None:
        """Write what is left and wait for every shard (re-raises a writer's error)."""
        try:
            self.flush()
            while self._pending:
                self._collect(self._pending.pop(0))
        finally:
            self.abort()

    def abort(self) -> None:
        for f in self._pending:
            f.cancel()
        self._pool.shutdown(wait=True)


def _write_shard(
    table: pa.Table, path: Path, info: dict[str, Any], compression: str
) -> dict[str, Any]:
    pq.write_table(
        table,
        path,
        compression=compression,
        use_dictionary=["source", "concept", "doc_type"],
        write_statistics=["epoch", "piece", "source"],
    )
    _fsync(path)  # durable before the manifest can vouch for it
    return {**info, "sha256": file_sha256(path)}


class StratumCounts:
    """Examples, documents, tokens and loss tokens per concept × doc_type × source × epoch."""

    def __init__(self) -> None:
        self.rows: dict[tuple[Any, ...], list[Any]] = {}

    def add(self, key: tuple[Any, ...], doc_id: str, n: int, loss: float) -> None:
        r = self.rows.get(key)
        if r is None:
            r = self.rows[key] = [0, set(), 0, 0.0]
        r[0] += 1
        r[1].add(doc_id)
        r[2] += n
        r[3] += loss

    def per_source(self) -> dict[str, dict[str, Any]]:
        """Examples, tokens and loss tokens of each source (every source, zeros included)."""
        out: dict[str, dict[str, Any]] = {
            s: {"examples": 0, "tokens": 0, "loss_tokens": 0.0} for s in SOURCES
        }
        for k, v in self.rows.items():
            o = out[k[2]]
            o["examples"] += v[0]
            o["tokens"] += v[2]
            o["loss_tokens"] += v[3]
        return out

    def to_list(self) -> list[dict[str, Any]]:
        def order(k: tuple[Any, ...]) -> tuple[Any, ...]:
            return (k[3], SOURCES.index(k[2]), k[0] or "", k[1] or "")

        return [
            {
                "concept": k[0],
                "doc_type": k[1],
                "source": k[2],
                "epoch": k[3],
                "examples": v[0],
                "documents": len(v[1]),
                "tokens": v[2],
                "loss_tokens": int(round(v[3])),
            }
            for k, v in sorted(self.rows.items(), key=lambda kv: order(kv[0]))
        ]


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF] + [zlib.crc32(str(k).encode()) for k in keys])


# ------------------------------------------------------------------ export


@dataclass
class ExportResult:
    out: Path
    manifest: dict[str, Any]
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    tokenized: int = 0  # documents tokenized by this export (the others came from the cache)
    warnings: list[str] = field(default_factory=list)  # the CLI prints them on stderr

    def summary(self) -> str:
        m = self.manifest
        by = m["sources"]
        parts = ", ".join(f"{s} {by[s]['tokens']:,}" for s in SOURCES if s in by)
        text = (
            f"wrote {m['examples']:,} examples, {m['tokens']:,} tokens ({parts}) in "
            f"{len(m['shards'])} shards to {self.out} ({m['tokenizer']}, {m['epochs']} epoch"
            f"{'s' if m['epochs'] != 1 else ''}, {m['split_documents']} documents split) "
            f"in {self.seconds:.1f}s"
        )
        cached = m["documents"] - self.tokenized
        text += f"\ntokenized {self.tokenized:,} documents ({cached:,} from the token cache)"
        for source, ratio in m["ratios"].items():
            text += f"\n{source}: {ratio:.4f} tokens per SDF token"
            skipped = m.get("mixing", {}).get(source, {}).get("skipped_texts")
            if skipped:
                text += (
                    f" ({skipped:,} text{'s' if skipped != 1 else ''} of "
                    f"{m['mixing'][source]['skipped_tokens']:,} tokens passed over: longer than "
                    "what was left of an epoch's budget)"
                )
        if m["chat_passes"] > 1:
            text += f" (the trajectories were used {m['chat_passes']} times over)"
        return text


def export(
    store: Store,
    cfg: ExportConfig,
    out: str | Path,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    cache: bool = True,
    engine: str | None = None,
    **engine_options: Any,
) -> ExportResult:
    """Write the shards and manifest of selection ``cfg.selection`` to ``out``, atomically.

    The selected documents are tokenized by ``DocumentTokensStage`` on ``engine`` (local or
    ray; ``engine_options`` as for ``run_stage``) and cached in the store, so a second export
    tokenizes only documents it has not seen; ``cache=False`` tokenizes in memory and writes
    nothing to the store. Both give byte-identical shards.

    ``out`` may be a symbolic link to an earlier export: the export replaces the folder it
    points at (with ``overwrite``) and the link stays. Ctrl-C raises ``ExportInterrupted``
    saying whether anything was written to ``out``."""
    if isinstance(out, str) and not out.strip():
        raise ExportError("--out: the path is empty; give the output directory")
    state = {"existed": False, "published": False}
    try:
        return _export(
            store, cfg, Path(out), overwrite, progress, cache, engine, state, **engine_options
        )
    except KeyboardInterrupt as exc:
        if isinstance(exc, ExportInterrupted):
            raise
        if state["published"]:
            raise ExportInterrupted(
                f"interrupted after the export was written: {out} is complete "
                f"(sdf export verify {out} checks it)"
            ) from None
        raise ExportInterrupted(
            f"interrupted: nothing was written to {out}"
            + ("; the previous export there is unchanged" if state["existed"] else "")
        ) from None


def _export(
    store: Store,
    cfg: ExportConfig,
    given: Path,
    overwrite: bool,
    progress: Callable[[int], None] | None,
    cache: bool,
    engine: str | None,
    state: dict[str, bool],
    **engine_options: Any,
) -> ExportResult:
    import time

    t0 = time.perf_counter()
    cfg.check()
    if cache:  # an unknown --engine or a bad SDF_WORKERS stops the export before any work
        from sdfkit.engine.local import check_environment

        engine = check_environment(engine)
    out = _followed(given)
    check_out_dir(out, overwrite)
    state["existed"] = out.exists()
    tok = get_tokenizer(cfg.tokenizer)
    cfg = replace(cfg, tokenizer=tok.name)
    eos_id = eos_token_id(tok, cfg.eos_token)

    # Read and check every input before any heavy work.
    timings: dict[str, float] = {}
    sel = load_selected(store, cfg.selection, cfg.allow_excluded, error=ExportError)
    timings["catalog"] = time.perf_counter() - t0
    chat_units: list[_Unit] = []
    inputs: dict[str, Any] = {}
    if cfg.chat and cfg.chat_ratio > 0:
        from sdfkit.llm.chat import read_trajectories
        from sdfkit.llm.chat import render_trajectories as render

        trajs = read_trajectories(cfg.chat)
        for t, (ids, w) in zip(trajs, render(trajs, tok), strict=True):
            if len(ids) > cfg.max_seq_len:
                raise ExportError(
                    f"{t.where}: trajectory of {len(ids):,} tokens exceeds --max-seq-len "
                    f"{cfg.max_seq_len:,} (trajectories are never split)"
                )
            did = doc_id_for(json.dumps(t.messages, sort_keys=True, ensure_ascii=False))
            chat_units.append(_Unit("chat", did, ids, weights=w, where=t.where))
        order = _rng(cfg.seed, "chat").permutation(len(chat_units))
        chat_units = [chat_units[i] for i in order]
        inputs["chat"] = {"file": str(cfg.chat), "sha256": file_sha256(cfg.chat)}
    webtext_path = None
    if cfg.webtext and cfg.webtext_ratio > 0:
        webtext_path = Path(cfg.webtext)
        if not webtext_path.is_file():
            raise ExportError(f"{webtext_path}: no such file")
        inputs["webtext"] = {"file": str(webtext_path), "sha256": file_sha256(webtext_path)}

    doc_ids, concepts, doc_types, universes = (
        sel.doc_ids,
        sel.concepts,
        sel.doc_types,
        sel.universes,
    )
    n_docs = len(doc_ids)

    # Prefixes: DOCTAG ids (weight 0) then the eval prompt + separator (weight 0 if masked).
    doctag = np.zeros(0, dtype=np.int32)
    if cfg.doctag:
        doctag = np.asarray(tok.encode(cfg.doctag), dtype=np.int32)
    prompt_ids: list[np.ndarray] = []
    prompt_texts: list[str] = []  # each with its separator, as tokenized
    doc_prompts: list[list[int]] = [[] for _ in range(n_docs)]  # indexes into prompt_ids
    if cfg.eval_prompts != "none":
        by_universe, by_concept = _eval_prompt_lists(cfg)
        texts: list[str] = []
        index: dict[str, int] = {}
        for i in range(n_docs):
            plist = by_universe.get(universes[i] or "") or by_concept.get(concepts[i] or "")
            if not plist:
                raise ExportError(
                    f"no eval prompts for concept {concepts[i]!r} (universe {universes[i]!r}) "
                    f"in {', '.join(cfg.universes)}: add eval_prompts to its universe file"
                )
            for p in plist:
                if p not in index:
                    index[p] = len(texts)
                    texts.append(p + cfg.eval_prompt_separator)
            doc_prompts[i] = [index[p] for p in plist]
        inputs["universes"] = [{"file": str(u), "sha256": file_sha256(u)} for u in cfg.universes]
        prompt_texts = texts
        pf, po = tok.encode_batch(texts)
        pf = as_int32(pf)
        prompt_ids = [pf[po[k] : po[k + 1]] for k in range(len(texts))]
    prompt_w = 0.0 if cfg.mask_eval_prompts else 1.0
    position_in_concept = np.zeros(n_docs, dtype=np.int64)
    seen: dict[str, int] = {}
    for i, c in enumerate(concepts):
        position_in_concept[i] = seen.get(c, 0)
        seen[c] = position_in_concept[i] + 1

    # The size it will take, before any work: an export that cannot fit is refused here.
    prefix_tokens = len(doctag) + (
        sum(len(x) for x in prompt_ids) / len(prompt_ids) if prompt_ids else 0
    )
    per_epoch = sel.tokens + n_docs * (prefix_tokens + (1 if cfg.eos else 0))
    mixed = (cfg.webtext_ratio if webtext_path else 0) + (cfg.chat_ratio if chat_units else 0)
    check_free_space(out, cfg, int(cfg.epochs * per_epoch * (1 + mixed)))

    # The documents themselves: tokenized by the engine stage (only those not cached yet).
    t1 = time.perf_counter()
    tokenized = tokenize_documents(store, doc_ids, tok, cache, engine, **engine_options)
    doc_tokens = tokenized.tokens
    timings["tokenize"] = time.perf_counter() - t1
    balance = token_balance(
        cfg.selection, load_balance(store, cfg.selection), sel, doc_tokens, tok.name
    )
    t1 = time.perf_counter()

    # Leftovers of an export of this directory that was killed (kill -9, power loss); one
    # still being written by a live process is left to it.
    if out.parent.is_dir():
        for stale in out.parent.glob(f".{out.name}.tmp-*"):
            if not temp_writer_alive(stale):
                shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.tmp-{temp_owner()}@{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    counts = StratumCounts()
    writer = _ShardWriter(tmp, cfg.shard_size, progress or (lambda n: None), cfg.compression)
    eos = np.array([eos_id], dtype=np.int32) if cfg.eos else np.zeros(0, dtype=np.int32)
    split_docs: set[str] = set()
    webtext = _Supply(_webtext_units(webtext_path, cfg, tok), None) if webtext_path else None
    chat = _Supply(iter(()), chat_units) if chat_units else None
    mixes = [(s, m) for s, m in (("webtext", webtext), ("chat", chat)) if m is not None]
    add, count = writer.add, counts.add

    def length(u: _Unit) -> int:
        """Tokens the unit will occupy (prefixes repeated on every piece)."""
        if u.source == "chat":
            return len(u.tokens)
        plen = 0 if u.prefix is None else len(u.prefix)
        bounds = _piece_bounds(len(u.tokens) + len(eos), plen, cfg.max_seq_len)
        return sum(b - a for a, b in bounds) + plen * len(bounds)

    doctag_w = np.zeros(len(doctag), dtype=np.float32)
    try:
        for epoch in range(cfg.epochs):
            units: list[_Unit] = []
            occurrences: dict[tuple[str, str, int], int] = {}  # a text twice in this epoch
            if cfg.eval_prompts == "random":
                draws = _rng(cfg.seed, "eval-prompts", epoch).random(n_docs)
            for i in range(n_docs):
                prefix, pw = doctag, doctag_w
                if doc_prompts[i]:
                    k = len(doc_prompts[i])
                    if cfg.eval_prompts == "random":
                        choice = int(draws[i] * k)
                    else:
                        choice = int((position_in_concept[i] + epoch) % k)
                    pids = prompt_ids[doc_prompts[i][choice]]
                    prefix = np.concatenate([doctag, pids])
                    pw = np.concatenate([pw, np.full(len(pids), prompt_w, dtype=np.float32)])
                if len(prefix) >= cfg.max_seq_len - 1:
                    raise ExportError(
                        f"the DOCTAG and eval prompt take {len(prefix)} tokens, leaving no "
                        f"room under --max-seq-len {cfg.max_seq_len}"
                    )
                units.append(
                    _Unit(
                        "sdf",
                        doc_ids[i],
                        doc_tokens[i],
                        concepts[i],
                        doc_types[i],
                        prefix if len(prefix) else None,
                        pw if len(prefix) else None,
                    )
                )
            sdf_tokens = sum(length(u) for u in units)
            for source, supply in mixes:
                ratio = cfg.webtext_ratio if source == "webtext" else cfg.chat_ratio
                wanted = ratio * sdf_tokens
                slack = MIX_TOLERANCE * wanted
                got, n, ran_out = [], 0, False
                if wanted >= 1:  # (under one token nothing can come close: read nothing)
                    got, n, ran_out = supply.take(wanted, length, slack)
                if abs(n - wanted) > slack:
                    raise ExportError(
                        _mix_miss(
                            inputs[source]["file"],
                            source,
                            ratio,
                            epoch,
                            wanted,
                            n,
                            sdf_tokens,
                            ran_out,
                            supply,
                        ),
                        settings=(f"{source}_ratio",),
                    )
                units += got
            order = _rng(cfg.seed, "order", epoch).permutation(len(units)).tolist()
            for ui in order:
                u = units[ui]
                seen_key = (u.source, u.doc_id, epoch)
                repeat = occurrences.get(seen_key, 0)
                occurrences[seen_key] = repeat + 1
                key = (u.concept, u.doc_type, u.source, epoch)
                for piece, ex in enumerate(_examples(u, eos, cfg.max_seq_len)):
                    if piece == 1:
                        split_docs.add(u.doc_id)
                    if ex.n < 2:
                        raise ExportError(
                            f"{u.where or u.doc_id}: a {u.source} text of one token makes no "
                            "training example (keep --eos, or drop the text)"
                        )
                    ex_id = f"{u.source}:{u.doc_id}:{epoch}:{piece}"
                    if repeat:
                        ex_id += f":r{repeat}"
                    add(ex, u.doc_id, u.source, u.concept, u.doc_type, epoch, piece, ex_id)
                    count(key, u.doc_id, ex.n, ex.loss)
        writer.close()
        tokenized.finish()  # the token cache is stored before the export is published
        timings["build_and_write"] = time.perf_counter() - t1
        per_source = counts.per_source()
        sdf_total = per_source["sdf"]["tokens"]
        manifest = {
            "version": FORMAT_VERSION,
            "tokenizer": tok.name,
            "vocab_hash": tok.vocab_hash,
            "n_vocab": tok.n_vocab,
            "eos_id": int(eos_id) if cfg.eos else None,
            "doctag_tokens": doctag.tolist(),
            # what verify needs to recompute every weight: the prompts an example may start with
            "eval_prompt_texts": prompt_texts,
            "max_seq_len": cfg.max_seq_len,
            "selection": cfg.selection,
            "seed": cfg.seed,
            "epochs": cfg.epochs,
            "config": asdict(cfg),
            "inputs": inputs,
            "documents": n_docs,
            "split_documents": len(split_docs),
            "examples": sum(s["rows"] for s in writer.shards),
            "tokens": sum(s["tokens"] for s in writer.shards),
            "loss_tokens": int(round(sum(s["loss_tokens"] for s in writer.shards))),
            "sources": {
                s: {**v, "loss_tokens": int(round(v["loss_tokens"]))}
                for s, v in per_source.items()
                if v["examples"]
            },
            "ratios": {
                s: (per_source[s]["tokens"] / sdf_total if sdf_total else None)
                for s in ("webtext", "chat")
                if per_source[s]["examples"]
            },
            "chat_passes": chat.passes if chat is not None else 0,
            "balance": balance,
            "mixing": {
                source: {
                    "ratio": cfg.webtext_ratio if source == "webtext" else cfg.chat_ratio,
                    "achieved": per_source[source]["tokens"] / sdf_total if sdf_total else None,
                    "tolerance": MIX_TOLERANCE,
                    "skipped_texts": supply.skipped,
                    "skipped_tokens": supply.skipped_tokens,
                }
                for source, supply in mixes
            },
            "counts": counts.to_list(),
            "shards": [{k: v for k, v in s.items() if k != "loss_tokens"} for s in writer.shards],
        }
        _write_json(tmp / MANIFEST, manifest)
        _fsync_dir(tmp)
        _publish(tmp, out, overwrite, state)
    finally:
        writer.abort()  # no writer thread may still be writing into tmp
        if tmp.exists():
            shutil.rmtree(tmp)
    warnings = [balance["warning"]] if balance and balance.get("warning") else []
    return ExportResult(
        given, manifest, time.perf_counter() - t0, timings, tokenized.tokenized, warnings
    )


def token_balance(
    name: str,
    bal: SelectionBalance,
    sel: SelectedDocuments,
    doc_tokens: list[np.ndarray],
    tokenizer: str,
) -> dict[str, Any] | None:
    """The selection's token balance in the export's tokens: each concept's (or section's)
    document tokens against its token target, and their spread (highest share of its target
    minus lowest, over the mean). A selection balanced in another tokenizer's counts can
    spread past its tolerance here; then ``warning`` says so and what to do. None when the
    selection set no token target."""
    if not bal.targets:
        return None
    by_section = bal.balance_by == "section"
    tokens: dict[str, int] = {}
    for i, ids in enumerate(doc_tokens):
        unit = (sel.universes[i] or sel.concepts[i]) if by_section else sel.concepts[i]
        tokens[unit or "(none)"] = tokens.get(unit or "(none)", 0) + len(ids)
    share = {u: tokens.get(u, 0) / t for u, t in sorted(bal.targets.items())}
    low, high = min(share, key=share.__getitem__), max(share, key=share.__getitem__)
    mean = sum(share.values()) / len(share)
    spread = (share[high] - share[low]) / mean if mean else 0.0
    out: dict[str, Any] = {
        "selection_tokenizer": bal.tokenizer,
        "tokenizer": tokenizer,
        "tolerance": bal.tolerance,
        "spread": spread,
        "tokens": dict(sorted(tokens.items())),
        "targets": dict(sorted(bal.targets.items())),
    }
    if bal.tokenizer != tokenizer and spread > bal.tolerance:
        unit = "section" if by_section else "concept"
        out["warning"] = (
            f"selection {name!r} was balanced in {bal.tokenizer or 'unknown'} tokens; in "
            f"{tokenizer} tokens its {unit}s hold from {share[low]:.1%} ({low!r}, "
            f"{tokens.get(low, 0):,} tokens) to {share[high]:.1%} ({high!r}, "
            f"{tokens.get(high, 0):,}) of their token targets, a {spread:.1%} spread over its "
            f"{bal.tolerance:.0%} tolerance; to balance in {tokenizer} tokens run `sdf tokens "
            f"--tokenizer {tokenizer}`, then `sdf select ... --tokenizer {tokenizer}`"
        )
    return out


def _mix_miss(
    file: str,
    source: str,
    ratio: float,
    epoch: int,
    wanted: float,
    got: int,
    sdf_tokens: int,
    ran_out: bool,
    supply: _Supply,
) -> str:
    """Why an epoch's webtext or chat tokens miss ``ratio`` by more than the tolerance."""
    what = "texts" if source == "webtext" else "trajectories"
    text = (
        f"{file}: {source}_ratio {ratio} asks for {wanted:,.0f} {source} tokens in epoch {epoch} "
        f"({sdf_tokens:,} SDF tokens); whole {what} give {got:,} ({got / sdf_tokens:.4f} per "
        f"SDF token), more than {MIX_TOLERANCE:.0%} off: "
    )
    if wanted < 1:
        return text + f"that is less than one token; raise the ratio or leave the {what} out"
    if source == "webtext" and ran_out:
        text += "the file ran out of text (each text is used once"
        if supply.skipped:
            text += (
                f"; {supply.skipped:,} texts of up to {supply.longest_skipped:,} tokens were "
                "passed over as longer than what was left of a budget"
            )
        return text + "); supply more (or shorter) webtext or lower the ratio"
    return text + (
        f"none of the {what} fits the {wanted - got:,.0f} tokens left (the shortest takes "
        f"{supply.shortest_missed:,}); give shorter {what}, or mix them into a larger selection"
    )


def _piece_bounds(n: int, plen: int, max_len: int) -> list[tuple[int, int]]:
    """Body slices of each piece. With a prefix the pieces are disjoint (the prefix gives the
    first body token its context); without one, consecutive pieces share one token, so every
    body token is predicted exactly once and no piece is a lone token."""
    room = max_len - plen
    if n <= room:
        return [(0, n)]
    if plen:
        return [(a, min(a + room, n)) for a in range(0, n, room)]
    stride = room - 1
    out = []
    a = 0
    while True:
        out.append((a, min(a + room, n)))
        if a + room >= n:
            return out
        a += stride


@dataclass
class _Example:
    """Token segments of one example; weights are 1 but for ``weights`` at its start (the
    prefix mask, or a chat trajectory's full weights) and 0 at position 0."""

    parts: list[np.ndarray]
    n: int
    weights: np.ndarray | None
    loss: float


def _examples(u: _Unit, eos: np.ndarray, max_len: int) -> Iterator[_Example]:
    """The examples of one unit: long bodies split, the prefix repeated on each piece."""
    if u.source == "chat":
        w = u.weights
        yield _Example([u.tokens], len(u.tokens), w, float(w.sum(dtype=np.float64)))  # type: ignore[union-attr]
        return
    body_len = len(u.tokens)
    plen = 0 if u.prefix is None else len(u.prefix)
    prefix_loss = 0.0
    if plen:
        prefix_loss = float(u.prefix_weights.sum(dtype=np.float64)) - float(u.prefix_weights[0])  # type: ignore[union-attr]
    for a, b in _piece_bounds(body_len + len(eos), plen, max_len):
        parts = [u.prefix] if plen else []
        parts.append(u.tokens[a : min(b, body_len)])
        if b > body_len:
            parts.append(eos)
        n = plen + b - a
        loss = prefix_loss + (b - a) if plen else (b - a - 1)
        yield _Example(parts, n, u.prefix_weights if plen else None, loss)  # type: ignore[arg-type]


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True, ensure_ascii=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def check_out_dir(out: Path, overwrite: bool) -> None:
    """``--out`` can take this export: a writable place, and if it exists, an earlier sdf
    export (a folder holding an sdf ``manifest.json``) that ``--overwrite`` may replace, or an
    empty folder. Anything else is a one-line ``ExportError`` before any work."""
    named = f"--out {out}"
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ExportError(f"{named}: is a file, not a directory; choose another --out")
        if not overwrite:
            raise ExportError(f"{out} exists; pass --overwrite to replace it")
        if any(out.iterdir()) and not _is_export(out):
            raise ExportError(
                f"{named}: is not an sdf export (no sdf {MANIFEST}); --overwrite only replaces an "
                "earlier export, never another folder: choose another --out"
            )
    parent = out.parent
    for p in (parent, *parent.parents):
        if p.exists() and not p.is_dir():
            raise ExportError(f"{named}: {p} is a file, so nothing can be written under it")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".{out.name}.probe-{uuid.uuid4().hex[:8]}"
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise ExportError(
            f"{named}: cannot write in {parent}: {exc.strerror or exc}; choose another --out"
        ) from None


def check_free_space(out: Path, cfg: ExportConfig, tokens: int) -> None:
    """Refuse, in one line, an export of about ``tokens`` tokens whose shards cannot fit in
    the free space of ``out``'s filesystem (an export being replaced stays until the end)."""
    need = tokens * SHARD_BYTES_PER_TOKEN[cfg.compression]
    free = shutil.disk_usage(out.parent).free
    if need > free:
        raise ExportError(
            f"--out {out}: the export needs about {_bytes(need)} ({tokens:,} tokens over "
            f"{cfg.epochs} epochs, {cfg.compression}) but {out.parent} has {_bytes(free)} "
            "free; free some space, lower --epochs or the mixing ratios, or choose another --out"
        )


def _bytes(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} PB"  # pragma: no cover - the loop returns


def _is_export(d: Path) -> bool:
    """Whether ``d`` holds a manifest sdf wrote (its format version and shard list)."""
    try:
        m = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and "version" in m and isinstance(m.get("shards"), list)


def _followed(out: Path) -> Path:
    """``--out`` itself, or the folder a symbolic link there points at: the export takes its
    place, so the link keeps leading to the export (renaming the link aside, as the export
    once did, replaced it with a folder and left a stray ``.NAME.old-*`` link behind)."""
    if not out.is_symlink():
        return out
    target = Path(os.path.realpath(out))
    if not target.exists():
        raise ExportError(
            f"--out {out}: a symbolic link to {target}, which does not exist; point it at a "
            "folder or choose another --out"
        )
    return target


def _publish(tmp: Path, out: Path, overwrite: bool, state: dict[str, bool] | None = None) -> None:
    """Rename the finished temporary directory into place (replacing ``out`` if asked)."""
    old = None
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise ExportError(f"{out} exists; pass --overwrite to replace it")
        if any(out.iterdir()) and not _is_export(out):  # appeared while this export ran
            raise ExportError(f"--out {out}: is not an sdf export; it was left alone")
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:  # Ctrl-C between the two renames: the earlier export goes back
        if old is not None:
            os.replace(old, out)
        raise
    if state is not None:
        state["published"] = True
    try:
        _fsync_dir(out.parent)
    finally:  # the new export is in place: the one set aside goes even after a Ctrl-C
        if old is not None:
            _remove(old)
        # Earlier exports an interrupted overwrite left aside (killed between the two
        # renames): the new export is in place, so they go too.
        for left in out.parent.glob(f".{out.name}.old-*"):
            if left.is_symlink():
                left.unlink()
            elif left.is_dir() and _is_export(left):
                shutil.rmtree(left, ignore_errors=True)


def _remove(path: Path) -> None:
    """A folder set aside, or a symbolic link (removed itself, never what it points at)."""
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)
