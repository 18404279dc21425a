"""`sdf sql`: literal SQL, files and named queries; table, CSV and JSON output; --out files."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

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


# ------------------------------------------------- any result DuckDB returns prints and writes
def test_repeated_column_names_are_made_unique_as_duckdb_does():
    import duckdb

    from sdfkit.store.sql import unique_names

    for names in (["a", "a"], ["a", "a", "a"], ["a_1", "a", "a"], ["a", "a", "a_1", "a"],
                  ["a", "a", "a_1", "a_1"], ["doc_id", "DOC_ID"], ["x", "y"]):  # fmt: skip
        query = "SELECT " + ", ".join(f'{i} AS "{n}"' for i, n in enumerate(names))
        assert unique_names(names) == list(duckdb.sql(query).df().columns), names


def test_a_join_with_repeated_column_names_prints_and_writes(cli, filled, tmp_path):
    query = "SELECT d.doc_id, r.doc_id, 1 AS doc_id_1 FROM documents d, documents_raw r LIMIT 3"
    table = cli("sql", query).output.splitlines()
    assert table[0].split() == ["doc_id", "doc_id_1", "doc_id_1_1"] and table[-1] == "(3 rows)"
    rows = json.loads(cli("sql", query, "-f", "json").output)
    assert list(rows[0]) == ["doc_id", "doc_id_1", "doc_id_1_1"] and rows[0]["doc_id_1_1"] == 1
    for suffix in ("csv", "parquet", "json", "jsonl"):
        cli("sql", query, "--out", tmp_path / f"j.{suffix}")
    assert pl.read_parquet(tmp_path / "j.parquet").columns == ["doc_id", "doc_id_1", "doc_id_1_1"]
    assert pl.read_csv(tmp_path / "j.csv").columns == ["doc_id", "doc_id_1", "doc_id_1_1"]


#: Values of types polars cannot take, or cannot hand to Python as they are: each must print
#: and be written as DuckDB's own text of it (parquet keeps those polars holds, typed).
ODD_VALUES = {
    "span": "max(created_at) - min(created_at)",  # the tester's query: an INTERVAL
    "tagged": "union_value(k := 7)::UNION(k INTEGER, s VARCHAR)",
    "lookup": "MAP {'a': 1, 'b': 2}",
    "unsigned": "340282366920938463463374607431768211455::UHUGEINT",
    "signed": "170141183460469231731687303715884105727::HUGEINT",
    "bits": "'0101'::BIT",
    "clock_tz": "'12:00:00+02'::TIMETZ",
    "clock_ns": "'12:00:00.123456789'::TIME_NS",
    "stamp_ns": "'2020-01-01 00:00:00.123456789'::TIMESTAMP_NS",
    "forever": "'infinity'::TIMESTAMP",
    "never": "'-infinity'::DATE",
    "far": "'99999-01-01'::DATE",
    "spans": "[INTERVAL 1 DAY, INTERVAL 2 HOURS]",
    "nested_union": "{'x': union_value(k := 1)::UNION(k INTEGER, s VARCHAR)}",
    "far_list": "['infinity'::DATE]",
    "bytes": "'\\xAA\\x00z'::BLOB",
    "bignum": "'123456789012345678901234567890123456789012345678'::VARINT",
}


def _table_cells(output: str) -> dict[str, str]:
    """The one row of a printed table, by column (the dashes give each column's width)."""
    lines = output.splitlines()
    cells, start = {}, 0
    for dashes in lines[1].split("  "):
        end = start + len(dashes)
        cells[lines[0][start:end].strip()] = lines[2][start:end].strip()
        start = end + 2
    return cells


def test_every_odd_type_prints_and_writes_as_duckdb_text(cli, filled, tmp_path):
    import duckdb

    select = ", ".join(f"{expr} AS {name}" for name, expr in ODD_VALUES.items())
    query = f"SELECT {select} FROM documents"
    text = filled.query(f"SELECT COLUMNS(*)::VARCHAR FROM ({query})")  # DuckDB's own text
    want = text.row(0, named=True)
    assert want["span"] and want["forever"] == "infinity" and want["unsigned"].endswith("455")

    assert _table_cells(cli("sql", query).output) == want
    assert list(csv.DictReader(io.StringIO(cli("sql", query, "-f", "csv").output))) == [want]
    assert json.loads(cli("sql", query, "-f", "json").output) == [want]
    for suffix in ("csv", "json", "jsonl", "parquet"):
        assert "wrote 1 rows" in cli("sql", query, "--out", tmp_path / f"odd.{suffix}").output
    assert list(csv.DictReader((tmp_path / "odd.csv").open())) == [want]
    assert json.loads((tmp_path / "odd.json").read_text()) == [want]
    assert json.loads((tmp_path / "odd.jsonl").read_text()) == want
    back = duckdb.sql(f"SELECT COLUMNS(*)::VARCHAR FROM '{tmp_path / 'odd.parquet'}'")
    assert dict(zip(back.columns, back.fetchall()[0], strict=True)) == want
    # the library answers too, typed where polars can hold it
    df = run_sql(query, filled)
    assert df["span"].to_list() == [want["span"]] and df["signed"].dtype == pl.Decimal(38, 0)


def test_a_printed_table_computes_only_the_rows_it_shows(cli, filled):
    """A hundred million rows print their first 200 without computing the rest (the whole
    result was loaded first: 956 MB for the first rows of range(100000000))."""
    query = (
        "SELECT range AS n, CASE WHEN range < 1000000 THEN 'ok' "
        "ELSE error('computed a row past those shown') END AS s FROM range(100000000)"
    )
    lines = cli("sql", query).output.splitlines()
    assert len(lines) == 2 + 200 + 1 and lines[-2].split() == ["199", "ok"]
    assert lines[-1] == "(more than 200 rows; showing the first 200: --out FILE writes them all)"
    assert cli("sql", "SELECT * FROM range(200)").output.splitlines()[-1] == "(200 rows)"
    res = cli("sql", query, "--out", "all.csv", expect=2)  # --out writes every row
    assert "computed a row past those shown" in res.output and not Path("all.csv").exists()


def test_out_streams_a_result_larger_than_the_memory_it_takes(filled, tmp_path):
    """--out writes record batch by record batch: ten million rows take no more memory than
    a million (the whole result was held twice, as Arrow and as polars: +370 MB)."""
    code = (
        "import resource, sys; from sdfkit.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
    )

    def peak_mb(query: str, out: Path) -> int:
        args = [sys.executable, "-c", code, "--corpus", str(filled.root), "sql", query]
        run = subprocess.run([*args, "--out", str(out)], capture_output=True, text=True)
        assert run.returncode == 0 and "wrote" in run.stdout, run.stderr
        return int(run.stdout.splitlines()[-1])

    peak_mb("SELECT 1 AS n", tmp_path / "warm.parquet")  # the first command sets up the catalog
    query = "SELECT range AS n, range::VARCHAR AS s FROM range({})"
    small = peak_mb(query.format(10**6), tmp_path / "small.parquet")
    big = peak_mb(query.format(10**7), tmp_path / "all.parquet")
    assert pl.scan_parquet(tmp_path / "all.parquet").select(pl.len()).collect().item() == 10**7
    assert big - small < 150, (small, big)


def test_out_is_checked_before_the_query_and_never_replaces_a_file_unasked(cli, filled, tmp_path):
    mine = tmp_path / "in" / "a.jsonl"
    mine.parent.mkdir()
    mine.write_text('{"text": "mine"}\n')
    res = cli("sql", "SELECT 1 AS x", "--out", mine, expect=2)
    assert "--overwrite" in res.output and mine.read_text() == '{"text": "mine"}\n'
    res = cli("sql", "SELEC 1", "--out", tmp_path / "new" / "deep" / "x.csv", expect=2)
    assert "syntax error" in res.output and not (tmp_path / "new").exists()
    assert "wrote 1 rows" in cli("sql", "SELECT 1 AS x", "--out", mine, "--overwrite").output
    assert json.loads(mine.read_text()) == {"x": 1}


def test_a_query_file_that_is_not_utf8_is_named(cli, filled, tmp_path):
    (tmp_path / "queries").mkdir()
    (tmp_path / "queries" / "latin.sql").write_bytes(b"-- caf\xe9\nSELECT 1\n")
    (tmp_path / "queries" / "folder.sql").mkdir()  # a folder is no query
    for args in (["queries"], ["sql", "latin"]):
        res = cli(*args, expect=2)
        assert (
            res.output
            == "error: queries/latin.sql: not UTF-8 text (byte 6); save the query as UTF-8\n"
        )
    (tmp_path / "queries" / "latin.sql").write_text("-- café\nSELECT 1\n", encoding="utf-8")
    assert "latin" in cli("queries").output and "folder" not in cli("queries").output
