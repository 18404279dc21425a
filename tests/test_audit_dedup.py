"""Near-duplicate audit on planted near-duplicates of known edit rates."""

from __future__ import annotations

import itertools
import random
import re
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from sdfkit.audits import dedup, save
from sdfkit.engine.local import read_results
from sdfkit.errors import SdfError
from sdfkit.store.ingest import build_documents

VOCAB = [f"w{i}" for i in range(3000)]
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _edit(words, rate, rng):
    out = list(words)
    for _ in range(max(1, round(rate * len(words)))):
        out[rng.randrange(len(out))] = rng.choice(VOCAB)
    return out


def _exact_jaccard(a: str, b: str, k: int = 5) -> float:
    """Reference Jaccard over word k-shingles as Python string sets."""

    def sh(t):
        w = re.findall(r"\w+", t.lower())
        return {" ".join(w[i : i + k]) for i in range(len(w) - k + 1)}

    sa, sb = sh(a), sh(b)
    return len(sa & sb) / len(sa | sb)


@pytest.fixture
def planted(store):
    """30 distinct documents; doc 0 has copies at 1 % and 2.5 % edits (a cluster of 3),
    doc 1 a copy at 2.5 %, doc 2 a copy at 12 % (below the threshold)."""
    rng = random.Random(3)
    bases = [[rng.choice(VOCAB) for _ in range(400)] for _ in range(30)]
    records = [
        {"text": " ".join(w), "concept": "c", "created_at": T0 + timedelta(hours=i)}
        for i, w in enumerate(bases)
    ]
    copies = [(0, 0.01), (0, 0.025), (1, 0.025), (2, 0.12)]
    for j, (i, rate) in enumerate(copies):
        text = " ".join(_edit(bases[i], rate, rng))
        # copy of doc 1 is written earlier than its original: the original is not kept
        when = T0 - timedelta(days=1) if i == 1 else T0 + timedelta(days=1 + j)
        records.append({"text": text, "concept": "c", "created_at": when})
    store.append("documents_raw", build_documents(records))
    return [r["text"] for r in records]


def _truth(texts, threshold):
    from sdfkit.store.catalog import doc_id_for

    out = set()
    for a, b in itertools.combinations(texts, 2):
        if _exact_jaccard(a, b) >= threshold:
            x, y = sorted((doc_id_for(a), doc_id_for(b)))
            out.add((x, y))
    return out


def test_finds_exactly_the_pairs_above_the_threshold(store, planted):
    from sdfkit.store.catalog import doc_id_for

    result = dedup.run(store)
    found = {(p["doc_a"], p["doc_b"]) for p in result.figures["pairs"]}
    truth = _truth(planted, 0.7)
    assert found == truth and len(truth) == 4  # 0-1%, 0-2.5%, 1%-2.5%, 1-2.5%
    for p in result.figures["pairs"]:
        texts = {doc_id_for(t): t for t in planted}
        assert p["jaccard"] == pytest.approx(_exact_jaccard(texts[p["doc_a"]], texts[p["doc_b"]]))
        assert abs(p["estimated_jaccard"] - p["jaccard"]) < 0.15
    ids = [doc_id_for(t) for t in planted]
    assert (min(ids[2], ids[33]), max(ids[2], ids[33])) not in found  # 12 % edits: below 0.7
    # clusters: {0, 0@1%, 0@2.5%} and {1, 1@2.5%}
    clusters = sorted(result.figures["clusters"], key=len, reverse=True)
    assert [len(c) for c in clusters] == [3, 2]
    assert set(clusters[0]) == {ids[0], ids[30], ids[31]}
    assert result.figures["cluster_sizes"] == [3, 2]
    assert result.figures["excluded"] == 3
    assert result.figures["duplicate_fraction"] == pytest.approx(3 / 34)


