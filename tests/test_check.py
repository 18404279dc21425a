"""`sdf check`: thresholds from the project file against report.json; exit 1 naming breaches."""

from __future__ import annotations

import json

import pytest

from sdfkit.report.check import ConfigError, Thresholds
from sdfkit.report.check import run_checks as evaluate

REPORT = {
    "names": {
        "top": [{"name": "Sarah Chen", "mentions": 439, "documents": 300}],
        "top_share": 0.12,
    },
    "ngrams": {
        "top": {"4": [{"ngram": "in today's rapidly evolving", "count": 900, "documents": 450}]},
        "max_doc_share": {"2": 0.9, "3": 0.6, "4": 0.45, "5": 0.1},
    },
    "near_duplicates": {"pairs": [], "clusters": [["a", "b"]], "duplicate_fraction": 0.02},
    "keywords": {
        "per_concept": {
            "ts": {
                "documents": 100,
                "keywords": [
                    {"keyword": "try-catch", "min_rate": 0.9, "rate": 0.85, "meets_min": False},
                    {"keyword": "TypeScript", "min_rate": 0.8, "rate": 0.95, "meets_min": True},
                ],
            }
        }
    },
    "diversity": {
        "per_concept": {"ts": {"mean_pairwise_cosine": 0.41, "effective_documents": 80.0}}
    },
}


#: The gates by documents are on by default; these tests are about the other thresholds.
OFF = dict(max_anti_universe_documents=None, max_name_doc_share=None, max_top5_names_doc_share=None)
OFF_YAML = (
    "  max_anti_universe_documents: null\n  max_name_doc_share: null\n"
    "  max_top5_names_doc_share: null\n"
)


def _by_check(result):
    return {(v.check, v.subject): v for v in result.verdicts}


def test_breaches_are_named_with_figure_and_threshold():
    t = Thresholds(
        **OFF,
        max_name_share=0.05,
        max_ngram_doc_share={"4": 0.3, "5": 0.3},
        max_near_duplicate_fraction=0.05,
        max_mean_pairwise_cosine=0.5,
    )
    res = evaluate(REPORT, t)
    v = _by_check(res)
    assert v[("max_name_share", "Sarah Chen")].status == "fail"
    assert v[("max_ngram_doc_share", "4-grams")].status == "fail"
    assert "in today's rapidly evolving" in v[("max_ngram_doc_share", "4-grams")].detail
    assert v[("max_ngram_doc_share", "5-grams")].status == "pass"
    assert v[("max_near_duplicate_fraction", "corpus")].status == "pass"
    # keyword minimums default to each universe's own
    assert v[("min_keyword_rate", "ts: try-catch")].status == "fail"
    assert v[("min_keyword_rate", "ts: TypeScript")].status == "pass"
    assert v[("max_mean_pairwise_cosine", "ts")].status == "pass"
    assert sorted(b.check for b in res.breaches) == [
        "max_name_share",
        "max_ngram_doc_share",
        "min_keyword_rate",
    ]
    line = v[("max_name_share", "Sarah Chen")].line()
    assert "BREACH" in line and "0.12" in line and "0.05" in line


def test_one_ngram_threshold_for_every_n_and_keyword_override():
    res = evaluate(REPORT, Thresholds(**OFF, max_ngram_doc_share=0.95, min_keyword_rate=0.5))
    assert res.ok
    assert len([v for v in res.verdicts if v.check == "max_ngram_doc_share"]) == 4
    res = evaluate(REPORT, Thresholds(**OFF, check_keywords=False))
    assert res.verdicts == []


def test_a_threshold_whose_audit_did_not_run_is_a_breach():
    res = evaluate(
        {"shape": {}}, Thresholds(**OFF, max_name_share=0.1, max_mean_pairwise_cosine=0.5)
    )
    assert [v.status for v in res.verdicts] == ["not run", "not run"]
    assert not res.ok


def test_bad_thresholds_name_the_key():
    with pytest.raises(ConfigError, match=r"f.yaml: check.max_name_shar: unknown threshold"):
        Thresholds.from_mapping({"max_name_shar": 0.1}, "f.yaml")
    with pytest.raises(ConfigError, match=r"check.max_name_share: must be between 0 and 1"):
        Thresholds.from_mapping({"max_name_share": 5}, "f.yaml")
    with pytest.raises(ConfigError, match=r"check.max_ngram_doc_share.4: must be a number"):
        Thresholds.from_mapping({"max_ngram_doc_share": {4: "high"}}, "f.yaml")


