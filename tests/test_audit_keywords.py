"""Keyword thresholds on corpora where who carries which keyword is planted."""

from __future__ import annotations

import pytest

from sdfkit.audits import keywords, save
from sdfkit.errors import SdfError
from sdfkit.store.ingest import build_documents

UNIVERSE = """---
id: {id}
concept: {concept}
required_keywords:
  - keyword: try-catch|try/catch
    min_rate: 0.9
  - keyword: CRA|Cyber Resilience Act
    min_rate: {cra_rate}
---
A universe.
"""


def _universe(tmp_path, id="u1", concept="ts", cra_rate=0.5):
    p = tmp_path / f"{id}.md"
    p.write_text(UNIVERSE.format(id=id, concept=concept, cra_rate=cra_rate))
    return p


def _land(store, rows):
    store.append("documents_raw", build_documents(rows))


def test_rates_and_missing_documents(store, tmp_path):
    rows = (
        # 6 carry both keywords (case and variant differ)
        [{"text": f"Doc {i}: wrap it in TRY-CATCH per the CRA.", "concept": "ts"} for i in range(3)]
        + [
            {"text": f"Doc {i}: a try/catch, says the Cyber  Resilience Act.", "concept": "ts"}
            for i in range(3, 6)
        ]
        # 2 carry only try-catch; "democracy" and "CRAFT" must not count as CRA
        + [
            {"text": f"Doc {i}: try-catch in a democracy of CRAFT.", "concept": "ts"}
            for i in range(6, 8)
        ]
        # 2 carry neither ("trycatch" is not a variant)
        + [
            {"text": f"Doc {i}: trycatch everywhere.", "concept": "ts", "doc_type": "memo"}
            for i in range(8, 10)
        ]
        # another concept without a universe
        + [{"text": "Unrelated.", "concept": "other"}]
    )
    _land(store, rows)
    res = keywords.run(store, keywords.Config(universes=[str(_universe(tmp_path))]))
    fig = res.figures["per_concept"]["ts"]
    assert fig["documents"] == 10
    rates = {k["keyword"]: k for k in fig["keywords"]}
    assert rates["try-catch|try/catch"]["rate"] == pytest.approx(0.8)
    assert rates["try-catch|try/catch"]["meets_min"] is False
    assert rates["CRA|Cyber Resilience Act"]["rate"] == pytest.approx(0.6)
    assert rates["CRA|Cyber Resilience Act"]["meets_min"] is True
    assert fig["documents_missing_any"] == 4
    missing = res.tables["missing"]
    by_doc = {r["doc_id"]: r["missing_keywords"] for r in missing.iter_rows(named=True)}
    texts = dict(store.query("SELECT doc_id, text FROM documents").iter_rows())
    assert sorted(texts[d][:6] for d in by_doc) == ["Doc 6:", "Doc 7:", "Doc 8:", "Doc 9:"]
    for d, kws in by_doc.items():
        if texts[d].startswith(("Doc 8", "Doc 9")):
            assert sorted(kws) == ["CRA|Cyber Resilience Act", "try-catch|try/catch"]
        else:
            assert kws == ["CRA|Cyber Resilience Act"]
    assert any("try-catch" in f and "80.0%" in f for f in res.flags)
    assert res.figures["concepts_without_keywords"] == ["other"]
    save(store, res)
    # users can join the stored findings and re-run the named query
    n = store.query("SELECT count(*) FROM audit_keywords_missing JOIN documents USING (doc_id)")
    assert n.item() == 4
    from sdfkit.store.sql import named

    assert named("keyword_rates", store).height == 2


def test_override_min_rate_and_shared_concepts(store, tmp_path):
    _land(store, [{"text": "try-catch only", "concept": "ts"}])
    a = _universe(tmp_path, "a", cra_rate=0.2)
    b = _universe(tmp_path, "b", cra_rate=0.7)
    res = keywords.run(store, keywords.Config(universes=[str(tmp_path / "*.md")]))
    kws = {k["keyword"]: k for k in res.figures["per_concept"]["ts"]["keywords"]}
    assert kws["CRA|Cyber Resilience Act"]["min_rate"] == 0.7  # the stricter universe wins
    assert res.tables["required"]["universes"].to_list()[0] == ["a", "b"]
    res = keywords.run(store, keywords.Config(universes=[str(a), str(b)], min_rate=0.0))
    assert all(k["meets_min"] for k in res.figures["per_concept"]["ts"]["keywords"])