def test_exclusions_keep_one_per_cluster_and_rerun_is_idempotent(store, planted):
    from sdfkit.store.catalog import doc_id_for

    ids = [doc_id_for(t) for t in planted]
    first = dedup.run(store)
    excl = store.query("SELECT doc_id, reason, source FROM exclusions ORDER BY doc_id")
    # earliest kept: doc 0 (original) and the copy of doc 1 (written a day before it)
    expected = {
        ids[30]: f"near-duplicate of {ids[0]}",
        ids[31]: f"near-duplicate of {ids[0]}",
        ids[1]: f"near-duplicate of {ids[32]}",
    }
    assert dict(excl.select("doc_id", "reason").iter_rows()) == expected
    assert set(excl["source"]) == {"dedup"}
    # the documents view (what selection reads) sees them as excluded
    n_excluded = store.query("SELECT count(*) FROM documents WHERE excluded").item()
    assert n_excluded == 3

    again = dedup.run(store)
    assert again.figures["signatures_computed"] == 0  # cached by content hash
    assert again.figures["pairs"] == first.figures["pairs"]
    excl2 = store.query("SELECT doc_id, reason FROM exclusions ORDER BY doc_id")
    assert excl2.rows() == excl.select("doc_id", "reason").rows()

    # a stricter threshold replaces (not adds to) the dedup exclusions
    strict = dedup.run(store, dedup.Config(threshold=0.85))
    assert strict.figures["n_pairs"] < first.figures["n_pairs"]
    n = store.query("SELECT count(*) FROM exclusions WHERE source = 'dedup'").item()
    assert n == strict.figures["excluded"]
    # other sources' exclusions are left alone
    with store.connect() as con:
        con.execute("INSERT INTO exclusions VALUES (?, 'by hand', 'user', now())", [ids[5]])
    dedup.run(store)
    assert store.query("SELECT count(*) FROM exclusions WHERE source = 'user'").item() == 1


def test_keep_longest_and_listing_only(store, planted):
    result = dedup.run(store, dedup.Config(keep="longest", write_exclusions=False))
    assert store.query("SELECT count(*) FROM exclusions").item() == 0
    lengths = dict(store.query("SELECT doc_id, chars FROM documents").iter_rows())
    for kept, group in zip(result.figures["kept"], result.figures["clusters"], strict=True):
        assert lengths[kept] == max(lengths[d] for d in group)


def test_signatures_are_a_cached_stage_table(store, planted):
    dedup.run(store, dedup.Config(num_perm=64, shingle_size=4, write_exclusions=False))
    stage = dedup.MinHashStage(4, 64, 1)
    tbl = read_results(store, stage)
    assert tbl.num_rows == len(planted)
    assert len(tbl.column("signature")[0].as_py()) == 64
    joined = store.query(
        f"SELECT count(*) FROM documents JOIN {stage.table} USING (doc_id) WHERE n_shingles > 300"
    ).item()
    assert joined == len(planted)


def test_unverified_mode_reports_estimates(store, planted):
    result = dedup.run(store, dedup.Config(verify=False, write_exclusions=False))
    assert result.figures["settings"]["verified"] is False
    for p in result.figures["pairs"]:
        assert p["jaccard"] == p["estimated_jaccard"] >= 0.7


def test_tables_are_saved_for_sql(store, planted):
    result = dedup.run(store)
    save(store, result)
    got = store.query("SELECT count(*) FROM audit_dedup_clusters WHERE NOT kept").item()
    assert got == 3
    from sdfkit.store.sql import named

    listed = named("dedup_clusters", store)
    assert listed.height == 5 and "concept" in listed.columns


def test_bad_settings_are_clear_errors():
    with pytest.raises(SdfError, match=r"audits.dedup.keep: must be one of earliest, longest"):
        dedup.Config(keep="newest")
    with pytest.raises(SdfError, match=r"audits.dedup.threshold: must be above 0 and at most 1"):
        dedup.Config(threshold=1.5)
    with pytest.raises(SdfError, match=r"audits.dedup.num_perm: must be at least 2, got 1"):
        dedup.Config(num_perm=1)
    with pytest.raises(SdfError, match=r"audits.dedup.verify: must be true or false"):
        dedup.Config(verify="yes")  # type: ignore[arg-type]


def test_empty_corpus(store):
    result = dedup.run(store)
    assert result.figures["pairs"] == [] and result.figures["duplicate_fraction"] == 0.0


