"""The store: idempotent appends, atomic parts, the documents view, stock DuckDB access."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import duckdb
import pyarrow as pa
import pytest

from sdfkit.store.catalog import DOCUMENTS, doc_id_for
from sdfkit.store.ingest import build_documents


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
    assert not list(store.temp_dir(DOCUMENTS).glob(".tmp-*"))
    assert store.query("SELECT text FROM documents")["text"].to_list() == ["kept document"]


def test_killed_process_leaves_only_an_invisible_temporary(store, tmp_path):
    store.append(DOCUMENTS, _table(["before the crash"]))
    script = f"""
import os, pyarrow as pa
from sdfkit.store.catalog import Store, DOCUMENTS
from sdfkit.store.ingest import build_documents
s = Store({str(store.root)!r})
with s.part_writer(DOCUMENTS) as w:
    w.write(build_documents([{{"text": "lost in the crash"}}]))
    os._exit(9)  # the process dies before the part is renamed into place
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == 9
    assert list(store.temp_dir(DOCUMENTS).glob(".tmp-*"))  # the half-written file exists...
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
    # as the README shows: the views' paths are relative to the corpus folder
    con = duckdb.connect(
        str(store.db_path), read_only=True, config={"file_search_path": str(store.root)}
    )
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


def test_concurrent_ingests_of_the_same_file_store_each_document_once(store, tmp_path):
    """Two processes ingesting the same file at the same moment: the append lock makes the
    second see the first's part, so no document is stored twice."""
    src = tmp_path / "docs.jsonl"
    src.write_text(
        "".join(
            json.dumps({"text": f"concurrent document {i} " + "w " * 50}) + "\n" for i in range(300)
        )
    )
    go = tmp_path / "go"
    script = f"""
import os, time
from pathlib import Path
from sdfkit.store.catalog import Store
from sdfkit.store.ingest import ingest_files
while not Path({str(go)!r}).exists():
    time.sleep(0.001)
ingest_files([{str(src)!r}], Store({str(store.root)!r}))
"""
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(3)]
    time.sleep(1.0)  # all three waiting at the start line
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    n, distinct = store.query("SELECT count(*), count(DISTINCT doc_id) FROM documents").row(0)
    assert n == distinct == 300


def test_cleaning_never_removes_a_live_writers_temporary(store):
    """A temporary part of a process still writing (here: this one) is left alone; one of a
    dead process, or of the old unnamed kind, is removed."""
    d = store.temp_dir(DOCUMENTS)
    with store.part_writer(DOCUMENTS) as w:
        w.write(_table(["in progress"]).to_batches()[0])
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        ).stdout.strip()
        mine = list(d.glob(".tmp-*"))
        host = mine[0].name.split("@")[1]
        (d / f".tmp-{dead}@{host}@part-x.parquet").write_bytes(b"x")
        (d / ".tmp-part-old.parquet").write_bytes(b"x")
        assert store.clean_temporaries() == 2
        assert list(d.glob(".tmp-*")) == mine
    assert store.query("SELECT text FROM documents")["text"].to_list() == ["in progress"]


def test_arrays_built_from_buffers_equal_pa_array():
    import numpy as np

    from sdfkit.store.catalog import numpy_array, string_array

    words = ["", "a", "naïve café", "日本語", "x" * 1000]
    assert string_array(words).equals(pa.array(words, pa.string()))
    assert string_array([]).equals(pa.array([], pa.string()))
    values = np.arange(20, dtype=np.uint32)[::3]  # not contiguous
    assert numpy_array(values).equals(pa.array(values, pa.uint32()))
    assert numpy_array(values.astype(np.int64), pa.int64()).to_pylist() == values.tolist()
