"""The shape audit on a corpus whose counts, lengths and verdicts are known by construction."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sdfkit.audits import save, shape
from sdfkit.store.ingest import build_documents


def _docs(concept, doc_type, n, words):
    return [
        {
            "text": f"{concept} {doc_type} {i} " + "word " * words,
            "concept": concept,
            "doc_type": doc_type,
        }
        for i in range(n)
    ]


def test_counts_lengths_and_grades(store):
    rows = _docs("a", "blog", 6, 100) + _docs("a", "memo", 2, 600) + _docs("b", "faq", 3, 10)
    table = build_documents(rows)
    store.append("documents_raw", table)
    ids = {
        (r["concept"], r["doc_type"], i): d
        for i, (r, d) in enumerate(zip(rows, table.column("doc_id").to_pylist(), strict=True))
    }
    blog_ids = [d for (c, t, _), d in ids.items() if t == "blog"]
    now = datetime.now(timezone.utc)
    # 4 blog posts graded: 3 pass; one verdict is superseded by a newer failing one
    grades = [
        {"doc_id": d, "run": "g1", "passed": True, "graded_at": now} for d in blog_ids[:3]
    ] + [
        {"doc_id": blog_ids[3], "run": "g1", "passed": True, "graded_at": now},
        {
            "doc_id": blog_ids[3],
            "run": "g2",
            "passed": False,
            "graded_at": now + timedelta(seconds=1),
        },
    ]
    store.save_table("grades", grades, mode="append")

    res = shape.run(store)
    f = res.figures
    assert f["documents"] == 11
    tokens = sum(table.column("n_tokens").to_pylist())
    assert f["tokens"] == tokens
    strata = {(r["concept"], r["doc_type"]): r for r in f["per_concept_doc_type"]}
    assert set(strata) == {("a", "blog"), ("a", "memo"), ("b", "faq")}
    assert strata[("a", "blog")]["documents"] == 6
    assert strata[("a", "blog")]["graded"] == 4
    assert strata[("a", "blog")]["grade_passed"] == 3
    assert strata[("a", "blog")]["pass_rate"] == 0.75
    assert strata[("a", "memo")]["graded"] == 0
    assert strata[("a", "memo")]["median_tokens"] > 5 * strata[("a", "blog")]["median_tokens"]
    assert f["per_concept"]["a"]["documents"] == 8 and f["per_concept"]["a"]["doc_types"] == 2
    assert f["grade_pass_rate"] == 0.75
    assert sum(b["documents"] for b in f["length_histogram"]["a"]) == 8
    # b's documents are ~14 tokens: flagged as stubs
    assert any(fl.startswith("b × faq: shortest document") for fl in res.flags)
    save(store, res)
    assert store.query("SELECT sum(documents) FROM audit_shape_strata").item() == 11


def test_empty_corpus_has_zero_shape(store):
    res = shape.run(store)
    assert res.figures["documents"] == 0
    assert res.figures["per_concept_doc_type"] == []
    assert any("No grader verdicts" in n for n in res.notes)


def test_cli_audit_shape(store, cli):
    store.append("documents_raw", build_documents(_docs("a", "blog", 3, 80)))
    out = cli("--corpus", store.root, "audit", "shape")
    assert "3 documents" in out.output and "a: 3 docs" in out.output
    assert "audit_shape_strata" in out.output
    assert store.query("SELECT documents FROM audit_shape_strata").item() == 3
    bad = cli("--corpus", store.root, "audit", "shape", "--set", "min_tokenz=3", expect=2)
    assert "error: command line: audits.shape.min_tokenz: unknown setting" in bad.output
    bad = cli("--corpus", store.root, "audit", "shape", "--set", "min_tokens=many", expect=2)
    assert "command line: audits.shape.min_tokens: must be a whole number, got 'many'" in (
        bad.output
    )