def test_lsh_banding_keeps_pairs_near_the_threshold(store):
    """20 copies at 3 % edits (Jaccard ~0.75, just above 0.7): every one is found."""
    from sdfkit.store.catalog import doc_id_for

    b, r = dedup.lsh_params(0.7, 128, 0.98)
    assert b * r <= 128 and 1 - (1 - 0.7**r) ** b >= 0.98
    rng = random.Random(11)
    records = []
    for _ in range(20):
        words = [rng.choice(VOCAB) for _ in range(400)]
        records.append({"text": " ".join(words), "concept": "c"})
        records.append({"text": " ".join(_edit(words, 0.03, rng)), "concept": "c"})
    store.append("documents_raw", build_documents(records))
    texts = [r["text"] for r in records]
    truth = _truth(texts, 0.7)
    assert len(truth) >= 15  # most copies land above 0.7
    result = dedup.run(store, dedup.Config(write_exclusions=False))
    found = {(p["doc_a"], p["doc_b"]) for p in result.tables["pairs"].iter_rows(named=True)}
    assert found == truth
    # and nothing between distinct documents
    distinct = {doc_id_for(t) for t in texts[::2]}
    assert not any(a in distinct and b in distinct for a, b in found)


# The statements of the dedup audit's one save transaction, in order: a crash just before
# any of them leaves the previous exclusions beside the previous clusters.
DEDUP_CRASH_POINTS = [
    r'CREATE OR REPLACE TABLE "audit_dedup_pairs"',
    r'CREATE OR REPLACE TABLE "audit_dedup_clusters"',
    r"DELETE FROM exclusions",
    r"INSERT INTO exclusions",
    r"INSERT INTO audit_runs",
    r"^COMMIT",
]


def _stored_dedup(store):
    """(excluded doc ids, non-kept doc ids of audit_dedup_clusters, dedup audit_runs rows)."""
    from sdfkit.store.catalog import Store

    fresh = Store(store.root)
    excl = fresh.query("SELECT doc_id FROM exclusions WHERE source = 'dedup' ORDER BY 1")
    dropped = fresh.query("SELECT doc_id FROM audit_dedup_clusters WHERE NOT kept ORDER BY 1")
    runs = fresh.query("SELECT count(*) FROM audit_runs WHERE audit = 'dedup'").item()
    return excl["doc_id"].to_list(), dropped["doc_id"].to_list(), runs


