"""A corpus that survives its user: read-only SQL, one-expression --where, a missing corpus is
an error, damage is named and contained, portable copies, concurrent writers wait."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from corpus_state import fingerprint, one_error


@pytest.fixture
def made(cli, tmp_path):
    """./corpus with documents, an exclusion, a grade and a selection, made through sdf."""
    src = tmp_path / "docs.jsonl"
    src.write_text(
        "".join(
            json.dumps({"text": f"document {i} " + "word " * (20 + i), "doc_type": "memo"}) + "\n"
            for i in range(20)
        )
    )
    cli("ingest", src, "--set", "concept=alpha")
    cli("exclude", "--where", "n_tokens > 38", "--reason", "too long")
    cli("select", "--name", "n", "--docs", "5")
    root = tmp_path / "corpus"
    import duckdb

    con = duckdb.connect(str(root / "sdf.duckdb"))
    con.execute(
        "INSERT INTO grades SELECT doc_id, 'g', 'm', 'h', true, '{}', NULL, now() "
        "FROM read_parquet(?) LIMIT 3",
        [str(next((root / "documents").glob("part-*.parquet")))],
    )
    con.close()
    return root


WRITES = [
    "DROP TABLE grades",
    "DELETE FROM grades",
    "DROP TABLE exclusions",
    "UPDATE selections SET doc_id = NULL",
    "WITH x AS (SELECT 1) DELETE FROM exclusions",
    "COPY (SELECT NULL AS doc_id) TO 'corpus/documents/part-x.parquet'",
    "CREATE TABLE mine AS SELECT 1",
    "INSERT INTO exclusions VALUES ('x', 'y', 'z', now())",
    "ATTACH 'other.duckdb' AS o",
    "INSTALL httpfs",
    "SET enable_external_access = false",
    "EXPORT DATABASE 'dump'",
    "FORCE CHECKPOINT",
    "SELECT 1; DROP TABLE grades",
]


@pytest.mark.parametrize("statement", WRITES)
def test_sdf_sql_refuses_every_write_in_one_line(cli, made, tmp_path, statement):
    before = fingerprint(made)
    res = cli("sql", statement, expect=2)
    assert one_error(res).startswith("error: sdf sql")
    assert fingerprint(made) == before
    assert not (made / "documents" / "part-x.parquet").exists()
    assert not (tmp_path / "dump").exists() and not (tmp_path / "other.duckdb").exists()


def test_the_reader_connection_itself_refuses_writes(made):
    """Behind the statement check, the connection is read-only: a write that reached it
    would still fail."""
    import duckdb

    from sdfkit.store.catalog import Store

    with Store(made).reader() as con:
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("DELETE FROM grades")
        with pytest.raises(duckdb.Error, match="lock"):
            con.execute("SET autoinstall_known_extensions = true")
        assert con.execute("SELECT count(*) FROM documents").fetchall()[0][0] == 20


URL = "(SELECT count(*) FROM read_text('https://example.invalid/x')) >= 0"


@pytest.mark.parametrize(
    "args",
    [
        ["sql", f"SELECT {URL}"],
        ["exclude", "--reason", "x", "--where", URL],
        ["audit", "ngrams", "--where", URL],
        ["audit", "dedup", "--set", f"where={URL}"],
    ],
)
def test_no_sql_reaches_the_network_through_an_extension(cli, made, args):
    """DuckDB would install and load httpfs to read a URL: no connection sdfkit opens lets it
    (not only sdf sql's), so the query is refused in one line and nothing is downloaded."""
    before = fingerprint(made)
    res = cli(*args, expect=2)
    line = one_error(res)
    assert "requires the extension httpfs" in line and "no network access" in line
    assert "automatically install" not in res.output  # DuckDB never tried
    assert fingerprint(made) == before


def test_no_connection_installs_or_loads_extensions_on_demand(made):
    from sdfkit.store.catalog import Store
    from sdfkit.train.run import train_catalog

    def settings(con) -> tuple:
        return con.execute(
            "SELECT current_setting('autoinstall_known_extensions'), "
            "current_setting('autoload_known_extensions')"
        ).fetchone()

    store = Store(made)
    for opened in (store.connect(), store.connect(read_only=True), store.reader()):
        with opened as con:
            assert settings(con) == (False, False)
            # nor does DuckDB draw its own progress bar on stderr (SDF_PROGRESS=0 included)
            assert con.execute("SELECT current_setting('enable_progress_bar')").fetchone() == (
                False,
            )
    with train_catalog(store) as con:
        assert settings(con) == (False, False)


def test_sdf_sql_still_reads_local_files_and_answers(cli, made, tmp_path):
    import duckdb

    duckdb.sql(f"COPY (SELECT 7 AS n) TO '{tmp_path / 'mine.parquet'}'")
    res = cli("sql", "SELECT n FROM 'mine.parquet'", "-f", "json")
    assert json.loads(res.output) == [{"n": 7}]
    res = cli("sql", "DESCRIBE documents", "-f", "json")
    assert "doc_id" in {r["column_name"] for r in json.loads(res.output)}


def test_sql_out_refuses_the_corpus_folder(cli, made):
    before = fingerprint(made)
    res = cli(
        "sql", "SELECT * FROM documents_raw", "--out", "corpus/documents/part-y.parquet", expect=2
    )
    assert "--out" in one_error(res)
    assert fingerprint(made) == before


INJECTIONS = [
    "1=1) ; DROP TABLE grades; --",
    "concept = 'alpha'; DROP TABLE grades",
    "1=1; DELETE FROM exclusions",
    "n_tokens > 1, concept = 'x'",
    "n_tokens",
    "no_such_column > 1",
    "",
]


@pytest.mark.parametrize("where", INJECTIONS)
@pytest.mark.parametrize(
    "command",
    [
        ["select", "--name", "inj", "--docs", "3"],
        ["exclude", "--reason", "inj"],
        ["grade", "--backend", "offline"],
        ["audit", "ngrams", "--n", "2"],
    ],
    ids=["select", "exclude", "grade", "audit-ngrams"],
)
def test_where_is_exactly_one_boolean_expression(cli, made, command, where):
    before = fingerprint(made)
    res = cli(*command, "--where", where, expect=2)
    line = one_error(res)
    # audits name their `where` setting (--where, --set where=, or sdfkit.yaml), others --where
    assert ("where" if command[0] == "audit" else "--where") in line
    assert fingerprint(made) == before


def test_a_where_expression_still_works(cli, made):
    res = cli("exclude", "--where", "n_tokens < 27 -- the shortest", "--reason", "short")
    assert "excluded" in res.output
    res = cli(
        "sql",
        "SELECT count(*) AS n FROM documents WHERE exclusion_reason LIKE '%short%'",
        "-f",
        "json",
    )
    assert json.loads(res.output)[0]["n"] > 0


@pytest.mark.parametrize(
    "args",
    [
        ["sql", "SELECT count(*) FROM documents"],
        ["select", "list"],
        ["show"],
        ["ledger"],
        ["audit", "shape"],
        ["exclude", "--where", "true", "--reason", "x"],
        ["export", "--out", "shards"],
        ["doctor"],
    ],
    ids=lambda a: "-".join(a[:2]),
)
def test_a_missing_corpus_is_an_error_naming_the_path(cli, tmp_path, args):
    res = cli(*args, expect=2)
    line = one_error(res)
    assert "'corpus'" in line and "--corpus" in line and "SDF_CORPUS" in line
    assert not (tmp_path / "corpus").exists()
    typo = tmp_path / "corpsu"
    res = cli("--corpus", typo, *args, expect=2)
    assert str(typo) in res.output and not typo.exists()


def test_only_commands_that_add_documents_create_a_corpus(cli, tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text(json.dumps({"text": "one document", "concept": "c"}) + "\n")
    res = cli("ingest", src)
    assert "created a new corpus at corpus" in res.output
    assert json.loads(cli("sql", "SELECT count(*) AS n FROM documents", "-f", "json").output) == [
        {"n": 1}
    ]


def _truncate(part: Path) -> None:
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])


