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


def _measured(tmp_path, report):
    """``report`` as `sdf report` would have written it of the corpus ./corpus, made here."""
    from sdfkit.report.freshness import corpus_state
    from sdfkit.store.catalog import Store
    from sdfkit.store.ingest import build_documents

    store = Store(tmp_path / "corpus")
    store.append("documents_raw", build_documents([{"text": "a document", "concept": "ts"}]))
    state = {"corpus": str(store.root.resolve()), "corpus_state": corpus_state(store)}
    return {**report, **state}


def test_cli_check_passes_and_fails(cli, tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "report.json").write_text(json.dumps(_measured(tmp_path, REPORT)))
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
    # a where that selects nothing fails its audit (its stored tables are kept), so the
    # report says so and the gates of that audit are NOT RUN
    assert "selects no documents" in cli("report", *skip, expect=2).output
    out = cli("check", expect=1).output
    assert "NOT RUN  max_name_doc_share (names): the names audit is not in the report" in out
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


def test_cli_check_refuses_a_report_of_another_or_a_changed_corpus(cli, tmp_path, monkeypatch):
    """A report passes or fails only the corpus it measured, as it was: another corpus
    (--corpus, $SDF_CORPUS), documents added since, exclusions changed since, or a report
    that does not say what it measured are refused with one line (exit 2)."""
    from sdfkit.store.catalog import Store, read_part

    rows = "".join(json.dumps({"text": f"Note {i} about one thing."}) + "\n" for i in range(5))
    (tmp_path / "a.jsonl").write_text(rows)
    cli("ingest", "a.jsonl", "--set", "concept=c")
    cli("--corpus", "other", "ingest", "a.jsonl", "--set", "concept=c")
    skip = ["--skip", "dedup", "--skip", "diversity"]
    cli("report", *skip)
    assert "all 3 checks pass" in cli("check").output
    here, other = (str((tmp_path / d).resolve()) for d in ("corpus", "other"))
    refused = f"measured the corpus {here}, not {other} (--corpus or $SDF_CORPUS)"
    assert refused in cli("check", "--corpus", "other", expect=2).output
    monkeypatch.setenv("SDF_CORPUS", "other")
    assert refused in cli("check", expect=2).output
    monkeypatch.delenv("SDF_CORPUS")
    # 3 documents more: the report is stale until it is written again
    more = "".join(json.dumps({"text": f"Another note {i}."}) + "\n" for i in range(3))
    (tmp_path / "b.jsonl").write_text(more)
    cli("ingest", "b.jsonl", "--set", "concept=c")
    out = cli("check", expect=2).output
    assert f"report.json measured {here} before 3 documents were added: run `sdf report`" in out
    assert "sdf check --run" in out and len(out.strip().splitlines()) == 1
    assert "all 3 checks pass" in cli("check", "--run").output
    assert "all 3 checks pass" in cli("check").output  # --run wrote a fresh report
    # exclusions are read by the gates (the anti-universe gate counts documents not excluded)
    cli("exclude", "--where", "doc_id IN (SELECT min(doc_id) FROM documents)", "--reason", "x")
    out = cli("check", expect=2).output
    assert "before its exclusions or grades changed" in out
    cli("exclude", "--lift", "--reason", "x")
    assert "all 3 checks pass" in cli("check").output  # the same exclusions as measured
    # a part set aside (sdf doctor) is a change too
    store = Store(tmp_path / "corpus")
    (part,) = [p for p in store.parts("documents_raw") if read_part(p).num_rows == 3]
    part.rename(tmp_path / part.name)
    assert "before 3 documents were removed" in cli("check", expect=2).output
    # a report that does not say what it measured (an older sdfkit's) is refused
    path = tmp_path / "reports" / "report.json"
    old = {k: v for k, v in json.loads(path.read_text()).items() if k != "corpus_state"}
    path.write_text(json.dumps(old))
    out = cli("check", expect=2).output
    assert "does not record the corpus state it measured" in out


def test_a_report_is_fresh_after_its_own_exclusions_and_stale_if_documents_land_during_it(
    store, tmp_path, monkeypatch
):
    """The record is fingerprinted before the first audit and the exclusions after the last:
    the anti-universe audit's own exclusions leave the report fresh, while a document that
    lands as the audits run leaves it stale (it may not have been measured)."""
    from sdfkit.audits import shape
    from sdfkit.report.build import ReportConfig, build
    from sdfkit.report.freshness import StaleReport, check_fresh
    from sdfkit.store.ingest import build_documents

    rows = [{"text": f"Memo {i}: Sarah Chen signs it.", "concept": "c"} for i in range(2)]
    store.append("documents_raw", build_documents(rows + [{"text": "Clean.", "concept": "c"}]))
    uni = tmp_path / "u.md"
    uni.write_text("---\nid: u\nconcept: c\nanti_universe: {names: [Sarah Chen]}\n---\nA rule.\n")
    cfg = ReportConfig(html=tmp_path / "r.html", json=tmp_path / "r.json", universes=[str(uni)])
    rep = build(store, cfg, only=["anti_universe"])
    assert rep.data["anti_universe"]["violating_documents"] == 2
    assert store.query("SELECT count(*) FROM exclusions").item() == 2  # written by the report
    check_fresh(rep.data, store, "r.json")  # measured as it is now

    def landing(store, config=None, engine=None):
        store.append("documents_raw", build_documents([{"text": "Late.", "concept": "c"}]))
        return run(store, config, engine)

    run = shape.run
    monkeypatch.setattr(shape, "run", landing)
    rep = build(store, cfg, only=["shape"])
    assert rep.data["shape"]["documents"] == 4  # this audit saw it; an earlier one would not
    with pytest.raises(StaleReport, match=r"r.json measured .* before 1 document was added"):
        check_fresh(rep.data, store, "r.json")
