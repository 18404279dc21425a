"""n-gram collapse: which word n-grams (n = 2..5) recur across too many documents.

Answers "which stock phrases did the generator fall into?" ("in the ever-evolving landscape
of", "it is worth noting that"): for each n, the n-grams carried by the most documents, with
their total count and share of documents, overall, per concept and per doc type, flagged when
a share crosses the configured threshold.

How it stays fast and bounded (DEPS.md: polars beats DuckDB and a Python ``Counter`` here):
a per-document stage (``TokenHashStage``, cached by doc_id in table ``ngram_tokens_<sig>``)
lower-cases and splits each document into word tokens once and keeps each token only as a
64-bit hash, so a re-audit tokenises only new documents; the audit reads the cached hashes
in doc_id order, chunk by chunk, and marks function words by hash. Each n-gram
is then the hash of n consecutive token hashes (never a string), counted per document and
per stratum (concept × doc type) chunk by chunk, and the chunk counts are summed. Strings are
recovered only for the n-grams that make a top list, from the first document carrying
each (keyed again).
N-grams never span sentence punctuation (. ! ? ; :), and n-grams made only of function words
("of the", "at the end of" is kept: "end" is a content word) are skipped by default.
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sdfkit.audits import AuditResult, where_ids
from sdfkit.engine.local import Stage
from sdfkit.settings import (
    Checked,
    at_least,
    between,
    items_at_least,
    keys_at_least,
    sql_condition,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import polars as pl
    import pyarrow as pa

    from sdfkit.store.catalog import Store

#: Word tokens (letters/digits, inner apostrophes) and sentence punctuation (breaks n-grams).
TOKEN_PATTERN = r"[\p{L}\p{N}]+(?:['’][\p{L}\p{N}]+)*|[.!?;:]"
BREAKS = [".", "!", "?", ";", ":"]
#: Words that make an n-gram uninformative when it holds nothing else.
FUNCTION_WORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each few
    for from further had has have having he her here hers herself him himself his how i if in
    into is it it's its itself just me more most my myself no nor not now of off on once only
    or other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves may might must shall us let""".split()
)
_SEED = 0x5DF


@dataclass
class Config(Checked):
    """Settings of the n-gram audit."""

    where_: ClassVar[str] = "audits.ngrams"

    #: n-gram sizes to count.
    n: tuple[int, ...] = field(default=(2, 3, 4, 5), metadata=at_least(1) | items_at_least(1))
    #: Entries per n in the overall top list, and per concept / doc type.
    top_k: int = field(default=50, metadata=at_least(1))
    top_k_stratum: int = field(default=20, metadata=at_least(1))
    #: Flag an n-gram whose share of documents (overall or within a concept / doc type)
    #: reaches this, per n; sizes not listed use ``default_flag_share``.
    flag_doc_share: dict[int, float] = field(
        default_factory=lambda: {2: 0.8, 3: 0.5, 4: 0.25, 5: 0.15},
        metadata=between(0, 1) | keys_at_least(1),
    )
    default_flag_share: float = field(default=0.15, metadata=between(0, 1))
    #: Strata with fewer documents are not flagged (a share of 3 documents means little).
    min_stratum_docs: int = field(default=20, metadata=at_least(0))
    #: Skip n-grams made only of function words ("of the", "it is in the").
    skip_function_words: bool = True
    #: Documents tokenised per chunk.
    chunk_docs: int = field(default=1000, metadata=at_least(1))
    #: Per-group lists first rank the n-grams in the most documents overall (this many),
    #: widening once if needed to stay exact; past ``group_max_rows`` occurrences the lists
    #: of small groups are marked approximate instead.
    group_candidates: int = field(default=20_000, metadata=at_least(1))
    group_max_rows: int = field(default=30_000_000, metadata=at_least(1))
    #: Most n-gram occurrences counted at once. More are spilled to a temporary directory
    #: in hash partitions of the n-gram keys and counted one partition at a time, so peak
    #: memory does not grow with the corpus (the results are identical).
    partition_rows: int = field(default=2_000_000, metadata=at_least(1))
    #: SQL condition on the ``documents`` view selecting the documents to audit.
    where: str | None = field(default=None, metadata=sql_condition())
    #: Most flag sentences per n (the tables hold every flagged n-gram).
    max_flags_per_n: int = field(default=10, metadata=at_least(0))
    #: Threads for tokenising, hashing and counting (default: every core). polars and numpy
    #: release the GIL in this work; the figures do not depend on it.
    threads: int | None = field(default=None, metadata=at_least(1))

    def threshold(self, n: int) -> float:
        # construction turned the keys into ints (YAML/JSON may give "5")
        return self.flag_doc_share.get(int(n), self.default_flag_share)


def tokenize(texts: pl.Expr) -> pl.Expr:
    """The audit's tokenisation: lower-cased words and sentence punctuation, as a list."""
    return texts.str.to_lowercase().str.extract_all(TOKEN_PATTERN)


def _token_hashes(texts: pl.Series) -> pa.Array:
    """Each text's tokens as 64-bit hashes in order (an Arrow list array); sentence
    punctuation is null (a break). What the cached stage computes."""
    return _hash_texts(texts)


def _hash_texts(texts: pl.Series) -> pa.Array:
    """``_token_hashes``; also used directly to key again the few documents whose words
    are recovered. Hashing runs on the flat column of every token."""
    import numpy as np
    import polars as pl
    import pyarrow as pa

    tok = pl.DataFrame({"t": texts}).select(tokenize(pl.col("t")).alias("tok"))["tok"]
    lengths = tok.list.len().fill_null(0).to_numpy()
    flat = tok.explode().drop_nulls()  # an empty list explodes to one null: drop it
    hashed = pl.select(
        pl.when(flat.is_in(BREAKS)).then(None).otherwise(flat.hash(_SEED)).alias("h")
    )["h"]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.LargeListArray.from_arrays(pa.array(offsets), hashed.to_arrow()).cast(
        pa.list_(pa.uint64())
    )


def _hash_signature() -> str:
    """Short digest of everything that decides the cached token hashes: the token pattern,
    the seed and polars' hash function itself (probed, since polars may change it between
    versions), so a change starts a new cache table instead of mixing hashes."""
    import hashlib

    import polars as pl

    probe = pl.Series(["sdfkit n-gram probe", "of", "’s"]).hash(_SEED).to_list()
    text = f"{TOKEN_PATTERN}|{BREAKS}|{_SEED}|{probe}"
    return hashlib.sha256(text.encode()).hexdigest()[:10]