def _overwrite_pages(part: Path) -> None:
    """Every page overwritten, the frame (PAR1 markers, footer) intact: only a read of
    the data finds it."""
    data = part.read_bytes()
    footer = int.from_bytes(data[-8:-4], "little")
    body = len(data) - footer - 8
    part.write_bytes(data[:4] + b"\xab" * (body - 4) + data[body:])


def _dangle(part: Path) -> None:
    """The part a symbolic link to a file that is gone (DuckDB's glob passes over it)."""
    part.unlink()
    part.symlink_to(part.parent / "gone.parquet")


DAMAGE = {"truncated": _truncate, "pages overwritten": _overwrite_pages, "dangling": _dangle}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize(
    "args",
    [
        ["sql", "SELECT count(*) FROM documents"],
        ["select", "--name", "z", "--docs", "3"],
        ["select", "list"],
        ["export", "--out", "shards", "--selection", "n"],
        ["ingest", "more.jsonl"],
        ["show"],
        ["audit", "dedup"],
        ["exclude", "--where", "true", "--reason", "x"],
    ],
    ids=lambda a: "-".join(a[:2]),
)
def test_a_damaged_documents_part_is_named_by_every_command(cli, made, tmp_path, args, damage):
    if damage == "pages overwritten" and args == ["select", "list"]:
        pytest.skip("lists selections: reads no document, so meets no page")
    (tmp_path / "more.jsonl").write_text(json.dumps({"text": "another document"}) + "\n")
    part = next((made / "documents").glob("part-*.parquet"))
    DAMAGE[damage](part)
    before = fingerprint(made)
    line = one_error(cli(*args, expect=2))
    assert part.name in line and "sdf doctor" in line and "damaged Parquet part" in line
    assert fingerprint(made) == before


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_doctor_sets_aside_every_kind_of_damage(cli, made, damage):
    part = next((made / "documents").glob("part-*.parquet"))
    DAMAGE[damage](part)
    res = cli("doctor", expect=1)
    assert f"damaged: corpus/documents/{part.name}" in res.output
    moved = made / "quarantine" / "documents" / part.name
    assert moved.is_symlink() if damage == "dangling" else moved.is_file()
    assert not part.is_symlink() and not part.exists()
    assert json.loads(cli("sql", "SELECT count(*) AS n FROM documents", "-f", "json").output) == [
        {"n": 0}
    ]


