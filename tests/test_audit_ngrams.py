"""n-gram collapse audit on corpora whose n-gram counts are known by construction."""

from __future__ import annotations

import random
import re
from collections import Counter

import polars as pl
import pytest

from sdfkit.audits import ngrams, save
from sdfkit.store.ingest import build_documents

FILLER = (
    "river stone lamp orbit cable garden ticket violin marble anchor pepper copper "
    "meadow falcon lantern harbor saddle quartz ember thistle walnut glacier"
).split()
PHRASE = "ever evolving landscape of innovation"  # planted in 12 documents of concept a
STOCK = "delve deeply into nuance"  # planted twice in each of 6 documents (both concepts)


def _filler(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(FILLER) for _ in range(n))


@pytest.fixture
def corpus(store):
    rng = random.Random(7)
    records = []
    for i in range(30):
        concept = "a" if i < 20 else "b"
        parts = [_filler(rng, 40)]
        if concept == "a" and i < 12:
            parts.append(PHRASE.capitalize() + ".")
        if i % 5 == 0:
            parts += [STOCK + ",", _filler(rng, 5), STOCK.upper() + "!"]
        parts.append(_filler(rng, 30))
        records.append(
            {"text": " ".join(parts), "concept": concept, "doc_type": "memo" if i % 2 else "blog"}
        )
    store.append("documents_raw", build_documents(records))
    return records


def _reference(texts: list[str], n: int) -> tuple[Counter, Counter]:
    """Plain Python n-gram counts with the audit's rules (the slow baseline)."""
    counts: Counter = Counter()
    docs: Counter = Counter()
    for t in texts:
        seen = set()
        for sentence in re.split(r"[.!?;:]", t.lower()):
            words = re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", sentence)
            for j in range(len(words) - n + 1):
                g = " ".join(words[j : j + n])
                if all(w in ngrams.FUNCTION_WORDS for w in words[j : j + n]):
                    continue
                counts[g] += 1
                seen.add(g)
        docs.update(seen)
    return counts, docs


def test_planted_ngrams_have_exact_counts_and_documents(store, corpus):
    result = ngrams.run(store, ngrams.Config(top_k=10))
    top4 = {d["ngram"]: d for d in result.figures["top"]["4"]}
    assert top4["ever evolving landscape of"]["documents"] == 12
    assert top4["ever evolving landscape of"]["count"] == 12
    assert top4["delve deeply into nuance"] == {
        "ngram": "delve deeply into nuance",
        "count": 12,
        "documents": 6,
        "share": pytest.approx(6 / 30),
    }
    top5 = result.figures["top"]["5"]
    assert top5[0]["ngram"] == PHRASE and top5[0]["documents"] == 12
    assert result.figures["max_doc_share"]["5"] == pytest.approx(12 / 30)
    # every listed n-gram matches a brute-force count of the same texts
    texts = [r["text"] for r in corpus]
    for n in (2, 3, 4, 5):
        counts, docs = _reference(texts, n)
        listed = result.figures["top"][str(n)]
        assert listed, n
        for d in listed:
            assert (d["count"], d["documents"]) == (counts[d["ngram"]], docs[d["ngram"]])
        # and the list is really the top by documents
        best = max(docs.values())
        assert listed[0]["documents"] == best


def test_top_by_count_differs_from_top_by_documents(store, corpus):
    result = ngrams.run(store, ngrams.Config(n=(4,), top_k=3))
    by_count = result.figures["top_by_count"]["4"]
    # the stock phrase is twice per document: 12 occurrences in 6 documents
    assert any(d["ngram"] == STOCK and d["count"] == 12 for d in by_count)


def test_ngrams_do_not_cross_sentences_and_skip_function_words(store):
    store.append(
        "documents_raw",
        build_documents(
            [
                {"text": "alpha beta. gamma delta of the and in the", "concept": "c"},
                {"text": "alpha beta; gamma delta, of the", "concept": "c"},
            ]
        ),
    )
    result = ngrams.run(store, ngrams.Config(n=(2,), top_k=20))
    grams = {d["ngram"]: d for d in result.figures["top"]["2"]}
    assert "beta gamma" not in grams  # . and ; break n-grams
    assert grams["gamma delta"]["documents"] == 2  # a comma does not
    assert "of the" not in grams and "in the" not in grams
    kept = ngrams.run(store, ngrams.Config(n=(2,), top_k=20, skip_function_words=False))
    assert {d["ngram"]: d["documents"] for d in kept.figures["top"]["2"]}["of the"] == 2


