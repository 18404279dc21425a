"""``Store.connect`` refreshes the catalog's views only when the Parquet parts changed."""

from __future__ import annotations

import pyarrow as pa

from sdfkit.store import schema
from sdfkit.store.catalog import Store
from sdfkit.store.ingest import build_documents


def _docs(store: Store, start: int, n: int) -> None:
    store.append(
        "documents_raw",
        build_documents(
            [
                {"text": f"Document number {i} of the test.", "concept": "c"}
                for i in range(start, start + n)
            ]
        ),
    )


def _counting(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = Store._refresh_views

    def counting(self, con, fingerprint=""):
        calls.append(1)
        return real(self, con, fingerprint)

    monkeypatch.setattr(Store, "_refresh_views", counting)
    return calls


def test_views_refreshed_only_when_parts_change(tmp_path, monkeypatch):
    store = Store(tmp_path / "c")
    _docs(store, 0, 3)
    calls = _counting(monkeypatch)
    assert store.query("SELECT count(*) FROM documents").item() == 3
    assert len(calls) == 1  # first open: no views yet
    for _ in range(3):
        assert store.query("SELECT count(*) FROM documents").item() == 3
    assert len(calls) == 1  # nothing changed: no refresh, no write
    _docs(store, 3, 2)  # a new part of the record
    assert store.query("SELECT count(*) FROM documents").item() == 5
    assert len(calls) == 2
    # a new table, and a part of it with a column the first part lacks: the view is rebuilt
    store.append("extra_cache", pa.table({"doc_id": ["a"], "x": [1]}), key="doc_id")
    assert store.query("SELECT sum(x) FROM extra_cache").item() == 1
    store.append("extra_cache", pa.table({"doc_id": ["b"], "x": [2], "y": ["new"]}), key="doc_id")
    got = store.query("SELECT doc_id, y FROM extra_cache ORDER BY doc_id").rows()
    assert got == [("a", None), ("b", "new")]
    assert len(calls) == 4
    # another Store object (another process) sees the same catalog as fresh
    assert Store(store.root).query("SELECT count(*) FROM extra_cache").item() == 2
    assert len(calls) == 4


def test_removed_part_and_new_schema_version_refresh_the_views(tmp_path, monkeypatch):
    store = Store(tmp_path / "c")
    _docs(store, 0, 2)
    store.append("extra_cache", pa.table({"doc_id": ["a"], "x": [1]}), key="doc_id")
    assert store.query("SELECT count(*) FROM extra_cache").item() == 1
    calls = _counting(monkeypatch)
    for part in store.parts("extra_cache"):
        part.unlink()  # every part of a cache gone: its view must go too
    names = set(store.query("SELECT view_name FROM duckdb_views() WHERE NOT internal")["view_name"])
    assert "extra_cache" not in names and len(calls) == 1
    # a newer sdfkit's tables or views: refreshed on the next open even with the same parts
    monkeypatch.setattr(schema, "VERSION", "another version")
    assert store.query("SELECT count(*) FROM documents").item() == 2
    assert len(calls) == 2


def test_read_only_open_never_writes_the_fingerprint(tmp_path):
    store = Store(tmp_path / "c")
    _docs(store, 0, 2)
    with store.connect():
        pass
    before = store.db_path.read_bytes()
    _docs(store, 2, 1)  # parts changed, but a read-only open must not refresh
    with store.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM documents_raw").fetchall() == [(3,)]
    assert store.db_path.read_bytes() == before