def test_doctor_moves_damaged_parts_aside_and_lists_the_documents_affected(cli, made):
    ids = cli("sql", "SELECT doc_id FROM documents ORDER BY doc_id", "-f", "csv").output.split()[1:]
    res = cli("doctor")
    assert "all parts and tables read back whole" in res.output
    part = next((made / "documents").glob("part-*.parquet"))
    _truncate(part)
    res = cli("doctor", expect=1)
    assert f"damaged: corpus/documents/{part.name}" in res.output
    moved = made / "quarantine" / "documents" / part.name
    assert moved.exists() and not part.exists()  # set aside, never deleted
    listed = next((made / "quarantine").glob("affected-*.tsv")).read_text().splitlines()[1:]
    affected = {row.split("\t")[0] for row in listed}
    # the exclusions, grades and selection name these documents; the record no longer does
    assert affected and affected <= set(ids)
    assert "selections" in "".join(listed) and "exclusions" in "".join(listed)
    assert json.loads(cli("sql", "SELECT count(*) AS n FROM documents", "-f", "json").output) == [
        {"n": 0}
    ]
    assert cli("doctor", expect=1).output.count("documents affected") == 1


def _counts(cli, view: str) -> list[int]:
    out = cli("sql", f"SELECT count(*) AS n, count(DISTINCT doc_id) AS d FROM {view}", "-f", "json")
    row = json.loads(out.output)[0]
    return [row["n"], row["d"]]


def test_following_the_doctors_advice_never_leaves_a_document_stored_twice(cli, made, tmp_path):
    """Set aside a damaged part, re-ingest its source, then put the repaired part back (the
    two things the doctor names): the next ingest warns, and the doctor keeps the first
    copy of each document and moves the part of second copies into quarantine."""
    made_earlier = next((made / "documents").glob("part-*.parquet"))
    part = made_earlier.with_name("part-20250101T000000-0123456789ab.parquet")
    made_earlier.rename(part)  # written a while ago (a part's name starts with its time)
    whole = part.read_bytes()  # the part as a repair would give it back
    _truncate(part)
    res = cli("doctor", expect=1)
    assert "EITHER put the part back once repaired, OR re-ingest" in res.output
    assert "not both" in res.output
    assert "added 20 documents" in cli("ingest", "docs.jsonl", "--set", "concept=alpha").output
    again = next((made / "documents").glob("part-*.parquet"))
    part.write_bytes(whole)
    assert _counts(cli, "documents") == [40, 20]
    res = cli("ingest", "docs.jsonl")
    assert "warning: 20 stored documents are second copies" in res.output
    assert "`sdf doctor`" in res.output
    res = cli("doctor", expect=1)
    assert (
        f"stored twice: corpus/documents/{again.name}: all 20 of its documents are stored "
        f"before it (20 in {part.name}); moved to corpus/quarantine/documents/{again.name}"
    ) in res.output
    assert _counts(cli, "documents") == _counts(cli, "documents_raw") == [20, 20]
    assert sorted(p.name for p in (made / "documents").glob("part-*.parquet")) == [part.name]
    assert "all parts and tables read back whole" in cli("doctor").output