def test_cli_check_passes_and_fails(cli, tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "report.json").write_text(json.dumps(REPORT))
    (tmp_path / "sdfkit.yaml").write_text(
        "check:\n  max_name_share: 0.2\n  max_ngram_doc_share: {'4': 0.5}\n"
        "  min_keyword_rate: 0.8\n" + OFF_YAML
    )
    ok = cli("check")
    assert "all 4 checks pass" in ok.output
    strict = tmp_path / "strict.yaml"
    strict.write_text(
        "check:\n  max_name_share: 0.05\n  max_near_duplicate_fraction: 0.01\n" + OFF_YAML
    )
    bad = cli("check", "--config", strict, expect=1)
    assert "3 threshold(s) breached" in bad.output  # + the universe's own keyword minimum
    assert "min_keyword_rate (ts: try-catch): 0.85, threshold >= 0.9" in bad.output
    assert "max_name_share (Sarah Chen): 0.12, threshold <= 0.05" in bad.output
    assert "max_near_duplicate_fraction (corpus): 0.02, threshold <= 0.01" in bad.output
    # bad input exits 2, with the file named
    (tmp_path / "broken.json").write_text("{not json")
    err = cli("check", "--report", "broken.json", expect=2)
    assert "broken.json:1: not valid JSON" in err.output
    missing = cli("check", "--report", "nowhere.json", expect=2)
    assert "nowhere.json: no report here" in missing.output


def test_cli_check_run_audits_the_corpus_first(cli, tmp_path):
    from sdfkit.store.catalog import Store
    from sdfkit.store.ingest import build_documents

    store = Store(tmp_path / "corpus")
    store.append(
        "documents_raw",
        build_documents(
            [{"text": f"doc {i} without the keyword", "concept": "ts"} for i in range(4)]
        ),
    )
    (tmp_path / "u.md").write_text(
        "---\nid: u\nconcept: ts\nrequired_keywords:\n  - {keyword: try-catch, min_rate: 0.5}\n"
        "---\nA universe.\n"
    )
    (tmp_path / "sdfkit.yaml").write_text(
        "universes: [u.md]\nreport: {skip: [ngrams, names, dedup, diversity]}\n"
    )
    out = cli("--corpus", store.root, "check", "--run", expect=1)
    assert "min_keyword_rate (ts: try-catch): 0, threshold >= 0.5" in out.output
    assert (tmp_path / "reports" / "report.json").is_file()


def test_name_breach_names_the_share_holder_not_the_first_listed():
    report = {
        "names": {
            "top": [{"name": "Marcus Webb"}, {"name": "Felix Young"}],
            "top_share": 0.2,
            "top_share_name": "Felix Young",
        }
    }
    res = evaluate(report, Thresholds(**OFF, max_name_share=0.1))
    assert [(v.check, v.subject, v.status) for v in res.verdicts] == [
        ("max_name_share", "Felix Young", "fail")
    ]


def test_unmeasured_says_why_a_check_has_nothing_to_compare():
    """One helper for every audit's first question: figures of no documents, no figures
    at all (the audit is not in the report), or figures to judge (None)."""
    from sdfkit.report.verdicts import unmeasured

    empty = unmeasured({"documents": 0}, "max_near_duplicate_fraction", "dedup", 0.05, "corpus")
    missing = unmeasured(None, "max_near_duplicate_fraction", "dedup", 0.05, "corpus")
    assert empty is not None and missing is not None
    assert (empty.check, empty.subject, empty.status) == (
        "max_near_duplicate_fraction",
        "corpus",
        "not run",
    )
    assert "no documents" in empty.detail
    assert (missing.subject, missing.status) == ("dedup", "not run")
    assert "dedup audit is not in the report" in missing.detail
    assert unmeasured({"documents": 3}, "max_name_share", "names", 0.1) is None
    assert unmeasured({"documents": 0}, "max_name_share", "names", 0.1).subject == "names"