#: Most bytes of token hashes a cold run keeps in memory for itself (see ``TokenHashStage``):
#: about 30M tokens (the seed's scale is 20M).
_KEEP_BYTES = 256 << 20


class TokenHashStage(Stage):
    """Per-document stage: the audit's tokens of each document as 64-bit hashes (``h``, a
    list with null at sentence punctuation), cached by doc_id so a re-audit tokenises only
    new documents. Function words are recognised later by hash, so changing
    ``skip_function_words`` or ``n`` needs no new cache."""

    name: ClassVar[str] = "ngram_tokens"
    columns: ClassVar[tuple[str, ...]] = ("doc_id", "text")

    def __init__(self, threads: int = 1) -> None:
        self.signature = _hash_signature()
        #: Threads per batch (slices of the batch are tokenised at once; the result is the
        #: same as in one piece).
        self.threads = threads
        #: Batches computed in this process (the local engine's single process), so a cold
        #: audit reads them from memory rather than back from the cache it just wrote; None
        #: once they pass ``_KEEP_BYTES`` (a large corpus reads the cache back, as memory
        #: must not hold them twice). Underscored: never shipped to worker processes.
        self._computed: list[pa.RecordBatch] | None = []

    @property
    def output_schema(self) -> pa.Schema:
        import pyarrow as pa

        return pa.schema([("doc_id", pa.string()), ("h", pa.list_(pa.uint64()))])

    @property
    def table(self) -> str:
        return f"ngram_tokens_{self.signature}"

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import polars as pl
        import pyarrow as pa

        texts = pl.from_arrow(batch.column(batch.schema.get_field_index("text")))
        assert isinstance(texts, pl.Series)
        step = -(-len(texts) // max(1, 2 * self.threads))
        if self.threads <= 1 or len(texts) < 2 * self.threads:
            hashes = _token_hashes(texts)
        else:
            with ThreadPoolExecutor(self.threads, thread_name_prefix="ngram-tokens") as pool:
                pieces = [texts.slice(lo, step) for lo in range(0, len(texts), step)]
                hashes = pa.concat_arrays(list(pool.map(_token_hashes, pieces)))
        out = pa.record_batch(
            [batch.column(batch.schema.get_field_index("doc_id")), hashes],
            schema=self.output_schema,
        )
        kept = getattr(self, "_computed", None)  # absent in a worker process (not pickled)
        if kept is not None:
            kept.append(out)
            if sum(b.nbytes for b in kept) > _KEEP_BYTES:
                self._computed = None
        return out

    def computed(self) -> pl.DataFrame | None:
        """The (doc_id, h) rows computed in this process since the last call, or None."""
        import polars as pl
        import pyarrow as pa

        batches, self._computed = getattr(self, "_computed", None), []
        if not batches:
            return None
        frame = pl.from_arrow(pa.Table.from_batches(batches, schema=self.output_schema))
        assert isinstance(frame, pl.DataFrame)
        return frame


def _selected_documents(store: Store, config: Config) -> pl.DataFrame:
    """(doc_id, concept, doc_type) of the audited documents, in doc_id order."""
    import polars as pl

    chosen = where_ids(store, "ngrams", config.where)
    docs = store.query(
        "SELECT doc_id, coalesce(concept, '') AS concept, coalesce(doc_type, '') AS doc_type "
        "FROM documents ORDER BY doc_id"
    )
    return docs if chosen is None else docs.filter(pl.col("doc_id").is_in(sorted(chosen)))


def _token_chunks(store: Store, stage: TokenHashStage, selected: pl.DataFrame, config: Config):
    """The selected documents' cached token hashes as (doc_id, concept, doc_type, h) frames
    of ``chunk_docs`` documents with the total number of tokens, in doc_id order (the order
    fixes the order of tied rows in the tables, so a warm run lists exactly what a cold one
    does). The hashes are held once: each chunk gathers its rows from them."""
    import polars as pl

    parts = [str(p) for p in store.parts(stage.table)]
    fresh = stage.computed()
    if not parts or selected.is_empty():
        return
    table, rows = None, None
    if fresh is not None:  # a cold run: the stage computed every selected document here
        table, rows = fresh, _rows_of(selected, fresh)
        if rows.null_count():
            table = rows = None  # some came from the cache: read them all from it
        del fresh
    if table is None:
        cached = pl.scan_parquet(parts)
        if config.where:
            cached = cached.filter(pl.col("doc_id").is_in(selected["doc_id"].implode()))
        table = cached.collect()
        rows = _rows_of(selected, table)
    assert rows is not None
    if rows.null_count():
        from sdfkit.errors import SdfError

        missing = selected.filter(rows.is_null())["doc_id"].head(3).to_list()
        raise SdfError(f"n-gram token cache {stage.table} lacks documents {missing}")
    hashes = table["h"]
    del table
    tokens = int(hashes.list.len().gather(rows).sum() or 0)
    for lo in range(0, selected.height, config.chunk_docs):
        chunk = selected.slice(lo, config.chunk_docs)
        yield chunk.with_columns(hashes.gather(rows.slice(lo, config.chunk_docs))), tokens


def _rows_of(selected: pl.DataFrame, table: pl.DataFrame) -> pl.Series:
    """Row of each selected document in ``table`` (null where it has none)."""

    index = table.select("doc_id").with_row_index("row")
    return selected.select("doc_id").join(index, on="doc_id", how="left", maintain_order="left")[
        "row"
    ]


def _hash_tokens(
    chunk: pl.DataFrame, doc_offset: int, strata: dict[tuple[str, str], int], stop: pl.Series
) -> tuple:
    """One chunk → (token frame, per-document frame). Token rows: doc, stratum, h, stop."""
    import polars as pl

    keys = list(zip(chunk["concept"].to_list(), chunk["doc_type"].to_list(), strict=True))
    for k in keys:
        strata.setdefault(k, len(strata))
    docs = chunk.select(
        pl.col("doc_id"),
        (pl.int_range(pl.len(), dtype=pl.UInt32) + doc_offset).alias("doc"),
        pl.Series("stratum", [strata[k] for k in keys], dtype=pl.UInt32),
        pl.col("h"),
    )
    toks = (
        docs.filter(pl.col("h").list.len() > 0)  # an empty list would explode to a null row
        .select("doc", "stratum", "h")
        .explode("h")
        .with_columns(
            # Function words by hash (a 64-bit collision with a content word is negligible).
            pl.col("h").is_in(stop.implode()).fill_null(False).alias("stop")
        )
    )
    lens = docs.select("doc_id", "doc", "stratum", pl.col("h").list.len().alias("n_tok"))
    return toks, lens


#: Odd 64-bit multipliers: position k of an n-gram contributes ``hash(word) * MIX[k]``.
_MIX = (
    0x9E3779B97F4A7C15,
    0xC2B2AE3D27D4EB4F,
    0x165667B19E3779F9,
    0xD6E8FEB86659FD93,
    0xFF51AFD7ED558CCD,
    0xC4CEB9FE1A85EC53,
    0x27D4EB2F165667C5,
    0x85EBCA77C2B2AE63,
)


def _ngram_keys(
    toks: pl.DataFrame, n: int, skip_function_words: bool, doc_bits: int, index: bool = False
) -> pl.DataFrame:
    """The valid n-grams of a chunk as rows (packed: the n-gram's 64-bit hash with its low
    ``doc_bits`` bits replaced by the document; with ``index``, i: the first token's row)."""
    import polars as pl

    def mix(k: int) -> pl.Expr:
        return pl.lit(_MIX[k % len(_MIX)] | 1, dtype=pl.UInt64)

    # XOR of word hashes times per-position odd constants (wrapping u64 arithmetic is a
    # bijection per position): order matters and no strings are built.
    g = pl.col("h") * mix(1)
    for k in range(1, n):
        g = g ^ (pl.col("h").shift(-k) * mix(k + 1))
    valid = pl.all_horizontal([pl.col("h").shift(-k).is_not_null() for k in range(n)]) & (
        pl.col("doc").shift(-(n - 1)) == pl.col("doc")
    )
    if skip_function_words:
        valid = valid & ~pl.all_horizontal([pl.col("stop").shift(-k) for k in range(n)])
    # key << doc_bits | doc, with key = the top 64 - doc_bits bits of the hash: sorting
    # these groups rows by n-gram and, within one, by document.
    high = pl.lit(~((1 << doc_bits) - 1) & 0xFFFFFFFFFFFFFFFF, dtype=pl.UInt64)
    packed = (g & high) | pl.col("doc").cast(pl.UInt64)
    rows = toks.lazy().with_row_index("i") if index else toks.lazy()
    cols = ["packed", "i"] if index else ["packed"]
    return (
        rows.select(packed.alias("packed"), valid.alias("ok"), *cols[1:])
        .filter(pl.col("ok"))
        .select(cols)
        .collect()
    )


def _runs(values: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over sorted packed values ``key << shift | doc``: each key's first row, its number of
    rows (occurrences) and of distinct values (documents)."""
    import numpy as np

    keys = values >> np.uint64(shift)
    new_run = np.empty(len(values), dtype=bool)
    new_run[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=new_run[1:])
    starts = np.flatnonzero(new_run)
    counts = np.diff(np.append(starts, len(values)))
    new_doc = new_run.copy()
    new_doc[1:] |= values[1:] != values[:-1]
    # documents per run = document starts inside it: differences of their running count
    # at the run starts (much faster than ``np.add.reduceat`` over millions of short runs).
    seen = np.cumsum(new_doc, dtype=np.int64)
    docs = np.diff(np.append(seen[starts], seen[-1] + 1)) if len(starts) else counts
    return starts, counts, docs


class _Spill:
    """The n-gram rows (packed n-gram key and document, u64) of every size, split into
    ``2**bits`` partitions by the top bits of the n-gram hash and appended to one raw file
    per (n, partition): each n-gram's occurrences all land in one partition. Each chunk's
    rows are sorted before they are split, so a partition file is a series of sorted runs
    (which the counting pass merges)."""

    def __init__(self, root: Path, bits: int) -> None:
        self.root, self.bits = root, bits
        self.rows: dict[int, int] = {}

    def path(self, n: int, part: int, what: str = "rows") -> Path:
        return self.root / f"n{n}_p{part}.{what}"

    def add(self, n: int, keys: pl.DataFrame) -> None:
        import numpy as np

        self.rows[n] = self.rows.get(n, 0) + keys.height
        if keys.is_empty():
            return
        # a SIMD sort of u64 beats gathering rows by partition (argsort + take)
        packed = np.sort(keys["packed"].to_numpy())
        edges = np.arange(1 << self.bits, dtype=np.uint64) << np.uint64(64 - self.bits)
        bounds = np.append(np.searchsorted(packed, edges), len(packed)) if self.bits else None
        if bounds is None:
            bounds = np.array([0, len(packed)])
        for p in range(len(bounds) - 1):
            if bounds[p + 1] > bounds[p]:
                with open(self.path(n, p), "ab") as f:
                    packed[bounds[p] : bounds[p + 1]].tofile(f)

    def keys(self, n: int):
        """(partition, its packed rows) of size ``n``, one partition in memory at a time."""
        import numpy as np

        for p in range(1 << self.bits):
            path = self.path(n, p)
            if path.exists():
                yield p, np.fromfile(path, dtype=np.uint64)


def _ranked(overall: pl.DataFrame | pl.LazyFrame, config: Config) -> list[pl.DataFrame]:
    """The top ``top_k`` by documents and by count (ties broken on the key: arbitrary but
    deterministic, and a total order, so tops of partitions merge exactly)."""
    import polars as pl

    ranked = overall.lazy()
    return pl.collect_all(
        [
            ranked.top_k(config.top_k, by=["documents", "count", "key"]),
            ranked.top_k(config.top_k, by=["count", "documents", "key"]),
        ]
    )


def _aggregate(
    spill: _Spill,
    n: int,
    doc_bits: int,
    groups: dict[str, tuple[np.ndarray, int]],
    config: Config,
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame], pl.DataFrame, int]:
    """Count the n-gram keys of size ``n`` by sorting packed integers (no hash tables, no
    argsort: plain SIMD sorts of u64 are what this hardware does fast), one hash partition
    of the keys at a time.

    Each row is packed as ``key << doc_bits | doc`` where ``key`` is the top 64 - doc_bits
    bits of the n-gram hash, so one sort groups rows by n-gram and, within it, by document.
    Returns the overall top candidates (key, count, documents), per grouping
    (``groups[name] = (group id of each document, bits)``) the per-group candidates
    (gid, key, count, documents) among n-grams in at least two documents, the first
    document (key, first_doc) of every listed n-gram and the number of documents carrying
    any of the five n-grams in most documents.
    """
    import numpy as np
    import polars as pl

    shift = np.uint64(doc_bits)
    # Pass 1, per partition: sorted packed rows and per-key runs (kept on disk), partition
    # tops, and the histogram of documents per n-gram (and of their rows) over all keys.
    tops: list[pl.DataFrame] = []
    hist = np.zeros(1, dtype=np.int64)
    hist_rows = np.zeros(1, dtype=np.int64)
    done: list[int] = []
    low = np.uint64((1 << doc_bits) - 1)
    for p, packed in spill.keys(n):
        packed.sort(kind="stable")  # merges the file's sorted runs
        starts, counts, docs = _runs(packed, doc_bits)
        keys = packed[starts] >> shift
        counts, docs = counts.astype(np.uint32), docs.astype(np.uint32)
        for ranked in _ranked(
            pl.DataFrame({"key": keys, "count": counts, "documents": docs}), config
        ):
            # a key's run starts at its first document: its words are recovered from there
            at = np.searchsorted(keys, ranked["key"].to_numpy())
            first_doc = (packed[starts[at]] & low).astype(np.uint32)
            tops.append(ranked.with_columns(pl.Series("first_doc", first_doc)))
        # Only n-grams in two documents or more can enter a per-group list: the rest (most
        # 4- and 5-grams) are not kept for the passes below.
        multi = docs >= 2
        if not multi.all():
            packed = packed[np.repeat(multi, counts)]
        for what, arr in (
            ("packed", packed),
            ("keys", keys[multi]),
            ("counts", counts[multi]),
            ("docs", docs[multi]),
        ):
            np.save(_npy(spill, n, p, what), arr, allow_pickle=False)
        del packed, starts
        h = np.bincount(docs)
        hw = np.bincount(docs, weights=counts).round().astype(np.int64)
        hist = _add(hist, h)
        hist_rows = _add(hist_rows, hw)
        done.append(p)
    # a key may be in both of a partition's tops: rank each key once
    by_docs, by_count = _ranked(pl.concat(tops).unique("key"), config)
    top = (
        pl.concat([by_docs, by_count])
        .unique("key", keep="first")
        .with_columns(
            pl.col("key").is_in(by_docs["key"].implode()).alias("top_by_documents"),
            pl.col("key").is_in(by_count["key"].implode()).alias("top_by_count"),
        )
    )

    def partitions(mmap: bool = False):
        # mapped: only the pages touched are read (a few rows per partition)
        for p in done:
            yield tuple(
                np.load(
                    _npy(spill, n, p, what), allow_pickle=False, mmap_mode="r" if mmap else None
                )
                for what in ("packed", "keys", "counts", "docs")
            )

    # Per-group lists. An n-gram's documents in a group are at most its documents overall,
    # so only n-grams in at least T documents overall can enter a group's list once that
    # list's k-th entry has T documents or more. Start with the most widespread
    # ``group_candidates`` n-grams; if some group's k-th entry is below T, lower T to it
    # once more (exact again); past ``group_max_rows`` rows the group is left approximate.
    above = np.cumsum(hist[::-1])[::-1]  # above[t] = n-grams in >= t documents
    t = int(np.searchsorted(-above, -config.group_candidates, side="right"))
    t = max(2, min(t, len(hist) - 1)) if len(hist) > 2 else 2
    per_group: dict[str, pl.DataFrame] = {}
    pending = dict(groups)
    approximate: list[str] = []
    while pending:
        found: dict[str, list[pl.DataFrame]] = {name: [] for name in pending}
        for packed, keys, counts, docs in partitions():
            for name, df in _group_lists(
                packed, keys, counts, docs, t, doc_bits, pending, config
            ).items():
                found[name].append(df)
        lists, floors = _merge_group_lists(found, pending, config)
        per_group.update(lists)
        retry = {}
        lower = t
        for name, floor in floors.items():
            if floor < t:
                retry[name] = pending[name]
                lower = min(lower, max(2, floor))
        if not retry or lower >= t:
            break
        rows_needed = int(hist_rows[lower:].sum())
        if rows_needed > config.group_max_rows:
            approximate += list(retry)
            break
        t, pending = lower, retry
    top = top.with_columns(pl.lit(",".join(approximate)).alias("approximate_groups"))

    # Pass 2, per partition (its sorted rows, read back): the first document carrying each
    # listed n-gram (to recover its words later) and the documents carrying the five
    # n-grams in most documents.
    # (The overall top's first documents were found in pass 1.)
    needed = np.unique(
        np.concatenate(
            [np.zeros(0, dtype=np.uint64)] + [d["key"].to_numpy() for d in per_group.values()]
        )
    )
    five_top = (
        top.filter(pl.col("top_by_documents"))
        .sort(["documents", "count", "key"], descending=[True, True, False])
        .head(5)
    )
    single = five_top.filter(pl.col("documents") < 2)  # its only document is its first
    five = five_top.filter(pl.col("documents") >= 2)["key"].to_numpy()
    # In the sorted rows a key's run starts at its first document.
    firsts: list[pl.DataFrame] = []
    five_docs: list[np.ndarray] = []
    low = np.uint64((1 << doc_bits) - 1)
    for packed, keys, counts, _ in partitions(mmap=True):
        starts = np.cumsum(counts, dtype=np.int64) - counts
        hit = _found(keys, needed)
        firsts.append(
            pl.DataFrame(
                {"key": keys[hit], "first_doc": (packed[starts[hit]] & low).astype(np.uint32)}
            )
        )
        for j in _found(keys, np.sort(five)):
            five_docs.append(np.unique(packed[starts[j] : starts[j] + counts[j]] & low))
    five_docs.append(single["first_doc"].to_numpy().astype(np.uint64))
    first = pl.concat([top.select("key", "first_doc"), *firsts]).unique("key")
    top5 = len(np.unique(np.concatenate(five_docs)))
    return top.drop("first_doc"), per_group, first, top5


def _found(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Indexes in ``keys`` (sorted, distinct) of the values of ``wanted`` (sorted) found
    there, ascending: a binary search per wanted key, not a pass over ``keys``."""
    import numpy as np

    at = np.searchsorted(keys, wanted)
    ok = at < len(keys)
    ok[ok] = keys[at[ok]] == wanted[ok]
    return at[ok]


def _npy(spill: _Spill, n: int, p: int, what: str) -> Path:
    return spill.path(n, p, what + ".npy")


def _add(total: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Element-wise sum of two histograms of different lengths."""
    import numpy as np

    out = np.zeros(max(len(total), len(part)), dtype=np.int64)
    out[: len(total)] += total
    out[: len(part)] += part
    return out


#: Most (n-gram, group) cells counted at once by ``_group_lists`` (two int64 arrays each).
_GROUP_CELLS = 1 << 22


def _group_lists(
    packed: np.ndarray,
    keys: np.ndarray,
    counts: np.ndarray,
    docs: np.ndarray,
    threshold: int,
    doc_bits: int,
    groups: dict[str, tuple[np.ndarray, int]],
    config: Config,
) -> dict[str, pl.DataFrame]:
    """Per-group top lists over the n-grams of one partition in >= ``threshold``
    documents.

    No sort: the candidate rows are already sorted by n-gram, then document, so a row
    starts a new document of its n-gram when it differs from the row before, and each
    (n-gram, group) cell's occurrences and documents are two ``bincount``s over a dense
    cell index, for blocks of n-grams of at most ``_GROUP_CELLS`` cells."""
    import numpy as np
    import polars as pl

    keep = docs >= threshold
    cand_keys = keys[keep]
    cand_counts = counts[keep].astype(np.int64)
    cand = packed[np.repeat(keep, counts)]
    new_doc = np.empty(len(cand), dtype=bool)
    new_doc[:1] = True
    np.not_equal(cand[1:], cand[:-1], out=new_doc[1:])
    cand_docs = (cand & np.uint64((1 << doc_bits) - 1)).astype(np.intp)
    del cand
    ends = np.cumsum(cand_counts)
    run = np.repeat(np.arange(len(cand_keys), dtype=np.int64), cand_counts)
    empty = {"gid": pl.UInt32, "key": pl.UInt64, "count": pl.UInt32, "documents": pl.UInt32}
    lists: dict[str, pl.DataFrame] = {}
    for name, (gid_of_doc, _) in groups.items():
        n_groups = int(gid_of_doc.max()) + 1 if len(gid_of_doc) else 1
        gid = gid_of_doc[cand_docs].astype(np.int64)
        block = max(1, _GROUP_CELLS // n_groups)
        found = []
        for lo in range(0, len(cand_keys), block):
            hi = min(lo + block, len(cand_keys))
            a, b = int(ends[lo] - cand_counts[lo]), int(ends[hi - 1])
            cell = (run[a:b] - lo) * n_groups + gid[a:b]
            size = (hi - lo) * n_groups
            in_docs = np.bincount(cell[new_doc[a:b]], minlength=size)
            (hit,) = np.nonzero(in_docs >= 2)
            occurrences = np.bincount(cell, minlength=size)
            found.append(
                pl.DataFrame(
                    {
                        "gid": (hit % n_groups).astype(np.uint32),
                        "key": cand_keys[lo + hit // n_groups],
                        "count": occurrences[hit].astype(np.uint32),
                        "documents": in_docs[hit].astype(np.uint32),
                    }
                )
            )
        lists[name] = _group_head(pl.concat(found) if found else pl.DataFrame(schema=empty), config)
    return lists


def _group_head(df: pl.DataFrame, config: Config) -> pl.DataFrame:
    """Each group's first ``top_k_stratum`` rows by documents, count, then key."""

    return (
        df.sort(["gid", "documents", "count", "key"], descending=[False, True, True, False])
        .group_by("gid", maintain_order=True)
        .head(config.top_k_stratum)
    )


def _merge_group_lists(
    found: dict[str, list[pl.DataFrame]],
    groups: dict[str, tuple[np.ndarray, int]],
    config: Config,
) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    """Per-group lists of all partitions merged (an n-gram is in one partition only, so
    the head of the partitions' heads is exact), and for each grouping the smallest
    documents value of a full k-entry list (the floor below which an unseen n-gram could
    still enter some group's list; 2 when some list is short)."""
    import polars as pl

    lists: dict[str, pl.DataFrame] = {}
    floors: dict[str, int] = {}
    empty = {"gid": pl.UInt32, "key": pl.UInt64, "count": pl.UInt32, "documents": pl.UInt32}
    for name, (gid_of_doc, _) in groups.items():
        parts = found.get(name) or []
        df = _group_head(pl.concat(parts), config) if parts else pl.DataFrame(schema=empty)
        lists[name] = df
        full = df.group_by("gid").agg(pl.len().alias("k"), pl.col("documents").min().alias("m"))
        n_groups = int(gid_of_doc.max()) + 1 if len(gid_of_doc) else 0
        short = full.height < n_groups or bool((full["k"] < config.top_k_stratum).any())
        # A short list could still take any n-gram in >= 2 documents.
        floors[name] = 2 if short else int(full["m"].min())
    return lists, floors


def _recover_strings(
    store: Store,
    need: pl.DataFrame,
    doc_index: pl.DataFrame,
    stop: pl.Series,
    doc_bits: int,
    config: Config,
) -> dict[tuple[int, int], str]:
    """(n, key) → the n-gram's text at its first occurrence: the first position of the key
    in its first document (``first_doc``). Only those documents are re-tokenised; their
    n-gram keys are computed again exactly as in the count."""
    import polars as pl

    if need.is_empty():
        return {}
    docs = (
        need.select(pl.col("first_doc").alias("doc"))
        .unique()
        .join(doc_index.select("doc", "doc_id"), on="doc")
        .sort("doc")
    )
    texts = store.query(
        "SELECT doc_id, text FROM documents WHERE doc_id IN (SELECT unnest($ids))",
        {"ids": docs["doc_id"].to_list()},
    )
    texts = docs.join(texts, on="doc_id", maintain_order="left")
    tokens = dict(
        zip(
            texts["doc"].to_list(),
            texts.select(tokenize(pl.col("text")))["text"].to_list(),
            strict=True,
        )
    )
    chunk = texts.select(
        "doc_id",
        pl.lit("").alias("concept"),
        pl.lit("").alias("doc_type"),
        pl.Series("h", _hash_texts(texts["text"])),
    )
    toks, _ = _hash_tokens(chunk, 0, {}, stop)
    # the token rows number these documents 0, 1, ...: put back their numbers in the count
    toks = toks.with_columns(
        pl.col("doc").replace_strict(
            list(range(texts.height)), texts["doc"].to_list(), return_dtype=pl.UInt32
        )
    )
    offsets = toks.with_row_index("i").group_by("doc").agg(pl.col("i").min().alias("start"))
    out: dict[tuple[int, int], str] = {}
    mask = (1 << doc_bits) - 1
    for (n,), wanted in need.group_by("n"):
        found = (
            _ngram_keys(toks, int(n), config.skip_function_words, doc_bits, index=True)
            .select(
                (pl.col("packed") // (1 << doc_bits)).alias("key"),
                (pl.col("packed") & mask).cast(pl.UInt32).alias("first_doc"),
                "i",
            )
            .join(wanted.select("key", "first_doc"), on=["key", "first_doc"])
            .group_by("key", "first_doc")
            .agg(pl.col("i").min())
            .join(offsets, left_on="first_doc", right_on="doc")
        )
        for key, doc, i, start in found.select("key", "first_doc", "i", "start").iter_rows():
            pos = i - start
            out[(int(n), key)] = " ".join(tokens[doc][pos : pos + int(n)])
    return out


def _threads(config: Config) -> int:
    return config.threads or os.cpu_count() or 1


def run(store: Store, config: Config | None = None, engine: str | None = None) -> AuditResult:
    """Count word n-grams by documents and occurrences, overall and per concept / doc type.

    Tokens come from the cached per-document stage (``TokenHashStage``, run by ``engine``):
    only documents not tokenised before are read as text.
    """
    import polars as pl

    from sdfkit.engine.local import run_stage

    config = config or Config()
    t0 = time.perf_counter()
    selected = _selected_documents(store, config)
    threads = _threads(config)
    stage = TokenHashStage(threads)
    # One local process on ``threads`` threads: tokenising is seconds even cold, and forking
    # a process pool after polars has started its threads (as here) can deadlock the workers.
    run_stage(
        store,
        stage,
        engine=engine,
        workers=1,
        batch_rows=512 * threads,
        where=set(selected["doc_id"].to_list()) if config.where else None,
    )
    t_cache = time.perf_counter() - t0
    stop = pl.Series(sorted(FUNCTION_WORDS)).hash(_SEED)
    for n in config.n:
        if n < 1:
            from sdfkit.errors import SdfError

            raise SdfError(f"n-gram size must be at least 1, got {n}")
    # n-gram rows are spilled here in hash partitions (see ``partition_rows``); the
    # directory is removed on every exit, errors and Ctrl-C included.
    spill_dir = tempfile.TemporaryDirectory(prefix="sdf-ngrams-")
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="ngrams") as pool:
            result = _run(store, config, stage, selected, stop, Path(spill_dir.name), t0, pool)
    finally:
        spill_dir.cleanup()
    # the token cache's share of "tokenise" (all of it is tokenising only on a cold run)
    result.figures["timings"]["token_cache"] = round(t_cache, 3)
    return result


def _run(
    store: Store,
    config: Config,
    stage: TokenHashStage,
    selected: pl.DataFrame,
    stop: pl.Series,
    spill_root: Path,
    t0: float,
    pool: ThreadPoolExecutor,
) -> AuditResult:
    """``run`` once the token cache is filled, spilling n-gram rows under ``spill_root``.
    The sizes n are keyed, spilled and counted on ``pool``'s threads (each size writes and
    reads only its own files)."""
    import numpy as np
    import polars as pl

    from sdfkit.progress import counter

    strata: dict[tuple[str, str], int] = {}
    doc_frames: list[pl.DataFrame] = []
    n_docs = 0
    spill: _Spill | None = None
    doc_bits = max(1, (selected.height - 1).bit_length())
    sizes = list(dict.fromkeys(config.n))  # each size once: its files are its own
    jobs: list[Future] = []

    def add(n: int, toks: pl.DataFrame) -> None:
        assert spill is not None
        spill.add(n, _ngram_keys(toks, n, config.skip_function_words, doc_bits))

    with counter("n-grams: read tokens", total=selected.height, unit="docs") as tick:
        for chunk, tokens in _token_chunks(store, stage, selected, config):
            if spill is None:
                # Partitions of about ``partition_rows`` n-grams each (tokens bound them).
                parts = -(-tokens // config.partition_rows)
                spill = _Spill(spill_root, min(10, max(0, (parts - 1).bit_length())))
            toks, lens = _hash_tokens(chunk, n_docs, strata, stop)
            # This chunk's tokens were prepared while the last chunk's sizes were keyed;
            # one chunk at a time appends to a size's files.
            for job in jobs:
                job.result()
            jobs = [pool.submit(add, n, toks) for n in sizes]
            del toks
            doc_frames.append(lens)
            n_docs += chunk.height
            tick(chunk.height)
        for job in jobs:
            job.result()
    timings = {"tokenise": time.perf_counter() - t0}
    doc_index = (
        pl.concat(doc_frames)
        if doc_frames
        else pl.DataFrame(
            schema={"doc_id": pl.String, "doc": pl.UInt32, "stratum": pl.UInt32, "n_tok": pl.UInt32}
        )
    )
    # Group ids per document (by global document index) for each grouping.
    group_names: dict[str, list[str]] = {}
    group_of_doc: dict[str, np.ndarray] = {}
    group_docs: dict[str, pl.DataFrame] = {}
    labels = {"concept": [k[0] for k in strata], "doc_type": [k[1] for k in strata]}
    stratum_of_doc = doc_index["stratum"].to_numpy()
    for key, per_stratum in labels.items():
        names = sorted(set(per_stratum))
        group_names[key] = names
        index = {name: j for j, name in enumerate(names)}
        lookup = np.array([index[v] for v in per_stratum] or [0], dtype=np.uint32)
        group_of_doc[key] = lookup[stratum_of_doc] if len(stratum_of_doc) else stratum_of_doc
        counts = np.bincount(group_of_doc[key], minlength=len(names))
        group_docs[key] = pl.DataFrame(
            {
                "gid": pl.Series(range(len(names)), dtype=pl.UInt32),
                key: pl.Series(names, dtype=pl.String),
                "group_docs": pl.Series(counts[: len(names)], dtype=pl.UInt32),
            }
        )

    groups = {
        key: (group_of_doc[key], max(1, (len(group_names[key]) - 1).bit_length()))
        for key in group_of_doc
    }
    tops: list[pl.DataFrame] = []
    top5_docs: dict[str, int] = {}
    by_group: dict[str, list[pl.DataFrame]] = {"concept": [], "doc_type": []}

    def count(n: int) -> tuple | None:
        t_n = time.perf_counter()
        if spill is None or not spill.rows.get(n):
            return None
        got = _aggregate(spill, n, doc_bits, groups, config)
        for old in spill.root.glob(f"n{n}_p*"):
            old.unlink()  # this size is counted: free its disk space
        return got, time.perf_counter() - t_n

    with counter("n-grams: count", total=len(config.n), unit="sizes") as tick:
        for n, counted in zip(sizes, pool.map(count, sizes), strict=True):
            if counted is None:
                tick(1)
                continue
            (top, per_group, first, top5_docs[str(n)]), timings[f"count_{n}"] = counted
            tops.append(
                top.join(first, on="key").with_columns(
                    pl.lit(n, dtype=pl.UInt32).alias("n"),
                    (pl.col("documents") / max(n_docs, 1)).alias("share"),
                )
            )
            for key, df in per_group.items():
                by_group[key].append(
                    df.join(first, on="key")
                    .join(group_docs[key], on="gid")
                    .drop("gid")
                    .with_columns(
                        (pl.col("documents") / pl.col("group_docs")).alias("share"),
                        pl.lit(n, dtype=pl.UInt32).alias("n"),
                    )
                )
            tick(1)

    top = pl.concat(tops) if tops else _empty_top()
    groups = {k: pl.concat(v) if v else None for k, v in by_group.items()}
    cols = ["n", "key", "first_doc"]
    need = pl.concat(
        [top.select(cols)] + [g.select(cols) for g in groups.values() if g is not None]
    ).unique()
    t_r = time.perf_counter()
    text = _recover_strings(store, need, doc_index, stop, doc_bits, config)
    timings["recover_strings"] = time.perf_counter() - t_r

    def _with_text(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(
            pl.Series(
                "ngram", [text[(n, k)] for n, k in df.select("n", "key").iter_rows()], pl.String
            )
        )

    approximate = (
        sorted({g for v in top["approximate_groups"].to_list() for g in (v or "").split(",") if g})
        if "approximate_groups" in top.columns
        else []
    )
    top = _with_text(top).sort(
        ["n", "documents", "count", "ngram"], descending=[False, True, True, False]
    )
    tables: dict[str, pl.DataFrame] = {
        "top": top.select(
            "n", "ngram", "count", "documents", "share", "top_by_documents", "top_by_count"
        )
    }
    for key, g in groups.items():
        if g is not None:
            # Joins above may reorder rows: fix the order (ties fully broken by the words).
            tables[f"by_{key}"] = (
                _with_text(g)
                .select("n", key, "ngram", "count", "documents", "share", "group_docs")
                .sort(
                    ["n", key, "documents", "count", "ngram"],
                    descending=[False, False, True, True, False],
                )
            )
        else:
            tables[f"by_{key}"] = pl.DataFrame(
                schema={
                    "n": pl.UInt32,
                    key: pl.String,
                    "ngram": pl.String,
                    "count": pl.UInt32,
                    "documents": pl.UInt32,
                    "share": pl.Float64,
                    "group_docs": pl.UInt32,
                }
            )

    figures, flags, flagged = _figures_and_flags(tables, n_docs, config)
    tables["flagged"] = flagged
    # Collapse by documents: the share carrying any of the five n-grams in most documents.
    figures["top5_doc_share"] = {
        str(n): top5_docs.get(str(n), 0) / max(n_docs, 1) for n in config.n
    }
    figures["timings"] = {k: round(v, 3) for k, v in timings.items()}
    notes = [
        f"Counted word n-grams for n = {', '.join(map(str, config.n))} over {n_docs:,} documents"
        + (f" ({config.where})" if config.where else "")
        + "; words are lower-cased letters/digits (inner apostrophes kept), and n-grams never "
        "span . ! ? ; or :.",
        "documents = number of documents carrying the n-gram at least once; count = all "
        "occurrences; share = documents / documents in the corpus (or in the concept / doc type).",
    ]
    if approximate:
        notes.append(
            "Per-" + " and per-".join(approximate) + " lists rank only the n-grams in the most "
            "documents overall (group_candidates); small groups may miss rare local n-grams."
        )
    if config.skip_function_words:
        notes.append(
            "n-grams made only of function words (e.g. 'of the', 'it is in the') are not counted."
        )
    return AuditResult(
        name="ngrams",
        figures=figures,
        tables=tables,
        flags=flags,
        notes=notes,
        seconds=time.perf_counter() - t0,
    )


def _empty_top() -> pl.DataFrame:
    import polars as pl

    return pl.DataFrame(
        schema={
            "key": pl.UInt64,
            "count": pl.UInt32,
            "documents": pl.UInt32,
            "first_doc": pl.UInt32,
            "n": pl.UInt32,
            "share": pl.Float64,
            "top_by_documents": pl.Boolean,
            "top_by_count": pl.Boolean,
        }
    )


def _figures_and_flags(
    tables: dict[str, pl.DataFrame], n_docs: int, config: Config
) -> tuple[dict[str, Any], list[str], pl.DataFrame]:
    import polars as pl

    top = tables["top"]
    figures: dict[str, Any] = {
        "documents": n_docs,
        "n": list(config.n),
        "thresholds": {str(n): config.threshold(n) for n in config.n},
        "top": {},
        "top_by_count": {},
        "max_doc_share": {},
        "by_concept": {},
        "by_doc_type": {},
        "flagged": [],
    }
    rows = ["n", "ngram", "count", "documents", "share"]
    for n in config.n:
        sub = top.filter(pl.col("n") == n)
        by_docs = sub.filter(pl.col("top_by_documents")).sort(
            ["documents", "count", "ngram"], descending=[True, True, False]
        )
        by_count = sub.filter(pl.col("top_by_count")).sort(
            ["count", "documents", "ngram"], descending=[True, True, False]
        )
        figures["top"][str(n)] = by_docs.select(rows[1:]).to_dicts()
        figures["top_by_count"][str(n)] = by_count.select(rows[1:]).to_dicts()
        figures["max_doc_share"][str(n)] = float(by_docs["share"].max() or 0.0)
    for key in ("concept", "doc_type"):
        df = tables[f"by_{key}"]
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for (n, group), part in df.group_by("n", key, maintain_order=True):
            out.setdefault(str(group), {})[str(n)] = part.select(rows[1:]).to_dicts()
        figures[f"by_{key}"] = out

    # Flags: overall, then within each concept / doc type large enough to judge.
    found = [
        top.filter(pl.col("top_by_documents")).select(
            "n", pl.lit("all").alias("scope"), pl.lit("").alias("group"), *rows[1:]
        )
    ]
    for key in ("concept", "doc_type"):
        df = tables[f"by_{key}"].filter(pl.col("group_docs") >= config.min_stratum_docs)
        found.append(
            df.select("n", pl.lit(key).alias("scope"), pl.col(key).alias("group"), *rows[1:])
        )
    cand = pl.concat(found)
    thresholds = pl.DataFrame(
        {"n": [int(n) for n in config.n], "threshold": [config.threshold(n) for n in config.n]},
        schema={"n": pl.UInt32, "threshold": pl.Float64},
    )
    flagged = (
        cand.join(thresholds, on="n")
        .filter(pl.col("share") >= pl.col("threshold"))
        .sort(
            ["n", "share", "scope", "group", "documents", "count", "ngram"],
            descending=[False, True, False, False, True, True, False],
        )
    )
    flags: list[str] = []
    for n in config.n:
        sub = flagged.filter(pl.col("n") == n)
        for r in sub.head(config.max_flags_per_n).iter_rows(named=True):
            where = "of documents" if r["scope"] == "all" else f"of {r['scope']} {r['group']!r}"
            flags.append(
                f"{n}-gram '{r['ngram']}' is in {r['share']:.1%} {where} ({r['documents']:,} "
                f"documents, {r['count']:,} occurrences), at or above the {r['threshold']:.0%} "
                "threshold."
            )
        if sub.height > config.max_flags_per_n:
            flags.append(
                f"{sub.height - config.max_flags_per_n} more {n}-gram findings are in "
                "table audit_ngrams_flagged."
            )
    figures["flagged"] = flagged.to_dicts()
    return figures, flags, flagged


# ---------------------------------------------------------------- report, check, command
from sdfkit.audits import Command, figure_lines  # noqa: E402 - with the code using it
from sdfkit.errors import ConfigError  # noqa: E402
from sdfkit.report.verdicts import Verdict  # noqa: E402

JSON_KEY = "ngrams"
TITLE = "N-gram collapse"
COMMAND = Command(
    help="Top word n-grams by count and document frequency; flags collapsed phrases.",
    options={
        "n": "n-gram sizes (repeatable).",
        "top_k": "Top n-grams kept per n.",
        "where": "SQL condition selecting documents.",
    },
    engine=True,
)


GATE_OFF = 'give one number, or {"4": 0.3}; null turns the check off'


@dataclass
class Gates(Checked):
    """The n-gram audit's thresholds of ``sdf check`` (``check:`` in sdfkit.yaml)."""

    where_: ClassVar[str] = "check"

    #: Any n-gram's share of documents: one value for every n, or {"n": value} for some n
    #: (an empty mapping is an error, not a gate switched off: null is that).
    max_ngram_doc_share: float | dict[str, float] | None = field(
        default=None, metadata=between(0, 1) | items_at_least(1, GATE_OFF)
    )
    #: The share of documents carrying any of the five top n-grams, per n (or one number).
    max_top5_ngrams_doc_share: float | dict[str, float] | None = field(
        default=None, metadata=between(0, 1) | items_at_least(1, GATE_OFF)
    )

    def __post_init__(self) -> None:
        super().__post_init__()  # numbers in [0, 1]; "4" and 4 both become the key "4"
        for key in ("max_ngram_doc_share", "max_top5_ngrams_doc_share"):
            limits = getattr(self, key)
            for n in limits if isinstance(limits, dict) else ():
                if not n.isdigit() or int(n) < 1:
                    raise ConfigError(
                        f"{self.where_}.{key}: key {n!r} must be an n-gram size "
                        "(a whole number such as 4)"
                    )


def verdicts(report: dict[str, Any], thresholds: Any) -> list[Verdict]:
    """Any n-gram's and the five top n-grams' share of documents, per n."""
    from sdfkit.report.verdicts import max_verdict, unmeasured

    out: list[Verdict] = []
    ngrams = report.get(JSON_KEY)
    limit_of = thresholds.max_ngram_doc_share
    early = (
        unmeasured(ngrams, "max_ngram_doc_share", "ngrams", limit_of)
        if limit_of is not None
        else None
    )
    if early is not None:
        out.append(early)
    elif limit_of is not None:
        shares = ngrams.get("max_doc_share") or {}
        limits = limit_of if isinstance(limit_of, dict) else {n: limit_of for n in shares}
        for n, limit in sorted(limits.items()):
            top = (ngrams.get("top") or {}).get(str(n)) or []
            leader = max(top, key=lambda r: r.get("documents", 0), default=None)
            detail = f"{leader['ngram']!r}" if leader and "ngram" in leader else ""
            out.append(
                max_verdict("max_ngram_doc_share", f"{n}-grams", shares.get(str(n)), limit, detail)
            )
    limit_of = thresholds.max_top5_ngrams_doc_share
    if limit_of is not None:
        early = unmeasured(ngrams, "max_top5_ngrams_doc_share", "ngrams", limit_of)
        if early is not None:  # no documents: every share reads 0, which must not pass
            out.append(early)
            return out
        shares = ngrams.get("top5_doc_share") or {}
        limits = limit_of if isinstance(limit_of, dict) else {n: limit_of for n in shares}
        for n, limit in sorted(limits.items()):
            out.append(
                max_verdict(
                    "max_top5_ngrams_doc_share", f"five top {n}-grams", shares.get(str(n)), limit
                )
            )
    return out


def summary(result: AuditResult) -> list[str]:
    """What ``sdf audit ngrams`` prints: the plain figures."""
    return figure_lines(result)


def section(f: dict[str, Any]) -> str:
    """The ngrams audit's section of the report, from its figures in report.json."""
    from sdfkit.report.charts import svg_bars
    from sdfkit.report.html import fmt_pct, html_table

    out = []
    shares = f.get("max_doc_share") or {}
    if shares:
        out.append("<h3>Largest share of documents carrying one n-gram, per n</h3>")
        out.append(
            svg_bars(
                [(f"{n}-grams", float(v)) for n, v in shares.items() if v is not None],
                fmt=fmt_pct,
                max_value=1.0,
                title="max document share per n",
            )
        )
    for n, rows in (f.get("top") or {}).items():
        rows = list(rows)[:15]
        out.append(f"<h3>Top {n}-grams by documents</h3>")
        out.append(
            svg_bars(
                [(str(r.get("ngram")), float(r.get("documents", 0))) for r in rows],
                title=f"top {n}-grams",
            )
        )
        out.append(
            html_table(
                rows,
                [c for c in ("ngram", "count", "documents", "share") if rows and c in rows[0]],
                limit=15,
            )
        )
    flagged = f.get("flagged") or []
    if flagged:
        out.append("<h3>Flagged n-grams</h3>" + html_table(flagged, limit=40))
    return "".join(out)