def test_the_doctor_rewrites_a_part_that_holds_some_second_copies(cli, made):
    """A part with some documents stored before it and some of its own: the others are
    kept in a new part, the part itself goes to quarantine (nothing is lost)."""
    import pyarrow.parquet as pq

    from sdfkit.store.ingest import build_documents

    first = next((made / "documents").glob("part-*.parquet"))
    table = pq.read_table(first)
    mixed = pa_concat(table.slice(0, 8), build_documents([{"text": f"new {i}"} for i in range(5)]))
    late = made / "documents" / "part-99990101T000000-000000000000.parquet"
    pq.write_table(mixed, late)
    assert _counts(cli, "documents_raw") == [33, 25]
    res = cli("doctor", expect=1)
    assert f"stored twice: corpus/documents/{late.name}: 8 of its 13 documents" in res.output
    assert f"(8 in {first.name}); its other 5 rewritten to" in res.output
    assert (made / "quarantine" / "documents" / late.name).exists() and not late.exists()
    assert _counts(cli, "documents_raw") == [25, 25]
    assert "all parts and tables read back whole" in cli("doctor").output


def pa_concat(*tables):
    import pyarrow as pa

    return pa.concat_tables([t.cast(tables[0].schema) for t in tables])


def test_the_doctor_names_a_users_folder_of_parts_not_the_catalog(cli, made, tmp_path):
    """A folder of Parquet parts named like a catalog table cannot be a view: every
    command names the folder, and the doctor says so too (the catalog is whole)."""
    import shutil

    grades = made / "grades"
    grades.mkdir()
    shutil.copy(next((made / "documents").glob("part-*.parquet")), grades / "part-1.parquet")
    line = one_error(cli("select", "list", expect=2))
    assert "corpus/grades: a folder of Parquet parts" in line
    res = cli("doctor", expect=1)
    assert "problem: corpus/grades: a folder of Parquet parts" in res.output
    assert "sdf.duckdb" not in res.output
    assert (grades / "part-1.parquet").exists()  # the user's, left where it is
    shutil.move(grades, tmp_path / "grades")
    assert "all parts and tables read back whole" in cli("doctor").output


def test_a_damaged_cache_part_is_set_aside_and_recomputed(cli, made):
    cli("tokens", "--tokenizer", "cl100k_base")
    part = next((made / "token_counts_cl100k_base").glob("part-*.parquet"))
    _truncate(part)
    res = cli("sql", "SELECT count(*) AS n FROM documents", "-f", "json")
    assert f"warning: corpus/token_counts_cl100k_base/{part.name}: damaged cache" in res.output
    assert (made / "quarantine" / "token_counts_cl100k_base" / part.name).exists()
    res = cli("tokens", "--tokenizer", "cl100k_base")
    assert "20 documents counted" in res.output
    n = cli("sql", "SELECT count(*) AS n FROM token_counts_cl100k_base", "-f", "json").output
    assert json.loads(n) == [{"n": 20}]


def test_a_killed_writers_temporary_never_sits_where_plain_readers_glob(made):
    import subprocess
    import sys

    import duckdb
    import polars as pl

    script = f"""
import os
from sdfkit.store.catalog import Store, DOCUMENTS
from sdfkit.store.ingest import build_documents
with Store({str(made)!r}).part_writer(DOCUMENTS) as w:
    w.write(build_documents([{{"text": "lost in the crash"}}]))
    os._exit(9)
"""
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert list(made.rglob(".tmp-*"))  # the killed writer's file is there...
    assert pl.scan_parquet(made / "documents/").select(pl.len()).collect().item() == 20
    assert duckdb.sql(f"SELECT count(*) FROM '{made}/documents/*.parquet'").fetchall() == [(20,)]


