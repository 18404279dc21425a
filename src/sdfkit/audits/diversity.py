"""Embedding diversity: how many genuinely different documents does each stratum hold?

Each document is embedded once with the offline all-MiniLM-L6-v2 sentence encoder (the
``EmbeddingStage``, cached by content hash in the store table named by ``stage.table``, so a
re-audit only embeds new documents). Over the unit-normalised embeddings of a group
(``overall``; ``per_concept``; ``per_doc_type`` across concepts; ``per_concept_doc_type``,
a list of strata) the audit reports:

- ``mean_pairwise_cosine``: the average cosine between two different documents, computed
  exactly in O(n·d) from the sum vector: (‖Σe‖² − n) / (n(n − 1)).
- nearest-neighbour similarity quantiles: for each document, the cosine of the most similar
  *other* document of its group (blockwise matrix products; a sample of ``nn_sample`` query
  documents when the group is larger). High tails mean paraphrases.
- ``effective_documents``: a Vendi score, exp of the entropy of the eigenvalues of K/n where
  K is the n×n cosine kernel. K/n = E Eᵀ/n has the same nonzero eigenvalues as the d×d matrix
  EᵀE/n, so it costs O(n·d²) and d = 384 bounds it: identical documents score 1, a group of
  mutually orthogonal ones scores n (up to 384).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from sdfkit.audits import AuditResult
from sdfkit.engine.local import Stage, env_workers, read_results, run_stage
from sdfkit.settings import Checked, at_least, between, one_of

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import polars as pl

    from sdfkit.store.catalog import Store

NAME = "diversity"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 384
PRECISIONS = ("auto", "fp32", "bf16")
FORWARDS = ("auto", "fused", "transformers")
#: The cache table's suffix per resolved precision: a new suffix whenever the vectors change.
#: The forward pass (``fused`` or ``transformers``) is not in the name: it changes a vector no
#: more than the batch size does (fp32: < 1e-6; bf16: 1 - cosine < 1e-4, as batches that pad).
TABLE_TAGS = {"fp32": "fp32", "bf16": "bf16w"}
#: Default documents per forward pass, per (precision, forward). Measured on 2 cores
#: (bench/bench_diversity.py, 960 documents, alternating runs): the fused bf16 pass is as
#: fast in batches of 8 as of 16 or 32 (134-147 docs/s) and peaks lower (550 MB against
#: 620 and 730); transformers' bf16 pass is fastest at 32.
DEFAULT_BATCH = {
    ("fp32", "transformers"): 16,
    ("fp32", "fused"): 16,
    ("bf16", "transformers"): 32,
    ("bf16", "fused"): 8,
}
#: A batch's rows are padded up to a multiple of this (see EmbeddingStage.encode).
SHAPE_STEP = 16
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@dataclass
class Config(Checked):
    """Settings of the diversity audit (defaults written once, here)."""

    where_: ClassVar[str] = "audits.diversity"

    #: Tokens of each document the encoder reads (MiniLM was trained at 256; more is slower;
    #: its position embeddings end at 512; at least 3: [CLS], a word piece, [SEP]).
    max_seq_length: int = field(default=256, metadata=between(3, 512))
    #: fp32, bf16 (the model's weights in bf16; only fast on CPUs with native bf16) or auto
    #: (bf16 when native, else fp32). bf16 vectors keep cosine >= 0.9999 to fp32's.
    precision: str = field(default="auto", metadata=one_of(*PRECISIONS))
    #: The model's forward pass: ``fused`` is sdfkit's own (the same weights and operations,
    #: with one product for query, key and value, and oneDNN's linear+GELU and
    #: linear+residual kernels: ~1.5x faster in bf16); ``transformers`` is BertModel's;
    #: ``auto`` is fused where this torch has the oneDNN kernels, else transformers.
    forward: str = field(default="auto", metadata=one_of(*FORWARDS))
    #: Documents per forward pass (None: 8 on the fused pass in bf16, 32 on transformers'
    #: pass in bf16, 16 in fp32). Larger batches raise the peak: at seed scale transformers'
    #: bf16 audit peaked at 961 MB in batches of 32 and 1,304 MB in batches of 64.
    batch_size: int | None = field(default=None, metadata=at_least(1))
    #: Local process-pool size for embedding (None: $SDF_WORKERS or 1).
    workers: int | None = field(default=None, metadata=at_least(1))
    #: Batches one embedding process encodes at once, each on its own thread with its share
    #: of the cores' torch threads (None: 2 where one process has 2 cores or more, else 1;
    #: 1 when there are several worker processes). On 2 cores two lanes of one torch thread
    #: were ~10 % faster than one lane of two, as two processes are, with one model.
    lanes: int | None = field(default=None, metadata=at_least(1))
    #: Embed at most this many documents per concept (None: all). The sample is the concept's
    #: documents with the smallest content hashes: uniform, stable across runs (a re-audit
    #: embeds only new documents that enter it), and the same whichever engine runs it.
    #: Embedding is the report's slowest step on CPU (~24-64 docs/s in bf16 on 2
    #: cores); the figures are statistics of the group, which a sample of 1,000 estimates
    #: closely.
    sample_per_concept: int | None = field(default=1000, metadata=at_least(1))
    #: Nearest neighbours are searched for at most this many documents per group.
    nn_sample: int = field(default=5000, metadata=at_least(1))
    #: Groups smaller than this get no figures (too few documents to say anything).
    min_group_docs: int = field(default=2, metadata=at_least(1))
    seed: int = field(default=0, metadata=between(0, 2**32 - 1))


def _cpu_has_native_bf16() -> bool:
    """bf16 only pays off with avx512_bf16/AMX; elsewhere it is ~8× slower (measured)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        from sdfkit.errors import SdfError

        raise SdfError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if _cpu_has_native_bf16() else "fp32"
    return precision


