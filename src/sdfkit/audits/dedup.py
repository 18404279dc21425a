"""Near-duplicates: MinHash LSH over word shingles, verified, clustered, one kept per cluster.

Answers "which documents are light edits of each other?" (the generator re-telling the same
idea): pairs of documents whose word-shingle sets overlap at or above a Jaccard threshold,
the clusters they form, and a keep-one-per-cluster exclusion that selection respects.

How:
1. A per-document stage (``MinHashStage``, an ``sdfkit.engine.local.Stage``) computes a
   one-permutation MinHash signature of each document's word k-shingles, vectorized with
   numpy over batches of shingle hashes and streamed in chunks of at most ``chunk_chars``
   code points (``sdfkit.audits.shingles``), stored as ``list<uint32>`` in the store table
   ``minhash_oph2_k<k>_p<perm>_s<seed>`` and cached by content hash. It runs on every core by
   default.
2. LSH banding (bands × rows tuned to the threshold, grouped with numpy) proposes candidate
   pairs.
3. Every candidate pair is verified with the exact Jaccard of the two shingle sets; pairs
   below the threshold are dropped (LSH false positives), so reported pairs are exact.
4. Verified pairs are joined into clusters (union-find); in each cluster one document is
   kept (the earliest created, then the longest, then the smallest doc id) and the others go
   to the ``exclusions`` table with source ``dedup`` and reason ``near-duplicate of <doc_id>``.
   A re-run replaces the previous dedup exclusions (with a ``where``, those of the documents
   it compared; the others keep theirs), so it is idempotent. In the ``where``, ``excluded``
   leaves out dedup's own exclusions and anti_universe's (``sdfkit.audits.unseen_sources``):
   ``NOT excluded`` compares the same documents every run.

With ``write_exclusions`` on (the default), ``run`` saves its result itself: the exclusions
are ``CatalogWrite``s of the result, run by ``sdfkit.audits.save`` in the one transaction
that also replaces ``audit_dedup_pairs``/``audit_dedup_clusters`` and adds the
``audit_runs`` row, so a crash never leaves new exclusions beside old clusters (saving that
result again, as ``sdf report`` does, is a no-op). With it off, ``run`` writes nothing.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from sdfkit.audits import AuditResult, CatalogWrite, save, where_ids
from sdfkit.audits.shingles import (
    DEFAULT_CHUNK_CHARS,
    ROUTES,
    ShingleHasher,
    compiled_kernels,
    compiled_pair_jaccards,
    shingle_sets,
    signatures,
    sorted_distinct,
    warm_in_background,
)
from sdfkit.engine.local import Stage
from sdfkit.settings import Checked, at_least, between, one_of, sql_condition
from sdfkit.store.catalog import numpy_array
from sdfkit.store.duplicates import figures as exact_duplicate_figures

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from sdfkit.store.catalog import Store

_WORD = re.compile(r"\w+")
KEEP_RULES = ("earliest", "longest")


@dataclass
class Config(Checked):
    """Settings of the near-duplicate audit."""

    where_: ClassVar[str] = "audits.dedup"

    #: Words per shingle. 5 is the usual choice for documents of a few thousand words.
    shingle_size: int = field(default=5, metadata=at_least(1))
    #: MinHash permutations (signature length).
    num_perm: int = field(default=128, metadata=at_least(2))
    #: Pairs at or above this Jaccard are near-duplicates. With 5-word shingles, 2.5 % of
    #: words edited already brings Jaccard to ~0.78 (DEPS.md): 0.8 misses light edits.
    threshold: float = field(default=0.7, metadata=between(0, 1, low_open=True))
    #: Seed of the MinHash permutations.
    seed: int = field(default=1, metadata=between(0, 2**32 - 1))
    #: Check each candidate pair with the exact Jaccard of its shingle sets.
    verify: bool = True
    #: Candidates whose MinHash estimate is more than this below the threshold are dropped
    #: without the exact check. With 128 bins a pair exactly at 0.7 estimates 0.15 lower
    #: with probability ~1e-4 (3.7 standard deviations), while templated corpora have many
    #: candidates down there. Pairs with a document of fewer distinct shingles than bins
    #: rest on fewer independent bins: their margin widens by sqrt(num_perm / shingles).
    verify_margin: float = field(default=0.15, metadata=between(0, 1))
    #: LSH banding is chosen so a pair at the threshold becomes a candidate with at least
    #: this probability (pairs above it: more likely still).
    lsh_recall: float = field(default=0.98, metadata=between(0, 1, low_open=True))
    #: Which document of a cluster to keep: "earliest" (created_at, then longest) or
    #: "longest" (chars, then earliest).
    keep: str = field(default="earliest", metadata=one_of(*KEEP_RULES))
    #: Write keep-one-per-cluster exclusions (source 'dedup') for selection to respect.
    write_exclusions: bool = True
    #: SQL condition on the ``documents`` view selecting the documents to compare.
    where: str | None = field(default=None, metadata=sql_condition())
    #: Processes computing signatures (None: $SDF_WORKERS or 1).
    workers: int | None = field(default=None, metadata=at_least(1))
    #: Threads computing signatures in each process (None: every core, shared among the
    #: processes). numpy releases the GIL in the hashing, and threads start instantly.
    threads: int | None = field(default=None, metadata=at_least(1))
    #: Code points hashed in one vectorized pass: bounds the working memory of signatures
    #: and verification (about 60 bytes per code point), whatever a document's size.
    chunk_chars: int = field(default=DEFAULT_CHUNK_CHARS, metadata=at_least(64))
    #: How shingles are hashed: "compiled" (numba kernels, one pass per document, no GIL),
    #: "numpy" (vectorized passes), or "auto" (compiled when numba is installed). Every
    #: route gives the same signatures, sets and pairs; only the speed differs.
    route: str = field(default="auto", metadata=one_of(*ROUTES))
    #: Most pairs listed in the figures (the table holds all of them).
    max_pairs_listed: int = field(default=500, metadata=at_least(0))


def shingles(text: str, k: int) -> list[bytes]:
    """The word k-shingles of a text (lower-cased words), as UTF-8 bytes; a text shorter than
    k words is one shingle."""
    words = _WORD.findall(text.lower())
    if len(words) <= k:
        return [" ".join(words).encode("utf-8")]
    return [" ".join(words[i : i + k]).encode("utf-8") for i in range(len(words) - k + 1)]


def shingle_set(text: str, k: int, chunk_chars: int = DEFAULT_CHUNK_CHARS) -> np.ndarray:
    """Sorted distinct 64-bit hashes of a text's shingles (for exact Jaccard), computed in
    chunks of at most ``chunk_chars`` code points."""
    return ShingleHasher(k, chunk_chars).set_of(text)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard of two sorted distinct hash arrays."""
    import numpy as np

    if not len(a) and not len(b):
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