def test_export_overwrite_replaces_only_an_earlier_export(cli, made, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    line = one_error(cli("export", "--out", mine, "--selection", "n", "--overwrite", expect=2))
    assert "--out" in line and "not an sdf export" in line
    assert (mine / "thesis.tex").read_text() == "years of work"
    out = tmp_path / "shards"
    cli("export", "--out", out, "--selection", "n")
    # an overwrite killed between its two renames leaves the earlier export aside as .old-*
    import shutil

    left = tmp_path / ".shards.old-0a1b2c3d"
    shutil.copytree(out, left)
    cli("export", "--out", out, "--selection", "n", "--overwrite")
    assert not left.exists() and (out / "manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".shards")) == []


@pytest.mark.parametrize("where", ["under-a-file", "/proc/sdf-shards", "/sys/sdf-shards"])
def test_export_out_that_cannot_be_written_is_one_line(cli, made, tmp_path, where):
    if where == "under-a-file":
        (tmp_path / "afile").write_text("x")
        where = str(tmp_path / "afile" / "shards")
    line = one_error(cli("export", "--out", where, "--selection", "n", expect=2))
    assert f"--out {where}" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_export_out_in_an_unwritable_folder_is_one_line(cli, made, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    line = one_error(cli("export", "--out", locked / "shards", "--selection", "n", expect=2))
    assert "cannot write" in line


def _stock_count(root: Path, **config: str) -> int:
    """`SELECT count(*) FROM documents` with stock DuckDB, opened as the README shows."""
    import duckdb

    con = duckdb.connect(str(root / "sdf.duckdb"), read_only=True, config=config)
    try:
        return con.execute("SELECT count(*) FROM documents").fetchall()[0][0]
    finally:
        con.close()


@pytest.mark.parametrize("how", ["cp -a", "mv", "tar"])
def test_a_copied_or_moved_corpus_reads_itself(cli, made, tmp_path, how):
    import subprocess

    copy = tmp_path / "elsewhere" / "corpus"
    copy.parent.mkdir()
    if how == "cp -a":
        subprocess.run(["cp", "-a", str(made), str(copy)], check=True)
    elif how == "mv":
        subprocess.run(["mv", str(made), str(copy)], check=True)
    else:
        subprocess.run(
            ["tar", "-C", str(tmp_path), "-cf", str(tmp_path / "c.tar"), "corpus"], check=True
        )
        subprocess.run(["tar", "-C", str(copy.parent), "-xf", str(tmp_path / "c.tar")], check=True)
    if made.exists():  # the original changes after the copy: the copy must not follow it
        (tmp_path / "more.jsonl").write_text(json.dumps({"text": "only in the original"}) + "\n")
        cli("ingest", "more.jsonl")
        assert _stock_count(made, file_search_path=str(made)) == 21
    # stock DuckDB, opened as the README documents (Python, and the CLI's working directory)
    assert _stock_count(copy, file_search_path=str(copy)) == 20
    os.chdir(copy)
    assert _stock_count(Path(".")) == 20
    os.chdir(tmp_path)
    res = cli("--corpus", copy, "sql", "SELECT count(*) AS n FROM documents", "-f", "json")
    assert json.loads(res.output) == [{"n": 20}]
    assert "selection 'n'" in cli("--corpus", copy, "select", "show", "n").output
    # opened from elsewhere without the search path it fails loudly: it never reads another
    import duckdb

    os.chdir(tmp_path / "elsewhere")
    with pytest.raises(duckdb.IOException, match="No files found"):
        _stock_count(copy)
    os.chdir(tmp_path)


@pytest.mark.parametrize("cwd", ["inside the comma", "elsewhere"])
def test_a_corpus_whose_path_holds_a_comma_works(cli, tmp_path, monkeypatch, cwd):
    """DuckDB splits file_search_path at commas: the corpus folder is named by its path
    relative to the working directory, or through /proc/self/fd, never cut in two."""
    import duckdb

    (tmp_path / "com,ma").mkdir()
    corpus = tmp_path / "com,ma" / "corpus"
    (tmp_path / "docs.jsonl").write_text(
        "".join(
            json.dumps({"text": f"comma document {i}", "concept": "c"}) + "\n" for i in range(7)
        )
    )
    duckdb.sql(f"COPY (SELECT 5 AS mine) TO '{tmp_path / 'com,ma' / 'mine.parquet'}'")
    if cwd == "inside the comma":
        monkeypatch.chdir(tmp_path / "com,ma")
    monkeypatch.setenv("SDF_CORPUS", str(corpus))
    assert "added 7 documents" in cli("ingest", tmp_path / "docs.jsonl").output
    res = cli("sql", "SELECT count(*) AS n FROM documents", "-f", "json")
    assert json.loads(res.output) == [{"n": 7}]
    if cwd == "inside the comma":  # the working directory's own files stay readable
        res = cli("sql", "SELECT mine FROM 'mine.parquet'", "-f", "json")
        assert json.loads(res.output) == [{"mine": 5}]
    assert "all parts and tables read back whole" in cli("doctor").output
    part = next((corpus / "documents").glob("part-*.parquet"))
    _overwrite_pages(part)  # damage is named under the corpus's own path
    line = one_error(cli("sql", "SELECT count(*) FROM documents", expect=2))
    assert line.startswith(f"error: {part}: damaged Parquet part")


def test_a_comma_duckdb_cannot_take_is_refused_before_anything_is_written(
    cli, tmp_path, monkeypatch
):
    from sdfkit.store import catalog

    monkeypatch.setattr(catalog, "PROC_FD", str(tmp_path / "no-proc"))  # not Linux
    corpus = tmp_path / "com,ma" / "corpus"
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "a document"}) + "\n")
    line = one_error(cli("--corpus", corpus, "ingest", "docs.jsonl", expect=2))
    assert str(corpus) in line and "comma" in line
    assert not (tmp_path / "com,ma").exists()