@pytest.mark.parametrize("pattern", DEDUP_CRASH_POINTS)
def test_interrupted_dedup_leaves_exclusions_and_clusters_of_the_previous_run(
    store, planted, pattern
):
    """Exclusions and the clusters that explain them are one transaction: a crash at any
    statement leaves the catalog exactly as the previous run left it; the next run works."""
    from crash_points import catalog, crash_at

    from sdfkit.store.catalog import Store

    first = dedup.run(store)
    excluded, dropped, runs = _stored_dedup(store)
    assert excluded == dropped and len(excluded) == first.figures["excluded"] == 3 and runs == 1
    before = catalog(store)
    strict = dedup.Config(threshold=0.85)  # only the 1 % edit pair stays: 1 exclusion
    point = crash_at(store, pattern, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        dedup.run(store, strict)
    assert point.fired, point.statements
    assert catalog(store) == before
    again = dedup.run(Store(store.root), strict)
    excluded, dropped, runs = _stored_dedup(store)
    assert excluded == dropped and len(excluded) == again.figures["excluded"] == 1 and runs == 2


def test_dedup_save_failing_raises_and_keeps_previous(store, planted):
    from crash_points import catalog, crash_at

    dedup.run(store)
    before = catalog(store)
    point = crash_at(store, r"INSERT INTO exclusions", RuntimeError("disk on fire"))
    with pytest.raises(RuntimeError, match="disk on fire"):
        dedup.run(store, dedup.Config(threshold=0.85))
    assert point.fired and catalog(store) == before


def test_killed_dedup_leaves_previous_run_whole(store, planted):
    """kill -9 between the new exclusions and the new clusters' audit row: reopening the
    corpus shows the previous run's exclusions and clusters together."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    from crash_points import catalog

    dedup.run(store)
    before = catalog(store)
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(Path(__file__).parent)!r}]
        from crash_points import crash_at
        from sdfkit.audits import dedup
        from sdfkit.store.catalog import Store
        store = Store({str(store.root)!r})
        crash_at(store, r"INSERT INTO audit_runs", None)
        dedup.run(store, dedup.Config(threshold=0.85))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 17, proc.stderr  # died at the crash point, not elsewhere
    assert catalog(store) == before
    excluded, dropped, _ = _stored_dedup(store)
    assert excluded == dropped and len(excluded) == 3


def test_run_saves_once_and_writes_nothing_without_exclusions(store, planted, cli):
    from crash_points import catalog

    before = catalog(store)
    result = dedup.run(store, dedup.Config(write_exclusions=False))
    assert catalog(store) == before  # listing only: nothing written until save
    save(store, result)
    excluded, dropped, runs = _stored_dedup(store)
    assert excluded == [] and len(dropped) == 3 and runs == 1  # listed, not excluded
    # `sdf audit dedup` runs (which saves) then saves the same result: one audit_runs row
    out = cli("--corpus", store.root, "audit", "dedup")
    assert "tables: audit_dedup_pairs, audit_dedup_clusters" in out.output
    excluded, dropped, runs = _stored_dedup(store)
    assert excluded == dropped and len(excluded) == 3 and runs == 2


# ---------------------------------------------------------------- vectorized signatures
from sdfkit.audits import shingles as sh  # noqa: E402

UNICODE_VOCAB = [
    "Straße", "naïve", "café—bar", "x_y", "don’t", "it's", "42", "ΑΣ", "日本語", "Ünïcode",
    "e.g.", "a", "the", "Foo", "bar.", "baz,", "½", "x²", "--flag", "İstanbul",
] + [f"w{i}" for i in range(200)]  # fmt: skip


def _python_shingles(text: str, k: int = 5) -> set[str]:
    w = re.findall(r"\w+", text.lower())
    if len(w) <= k:
        return {" ".join(w)}
    return {" ".join(w[i : i + k]) for i in range(len(w) - k + 1)}


def _texts(n: int, seed: int, longest: int = 400) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(UNICODE_VOCAB) for _ in range(rng.randint(0, longest)))
        for _ in range(n)
    ]


def test_shingle_hashes_count_exactly_the_python_word_shingles():
    """Words are re's \\w+ of the lower-cased text, whatever the script or punctuation, and
    hash-set Jaccard equals the Jaccard of the shingles as Python strings."""
    texts = _texts(120, seed=5)
    hasher = sh.ShingleHasher(5)
    _, distinct = sh.signatures(texts)
    for text, n in zip(texts, distinct, strict=True):
        assert n == len(_python_shingles(text)) == len(hasher.set_of(text))
    rng = random.Random(6)
    for text in texts[:30]:
        words = text.split(" ")
        edited = " ".join(_edit(words, 0.05, rng) if len(words) > 20 else words)
        a, b = _python_shingles(text), _python_shingles(edited)
        ha, hb = hasher.set_of(text), hasher.set_of(edited)
        assert dedup.jaccard(ha, hb) == pytest.approx(len(a & b) / len(a | b))


def test_long_documents_streamed_in_chunks_give_the_one_pass_result():
    """A text longer than chunk_chars is hashed chunk by chunk (cut between words, the last
    words carried over) with exactly the signature and shingle count of one pass; short
    texts, empty texts and a word longer than a chunk included."""
    texts = _texts(40, seed=7, longest=2000) + ["", "one two", "x" * 500 + " tail words here"]
    whole = sh.ShingleHasher(5, chunk_chars=10**9)
    small = sh.ShingleHasher(5, chunk_chars=64)
    sig_whole, n_whole = sh.signatures(texts, hasher=whole)
    sig_small, n_small = sh.signatures(texts, hasher=small)
    assert (sig_whole == sig_small).all() and (n_whole == n_small).all()
    assert whole.widest_pass > 5000  # the big pass really was one pass
    assert small.widest_pass <= 2 * 512  # only the 500-letter word widened a chunk
    for text in texts[::7]:
        assert (whole.set_of(text) == small.set_of(text)).all()


def test_signature_memory_is_bounded_by_the_chunk_not_the_document():
    """Working memory of a huge document stays within its text's own size: one pass over
    the same document needs tens of bytes per character."""
    import tracemalloc

    rng = random.Random(8)
    paragraph = " ".join(f"Word{rng.randrange(3000)}" for _ in range(500)) + ".\n"
    text = paragraph * 1500  # ~6.4M characters
    sh.signatures(["warm up"], chunk_chars=4096)  # the word table is built once per process
    peaks = {}
    for chunk in (4096, 10**8):
        tracemalloc.start()
        sh.signatures([text], chunk_chars=chunk)
        peaks[chunk] = tracemalloc.get_traced_memory()[1] / len(text)
        tracemalloc.stop()
    assert peaks[4096] < 1.5  # the lower-cased copy of the text (1 byte/char) and one chunk
    assert peaks[10**8] > 10 * peaks[4096]


def test_one_permutation_estimates_follow_exact_jaccard():
    """Agreeing bins estimate Jaccard without bias: averaged over seeds, within 0.02."""
    rng = random.Random(9)
    words = [rng.choice(VOCAB) for _ in range(1500)]
    hasher = sh.ShingleHasher(5)
    for rate in (0.01, 0.03, 0.08):
        edited = " ".join(_edit(words, rate, rng))
        exact = dedup.jaccard(hasher.set_of(" ".join(words)), hasher.set_of(edited))
        estimates = []
        for seed in range(40):
            sig, _ = sh.signatures([" ".join(words), edited], seed=seed)
            estimates.append(float((sig[0] == sig[1]).mean()))
        assert abs(sum(estimates) / len(estimates) - exact) < 0.02


def test_short_documents_fill_every_bin():
    """A text with fewer shingles than bins still has a full signature (empty bins borrow
    a neighbour's value), and identical texts have identical signatures."""
    sig, n = sh.signatures(["alpha beta gamma delta epsilon zeta eta", "alpha beta"] * 2, 5)
    assert (sig[0] == sig[2]).all() and (sig[1] == sig[3]).all()
    assert list(n) == [3, 1, 3, 1]
    assert (sig[0] != sig[1]).mean() > 0.5


def test_audit_with_tiny_chunks_finds_exactly_the_pairs(store, planted):
    result = dedup.run(store, dedup.Config(chunk_chars=64, write_exclusions=False))
    found = {(p["doc_a"], p["doc_b"]) for p in result.figures["pairs"]}
    assert found == _truth(planted, 0.7)


def test_threads_give_the_signatures_of_one_thread():
    texts = _texts(60, seed=12, longest=800)
    batch = pa.RecordBatch.from_arrays(
        [pa.array([str(i) for i in range(60)]), pa.array(texts)], names=["doc_id", "text"]
    )
    one = dedup.MinHashStage(threads=1)(batch)
    three = dedup.MinHashStage(threads=3)(batch)
    assert three.equals(one)
    assert dedup.MinHashStage(threads=3).table == dedup.MinHashStage().table


def test_chunk_setting_is_checked():
    with pytest.raises(SdfError, match=r"audits.dedup.chunk_chars: must be at least 64, got 8"):
        dedup.Config(chunk_chars=8)


@pytest.mark.parametrize("route", ["numpy", "compiled"])
def test_candidates_estimated_far_below_the_threshold_skip_the_exact_check(
    store, monkeypatch, route
):
    """A templated corpus (documents sharing ~40 % of their shingles) makes many LSH
    candidates far below 0.7: they are dropped on their estimate, with the same pairs found
    as when every candidate is checked (on either hashing route)."""
    rng = random.Random(21)
    template = [rng.choice(VOCAB) for _ in range(300)]
    records = []
    for _ in range(40):
        words = template[:200] + [rng.choice(VOCAB) for _ in range(200)]
        records.append({"text": " ".join(words), "concept": "c"})
    for r in records[:5]:
        records.append({"text": " ".join(_edit(r["text"].split(), 0.01, rng)), "concept": "c"})
    store.append("documents_raw", build_documents(records))
    checked: list[str] = []
    hashing = "parallel_shingle_sets" if route == "numpy" else "compiled_pair_jaccards"
    real = getattr(dedup, hashing)

    def counting(texts, *args):
        checked.extend(texts)
        return real(texts, *args)

    monkeypatch.setattr(dedup, hashing, counting)
    quick = dedup.run(store, dedup.Config(write_exclusions=False, route=route))
    n_quick = len(checked)
    checked.clear()
    full = dedup.run(store, dedup.Config(write_exclusions=False, verify_margin=1.0, route=route))
    truth = _truth([r["text"] for r in records], 0.7)
    assert {(p["doc_a"], p["doc_b"]) for p in quick.figures["pairs"]} == truth
    assert quick.figures["pairs"] == full.figures["pairs"] and len(truth) == 5
    assert full.figures["candidate_pairs"] > 20  # the template made many candidates
    assert n_quick <= 10 < len(checked)  # only the likely pairs' documents were hashed


def test_candidates_are_exactly_the_pairs_sharing_a_band():
    # Groups of every size (2 up to a 40-document cluster) in some bands, noise elsewhere:
    # the vectorised pair generation must give what a dictionary per band gives.
    import itertools

    import numpy as np

    rng = np.random.default_rng(3)
    config = dedup.Config()
    bands, rows = dedup.lsh_params(config.threshold, config.num_perm, config.lsh_recall)
    n = 300
    matrix = rng.integers(0, 2**32, size=(n, config.num_perm), dtype=np.uint64).astype(np.uint32)
    for size in (2, 2, 3, 5, 40):
        members = rng.choice(n, size, replace=False)
        for band in rng.choice(bands, 1 + size % 3, replace=False):
            cols = slice(band * rows, (band + 1) * rows)
            matrix[members, cols] = matrix[members[0], cols]
    expected = set()
    for band in range(bands):
        groups: dict[bytes, list[int]] = {}
        for i in range(n):
            groups.setdefault(matrix[i, band * rows : (band + 1) * rows].tobytes(), []).append(i)
        for members in groups.values():
            expected |= set(itertools.combinations(sorted(members), 2))
    a, b = dedup.candidate_index_pairs(matrix, config)
    got = list(zip(a.tolist(), b.tolist(), strict=True))
    assert len(got) == len(set(got)) and set(got) == expected and len(expected) > 780
    assert all(x < y for x, y in got)


def test_exact_jaccards_of_many_pairs_match_python_sets():
    import numpy as np

    rng = np.random.default_rng(5)
    pool = rng.integers(0, 2**63, size=400, dtype=np.int64).astype(np.uint64)
    sets = [np.unique(rng.choice(pool, rng.integers(1, 120))) for _ in range(30)]
    sets[7] = None  # a document whose text was not read: its pairs stay unchecked
    pairs = [(a, b) for a in range(30) for b in range(a + 1, 30) if rng.random() < 0.4]
    a_idx = np.array([p[0] for p in pairs])
    b_idx = np.array([p[1] for p in pairs])
    check = np.flatnonzero(rng.random(len(pairs)) < 0.8)
    out = np.full(len(pairs), np.nan)
    dedup.exact_jaccards(sets, a_idx, b_idx, check, out)
    for k, (a, b) in enumerate(pairs):
        if k not in set(check.tolist()) or sets[a] is None or sets[b] is None:
            assert np.isnan(out[k])
            continue
        sa, sb = set(sets[a].tolist()), set(sets[b].tolist())
        assert out[k] == pytest.approx(len(sa & sb) / len(sa | sb), abs=1e-12)


def test_short_documents_get_a_wider_verify_margin(store, monkeypatch):
    """Documents of 20 shingles rest on 20 independent bins, so a pair at Jaccard 0.74 often
    estimates more than 0.15 below 0.7: with the margin widened by sqrt(128 / 20) every such
    pair is still checked and found, as when every candidate is checked; with the flat
    margin some are lost."""
    rng = random.Random(8)
    records = []
    for _ in range(200):
        words = [rng.choice(VOCAB) for _ in range(24)]
        copy = list(words)
        copy[2] = rng.choice(VOCAB)  # 3 of 20 shingles change: Jaccard 17 / 23 = 0.74
        records += [{"text": " ".join(words), "concept": "c"}, {"text": " ".join(copy)}]
    store.append("documents_raw", build_documents(records))
    quick = dedup.run(store, dedup.Config(write_exclusions=False))
    full = dedup.run(store, dedup.Config(write_exclusions=False, verify_margin=1.0))
    assert quick.figures["n_pairs"] == full.figures["n_pairs"] > 180
    assert quick.tables["pairs"].equals(full.tables["pairs"])
    monkeypatch.setattr(dedup, "pair_margins", lambda n, a, b, config: config.verify_margin + 0 * a)
    flat = dedup.run(store, dedup.Config(write_exclusions=False))
    assert flat.figures["n_pairs"] < full.figures["n_pairs"]


def test_margins_widen_only_below_num_perm_shingles():
    import numpy as np

    config = dedup.Config(verify_margin=0.15, num_perm=128)
    n = np.array([1000, 128, 32, 2])
    a, b = np.array([0, 0, 0, 1]), np.array([1, 2, 3, 3])
    # pairs: (1000, 128) (1000, 32) (1000, 2) (128, 2)
    assert dedup.pair_margins(n, a, b, config).tolist() == pytest.approx([0.15, 0.30, 1.2, 1.2])


def test_batched_shingle_sets_equal_one_text_at_a_time():
    import numpy as np

    from sdfkit.audits.shingles import ShingleHasher, shingle_sets

    rng = random.Random(5)
    texts = [" ".join(rng.choice(VOCAB) for _ in range(rng.randrange(0, 900))) for _ in range(60)]
    texts += ["", "one two", "Ünïcödé wörds ärë wörds tóó " * 40, "x " * 5000]
    hasher = ShingleHasher(5, 2048)  # small chunks: long texts stream, short ones group
    got = shingle_sets(texts, 5, 2048)
    assert len(got) == len(texts)
    for text, found in zip(texts, got, strict=True):
        assert np.array_equal(found, hasher.set_of(text))
    threaded = dedup.parallel_shingle_sets(texts, 5, 2048, threads=3)
    assert all(np.array_equal(x, y) for x, y in zip(threaded, got, strict=True))


@pytest.mark.parametrize("route", ["numpy", "compiled"])
def test_estimates_on_threads_equal_one_thread(route):
    import numpy as np

    rng = np.random.default_rng(4)
    matrix = rng.integers(0, 4, size=(500, 128), dtype=np.uint32)  # many agreeing bins
    a = rng.integers(0, 500, 70_001)
    b = rng.integers(0, 500, 70_001)
    one = dedup.estimated_jaccard(matrix, a, b, route=route)
    assert np.array_equal(one, dedup.estimated_jaccard(matrix, a, b, threads=3, route=route))
    for k in (0, 12_345, 70_000):
        assert one[k] == np.mean(matrix[a[k]] == matrix[b[k]])
    if route == "compiled":
        assert np.array_equal(one, dedup.estimated_jaccard(matrix, a, b, route="numpy"))


def test_signatures_are_stored_without_dictionary_encoding(store, planted):
    """Random 32-bit values gain nothing from a dictionary: the signature parts are written
    without one, other tables keep Parquet's default."""
    import pyarrow.parquet as pq

    dedup.run(store, dedup.Config(write_exclusions=False))

    def encodings(table: str, column: str) -> set[str]:
        out: set[str] = set()
        for part in store.parts(table):
            meta = pq.ParquetFile(part).metadata
            for g in range(meta.num_row_groups):
                for c in range(meta.num_columns):
                    col = meta.row_group(g).column(c)
                    if col.path_in_schema.split(".")[0] == column:
                        out |= set(col.encodings)
        return out

    sig = encodings(dedup.MinHashStage().table, "signature")
    assert sig and not any("DICTIONARY" in e for e in sig)
    assert any("DICTIONARY" in e for e in encodings("documents", "concept"))
