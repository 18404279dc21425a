"""The store: idempotent appends, atomic parts, the documents view, stock DuckDB access."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import pyarrow as pa
import pytest

from sdfkit.ingest import build_documents
from sdfkit.store import DOCUMENTS, doc_id_for


def _table(texts, **cols):
    return build_documents([{"text": t, **cols} for t in texts])


def test_append_is_idempotent_and_dedups_within_a_batch(store):
    assert store.append(DOCUMENTS, _table(["a b c", "d e f", "a b c"], concept="x")) == 2
    assert store.append(DOCUMENTS, _table(["a b c", "d e f"], concept="x")) == 0
    assert store.append(DOCUMENTS, _table(["g h i"], concept="x")) == 1
    assert len(store.parts(DOCUMENTS)) == 2  # an append that adds nothing writes no part
    df = store.query("SELECT doc_id, text, concept FROM documents ORDER BY text")
    assert df["text"].to_list() == ["a b c", "d e f", "g h i"]
    assert df["doc_id"].to_list()[0] == doc_id_for("a b c")


def test_failed_write_leaves_nothing(store):
    store.append(DOCUMENTS, _table(["kept document"]))

    def batches():
        yield _table(["new one"]).to_batches()[0]
        raise KeyboardInterrupt  # Ctrl-C in the middle of a write

    with pytest.raises(KeyboardInterrupt):
        store.append(DOCUMENTS, batches())
    assert [p.name.startswith("part-") for p in store.parts(DOCUMENTS)] == [True]
    assert not list(store.table_dir(DOCUMENTS).glob(".tmp-*"))
    assert store.query("SELECT text FROM documents")["text"].to_list() == ["kept document"]


def test_killed_process_leaves_only_an_invisible_temporary(store, tmp_path):
    store.append(DOCUMENTS, _table(["before the crash"]))
    script = f"""
import os, pyarrow as pa
from sdfkit.store import Store, DOCUMENTS
from sdfkit.ingest import build_documents
s = Store({str(store.root)!r})
with s.part_writer(DOCUMENTS) as w:
    w.write(build_documents([{{"text": "lost in the crash"}}]))
    os._exit(9)  # the process dies before the part is renamed into place
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == 9
    assert list(store.table_dir(DOCUMENTS).glob(".tmp-*"))  # the half-written file exists...
    texts = store.query("SELECT text FROM documents")["text"].to_list()
    assert texts == ["before the crash"]  # ...but is never read
    assert store.clean_temporaries() == 1


def test_documents_view_joins_grades_and_exclusions(store):
    store.append(DOCUMENTS, _table(["one doc", "two doc"], concept="c"))
    d1, d2 = doc_id_for("one doc"), doc_id_for("two doc")
    with store.connect() as con:
        con.execute("INSERT INTO exclusions VALUES (?, 'near-duplicate', 'dedup', now())", [d1])
        con.execute("INSERT INTO grades VALUES (?, 'g1', 'm', 'h', false, '{}', NULL, now())", [d2])
    df = store.query("SELECT doc_id, excluded, exclusion_reason, grade_passed FROM documents")
    rows = {r["doc_id"]: r for r in df.to_dicts()}
    assert rows[d1]["excluded"] is True and rows[d1]["exclusion_reason"] == "near-duplicate"
    assert rows[d2]["excluded"] is False and rows[d2]["grade_passed"] is False


def test_catalog_opens_in_stock_duckdb(store):
    store.append(DOCUMENTS, _table(["stock duckdb can read me"], concept="c"))
    with store.connect():
        pass
    con = duckdb.connect(str(store.db_path), read_only=True)
    try:
        rows = con.execute("SELECT text, concept FROM documents").fetchall()
    finally:
        con.close()
    assert rows == [("stock duckdb can read me", "c")]


def test_save_table_replace_and_append(store):
    store.save_table("t", [{"a": 1}, {"a": 2}])
    store.save_table("t", [{"a": 3}], mode="append")
    assert store.query("SELECT sum(a) AS s FROM t").item() == 6
    store.save_table("t", pa.table({"a": [10]}))
    assert store.query("SELECT sum(a) AS s FROM t").item() == 10


def test_empty_corpus_has_a_queryable_documents_view(store):
    assert store.query("SELECT count(*) AS n FROM documents").item() == 0