def _hold_catalog(db: Path, release: Path):
    """A process holding the catalog (as a long write would) until ``release`` exists."""
    import subprocess
    import sys

    script = f"""
import time, duckdb
from pathlib import Path
con = duckdb.connect({str(db)!r})
print("held", flush=True)
deadline = time.monotonic() + 60
while not Path({str(release)!r}).exists() and time.monotonic() < deadline:
    time.sleep(0.01)
con.close()
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_command_waits_for_the_catalog_then_runs(cli, made, tmp_path, monkeypatch):
    import threading

    release = tmp_path / "release"
    holder = _hold_catalog(made / "sdf.duckdb", release)
    try:
        timer = threading.Timer(1.0, release.touch)  # the other writer finishes after ~1 s
        timer.start()
        res = cli("sql", "SELECT count(*) AS n FROM documents", "-f", "json")
        assert json.loads(res.output) == [{"n": 20}]
        assert release.exists()  # it really waited for the holder
    finally:
        release.touch()
        holder.wait(timeout=60)


def test_a_catalog_held_past_the_timeout_is_one_line_naming_sdf_lock_timeout(
    cli, made, tmp_path, monkeypatch
):
    release = tmp_path / "release"
    holder = _hold_catalog(made / "sdf.duckdb", release)
    try:
        monkeypatch.setenv("SDF_LOCK_TIMEOUT", "0.3")
        line = one_error(cli("sql", "SELECT count(*) FROM documents", expect=2))
        assert f"process {holder.pid} held the catalog" in line and "SDF_LOCK_TIMEOUT" in line
    finally:
        release.touch()
        holder.wait(timeout=60)


@pytest.mark.parametrize("catalog", ["damaged", "held"])
def test_an_ingest_that_cannot_record_itself_in_the_catalog_stores_nothing(
    cli, made, tmp_path, monkeypatch, catalog
):
    """The catalog is opened before the new part is published: an ingest stopped by a
    catalog that cannot be opened, or that another process holds past SDF_LOCK_TIMEOUT,
    leaves no part behind, and the next ingest adds its documents (not "re-read")."""
    (tmp_path / "more.jsonl").write_text(
        "".join(json.dumps({"text": f"one more document {i}"}) + "\n" for i in range(3))
    )
    db = made / "sdf.duckdb"
    parts = sorted(p.name for p in (made / "documents").glob("part-*.parquet"))
    good = db.read_bytes()
    holder = None
    release = tmp_path / "release"
    try:
        if catalog == "damaged":
            db.write_bytes(b"junk\n")
            wanted = "the catalog cannot be opened"
        else:
            holder = _hold_catalog(db, release)
            monkeypatch.setenv("SDF_LOCK_TIMEOUT", "0.3")
            wanted = "held the catalog for more than 0.3 s"
        line = one_error(cli("ingest", "more.jsonl", expect=2))
        assert wanted in line and "sdf.duckdb" in line
        assert sorted(p.name for p in (made / "documents").glob("part-*.parquet")) == parts
        assert not list(made.rglob(".tmp-*"))
    finally:
        release.touch()
        if holder is not None:
            holder.wait(timeout=60)
    monkeypatch.delenv("SDF_LOCK_TIMEOUT", raising=False)
    if catalog == "damaged":
        db.write_bytes(good)  # restored from a copy, as the error says
    assert "added 3 documents" in cli("ingest", "more.jsonl").output
    logged = cli("sql", "SELECT added FROM ingests ORDER BY created_at", "-f", "json").output
    assert [r["added"] for r in json.loads(logged)] == [20, 3]


def test_version(cli):
    from sdfkit import __version__

    assert cli("--version").output.strip() == f"sdfkit {__version__}"


def test_rows_without_a_concept_are_stored_with_a_warning_naming_set_concept(cli, tmp_path):
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"text": "no concept one"})
        + "\n"
        + json.dumps({"text": "no concept two"})
        + "\n"
    )
    res = cli("ingest", "d.jsonl")
    assert "warning: 2 rows have no concept" in res.output and "--set concept=" in res.output
    (tmp_path / "e.jsonl").write_text(json.dumps({"text": "has one", "concept": "c"}) + "\n")
    assert "no concept" not in cli("ingest", "e.jsonl").output


def test_a_generation_run_that_lands_no_documents_exits_non_zero_with_the_reason(
    cli, monkeypatch, example_universe
):
    from sdfkit.llm import offline

    monkeypatch.setattr(offline, "_STAGES", dict(offline._STAGES))  # restored afterwards
    offline.register_stage("doc_types", lambda params, meta: "I would rather not say.")
    res = cli("generate", example_universe, "--backend", "offline", "--limit", "3", expect=2)
    line = one_error(res)
    assert "landed no documents" in line and "doc_types" in line


def test_checks_with_nothing_to_measure_are_not_run_never_pass():
    from sdfkit.report.check import Thresholds
    from sdfkit.report.check import run_checks as evaluate

    empty = {
        "ngrams": {"documents": 0, "max_doc_share": {}, "top": {}},
        "near_duplicates": {"documents": 0, "duplicate_fraction": 0.0, "clusters": []},
        "names": {"documents": 0, "top_share": 0.0, "top": []},
        "diversity": {"documents": 0, "per_concept": {}},
    }
    t = Thresholds(
        max_ngram_doc_share=0.3,
        max_near_duplicate_fraction=0.05,
        max_name_share=0.05,
        max_mean_pairwise_cosine=0.6,
        # the gates by documents that are on by default are checked elsewhere
        max_anti_universe_documents=None,
        max_name_doc_share=None,
        max_top5_names_doc_share=None,
    )
    verdicts = evaluate(empty, t).verdicts
    assert len(verdicts) == 4
    assert all(v.status == "not run" and not v.passed for v in verdicts)
    assert all("no documents to measure" in v.line() for v in verdicts)
    # with documents, the same figures are measured and pass
    full = {k: {**v, "documents": 5} for k, v in empty.items()}
    full["ngrams"]["max_doc_share"] = {"2": 0.1}
    full["diversity"]["per_concept"] = {"c": {"mean_pairwise_cosine": 0.2}}
    assert all(v.passed for v in evaluate(full, t).verdicts)


def test_a_damaged_catalog_is_one_line_and_the_doctor_names_it(cli, made):
    db = made / "sdf.duckdb"
    db.write_bytes(b"not a database" * 100)
    for args in (["sql", "SELECT 1"], ["select", "list"], ["show"]):
        line = one_error(cli(*args, expect=2))
        assert "sdf.duckdb: the catalog cannot be opened" in line and "restore it" in line
    res = cli("doctor", expect=1)
    assert "damaged: corpus/sdf.duckdb" in res.output
    assert db.read_bytes() == b"not a database" * 100  # named, never replaced silently