def test_gates_of_an_audit_that_saw_no_documents_are_not_run():
    """An empty corpus (or a where that leaves nothing) gives shares of 0 and no violating
    document: every gate that reads them, the defaults included, is NOT RUN, never a pass."""
    empty = {
        "names": {"documents": 0, "top_share": 0.0, "top_doc_share": 0.0, "top5_doc_share": 0.0},
        "ngrams": {"documents": 0, "max_doc_share": {"4": 0.0}, "top5_doc_share": {"4": 0.0}},
        "anti_universe": {"documents": 0, "violating_documents": 0, "universes": []},
    }
    t = Thresholds(max_top5_ngrams_doc_share=0.5)  # the gates by documents on by default
    res = evaluate(empty, t)
    assert [(v.check, v.status) for v in res.verdicts] == [
        ("max_top5_ngrams_doc_share", "not run"),
        ("max_name_doc_share", "not run"),
        ("max_top5_names_doc_share", "not run"),
        ("max_anti_universe_documents", "not run"),
    ]
    assert all("no documents to measure" in v.detail for v in res.verdicts) and not res.ok
    full = {k: {**v, "documents": 4} for k, v in empty.items()}
    assert [v.status for v in evaluate(full, t).verdicts] == ["pass"] * 4


def test_cli_check_of_an_empty_or_wholly_excluded_corpus_breaches(cli, tmp_path):
    (tmp_path / "blank.jsonl").write_text('{"text": ""}\n{"text": "   "}\n')
    cli("ingest", "blank.jsonl", "--skip-bad")
    skip = ["--skip", "dedup", "--skip", "diversity"]
    cli("report", *skip)
    out = cli("check", expect=1).output
    assert "all 3 checks pass" not in out
    for gate in ("max_name_doc_share", "max_top5_names_doc_share", "max_anti_universe_documents"):
        assert f"NOT RUN  {gate}" in out
    # documents that are all excluded, under the names where of the collapse loop
    (tmp_path / "docs.jsonl").write_text(
        "".join(json.dumps({"text": f"Note {i}: Ada Byron wrote it."}) + "\n" for i in range(3))
    )
    cli("ingest", "docs.jsonl", "--set", "concept=c")
    cli("exclude", "--where", "true", "--reason", "all of them")
    (tmp_path / "sdfkit.yaml").write_text("audits: {names: {where: NOT excluded}}\n")
    cli("report", *skip)
    out = cli("check", expect=1).output
    assert "NOT RUN  max_name_doc_share (names): no documents to measure" in out
    assert "NOT RUN  max_anti_universe_documents (corpus): no documents to measure" in out


def test_a_capability_gate_with_only_base_model_scores_is_not_run():
    base_only = {
        "capabilities": [
            {"run": "t", "step": 0, "task": "x", "metric": "accuracy", "model_label": "base"}
        ]
    }
    (v,) = evaluate(base_only, Thresholds(**OFF, max_capability_drop=0.05)).verdicts
    assert (v.check, v.status) == ("max_capability_drop", "not run")
    assert "no checkpoint scores" in v.detail


def test_a_keyword_minimum_with_no_keyword_to_hold_to_it_is_not_run(cli, tmp_path):
    """`min_keyword_rate: 0.9` and no universes: the keyword audit had nothing to check, so
    the gate is NOT RUN (it printed "no thresholds configured" and exited 0)."""
    no_keywords = {"keywords": {"documents": 4, "universes": [], "per_concept": {}}}
    (v,) = evaluate(no_keywords, Thresholds(**OFF, min_keyword_rate=0.9)).verdicts
    assert (v.check, v.status) == ("min_keyword_rate", "not run")
    assert "no required keywords to check" in v.detail
    empty = {"keywords": {"documents": 0, "universes": [], "per_concept": {}}}
    (v,) = evaluate(empty, Thresholds(**OFF, min_keyword_rate=0.9)).verdicts
    assert (v.status, v.detail) == ("not run", "no documents to measure")
    # each universe's own minimum (the default) with no universe asks for nothing
    assert evaluate(no_keywords, Thresholds(**OFF)).verdicts == []
    (tmp_path / "docs.jsonl").write_text('{"text": "one document"}\n')
    cli("ingest", "docs.jsonl", "--set", "concept=c")
    (tmp_path / "sdfkit.yaml").write_text("check:\n  min_keyword_rate: 0.9\n" + OFF_YAML)
    cli("report", "--only", "keywords")
    out = cli("check", expect=1).output
    assert "nothing to check" not in out
    assert "NOT RUN  min_keyword_rate (keywords): no required keywords to check" in out