class MinHashStage(Stage):
    """Per-document MinHash signature of word shingles (one row per document)."""

    name: ClassVar[str] = "minhash"
    parquet_dictionary: ClassVar[bool] = False  # random 32-bit values
    columns: ClassVar[tuple[str, ...]] = ("doc_id", "text")

    def __init__(
        self,
        shingle_size: int = 5,
        num_perm: int = 128,
        seed: int = 1,
        chunk_chars: int = DEFAULT_CHUNK_CHARS,
        threads: int = 1,
        route: str = "auto",
    ) -> None:
        self.shingle_size = shingle_size
        self.num_perm = num_perm
        self.seed = seed
        # These two change the working memory and speed only, never the result: they are
        # not part of the table name.
        self.chunk_chars = chunk_chars
        self.threads = threads
        self.route = route

    @property
    def table(self) -> str:
        return f"minhash_oph2_k{self.shingle_size}_p{self.num_perm}_s{self.seed}"

    @property
    def output_schema(self) -> pa.Schema:
        return pa.schema(
            [
                ("doc_id", pa.string()),
                ("n_shingles", pa.int32()),
                ("signature", pa.list_(pa.uint32())),
            ]
        )

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import numpy as np

        texts = [t or "" for t in batch.column("text").to_pylist()]
        sigs, distinct = self._signatures(texts)
        flat = numpy_array(sigs.reshape(-1), pa.uint32())
        offsets = numpy_array(np.arange(0, sigs.size + 1, self.num_perm, dtype=np.int32))
        return pa.RecordBatch.from_arrays(
            [
                batch.column("doc_id"),
                numpy_array(distinct.astype(np.int32)),
                pa.ListArray.from_arrays(offsets, flat),
            ],
            schema=self.output_schema,
        )

    def _signatures(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        def one(part: list[str]) -> tuple[np.ndarray, np.ndarray]:
            return signatures(
                part,
                self.shingle_size,
                self.num_perm,
                self.seed,
                self.chunk_chars,
                route=self.route,
            )

        if self.threads <= 1 or len(texts) < 2 * self.threads:
            return one(texts)
        if getattr(self, "_pool", None) is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="minhash")
        parts = char_slices(texts, self.threads)
        done = list(self._pool.map(one, parts))
        return np.concatenate([s for s, _ in done]), np.concatenate([d for _, d in done])