def test_per_concept_and_doc_type_tops_and_flags(store, corpus):
    result = ngrams.run(
        store,
        ngrams.Config(n=(5,), top_k=5, flag_doc_share={5: 0.5}, min_stratum_docs=5),
    )
    by_concept = result.figures["by_concept"]
    top_a = by_concept["a"]["5"][0]
    assert (top_a["ngram"], top_a["documents"], top_a["share"]) == (PHRASE, 12, 12 / 20)
    assert all(d["ngram"] != PHRASE for d in by_concept.get("b", {}).get("5", []))
    assert set(result.figures["by_doc_type"]) == {"memo", "blog"}
    # 12/30 = 40 % overall is under 50 %, but 12/20 = 60 % of concept a is over it
    assert len(result.flags) == 1
    assert PHRASE in result.flags[0] and "concept 'a'" in result.flags[0]
    flagged = result.tables["flagged"]
    assert flagged.height == 1 and flagged["group"][0] == "a"
    # tables land in the catalog for SQL
    save(store, result)
    got = store.query("SELECT ngram, documents FROM audit_ngrams_top WHERE n = 5 LIMIT 1")
    assert got.row(0) == (PHRASE, 12)
    from sdfkit.store.sql import named

    docs = named("ngram_flagged_documents", store)
    assert docs.height == 12 and set(docs["ngram"]) == {PHRASE}
    assert all(PHRASE in c for c in docs["context"])


def test_thresholds_accept_string_keys():
    assert ngrams.Config(flag_doc_share={"4": 0.4}).threshold(4) == 0.4
    assert ngrams.Config(flag_doc_share={"4": 0.4}).threshold(3) == 0.15


def test_chunking_does_not_change_results(store, corpus):
    whole = ngrams.run(store, ngrams.Config(top_k=15, chunk_docs=1000))
    chunked = ngrams.run(store, ngrams.Config(top_k=15, chunk_docs=4))
    assert whole.figures["top"] == chunked.figures["top"]
    assert whole.figures["by_concept"] == chunked.figures["by_concept"]


def test_where_restricts_documents(store, corpus):
    result = ngrams.run(store, ngrams.Config(n=(5,), where="concept = 'b'"))
    assert result.figures["documents"] == 10
    assert all(d["ngram"] != PHRASE for d in result.figures["top"]["5"])


def test_bad_where_is_one_error_line(store, corpus, cli):
    from sdfkit.errors import SdfError

    with pytest.raises(SdfError, match="where 'no_such_column = 1': not a valid condition"):
        ngrams.run(store, ngrams.Config(where="no_such_column = 1"))
    out = cli("--corpus", store.root, "audit", "dedup", "--set", "where=nope > 1", expect=2)
    assert out.output.startswith("error: --set where 'nope > 1': not a valid condition")


def test_empty_corpus(store):
    result = ngrams.run(store)
    assert result.figures["documents"] == 0
    assert result.figures["top"]["3"] == []
    assert result.flags == []


def _records(seed: int, n_docs: int) -> list[dict]:
    """Documents with planted phrases, ties and empty / punctuation-only texts."""
    rng = random.Random(seed)
    records = []
    for i in range(n_docs):
        parts = [_filler(rng, rng.randint(5, 40))]
        if i % 3 == 0:
            parts.append(PHRASE + ".")
        if i % 4 == 0:
            parts.append(STOCK + "; " + _filler(rng, 4))
        records.append(
            {
                "text": " ".join(parts),
                "concept": "a" if i % 2 else "b",
                "doc_type": ["memo", "blog", "faq"][i % 3],
            }
        )
    records.append({"text": f"?!. {seed}", "concept": "a", "doc_type": "memo"})
    return records


def _comparable(result) -> tuple:
    figures = {k: v for k, v in result.figures.items() if k != "timings"}
    return figures, result.flags, result.notes


CFG = dict(top_k=8, top_k_stratum=4, min_stratum_docs=3, chunk_docs=7)


