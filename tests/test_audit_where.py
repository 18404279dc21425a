"""An audit's ``where``: what ``excluded`` means in it, what it replaces, how it is checked
(network access through a ``where``: tests/test_safety.py).

A corpus of 60 near-copies (memos and essays naming Sarah Chen) and 40 distinct memos, four
of which name a person their universe bans. With ``where: NOT excluded`` every report must
give the same exclusions, figures and verdicts as the one before it, from the first on.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sdfkit.store.ingest import build_documents

VOCAB = [f"w{i}" for i in range(3000)]
FIRST = ["Anna", "Boris", "Carla", "Derek", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas"]
LAST = ["Novak", "Okafor", "Petrov", "Quinn", "Rossi", "Sato", "Tanaka", "Ueda", "Vargas", "Weber"]
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
UNIVERSE = """---
id: c-universe
concept: c
key_facts:
  - The rule is the rule.
anti_universe:
  names:
    - Anna Novak
---
A universe.
"""
NOT_EXCLUDED = 'where: "NOT excluded"'


@pytest.fixture
def copies(store, tmp_path):
    """The corpus; returns the doc id of the near-copy every dedup run keeps (the earliest)."""
    from sdfkit.store.catalog import doc_id_for

    rng = random.Random(1)
    words = [rng.choice(VOCAB) for _ in range(200)]
    records = []
    for i in range(60):
        edited = list(words)
        for _ in range(3):
            edited[rng.randrange(len(edited))] = rng.choice(VOCAB)
        text = "Sarah Chen met the board. " + " ".join(edited) + " Sarah Chen agreed."
        when = T0 + timedelta(hours=i)
        records.append(
            {"text": text, "concept": "c", "doc_type": ("memo", "essay")[i % 2], "created_at": when}
        )
    for i in range(40):
        name = f"{FIRST[i % 10]} {LAST[i % 10]}"  # ten people, four memos each
        body = " ".join(rng.choice(VOCAB) for _ in range(200))
        records.append(
            {
                "text": f"{name} wrote to the team. {body} {name} signed.",
                "concept": "c",
                "doc_type": "memo",
                "created_at": T0 + timedelta(days=5, hours=i),
            }
        )
    store.append("documents_raw", build_documents(records))
    (tmp_path / "c.md").write_text(UNIVERSE)
    return doc_id_for(records[0]["text"])


def _excluded(store, source: str = "dedup") -> list[str]:
    return store.query(
        "SELECT DISTINCT doc_id FROM exclusions WHERE source = ? ORDER BY doc_id", [source]
    )["doc_id"].to_list()


def _project(store, text: str) -> Path:
    """Write the project file beside the corpus (the cli fixture's working directory)."""
    (store.root.parent / "sdfkit.yaml").write_text(text)
    return store.root.parent


def _runs(store, audit: str | None = None) -> int:
    """Rows of ``audit_runs`` (of one audit): one per saved result."""
    if not store.has_table("audit_runs"):
        return 0
    where, params = ("WHERE audit = ?", [audit]) if audit else ("", None)
    return store.query(f"SELECT count(*) AS n FROM audit_runs {where}", params)["n"][0]


# --------------------------------------------------- 1. what `excluded` means in a where
def test_dedup_with_where_not_excluded_excludes_the_same_copies_every_run(store, copies, cli):
    tmp_path = _project(
        store,
        f"audits: {{dedup: {{{NOT_EXCLUDED}}}}}\ncheck: {{max_near_duplicate_fraction: 0.5}}\n",
    )
    runs = []
    for _ in range(3):
        cli("--corpus", store.root, "report", "--only", "dedup", "--only", "anti_universe")
        check = cli("--corpus", store.root, "check", expect=None)
        report = json.loads((tmp_path / "reports" / "report.json").read_text())
        runs.append((_excluded(store), report["near_duplicates"]["excluded"], check.exit_code))
    # it does not skip the copies it excluded last time (and then release them)
    assert len(runs[0][0]) == runs[0][1] == 59 and runs[0][2] == 1
    assert runs[1] == runs[0] and runs[2] == runs[0]


def test_dedup_with_a_narrower_where_replaces_only_the_exclusions_of_what_it_compared(
    store, copies, cli
):
    cli("--corpus", store.root, "audit", "dedup")
    everything = _excluded(store)
    assert len(everything) == 59
    # the essays' exclusions stay: dedup compared only the memos this time
    cli("--corpus", store.root, "audit", "dedup", "--set", "where=doc_type = 'memo'")
    assert _excluded(store) == everything
    eligible = store.query("SELECT count(*) AS n FROM documents WHERE NOT excluded")["n"][0]
    assert eligible == 41
    cli("--corpus", store.root, "select", "--name", "s", "--docs", "41")
    taken = store.query("SELECT doc_id FROM selections WHERE name = 's'")["doc_id"].to_list()
    assert copies in taken and not set(taken) & set(everything)


def test_excluded_in_dedups_where_is_what_it_does_not_derive(store, copies):
    """Its own exclusions and anti_universe's (which follow from its result: that audit
    reads the documents dedup keeps) are not ``excluded`` for it; anyone else's are."""
    from sdfkit.audits import dedup
    from sdfkit.export.selection import exclude_where

    not_excluded = dedup.Config(where="NOT excluded")
    with store.connect() as con:  # the kept copy carries a banned name, say
        con.execute(
            "INSERT INTO exclusions VALUES (?, 'anti-universe violation', 'anti_universe', now())",
            [copies],
        )
    for _ in range(2):
        assert dedup.run(store, not_excluded).figures["kept"] == [copies]
    exclude_where(store, f"doc_id = '{copies}'", "mine")  # a person's: the copy is gone
    (kept,) = dedup.run(store, not_excluded).figures["kept"]
    assert kept != copies and kept not in _excluded(store)


def _comparable(report: dict) -> dict:
    """The figures and verdicts of a report, without timings and the work a cache saved."""
    work = ("timings", "seconds", "signatures_computed", "documents_processed")

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in work}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    keys = ("ngrams", "names", "near_duplicates", "anti_universe", "checks")
    return {k: strip(report[k]) for k in keys}