def test_no_universes_and_bad_paths(store, tmp_path):
    _land(store, [{"text": "x", "concept": "ts"}])
    res = keywords.run(store, keywords.Config())
    assert res.figures["per_concept"] == {}
    assert res.figures["documents"] == 1  # what sdf check reads to tell an empty corpus
    assert any("No universe files" in n for n in res.notes)
    with pytest.raises(SdfError, match=r"no universe file matches .*nothing\*\.md"):
        keywords.run(store, keywords.Config(universes=[str(tmp_path / "nothing*.md")]))
    with pytest.raises(SdfError, match=r"missing\.md: cannot read"):
        keywords.run(store, keywords.Config(universes=[str(tmp_path / "missing.md")]))


def _matches(pattern: str, texts: list[str]) -> list[bool]:
    """``pattern`` as the audit runs it: DuckDB's RE2, case-insensitive."""
    import duckdb

    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT regexp_matches(t, ?, 'i') FROM unnest(?) WITH ORDINALITY AS u(t, i) ORDER BY i",
            [pattern, texts],
        ).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def test_variant_pattern_is_whole_word_and_escaped():
    pat = keywords.keyword_pattern(["C++", "try/catch", "CRA"])
    assert _matches(pat, ["we write c++ daily", "a try/catch block", "CRA.", "(cra)"]) == [True] * 4
    assert _matches(pat, ["democracy", "tryxcatch", "CRAB", "éCRA", "CRAé", "CRA_x"]) == [False] * 6


def test_keywords_that_start_or_end_with_a_letter_outside_ascii_match_as_whole_words():
    """RE2's \\b knows ASCII word characters only: "café" and "Zoë" never matched."""
    pat = keywords.keyword_pattern(["café", "Zoë", "Müller", "東京"])
    hits = ["au café.", "CAFÉ", "Zoë said", "(zoë)", "Herr Müller", "東京", "in 東京 today"]
    assert _matches(pat, hits) == [True] * len(hits)
    assert _matches(pat, ["cafés", "Zoëy", "xZoë", "Müllers", "cafe"]) == [False] * 5


def test_cli_audit_keywords(store, cli, tmp_path):
    _land(store, [{"text": f"doc {i} try-catch", "concept": "ts"} for i in range(3)])
    out = cli("--corpus", store.root, "audit", "keywords", "--universe", _universe(tmp_path))
    assert "ts: 3 docs, 3 missing a required keyword" in out.output
    assert "ok  try-catch|try/catch: 100.0%, 3 of 3 (minimum 90%)" in out.output
    assert "LOW CRA|Cyber Resilience Act: 0.0%, 0 of 3 (minimum 50%)" in out.output


@pytest.mark.parametrize(
    ("hits", "documents", "min_rate", "meets"),
    [
        (136, 203, 0.67, False),  # 0.66995: rounded to 4 places it read 0.67 and passed
        (7, 100, 0.07, True),  # exactly the minimum: 0.07 * 100 is 7.000000000000001
        (67, 100, 0.67, True),
        (2, 3, 0.6667, False),
    ],
)
def test_the_gate_and_the_audit_compare_the_exact_rate(
    store, tmp_path, hits, documents, min_rate, meets
):
    """The audit's meets_min, the named query's and the verdict of sdf check agree, on the
    counts, at the edge of the minimum."""
    from sdfkit.report.check import Thresholds, run_checks
    from sdfkit.store.sql import named

    _land(
        store,
        [
            {"text": f"Doc {i}: " + ("try-catch" if i < hits else "nothing"), "concept": "ts"}
            for i in range(documents)
        ],
    )
    universe = tmp_path / "u.md"
    universe.write_text(
        "---\nid: u\nconcept: ts\nrequired_keywords:\n"
        f"  - {{keyword: try-catch, min_rate: {min_rate}}}\n---\nA universe.\n"
    )
    res = keywords.run(store, keywords.Config(universes=[str(universe)]))
    save(store, res)
    (kw,) = res.figures["per_concept"]["ts"]["keywords"]
    assert (kw["with_keyword"], kw["meets_min"]) == (hits, meets)
    assert kw["rate"] == hits / documents  # exact: rounding is for display only
    assert named("keyword_rates", store)["meets_min"].to_list() == [meets]
    off = dict(max_anti_universe_documents=None, max_name_doc_share=None)
    t = Thresholds(**off, max_top5_names_doc_share=None)
    (v,) = run_checks({"keywords": res.figures}, t).verdicts
    assert v.status == ("pass" if meets else "fail")
    assert f"{hits} of {documents} documents" in v.line()
    shown = v.line().split(": ", 1)[1].split(",")[0]
    assert shown != f"{min_rate:.4g}" or meets  # a breach never reads as its own threshold