def char_slices(texts: list[str], n: int) -> list[list[str]]:
    """``texts`` cut into at most ``n`` runs of about equal characters, in order (so results
    concatenated in order stay aligned with the input)."""
    import numpy as np

    if n <= 1 or len(texts) < 2:
        return [texts]
    sizes = np.cumsum([len(t) + 1 for t in texts])
    cuts = np.searchsorted(sizes, sizes[-1] * np.arange(1, n) / n)
    bounds = [0, *sorted({int(c) + 1 for c in cuts if 0 < c + 1 < len(texts)}), len(texts)]
    return [texts[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def parallel_shingle_sets(
    texts: list[str], k: int, chunk_chars: int, threads: int = 1, route: str = "auto"
) -> list[np.ndarray]:
    """``shingles.shingle_sets`` of ``texts`` on ``threads`` threads (numpy releases the GIL
    in the hashing and sorting), in order."""
    parts = char_slices(texts, threads)
    if len(parts) == 1:
        return shingle_sets(texts, k, chunk_chars, route)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(parts), thread_name_prefix="shingle-sets") as pool:
        done = pool.map(lambda part: shingle_sets(part, k, chunk_chars, route), parts)
        return [found for part in done for found in part]


def pair_margins(
    n_shingles: np.ndarray, a_idx: np.ndarray, b_idx: np.ndarray, config: Config
) -> np.ndarray:
    """How far below the threshold each candidate's estimate may be and still be checked:
    ``verify_margin`` for pairs of documents with at least ``num_perm`` distinct shingles,
    widened by sqrt(num_perm / shingles) when the smaller document has fewer (its estimate
    rests on that many independent bins, so its spread is that much wider)."""
    import numpy as np

    smaller = np.minimum(n_shingles[a_idx], n_shingles[b_idx]).astype(np.float64)
    effective = np.clip(smaller, 1, config.num_perm)
    return config.verify_margin * np.sqrt(config.num_perm / effective)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(x, x) != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def lsh_params(threshold: float, num_perm: int, recall: float) -> tuple[int, int]:
    """LSH bands × rows: the most rows per band (fewest false candidates) for which a pair at
    exactly ``threshold`` Jaccard still shares a band with probability >= ``recall``.

    datasketch's own choice balances false positives and negatives; with verification after
    it, a false positive only costs one exact Jaccard, while a false negative is a missed
    duplicate (at 0.7 its default finds a 0.8-Jaccard pair only 87 % of the time).
    """
    for r in range(num_perm, 0, -1):
        b = num_perm // r
        if 1.0 - (1.0 - threshold**r) ** b >= recall:
            return b, r
    return num_perm, 1


def candidate_index_pairs(matrix: np.ndarray, config: Config) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (a < b) whose signatures agree on every row of at least one LSH band.

    Each band's rows are folded into one 64-bit key and the documents sorted by it, so a
    band costs one numpy sort instead of a Python dictionary insert per document (a rare key
    collision only adds a candidate, which verification or the estimate then judges)."""
    import numpy as np

    bands, rows = lsh_params(config.threshold, config.num_perm, config.lsh_recall)
    n = len(matrix)
    found: list[np.ndarray] = []
    sig = matrix.astype(np.uint64)
    for b in range(bands):
        key = np.zeros(n, np.uint64)
        for r in range(b * rows, (b + 1) * rows):
            key = (key * np.uint64(0x100000001B3)) ^ sig[:, r]
        order = np.argsort(key, kind="stable")
        ordered = key[order]
        bounds = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
        starts = np.r_[0, bounds]
        sizes = np.r_[bounds, n] - starts
        found.append(_group_pairs(order, starts[sizes > 1], sizes[sizes > 1], n))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    codes = sorted_distinct(np.concatenate(found))
    return codes // n, codes % n


def _group_pairs(order: np.ndarray, starts: np.ndarray, sizes: np.ndarray, n: int) -> np.ndarray:
    """Codes ``a * n + b`` (a < b) of every pair of rows within each group, where group g is
    ``order[starts[g] : starts[g] + sizes[g]]``: all groups at once, no Python loop (a
    templated corpus has tens of thousands of small groups per band)."""
    import numpy as np

    if not len(sizes):
        return np.zeros(0, np.int64)
    # Pair k of a group of size s is (i, j), i < j: one row per (group, i) repeated for each j.
    firsts = np.repeat(starts, sizes - 1)  # each group's start, once per i < s - 1
    i = np.arange(len(firsts)) - np.repeat(np.cumsum(sizes - 1) - (sizes - 1), sizes - 1)
    reps = np.repeat(sizes, sizes - 1) - 1 - i  # pairs (i, j) for j in (i, s)
    left = np.repeat(firsts + i, reps)
    run_start = np.repeat(np.cumsum(reps) - reps, reps)
    right = left + 1 + (np.arange(len(left)) - run_start)
    a, b = order[left].astype(np.int64), order[right].astype(np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return lo * n + hi


def candidate_pairs(doc_ids: list[str], matrix: np.ndarray, config: Config) -> set[tuple[str, str]]:
    """Pairs of doc ids (``doc_ids`` sorted, a < b) that share an LSH band."""
    a, b = candidate_index_pairs(matrix, config)
    return {(doc_ids[i], doc_ids[j]) for i, j in zip(a.tolist(), b.tolist(), strict=True)}


def estimated_jaccard(
    matrix: np.ndarray, a: np.ndarray, b: np.ndarray, threads: int = 1, route: str = "auto"
) -> np.ndarray:
    """Share of agreeing signature bins of each row pair, on ``threads`` threads: by the
    compiled kernel (no copy of the rows), or numpy in slices of bounded memory (numpy
    releases the GIL in the gathers and comparisons)."""
    import numpy as np

    out = np.empty(len(a), np.float64)
    kernels = compiled_kernels(route)
    rows = np.ascontiguousarray(matrix)
    step = max(1, 4_000_000 // max(matrix.shape[1], 1))  # bounds numpy's gathered copies

    def one(lo: int) -> None:
        hi = lo + step
        if kernels is not None:
            agree = np.zeros(len(a[lo:hi]), np.int64)
            kernels.agreeing_bins(rows, a[lo:hi], b[lo:hi], agree)
        else:
            agree = np.count_nonzero(rows[a[lo:hi]] == rows[b[lo:hi]], axis=1)
        out[lo:hi] = agree / matrix.shape[1]

    starts = range(0, len(a), step)
    if threads <= 1 or len(a) < 2 * step:
        for lo in starts:
            one(lo)
        return out
    from concurrent.futures import ThreadPoolExecutor

    step = -(-len(a) // (threads * max(1, -(-len(a) // (threads * step)))))  # equal slices
    with ThreadPoolExecutor(threads, thread_name_prefix="estimate") as pool:
        list(pool.map(one, range(0, len(a), step)))
    return out


def exact_jaccards(
    sets: list[np.ndarray | None],
    a_idx: np.ndarray,
    b_idx: np.ndarray,
    check: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out[k]`` = exact Jaccard of ``sets[a_idx[k]]`` and ``sets[b_idx[k]]`` for each k of
    ``check`` (sorted distinct hash arrays; a pair with a missing set is left as it is).

    The pairs of one left document are done together: its partners' hashes are searched in
    its set with one ``searchsorted`` (templated corpora give one document hundreds of
    partners), instead of a few numpy calls per pair. (One thread: ``searchsorted`` holds
    the GIL, so threads gained nothing when measured.)"""
    import numpy as np

    # Each pair searches its smaller set in its larger: the work is the smaller set's size.
    size = np.fromiter((-1 if x is None else len(x) for x in sets), np.int64, len(sets))
    check = check[(size[a_idx[check]] >= 0) & (size[b_idx[check]] >= 0)]
    swap = size[a_idx[check]] < size[b_idx[check]]
    big = np.where(swap, b_idx[check], a_idx[check])
    small = np.where(swap, a_idx[check], b_idx[check])
    order = np.argsort(big, kind="stable")
    check, big, small = check[order], big[order], small[order]
    cuts = np.flatnonzero(np.diff(big)) + 1
    for group in np.split(np.arange(len(check)), cuts) if len(check) else []:
        left = sets[big[group[0]]]
        assert left is not None
        ks = check[group]
        rights = [sets[j] for j in small[group].tolist()]
        sizes = np.fromiter((len(r) for r in rights), np.int64, len(rights))
        values = np.concatenate(rights)
        if len(left):
            at = np.searchsorted(left, values)
            at[at == len(left)] = 0
            hits = np.r_[0, np.cumsum(left[at] == values)]
        else:
            hits = np.zeros(len(values) + 1, np.int64)
        ends = np.cumsum(sizes)
        inter = hits[ends] - hits[ends - sizes]
        union = len(left) + sizes - inter
        out[ks] = np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def run(store: Store, config: Config | None = None, engine: str | None = None) -> AuditResult:
    """Find near-duplicate pairs and clusters; write keep-one-per-cluster exclusions."""
    import numpy as np
    import polars as pl

    from sdfkit.engine.local import env_workers, read_results, run_stage
    from sdfkit.engine.stage import document_texts
    from sdfkit.progress import counter

    config = config or Config()
    t0 = time.perf_counter()
    if config.route != "numpy":
        # Importing numba and its first kernel load (~0.4 CPU-s, mostly LLVM without the
        # GIL) happen on a thread while the catalog is read.
        warm_in_background()
    # ``excluded`` in the where leaves out dedup's own exclusions (and anti_universe's, which
    # follow from them): the audit derives them again, whatever it excluded last time
    chosen = where_ids(store, "dedup", config.where)
    with store.connect() as con:  # one catalog connection for what is read up front
        docs = pl.from_arrow(
            con.sql(
                "SELECT doc_id, created_at, chars FROM documents ORDER BY doc_id"
            ).to_arrow_table()
        )
        duplicate_figures = exact_duplicate_figures(store, con)
    assert isinstance(docs, pl.DataFrame)
    if chosen is not None:
        docs = docs.filter(pl.col("doc_id").is_in(sorted(chosen)))
    docs = docs.unique("doc_id", keep="first", maintain_order=True)
    ids = docs["doc_id"].to_list()
    workers = config.workers or env_workers()
    threads = config.threads or max(1, (os.cpu_count() or 1) // workers)
    stage = MinHashStage(
        config.shingle_size,
        config.num_perm,
        config.seed,
        config.chunk_chars,
        threads=threads,
        route=config.route,
    )
    subset = set(ids) if chosen is not None else None
    stage_run = run_stage(store, stage, engine=engine, workers=workers, where=subset)
    t_sig = time.perf_counter()
    sigs_tbl = read_results(store, stage, set(ids))
    sig_df = pl.from_arrow(sigs_tbl)
    assert isinstance(sig_df, pl.DataFrame)
    if sig_df.height:
        sig_df = sig_df.unique("doc_id", keep="first").sort("doc_id")
    sig_ids = sig_df["doc_id"].to_list() if sig_df.height else []
    n_shingles = sig_df["n_shingles"].to_numpy() if sig_df.height else np.zeros(0, np.int64)
    sig_matrix = (
        sig_df["signature"].explode().to_numpy().astype(np.uint32).reshape(-1, config.num_perm)
        if sig_df.height
        else np.zeros((0, config.num_perm), dtype=np.uint32)
    )
    a_idx, b_idx = (
        candidate_index_pairs(sig_matrix, config)
        if len(sig_ids) > 1
        else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    )
    n_cands = len(a_idx)
    kernels = compiled_kernels(config.route)
    estimates = estimated_jaccard(sig_matrix, a_idx, b_idx, threads, config.route)
    t_lsh = time.perf_counter()

    # Verify candidates with the exact Jaccard of their shingle sets; a candidate estimated
    # far enough below the threshold is dropped unchecked (see Config.verify_margin).
    exact = np.full(n_cands, np.nan)
    if config.verify and n_cands:
        check = np.flatnonzero(
            estimates >= config.threshold - pair_margins(n_shingles, a_idx, b_idx, config)
        )
        need_idx = sorted_distinct(np.concatenate((a_idx[check], b_idx[check])))
        need = [sig_ids[i] for i in need_idx.tolist()]
        if need and kernels is not None:
            texts = document_texts(store, need)
            with counter("near-duplicates: verify", total=len(need), unit="docs") as tick:
                exact[check] = compiled_pair_jaccards(
                    [texts.get(d) or "" for d in need],
                    np.searchsorted(need_idx, a_idx[check]),
                    np.searchsorted(need_idx, b_idx[check]),
                    config.shingle_size,
                    config.chunk_chars,
                    threads,
                    kernels,
                )
                tick(len(need))
        elif need:
            sets: list[np.ndarray | None] = [None] * len(sig_ids)
            texts = document_texts(store, need)
            with counter("near-duplicates: verify", total=len(need), unit="docs") as tick:
                hashed = parallel_shingle_sets(
                    [texts.get(d) or "" for d in need],
                    config.shingle_size,
                    config.chunk_chars,
                    threads,
                    config.route,
                )
                tick(len(need))
            for i, found in zip(need_idx.tolist(), hashed, strict=True):
                sets[i] = found
            exact_jaccards(sets, a_idx, b_idx, check, exact)
    # Only the pairs at or above the threshold become rows (candidates can be 50x more).
    scores = exact if config.verify else estimates
    with np.errstate(invalid="ignore"):
        at = np.flatnonzero(scores >= config.threshold)
    ids_arr = np.asarray(sig_ids, dtype=object)
    pairs = pl.DataFrame(
        {
            "doc_a": pl.Series(ids_arr[a_idx[at]].tolist(), dtype=pl.String),
            "doc_b": pl.Series(ids_arr[b_idx[at]].tolist(), dtype=pl.String),
            "jaccard": pl.Series(scores[at], dtype=pl.Float64),
            "estimated_jaccard": pl.Series(estimates[at], dtype=pl.Float64),
        }
    )
    near = pairs.sort(["jaccard", "doc_a", "doc_b"], descending=[True, False, False])
    # Clusters by union-find; keep one per cluster.
    uf = _UnionFind()
    for a, b in near.select("doc_a", "doc_b").iter_rows():
        uf.union(a, b)
    members: dict[str, list[str]] = {}
    for d in {d for p in near.select("doc_a", "doc_b").iter_rows() for d in p}:
        members.setdefault(uf.find(d), []).append(d)
    clustered = {d for group in members.values() for d in group}
    info = {
        r["doc_id"]: r
        for r in docs.filter(pl.col("doc_id").is_in(list(clustered))).iter_rows(named=True)
    }
    clusters = []
    for group in members.values():
        kept = min(group, key=lambda d: _keep_order(info.get(d), d, config.keep))
        clusters.append((kept, sorted(group)))
    clusters.sort(key=lambda c: (-len(c[1]), c[0]))
    cluster_rows = [
        {"cluster": i, "doc_id": d, "size": len(group), "kept": d == kept, "kept_doc_id": kept}
        for i, (kept, group) in enumerate(clusters)
        for d in group
    ]
    cluster_df = pl.DataFrame(
        cluster_rows,
        schema={
            "cluster": pl.Int64,
            "doc_id": pl.String,
            "size": pl.Int64,
            "kept": pl.Boolean,
            "kept_doc_id": pl.String,
        },
    )
    excluded = cluster_df.filter(~pl.col("kept"))

    n_docs = len(ids)
    in_clusters = cluster_df.height
    figures: dict[str, Any] = {
        "documents": n_docs,
        "settings": {
            "shingle_size": config.shingle_size,
            "num_perm": config.num_perm,
            "threshold": config.threshold,
            "seed": config.seed,
            "keep": config.keep,
            "verified": config.verify,
        },
        "candidate_pairs": n_cands,
        "lsh_bands_rows": list(lsh_params(config.threshold, config.num_perm, config.lsh_recall)),
        "rejected_candidates": n_cands - near.height,
        "pairs": near.head(config.max_pairs_listed).to_dicts(),
        "n_pairs": near.height,
        "clusters": [group for _, group in clusters],
        "cluster_sizes": [len(group) for _, group in clusters],
        "kept": [kept for kept, _ in clusters],
        "n_clusters": len(clusters),
        "documents_in_clusters": in_clusters,
        "excluded": excluded.height,
        # Share of documents that are redundant copies: what keep-one-per-cluster removes.
        "duplicate_fraction": excluded.height / n_docs if n_docs else 0.0,
        "clustered_fraction": in_clusters / n_docs if n_docs else 0.0,
        "timings": {
            "signatures": round(t_sig - t0, 3),
            "lsh": round(t_lsh - t_sig, 3),
            "verify_and_cluster": round(time.perf_counter() - t_lsh, 3),
        },
        "signatures_computed": stage_run.processed,
        # exact duplicates never reach the store (one row per text): their arrivals are
        # counted in the duplicates table (sdfkit.store.duplicates)
        **duplicate_figures,
    }
    flags = []
    if figures["exact_duplicate_rows"]:
        flags.append(
            f"{figures['exact_duplicate_rows']:,} exact duplicates arrived and were not stored "
            "again (table duplicates: per run "
            + ", ".join(f"{k}: {v:,}" for k, v in figures["exact_duplicates_by_run"].items())
            + ")."
        )
    if clusters:
        flags.append(
            f"{in_clusters:,} documents form {len(clusters):,} near-duplicate clusters "
            f"(Jaccard >= {config.threshold:g} over {config.shingle_size}-word shingles); "
            f"keeping one per cluster drops {excluded.height:,} ({figures['duplicate_fraction']:.1%})."
        )
        biggest = clusters[0]
        if len(biggest[1]) > 2:
            flags.append(
                f"The largest near-duplicate cluster has {len(biggest[1])} documents "
                f"(kept: {biggest[0]})."
            )
    notes = [
        f"One-permutation MinHash ({config.num_perm} bins, seed {config.seed}) over lower-cased "
        f"{config.shingle_size}-word shingles; LSH candidates "
        + (
            "verified with the exact Jaccard of the shingle sets, so every reported pair is exact "
            f"({n_cands - near.height} candidates below {config.threshold:g} were dropped; "
            f"those estimated more than {config.verify_margin:g} below it unchecked)."
            if config.verify
            else "not verified: jaccard is the MinHash estimate."
        ),
        f"One document per cluster is kept ({config.keep} first); the others are "
        + (
            "written to the exclusions table (source 'dedup'), which selection respects."
            if config.write_exclusions
            else "listed only (write_exclusions is off)."
        ),
        "duplicate_fraction = excluded copies / documents; clustered_fraction counts every "
        "document in a cluster.",
    ]
    result = AuditResult(
        name="dedup",
        figures=figures,
        tables={"pairs": near, "clusters": cluster_df},
        flags=flags,
        notes=notes,
        seconds=time.perf_counter() - t0,
    )
    if config.write_exclusions:
        # The exclusions land in one transaction with the clusters that explain them.
        result.writes = exclusion_writes(
            excluded.select("doc_id", "kept_doc_id").rows(),
            judged=ids if chosen is not None else None,
        )
        save(store, result)
    return result


def _keep_order(row: dict[str, Any] | None, doc_id: str, rule: str) -> tuple:
    """Sort key: the smallest is kept."""
    if row is None:
        return (1, 0, doc_id)
    created = row.get("created_at")
    ts = created.timestamp() if created is not None else float("inf")
    chars = -(row.get("chars") or 0)
    return (ts, chars, doc_id) if rule == "earliest" else (chars, ts, doc_id)


def exclusion_writes(
    excluded: list[tuple[str, str]], judged: list[str] | None = None
) -> list[CatalogWrite]:
    """The catalog statements replacing the dedup exclusions with ``(doc_id, kept_doc_id)``
    rows (other sources' exclusions are left alone).

    ``judged``: the documents an audit with a ``where`` compared (None: every document). Only
    their exclusions are replaced; a document outside the ``where`` keeps its own."""
    incoming = pa.table(
        {
            "doc_id": pa.array([d for d, _ in excluded], pa.string()),
            "reason": pa.array([f"near-duplicate of {kept}" for _, kept in excluded], pa.string()),
        }
    )
    if judged is None:
        replaced = CatalogWrite("DELETE FROM exclusions WHERE source = 'dedup'")
    else:
        replaced = CatalogWrite(
            "DELETE FROM exclusions WHERE source = 'dedup' "
            "AND doc_id IN (SELECT doc_id FROM _dedup_judged)",
            relations={"_dedup_judged": pa.table({"doc_id": pa.array(judged, pa.string())})},
        )
    return [
        replaced,
        CatalogWrite(
            "INSERT INTO exclusions (doc_id, reason, source, created_at) "
            "SELECT DISTINCT doc_id, reason, 'dedup', ? FROM _dedup_excluded",
            [datetime.now(timezone.utc)],
            {"_dedup_excluded": incoming},
        ),
    ]


# ---------------------------------------------------------------- report, check, command
from sdfkit.audits import Command, figure_lines  # noqa: E402 - with the code using it
from sdfkit.report.verdicts import Verdict  # noqa: E402

JSON_KEY = "near_duplicates"
TITLE = "Near-duplicates"
COMMAND = Command(
    help="Near-duplicate clusters (MinHash LSH) and a keep-one-per-cluster exclusion.",
    engine=True,
)


@dataclass
class Gates(Checked):
    """The dedup audit's threshold of ``sdf check`` (``check:`` in sdfkit.yaml)."""

    where_: ClassVar[str] = "check"

    #: Documents in near-duplicate clusters beyond one each, as a share of all.
    max_near_duplicate_fraction: float | None = field(default=None, metadata=between(0, 1))


def verdicts(report: dict[str, Any], thresholds: Any) -> list[Verdict]:
    """The near-duplicate fraction of the corpus."""
    from sdfkit.report.verdicts import max_verdict, unmeasured

    limit = thresholds.max_near_duplicate_fraction
    if limit is None:
        return []
    dups = report.get(JSON_KEY)
    early = unmeasured(dups, "max_near_duplicate_fraction", "dedup", limit, subject="corpus")
    if early is not None:
        return [early]
    n_clusters = len(dups.get("clusters") or [])
    return [
        max_verdict(
            "max_near_duplicate_fraction",
            "corpus",
            dups.get("duplicate_fraction"),
            limit,
            f"{n_clusters} clusters",
        )
    ]


def summary(result: AuditResult) -> list[str]:
    """What ``sdf audit dedup`` prints: the plain figures."""
    return figure_lines(result)


def section(f: dict[str, Any]) -> str:
    """The dedup audit's section of the report, from its figures in report.json."""
    from sdfkit.report.charts import svg_bars
    from sdfkit.report.html import fmt_num, fmt_pct, html_table

    out = []
    clusters = f.get("clusters") or []
    out.append(
        f'<p class="summary-line">Near-duplicate fraction: <b>{fmt_pct(f.get("duplicate_fraction"))}'
        f"</b> · {len(clusters):,} clusters</p>"
    )
    sizes: dict[int, int] = {}
    for c in clusters:
        sizes[len(c)] = sizes.get(len(c), 0) + 1
    if sizes:
        out.append("<h3>Clusters by size</h3>")
        out.append(
            svg_bars(
                [(f"{s} documents", float(k)) for s, k in sorted(sizes.items())],
                title="cluster sizes",
            )
        )
    pairs = list(f.get("pairs") or [])
    if pairs:
        out.append("<h3>Example pairs</h3>" + html_table(pairs, limit=25))
    if f.get("exact_duplicate_rows") is not None:
        out.append(
            f"<h3>Exact duplicates: {fmt_num(f['exact_duplicate_rows'])} arrivals not stored "
            "again</h3><p class=notes>Every arrival of a text already in the store (or twice "
            "in one input) is in table <code>duplicates</code> with its provenance.</p>"
        )
        for key, label in (
            ("exact_duplicates_by_run", "run"),
            ("exact_duplicates_by_concept", "concept"),
        ):
            counts = f.get(key) or {}
            if counts:
                out.append(html_table([{label: k, "duplicates": v} for k, v in counts.items()]))
    return "".join(out)