def test_repeated_reports_on_an_unchanged_corpus_give_the_same_verdicts(store, copies, cli):
    tmp_path = _project(
        store,
        "universes: [c.md]\n"
        "report: {skip: [diversity, keywords, shape]}\n"
        f"audits: {{dedup: {{{NOT_EXCLUDED}}}, ngrams: {{{NOT_EXCLUDED}}}, "
        f"names: {{{NOT_EXCLUDED}}}}}\n"
        "check: {max_name_doc_share: 0.3, max_anti_universe_documents: null}\n",
    )
    reports = []
    for _ in range(3):
        cli("--corpus", store.root, "report")
        reports.append(json.loads((tmp_path / "reports" / "report.json").read_text()))
    first = _comparable(reports[0])
    assert _comparable(reports[1]) == first and _comparable(reports[2]) == first
    # the first report already audited what selection sees: one copy, no banned name
    eligible = 100 - 59 - 4  # Anna Novak is banned
    assert reports[0]["anti_universe"]["violating_documents"] == 4
    assert reports[0]["names"]["documents"] == eligible
    assert {c["check"]: c["status"] for c in first["checks"]}["max_name_doc_share"] == "pass"
    # the anti-universe audit ran first, yet proposes from this report's names table, and
    # its stored figures are those of the report
    (proposed,) = reports[0]["anti_universe"]["proposed"]
    assert "Boris Okafor" in [n["text"] for n in proposed["names"]]
    stored = store.query(
        "SELECT figures FROM audit_runs WHERE audit = 'anti_universe' ORDER BY created_at DESC"
    )["figures"][0]
    assert json.loads(stored)["proposed"] == reports[-1]["anti_universe"]["proposed"]


# ------------------------------------------------- 2. checked before any audit, never empty
def test_a_bad_where_in_the_project_file_stops_the_report_before_any_audit(store, copies, cli):
    _project(
        store,
        'audits: {ngrams: {where: "1=1) ; DROP TABLE grades; --"}, '
        'names: {where: "no_such_column = 1"}}\n',
    )
    out = cli("--corpus", store.root, "report", expect=2)
    assert out.output.startswith("error: sdfkit.yaml: audits.ngrams.where '1=1) ; DROP TABLE")
    _project(store, 'audits: {names: {where: "no_such_column = 1"}}\n')
    out = cli("--corpus", store.root, "check", "--run", expect=2)
    assert "sdfkit.yaml: audits.names.where 'no_such_column = 1'" in out.output
    assert 'column "no_such_column" not found' in out.output
    # no audit ran: dedup wrote no exclusion, no audit saved a row
    assert _excluded(store) == [] and _runs(store) == 0


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "dedup", "--set", "where="],
        ["audit", "dedup", "--set", "where=  "],
        ["audit", "dedup", "--set", "where=''"],
        ["audit", "ngrams", "--where", ""],
        ["audit", "ngrams", "--where", "   "],
        ["audit", "names", "--config", "empty.yaml"],
        ["report", "--config", "empty.yaml"],
    ],
)
def test_an_empty_where_is_an_error_never_every_document(store, copies, cli, args):
    (store.root.parent / "empty.yaml").write_text('audits: {names: {where: " "}}\n')
    out = cli("--corpus", store.root, *args, expect=2)
    assert out.output.startswith("error: ") and len(out.output.splitlines()) == 1
    assert "empty" in out.output or "no value" in out.output


def test_an_empty_where_in_python_is_an_error():
    from sdfkit.audits import dedup, names, ngrams
    from sdfkit.errors import ConfigError

    for module in (dedup, names, ngrams):
        with pytest.raises(ConfigError, match=r"audits\.\w+\.where: empty"):
            module.Config(where=" \n")


# ------------------------------------------------------- 4. a where that selects nothing
def test_a_where_selecting_no_documents_keeps_the_stored_results(store, copies, cli):
    cli("--corpus", store.root, "audit", "ngrams")
    before = store.query("SELECT * FROM audit_ngrams_top ORDER BY ALL")
    out = cli("--corpus", store.root, "audit", "ngrams", "--where", "concept = 'nope'", expect=2)
    assert out.output == (
        "error: --where \"concept = 'nope'\": selects no documents; the stored audit_ngrams_* "
        "tables are left as they were\n"
    )
    # in a report: that audit fails, saying why, and the others run
    _project(
        store,
        "audits: {ngrams: {where: \"concept = 'nope'\"}}\n"
        "report: {skip: [names, dedup, diversity, keywords, anti_universe]}\n",
    )
    out = cli("--corpus", store.root, "report", expect=2)
    assert "shape      ok" in out.output
    assert (
        "error: audit ngrams failed: SdfError: audits.ngrams.where \"concept = 'nope'\": "
        "selects no documents" in out.output
    )
    check = cli("--corpus", store.root, "check", "--run", expect=None)
    assert "error: audit ngrams failed: SdfError: audits.ngrams.where" in check.output
    assert store.query("SELECT * FROM audit_ngrams_top ORDER BY ALL").equals(before)
    assert _runs(store, "ngrams") == 1