def check_forward(forward: str) -> str:
    if forward not in FORWARDS:
        from sdfkit.errors import SdfError

        raise SdfError(f"unknown forward {forward!r}: use one of {', '.join(FORWARDS)}")
    return forward


def resolve_forward(forward: str, precision: str = "fp32") -> str:
    """``fused`` or ``transformers`` for weights in ``precision`` (resolved: fp32 or bf16);
    imports torch, so it runs where the model loads."""
    import torch

    from sdfkit.audits.minilm import fused_kernels_work

    check_forward(forward)
    works = fused_kernels_work(torch.bfloat16 if precision == "bf16" else torch.float32)
    if forward == "auto":
        return "fused" if works else "transformers"
    if forward == "fused" and not works:
        from sdfkit.errors import SdfError

        raise SdfError(
            f"forward 'fused' needs oneDNN's fused linear kernels in {precision}, which this "
            "torch or CPU lacks: use forward 'transformers' (or 'auto')"
        )
    return forward


class EmbeddingStage(Stage):
    """One unit-normalised MiniLM embedding (list<float32>, 384 values) per document."""

    name: ClassVar[str] = "embeddings"
    columns: ClassVar[tuple[str, ...]] = ("doc_id", "text")
    loads_model: ClassVar[bool] = True

    def __init__(
        self,
        max_seq_length: int = 256,
        precision: str = "fp32",
        batch_size: int | None = None,
        threads: int | None = None,
        forward: str = "auto",
        lanes: int = 1,
    ) -> None:
        self.max_seq_length = max_seq_length
        self.precision = resolve_precision(precision)
        # Resolved in setup() into self._forward (it needs torch); until then auto is taken
        # to be fused, and a default batch size is set again if it turns out otherwise.
        self.forward = check_forward(forward)
        self.default_batch = batch_size is None
        kind = "transformers" if forward == "transformers" else "fused"
        self.batch_size = batch_size or DEFAULT_BATCH[(self.precision, kind)]
        self.threads = threads
        self.lanes = lanes

    @property
    def table(self) -> str:
        # bf16 and fp32 vectors differ slightly (cosine ≥ 0.9999), so they are cached apart.
        # "bf16w": bf16 weights; the earlier bf16 route (fp32 weights under autocast) wrote
        # slightly different vectors to "_bf16", which is therefore not reused.
        return f"embeddings_minilm_l6_v2_s{self.max_seq_length}_{TABLE_TAGS[self.precision]}"

    @property
    def output_schema(self) -> pa.Schema:
        return pa.schema([("doc_id", pa.string()), ("embedding", pa.list_(pa.float32()))])

    def setup(self) -> None:
        # The model is all-MiniLM-L6-v2 as sentence-transformers defines it (modules.json:
        # BERT, mean pooling over the attention mask, L2 normalisation), run here without
        # sentence-transformers: importing it costs ~130 MB of RSS and 3-8 s for nothing the
        # audit uses (test_encoder_matches_sentence_transformers). The fused pass needs no
        # transformers either (~2.5 s per process to import and build).
        import torch

        from sdfkit.audits import minilm

        if self.threads:
            torch.set_num_threads(self.threads)
        path = minilm.model_path()
        self._forward = resolve_forward(self.forward, self.precision)
        if self.default_batch:
            self.batch_size = DEFAULT_BATCH[(self.precision, self._forward)]
        # bf16 weights, not autocast: autocast re-casts the fp32 weights on every call and
        # was ~2× slower for nearly the same vectors (bench/bench_diversity.py).
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        if self._forward == "fused":
            self._ids = minilm.WordPieces(path, self.max_seq_length)
            self._model = minilm.FusedMiniLM.load(
                path, dtype, self.batch_size * self.max_seq_length
            )
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # it would interleave with sdfkit's own progress
        self._tokenizer = AutoTokenizer.from_pretrained(str(path))
        self._model = AutoModel.from_pretrained(str(path), dtype=dtype).eval()

        def ids(texts: list[str]) -> list[list[int]]:
            return self._tokenizer(texts, truncation=True, max_length=self.max_seq_length)[
                "input_ids"
            ]

        self._ids = ids

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-normalised embeddings (float32 rows) of ``texts``, in order."""
        import numpy as np
        import torch

        from sdfkit.audits import minilm

        # The encoder reads at most max_seq_length word pieces: tokenizing a text's first
        # ~7 characters per piece gives the same pieces, at a fraction of the cost.
        ids = minilm.word_pieces(self._ids, list(texts), self.max_seq_length)
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        # Longest first: similar lengths pad little. A batch's activations (batch × heads ×
        # length² attention scores) bound its size.
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        # Few distinct tensor shapes: rows padded up to a multiple of SHAPE_STEP (with empty
        # texts, dropped after) and lengths to a multiple of 32 (or the largest power of two
        # dividing max_seq_length). With every (rows, length) of its own, malloc's heap
        # fragmented and the audit's peak grew with each new shape (1.9 GB at seed scale in
        # bf16 in batches of 64, against 1.3 GB with shapes that repeat).
        step = min(SHAPE_STEP, self.batch_size)
        multiple = math.gcd(32, self.max_seq_length)  # never pads past max_seq_length
        empty = self._ids([""])[0]  # [CLS] [SEP]

        def encode_batch(rows: list[int]) -> None:
            filler = [empty] * (min(-len(rows) % step, self.batch_size - len(rows)))
            input_ids, attention = minilm.padded([ids[i] for i in rows] + filler, multiple)
            with torch.inference_mode():  # per thread: lanes need their own
                # Pooling and normalisation in fp32, whatever the weights.
                hidden = self._hidden(input_ids, attention)[: len(rows)].float()
                mask = attention[: len(rows)].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                vec = torch.nn.functional.normalize(mean, p=2, dim=1)
            out[rows] = vec.numpy()

        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        pool = self._lane_pool() if len(batches) > 1 else None
        if pool is not None:
            # Each lane's torch ops release the GIL: the lanes run at once, on their cores.
            threads = torch.get_num_threads()
            try:
                for _ in pool.map(encode_batch, batches):
                    pass
            finally:
                # A lane's torch.set_num_threads also sets the default of threads started
                # later: give it back (each lane keeps its own, fixed at its start).
                torch.set_num_threads(threads)
        else:
            for rows in batches:
                encode_batch(rows)
        return out

    def _lane_pool(self) -> Any:
        """Threads that encode batches side by side, each with its share of this process's
        torch threads (torch's thread count is per OS thread: set once in each lane); None
        for one lane. Never more lanes than threads: a Ray actor of one CPU gets one."""
        import torch

        threads = self.threads or torch.get_num_threads()
        lanes = max(1, min(self.lanes, threads))
        if lanes == 1:
            return None
        held = getattr(self, "_lanes_pool", None)
        if held is None or held[0] != lanes:
            from concurrent.futures import ThreadPoolExecutor

            if held is not None:
                held[1].shutdown()
            pool = ThreadPoolExecutor(
                lanes,
                thread_name_prefix="sdf-embed-lane",
                initializer=_lane_threads,
                initargs=(max(1, threads // lanes),),
            )
            self._lanes_pool = held = (lanes, pool)
        return held[1]

    def _hidden(self, input_ids: Any, attention_mask: Any) -> Any:
        if self._forward == "fused":
            return self._model(input_ids, attention_mask)
        return self._model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        vectors = self.encode(batch.column("text").to_pylist())
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        offsets = pa.array(range(0, flat.__len__() + 1, vectors.shape[1]), type=pa.int32())
        emb = pa.ListArray.from_arrays(offsets, flat)
        return pa.RecordBatch.from_arrays([batch.column("doc_id"), emb], schema=self.output_schema)


def _lane_threads(n: int) -> None:
    """A lane's torch threads: set, then read, which fixes the count for this OS thread
    (until read, a thread follows the process-wide default, which others may change)."""
    import torch

    torch.set_num_threads(n)
    torch.get_num_threads()


def workers_for(config: Config) -> int:
    return config.workers or env_workers()


def stage_for(config: Config) -> EmbeddingStage:
    workers = workers_for(config)
    cores = os.cpu_count() or 1
    # Several worker processes share the cores: each takes its slice, not all of them.
    threads = max(1, cores // workers) if workers > 1 else None
    lanes = config.lanes or (2 if workers == 1 and cores >= 2 else 1)
    return EmbeddingStage(
        max_seq_length=config.max_seq_length,
        precision=config.precision,
        batch_size=config.batch_size,
        threads=threads,
        forward=config.forward,
        lanes=lanes,
    )


# ------------------------------------------------------------------ figures
def group_figures(emb: np.ndarray, nn_sample: int = 5000, seed: int = 0) -> dict[str, Any]:
    """Diversity figures of one group of unit-normalised embeddings (rows)."""
    import numpy as np

    n = emb.shape[0]
    e = emb.astype(np.float64)
    total = e.sum(axis=0)
    mean_cos = float((total @ total - n) / (n * (n - 1))) if n > 1 else float("nan")
    nn = nearest_neighbour_similarity(emb, nn_sample, seed)
    effective = vendi_score(emb)
    return {
        "documents": int(n),
        "mean_pairwise_cosine": round(mean_cos, 6),
        "effective_documents": round(effective, 3),
        "effective_share": round(effective / n, 6) if n else None,
        "nn_cosine": {f"p{round(q * 100)}": round(float(np.quantile(nn, q)), 6) for q in QUANTILES}
        | {"mean": round(float(nn.mean()), 6)},
    }


def vendi_score(emb: np.ndarray) -> float:
    """exp(entropy of the eigenvalues of K/n), K = cosine kernel; via the d×d covariance."""
    import numpy as np

    n = emb.shape[0]
    if n == 0:
        return 0.0
    e = emb.astype(np.float64)
    cov = (e.T @ e) / n  # same nonzero eigenvalues as E Eᵀ / n; they sum to 1 (unit rows)
    lam = np.linalg.eigvalsh(cov)
    lam = lam[lam > 1e-12]
    lam = lam / lam.sum()
    return float(np.exp(-(lam * np.log(lam)).sum()))


def nearest_neighbour_similarity(
    emb: np.ndarray, nn_sample: int = 5000, seed: int = 0, block: int = 1024
) -> np.ndarray:
    """For each (sampled) row, the highest cosine to any other row of ``emb``."""
    import numpy as np

    n = emb.shape[0]
    if n < 2:
        return np.array([np.nan])
    idx = np.arange(n)
    if n > nn_sample:
        idx = np.sort(np.random.default_rng(seed).choice(n, nn_sample, replace=False))
    out = np.empty(len(idx), dtype=np.float32)
    for start in range(0, len(idx), block):
        rows = idx[start : start + block]
        sims = emb[rows] @ emb.T
        sims[np.arange(len(rows)), rows] = -np.inf  # not oneself
        out[start : start + len(rows)] = sims.max(axis=1)
    return out


def nearest_neighbours(emb: np.ndarray, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Index and cosine of each row's most similar other row (exhaustive, blockwise)."""
    import numpy as np

    n = emb.shape[0]
    best = np.full(n, -1, dtype=np.int64)
    sim = np.full(n, np.nan, dtype=np.float32)
    if n < 2:
        return best, sim
    for start in range(0, n, block):
        stop = min(start + block, n)
        sims = emb[start:stop] @ emb.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        best[start:stop] = sims.argmax(axis=1)
        sim[start:stop] = sims[np.arange(stop - start), best[start:stop]]
    return best, sim


def load_embeddings(store: Store, stage: EmbeddingStage) -> tuple[pl.DataFrame, np.ndarray]:
    """Documents (doc_id, concept, doc_type) with their embedding matrix, row-aligned."""
    import numpy as np
    import polars as pl
    import pyarrow.compute as pc

    docs = store.query(
        "SELECT doc_id, coalesce(concept, '(none)') AS concept, "
        "coalesce(doc_type, '(none)') AS doc_type FROM documents ORDER BY doc_id"
    )
    res = read_results(store, stage)
    if res.num_rows == 0 or docs.height == 0:
        return docs.head(0), np.zeros((0, 384), dtype=np.float32)
    ids = pl.from_arrow(res.select(["doc_id"])).with_row_index("_row")  # type: ignore[union-attr]
    docs = docs.join(ids, on="doc_id", how="inner").sort("doc_id")
    dim = len(res.column("embedding")[0])
    flat = pc.list_flatten(res.column("embedding")).to_numpy(zero_copy_only=False)
    matrix = flat.reshape(-1, dim)[docs["_row"].to_numpy()]
    return docs.drop("_row"), np.ascontiguousarray(matrix, dtype=np.float32)


def sample_ids(store: Store, per_concept: int | None) -> tuple[set[str] | None, int]:
    """Doc ids to embed: the ``per_concept`` smallest content hashes of each concept
    (None: every document), and the number of documents in the corpus."""
    total = store.query("SELECT count(*) AS n FROM documents").item()
    if per_concept is None:
        return None, total
    ids = store.query(
        "SELECT doc_id FROM (SELECT doc_id, row_number() OVER (PARTITION BY concept "
        "ORDER BY doc_id) AS r FROM documents) WHERE r <= $k",
        {"k": per_concept},
    )["doc_id"].to_list()
    return set(ids), total


def run(store: Store, config: Config | None = None, engine: str | None = None) -> AuditResult:
    """Embed documents not embedded yet, then figure diversity overall, per concept and
    per concept × doc type."""
    import numpy as np
    import polars as pl

    config = config or Config()
    started = time.perf_counter()
    stage = stage_for(config)
    sample, corpus_docs = sample_ids(store, config.sample_per_concept)
    # Small flushes: an interrupted embedding run keeps every finished part (minutes of work).
    ran = run_stage(
        store,
        stage,
        engine=engine,
        workers=workers_for(config),
        batch_rows=256,
        flush_rows=2048,
        where=sample,
    )
    docs, emb = load_embeddings(store, stage)
    if sample is not None:
        keep = docs["doc_id"].is_in(list(sample)).to_numpy()
        docs, emb = docs.filter(pl.Series(keep)), np.ascontiguousarray(emb[keep])

    def figures_of(mask: np.ndarray) -> dict[str, Any] | None:
        if int(mask.sum()) < max(2, config.min_group_docs):  # a pair is the least
            return None
        return group_figures(emb[mask], config.nn_sample, config.seed)

    overall = figures_of(np.ones(docs.height, dtype=bool)) if docs.height else None
    concept_arr = docs["concept"].to_numpy()
    type_arr = docs["doc_type"].to_numpy()
    per_concept: dict[str, Any] = {}
    per_concept_doc_type: list[dict[str, Any]] = []
    for concept in sorted(set(concept_arr.tolist())):
        in_concept = concept_arr == concept
        fig = figures_of(in_concept)
        if fig is not None:
            per_concept[concept] = fig
        for doc_type in sorted(set(type_arr[in_concept].tolist())):
            fig = figures_of(in_concept & (type_arr == doc_type))
            if fig is not None:
                per_concept_doc_type.append({"concept": concept, "doc_type": doc_type} | fig)
    # Each doc type across concepts: does one format read the same whatever the concept?
    per_doc_type: dict[str, Any] = {}
    for doc_type in sorted(set(type_arr.tolist())):
        fig = figures_of(type_arr == doc_type)
        if fig is not None:
            per_doc_type[doc_type] = fig

    # Per document: its most similar other document of the same concept (SQL-joinable).
    nn_rows: list[pl.DataFrame] = []
    for concept in sorted(set(concept_arr.tolist())):
        rows = np.flatnonzero(concept_arr == concept)
        best, sim = nearest_neighbours(emb[rows])
        sub = docs.select(pl.all().gather(rows))
        ids = sub["doc_id"].to_list()
        nn_rows.append(
            sub.with_columns(
                pl.Series("nn_doc_id", [ids[b] if b >= 0 else None for b in best]),
                pl.Series("nn_cosine", sim),
            )
        )
    nearest_schema = {
        "doc_id": pl.String,
        "concept": pl.String,
        "doc_type": pl.String,
        "nn_doc_id": pl.String,
        "nn_cosine": pl.Float32,
    }
    nearest = (
        pl.concat(nn_rows).sort("nn_cosine", descending=True, nulls_last=True)
        if nn_rows
        else pl.DataFrame(schema=nearest_schema)
    )
    strata = pl.DataFrame([_flat(r) for r in per_concept_doc_type], schema=_strata_schema())

    figures: dict[str, Any] = {
        "model": MODEL_ID,
        "max_seq_length": config.max_seq_length,
        "precision": stage.precision,
        "documents": docs.height,
        "documents_in_corpus": corpus_docs,
        "sample_per_concept": config.sample_per_concept,
        "embedded_now": ran.processed,
        "overall": overall,
        "per_concept": per_concept,
        "per_doc_type": per_doc_type,
        "per_concept_doc_type": per_concept_doc_type,
    }
    flags = []
    for concept, fig in per_concept.items():
        if fig["effective_documents"] < 0.05 * fig["documents"] and fig["documents"] >= 50:
            flags.append(
                f"{concept}: {fig['documents']} documents carry the diversity of about "
                f"{fig['effective_documents']:.0f} (Vendi effective count)"
            )
    notes = [
        f"Embeddings: {MODEL_ID} (offline copy), first {config.max_seq_length} word pieces of "
        f"each document, {stage.precision}, unit-normalised; cached by content hash in "
        f"table {stage.table} ({ran.processed} documents embedded in this run).",
        "mean_pairwise_cosine averages the cosine of every pair of different documents of a "
        "group; nn_cosine is each document's similarity to the most similar other document "
        f"of the group (sampled to {config.nn_sample} documents per group when larger).",
        "effective_documents is the Vendi score (exp of the entropy of the cosine kernel's "
        "eigenvalues): 1 when all documents are the same, at most min(n, 384).",
    ]
    if sample is not None and len(sample) < corpus_docs:
        notes.insert(
            1,
            f"Sampled: {len(sample):,} of {corpus_docs:,} documents, at most "
            f"{config.sample_per_concept:,} per concept (the smallest content hashes: a uniform, "
            "stable sample); compare effective_documents between groups of similar size.",
        )
    return AuditResult(
        name=NAME,
        figures=figures,
        tables={"strata": strata, "nearest": nearest},
        flags=flags,
        notes=notes,
        seconds=round(time.perf_counter() - started, 3),
    )


def _strata_schema() -> dict[str, Any]:
    import polars as pl

    return {
        "concept": pl.String,
        "doc_type": pl.String,
        "documents": pl.Int64,
        "mean_pairwise_cosine": pl.Float64,
        "effective_documents": pl.Float64,
        "effective_share": pl.Float64,
        **{f"nn_cosine_p{round(q * 100)}": pl.Float64 for q in QUANTILES},
        "nn_cosine_mean": pl.Float64,
    }


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "nn_cosine"}
    for k, v in row["nn_cosine"].items():
        out[f"nn_cosine_{k}"] = v
    return out


