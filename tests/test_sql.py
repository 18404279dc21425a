"""`sdf sql`: literal SQL, files and named queries; table, CSV and JSON output; --out files."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import polars as pl
import pytest

from sdfkit.store.ingest import build_documents
from sdfkit.store.sql import PACKAGED_QUERIES, QueryError, list_queries, named, run_sql


@pytest.fixture
def filled(tmp_path):
    from sdfkit.store.catalog import Store

    store = Store(tmp_path / "corpus")  # the cli fixture runs in tmp_path: ./corpus
    recs = []
    for i in range(12):
        recs.append(
            {
                "text": f"document {i} " + "word " * (10 * (i + 1)),
                "concept": "alpha" if i < 8 else "beta",
                "doc_type": "memo" if i % 2 else "blog",
                "seed_names": ["Ana Silva", f"Person {i}"],
            }
        )
    store.append("documents_raw", build_documents(recs))
    return store


def test_named_queries_return_polars(filled):
    df = named("per_concept_summary", filled)
    assert isinstance(df, pl.DataFrame)
    rows = {r["concept"]: r for r in df.to_dicts()}
    assert rows["alpha"]["documents"] == 8 and rows["beta"]["documents"] == 4
    total = filled.query("SELECT sum(n_tokens) AS t FROM documents WHERE concept='alpha'").item()
    assert rows["alpha"]["tokens"] == total
    strata = named("docs_per_concept_doc_type", filled)
    assert strata.filter(pl.col("concept") == "alpha")["documents"].sum() == 8


def test_every_shipped_query_runs(filled):
    names = list_queries()
    assert {"per_concept_summary", "docs_per_concept_doc_type", "length_distribution"} <= set(names)
    for name, description in names.items():
        assert description, f"{name}.sql needs a leading comment saying what it answers"
        try:
            named(name, filled)
        except QueryError as exc:  # audit/eval queries need that command first, and say which
            assert "does not exist yet: it is made by `sdf " in str(exc), (name, exc)


def test_sql_errors_are_clear(filled):
    with pytest.raises(QueryError, match="no_such_table"):
        run_sql("SELECT * FROM no_such_table", filled)
    with pytest.raises(QueryError, match="no query named 'nope'"):
        run_sql("nope", filled)


def test_cli_table_csv_json(cli, filled):
    table = cli("sql", "SELECT concept, count(*) AS n FROM documents GROUP BY 1 ORDER BY 1").output
    lines = table.splitlines()
    assert lines[0].split() == ["concept", "n"] and lines[2].split() == ["alpha", "8"]
    assert lines[-1] == "(2 rows)"
    out = cli("sql", "per_concept_summary", "--format", "csv").output
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["concept"] == "alpha" and rows[0]["documents"] == "8"
    js = json.loads(
        cli("sql", str(PACKAGED_QUERIES / "per_concept_summary.sql"), "-f", "json").output
    )
    assert js[1]["concept"] == "beta" and js[1]["documents"] == 4
    nested = cli("sql", "SELECT seed_names FROM documents LIMIT 1", "-f", "csv").output
    assert json.loads(nested.splitlines()[1].strip('"').replace('""', '"'))[0] == "Ana Silva"
    assert "unknown --format" in cli("sql", "SELECT 1", "-f", "xml", expect=2).output


def test_cli_sql_file_and_out(cli, filled, tmp_path):
    q = tmp_path / "mine.sql"
    q.write_text("-- long documents\nSELECT doc_id, n_tokens FROM documents WHERE n_tokens > 50")
    expected = filled.query("SELECT count(*) FROM documents WHERE n_tokens > 50").item()
    for suffix in ("csv", "parquet", "json"):
        target = tmp_path / f"out.{suffix}"
        assert f"wrote {expected} rows" in cli("sql", q, "--out", target).output
        if suffix == "parquet":
            assert pl.read_parquet(target).height == expected
        elif suffix == "csv":
            assert pl.read_csv(target).height == expected
        else:
            assert len(json.loads(target.read_text())) == expected


def test_corpus_option_and_env(cli, filled, tmp_path, monkeypatch):
    other = tmp_path / "elsewhere"
    res = cli("--corpus", other, "sql", "SELECT count(*) FROM documents", expect=2)
    assert str(other) in res.output and "--corpus" in res.output and not other.exists()
    monkeypatch.setenv("SDF_CORPUS", str(filled.root))
    res = cli("sql", "SELECT count(*) AS n FROM documents", "-f", "json")
    assert json.loads(res.output) == [{"n": 12}]


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from typer.testing import CliRunner; from sdfkit.cli import app;"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0;"
        "heavy = {'torch','spacy','tinker','anthropic','sentence_transformers','datasketch','ray','numba'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_missing_audit_table_names_the_command_that_makes_it(filled):
    import sdfkit.audits  # noqa: F401 - the registry tells the store each audit's command

    with pytest.raises(QueryError, match="made by `sdf audit ngrams` or `sdf report`"):
        run_sql("SELECT * FROM audit_ngrams_nothing_here", filled)
    with pytest.raises(QueryError, match="made by `sdf audit anti_universe` or `sdf report`"):
        run_sql("SELECT * FROM audit_anti_universe_nothing_here", filled)
    with pytest.raises(QueryError, match=r"made by `sdf report`; run that first"):
        run_sql("SELECT * FROM audit_unregistered_x", filled)