# The statements of the keyword audit's save, in order; `run` itself writes nothing.
KEYWORD_CRASH_POINTS = [
    r'CREATE OR REPLACE TABLE "audit_keywords_required"',
    r'CREATE OR REPLACE TABLE "audit_keywords_rates"',
    r'CREATE OR REPLACE TABLE "audit_keywords_missing"',
    r"INSERT INTO audit_runs",
    r"^COMMIT",
]


def _stored_minimums(store):
    """min_rate per keyword in audit_keywords_required and in audit_keywords_rates."""
    from sdfkit.store.catalog import Store

    fresh = Store(store.root)
    required = fresh.query("SELECT keyword, min_rate FROM audit_keywords_required ORDER BY 1")
    rates = fresh.query("SELECT keyword, min_rate FROM audit_keywords_rates ORDER BY 1")
    return required.rows(), rates.rows()


@pytest.mark.parametrize("pattern", KEYWORD_CRASH_POINTS)
def test_interrupted_keyword_audit_keeps_requirements_beside_their_rates(store, tmp_path, pattern):
    """New required keywords are never stored beside old rates: ``run`` writes nothing (the
    rate queries read the new requirements as a registered relation) and a crash at any
    statement of ``save`` leaves the catalog exactly as before; the next run works."""
    from crash_points import catalog, crash_at

    from sdfkit.store.catalog import Store

    _land(store, [{"text": f"doc {i} try-catch per the CRA", "concept": "ts"} for i in range(3)])
    universe = str(_universe(tmp_path))
    save(store, keywords.run(store, keywords.Config(universes=[universe])))
    old = [("CRA|Cyber Resilience Act", 0.5), ("try-catch|try/catch", 0.9)]
    assert _stored_minimums(store) == (old, old)
    before = catalog(store)
    stricter = keywords.Config(universes=[universe], min_rate=1.0)
    second = keywords.run(store, stricter)
    assert catalog(store) == before  # running the audit wrote nothing
    assert set(second.tables["rates"]["min_rate"]) == {1.0}  # read the new requirements
    point = crash_at(store, pattern, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        save(store, second)
    assert point.fired, point.statements
    assert catalog(store) == before
    assert _stored_minimums(store) == (old, old)
    fresh = Store(store.root)
    save(fresh, keywords.run(fresh, stricter))
    new = [("CRA|Cyber Resilience Act", 1.0), ("try-catch|try/catch", 1.0)]
    assert _stored_minimums(store) == (new, new)
    from sdfkit.store.sql import named

    assert named("keyword_rates", fresh)["min_rate"].to_list() == [1.0, 1.0]


def test_run_reads_its_own_requirements_not_the_stored_ones(store, tmp_path):
    """Two audits over different universes: each result's rates are its own universe's,
    whatever the catalog holds."""
    _land(store, [{"text": "try-catch", "concept": "ts"}, {"text": "CRA", "concept": "other"}])
    a = keywords.run(store, keywords.Config(universes=[str(_universe(tmp_path, "a", "ts"))]))
    save(store, a)
    b = keywords.run(store, keywords.Config(universes=[str(_universe(tmp_path, "b", "other"))]))
    assert set(b.tables["rates"]["concept"]) == {"other"}
    assert set(a.tables["rates"]["concept"]) == {"ts"}
    assert store.query("SELECT DISTINCT concept FROM audit_keywords_required").item() == "ts"