def summary(result: AuditResult) -> list[str]:
    """A few readable lines for the terminal."""
    f = result.figures
    lines = [f"{f['documents']} documents ({f['embedded_now']} embedded now, {f['precision']})"]
    for concept, fig in f["per_concept"].items():
        lines.append(
            f"{concept}: {fig['documents']} docs, mean pairwise cosine "
            f"{fig['mean_pairwise_cosine']:.3f}, effective documents "
            f"{fig['effective_documents']:.1f}, nearest-neighbour median "
            f"{fig['nn_cosine']['p50']:.3f} / p95 {fig['nn_cosine']['p95']:.3f}"
        )
    return lines


# ---------------------------------------------------------------- report, check, command
from sdfkit.audits import Command  # noqa: E402 - with the code using it
from sdfkit.report.verdicts import Verdict  # noqa: E402

JSON_KEY = "diversity"
TITLE = "Embedding diversity"
COMMAND = Command(
    help="Embedding diversity: mean pairwise cosine, nearest neighbours, effective documents.",
    options={
        "max_seq_length": "Word pieces of each document embedded.",
        "precision": "auto, fp32 or bf16 (weights in bf16; auto: bf16 on CPUs with native bf16).",
        "forward": "auto, fused or transformers: the encoder's forward pass (auto: fused where "
        "torch has oneDNN's fused kernels).",
        "batch_size": "Encoder batch size (default 8 fused in bf16, 32 on transformers in bf16, "
        "16 in fp32).",
        "workers": "Local embedding processes (default $SDF_WORKERS or 1).",
        "lanes": "Batches one embedding process encodes at once, on threads (default 2 on "
        "2 cores or more with one process).",
    },
    engine=True,
)