def test_warm_run_after_new_documents_equals_a_run_from_scratch(tmp_path):
    from sdfkit.store.catalog import Store

    first, added = _records(1, 40), _records(2, 12)
    warm = Store(tmp_path / "warm")
    warm.append("documents_raw", build_documents(first))
    ngrams.run(warm, ngrams.Config(**CFG))  # fills the token cache
    warm.append("documents_raw", build_documents(added))
    incremental = ngrams.run(warm, ngrams.Config(**CFG))

    scratch = Store(tmp_path / "scratch")
    scratch.append("documents_raw", build_documents(added + first))  # other part order too
    cold = ngrams.run(scratch, ngrams.Config(**CFG))

    assert incremental.figures["documents"] == len(first) + len(added)
    assert _comparable(incremental) == _comparable(cold)
    assert incremental.tables.keys() == cold.tables.keys()
    for name, table in incremental.tables.items():
        assert table.equals(cold.tables[name]), name
    # and the counts are right, not merely the same twice
    counts, docs = _reference([r["text"] for r in first + added], 5)
    for d in incremental.figures["top"]["5"]:
        assert (d["count"], d["documents"]) == (counts[d["ngram"]], docs[d["ngram"]])


def test_warm_run_tokenises_only_new_documents(store, monkeypatch):
    tokenised: list[int] = []
    real = ngrams._token_hashes

    def counting(texts):
        tokenised.append(len(texts))
        return real(texts)

    monkeypatch.setattr(ngrams, "_token_hashes", counting)
    store.append("documents_raw", build_documents(_records(3, 20)))
    ngrams.run(store, ngrams.Config(**CFG))
    assert sum(tokenised) == 21
    tokenised.clear()
    ngrams.run(store, ngrams.Config(**CFG))  # nothing new: nothing tokenised
    assert tokenised == []
    store.append("documents_raw", build_documents(_records(4, 5)))
    result = ngrams.run(store, ngrams.Config(**CFG))
    assert sum(tokenised) == 6 and result.figures["documents"] == 27
    # a selection tokenises only its own documents, and other settings reuse the cache
    tokenised.clear()
    ngrams.run(store, ngrams.Config(n=(3,), skip_function_words=False, where="concept = 'a'"))
    assert tokenised == []
    fresh = type(store)(store.root.parent / "fresh")
    fresh.append("documents_raw", build_documents(_records(5, 10)))
    ngrams.run(fresh, ngrams.Config(where="concept = 'a'"))
    assert sum(tokenised) == 6  # 5 odd-numbered documents + the punctuation-only one


def test_token_cache_table_names_the_hashing():
    stage = ngrams.TokenHashStage()
    assert stage.table.startswith("ngram_tokens_") and len(stage.table) > len("ngram_tokens_")
    assert stage.table == ngrams.TokenHashStage().table  # stable within one install


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"group_candidates": 2},  # per-group lists widen their candidates (exact again)
        {"group_candidates": 2, "group_max_rows": 5},  # and give up: approximate lists
    ],
)
def test_hash_partitions_spilled_to_disk_give_the_one_partition_result(
    tmp_path, monkeypatch, extra
):
    from sdfkit.store.catalog import Store

    bits: list[int] = []
    spill_init = ngrams._Spill.__init__

    def recording(self, root, b):
        bits.append(b)
        spill_init(self, root, b)

    monkeypatch.setattr(ngrams._Spill, "__init__", recording)
    results = {}
    for rows in (10**9, 40):
        store = Store(tmp_path / f"p{rows}")
        store.append("documents_raw", build_documents(_records(6, 60)))
        results[rows] = ngrams.run(store, ngrams.Config(**CFG, **extra, partition_rows=rows))
    assert bits[0] == 0 and bits[1] >= 5  # one partition, then 32 or more
    whole, parted = results[10**9], results[40]
    assert _comparable(whole) == _comparable(parted)
    assert whole.tables.keys() == parted.tables.keys()
    for name, table in whole.tables.items():
        assert table.equals(parted.tables[name]), name
    assert whole.figures["top"]["3"] and whole.tables["by_concept"].height
    if "group_max_rows" in extra:
        assert any("group_candidates" in note for note in whole.notes)


def test_spilled_partitions_are_removed_even_when_the_audit_fails(store, monkeypatch):
    import tempfile

    store.append("documents_raw", build_documents(_records(7, 10)))
    made: list[str] = []
    real = tempfile.TemporaryDirectory

    def recording(*args, **kwargs):
        d = real(*args, **kwargs)
        made.append(d.name)
        return d

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ngrams.tempfile, "TemporaryDirectory", recording)
    monkeypatch.setattr(ngrams, "_aggregate", fail)
    with pytest.raises(KeyboardInterrupt):
        ngrams.run(store, ngrams.Config(partition_rows=10))
    assert len(made) == 1
    from pathlib import Path

    assert not Path(made[0]).exists()


def test_threads_and_group_cell_blocks_do_not_change_results(tmp_path, monkeypatch):
    from sdfkit.store.catalog import Store

    records = _records(8, 90)
    store = Store(tmp_path / "c")
    store.append("documents_raw", build_documents(records))
    one = ngrams.run(store, ngrams.Config(**CFG, threads=1))
    spread = ngrams.run(store, ngrams.Config(**CFG, threads=3, partition_rows=50))
    monkeypatch.setattr(ngrams, "_GROUP_CELLS", 1)  # one n-gram per block of group cells
    blocked = ngrams.run(store, ngrams.Config(**CFG, threads=2))
    for other in (spread, blocked):
        assert _comparable(other) == _comparable(one)
        for name, table in one.tables.items():
            assert table.equals(other.tables[name]), name
    # and the per-concept lists are right, not merely the same three times
    by_concept = one.tables["by_concept"].filter(pl.col("n") == 3)
    assert by_concept.height
    for concept in ("a", "b"):
        texts = [r["text"] for r in records if r["concept"] == concept]
        counts, docs = _reference(texts, 3)
        for row in by_concept.filter(pl.col("concept") == concept).iter_rows(named=True):
            assert (row["count"], row["documents"]) == (counts[row["ngram"]], docs[row["ngram"]])


def parquet_scans_of(monkeypatch) -> list[object]:
    """The arguments of every ``pl.scan_parquet`` call made from now on in the test."""
    read: list[object] = []
    real = pl.scan_parquet

    def recording(*args, **kwargs):
        read.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(pl, "scan_parquet", recording)
    return read


@pytest.fixture
def parquet_scans(monkeypatch) -> list[object]:
    return parquet_scans_of(monkeypatch)


def test_cold_run_keeps_the_hashes_it_computed_instead_of_reading_them_back(store, parquet_scans):
    store.append("documents_raw", build_documents(_records(9, 30)))
    read = parquet_scans
    cold = ngrams.run(store, ngrams.Config(**CFG))
    assert read == []  # every document was tokenised in this process
    assert ngrams.TokenHashStage().table in {p.parent.name for p in store.root.rglob("*.parquet")}
    warm = ngrams.run(store, ngrams.Config(**CFG))
    assert len(read) == 1  # the cache, read back
    assert _comparable(cold) == _comparable(warm)
    for name, table in cold.tables.items():
        assert table.equals(warm.tables[name]), name


def test_ngrams_in_one_document_keep_their_words_and_top5_share(store):
    # every n-gram is in one document only: none reaches a per-group list, all the top one
    store.append(
        "documents_raw",
        build_documents(
            [
                {"text": "Alpha beta gamma. Delta epsilon zeta eta.", "concept": "a"},
                {"text": "Theta iota kappa lambda.", "concept": "b"},
            ]
        ),
    )
    result = ngrams.run(store, ngrams.Config(n=(2, 3), min_stratum_docs=1))
    two = {r["ngram"]: (r["count"], r["documents"]) for r in result.figures["top"]["2"]}
    assert two == {
        g: (1, 1)
        for g in (
            "alpha beta",
            "beta gamma",
            "delta epsilon",
            "epsilon zeta",
            "zeta eta",
            "theta iota",
            "iota kappa",
            "kappa lambda",
        )
    }
    assert [r["ngram"] for r in result.figures["top"]["3"]] == sorted(
        [
            "alpha beta gamma",
            "delta epsilon zeta",
            "epsilon zeta eta",
            "theta iota kappa",
            "iota kappa lambda",
        ]
    )
    # the five 2-grams in most documents (ties broken on the key) are in 1 or 2 documents
    assert result.figures["top5_doc_share"]["2"] in (0.5, 1.0)
    assert result.tables["by_concept"].is_empty()


def test_cold_run_past_the_memory_limit_reads_the_cache_back(tmp_path, monkeypatch):
    from sdfkit.store.catalog import Store

    records = _records(10, 30)
    kept = Store(tmp_path / "kept")
    kept.append("documents_raw", build_documents(records))
    expected = ngrams.run(kept, ngrams.Config(**CFG))
    read = parquet_scans_of(monkeypatch)
    monkeypatch.setattr(ngrams, "_KEEP_BYTES", 1)  # the first batch is already too much
    store = Store(tmp_path / "limited")
    store.append("documents_raw", build_documents(records))
    got = ngrams.run(store, ngrams.Config(**CFG))
    assert len(read) == 1
    assert _comparable(got) == _comparable(expected)