@dataclass
class Gates(Checked):
    """The diversity audit's threshold of ``sdf check`` (``check:`` in sdfkit.yaml)."""

    where_: ClassVar[str] = "check"

    #: Mean pairwise cosine of the documents' embeddings, per concept.
    max_mean_pairwise_cosine: float | None = field(default=None, metadata=between(0, 1))


def verdicts(report: dict[str, Any], thresholds: Any) -> list[Verdict]:
    """The mean pairwise cosine of each concept."""
    from sdfkit.report.verdicts import max_verdict, nothing_measured, unmeasured

    limit = thresholds.max_mean_pairwise_cosine
    if limit is None:
        return []
    div = report.get(JSON_KEY)
    early = unmeasured(div, "max_mean_pairwise_cosine", "diversity", limit)
    if early is not None:
        return [early]
    if not div.get("per_concept"):
        return [nothing_measured("max_mean_pairwise_cosine", "diversity", limit)]
    return [
        max_verdict(
            "max_mean_pairwise_cosine",
            concept,
            fig.get("mean_pairwise_cosine"),
            limit,
            f"effective documents {fig.get('effective_documents', '?')}",
        )
        for concept, fig in (div.get("per_concept") or {}).items()
    ]


def section(f: dict[str, Any]) -> str:
    """The diversity audit's section of the report, from its figures in report.json."""
    from sdfkit.report.charts import svg_bars, svg_heatmap, svg_ranges
    from sdfkit.report.html import html_table

    out = []
    per = f.get("per_concept") or {}
    rows = [
        {
            "concept": c,
            "documents": v["documents"],
            "mean_pairwise_cosine": v["mean_pairwise_cosine"],
            "effective_documents": v["effective_documents"],
            "nn_cosine_median": v["nn_cosine"].get("p50"),
            "nn_cosine_p95": v["nn_cosine"].get("p95"),
        }
        for c, v in per.items()
    ]
    out.append("<h3>Per concept</h3>" + html_table(rows))
    by_type = [
        {
            "doc_type": t,
            "documents": v["documents"],
            "mean_pairwise_cosine": v["mean_pairwise_cosine"],
            "effective_documents": v["effective_documents"],
            "nn_cosine_median": v["nn_cosine"].get("p50"),
        }
        for t, v in (f.get("per_doc_type") or {}).items()
    ]
    if by_type:
        out.append("<h3>Per doc type, across concepts</h3>" + html_table(by_type))
    out.append("<h3>Mean pairwise cosine per concept</h3>")
    out.append(
        svg_bars(
            [(r["concept"], r["mean_pairwise_cosine"]) for r in rows],
            max_value=1.0,
            title="mean pairwise cosine",
        )
    )
    out.append("<h3>Effective number of documents (Vendi) per concept</h3>")
    out.append(
        svg_bars([(r["concept"], r["effective_documents"]) for r in rows], title="Vendi score")
    )
    out.append("<h3>Nearest-neighbour cosine (box p25–p75, whiskers p5–p95, line median)</h3>")
    out.append(svg_ranges([(c, v["nn_cosine"]) for c, v in per.items()], title="nearest neighbour"))
    strata = f.get("per_concept_doc_type") or []
    if strata:
        out.append("<h3>Mean pairwise cosine per concept × doc type</h3>")
        out.append(
            svg_heatmap(
                sorted({r["doc_type"] for r in strata}),
                sorted({r["concept"] for r in strata}),
                {(r["doc_type"], r["concept"]): r["mean_pairwise_cosine"] for r in strata},
                fmt=lambda v: f"{v:.2f}",
                vmin=0,
                vmax=1,
                title="mean pairwise cosine",
            )
        )
        out.append("<h3>Effective documents per concept × doc type</h3>")
        out.append(
            svg_heatmap(
                sorted({r["doc_type"] for r in strata}),
                sorted({r["concept"] for r in strata}),
                {(r["doc_type"], r["concept"]): r["effective_documents"] for r in strata},
                fmt=lambda v: f"{v:.0f}",
                title="effective documents",
            )
        )
    return "".join(out)
