"""Saving an audit is atomic: a failure, Ctrl-C or kill part-way through ``sdfkit.audits.save``
leaves the previous result whole (its tables and its ``audit_runs`` row), and the next save
works."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
from crash_points import catalog, crash_at

from sdfkit.audits import AuditResult, save, shape
from sdfkit.store.catalog import Store
from sdfkit.store.ingest import build_documents


def result(version: int) -> AuditResult:
    """A two-table result whose every value says which version wrote it."""
    return AuditResult(
        name="shape",
        figures={"version": version},
        tables={
            "strata": pl.DataFrame({"stratum": ["a", "b"], "version": [version, version]}),
            "concepts": pl.DataFrame({"concept": ["x"], "version": [version]}),
        },
        flags=[f"flag of v{version}"],
        seconds=float(version),
    )


def saved_versions(store: Store) -> dict[str, object]:
    runs = store.query("SELECT figures FROM audit_runs WHERE audit = 'shape' ORDER BY created_at")
    return {
        "strata": sorted(set(store.query("SELECT version FROM audit_shape_strata")["version"])),
        "concepts": store.query("SELECT version FROM audit_shape_concepts")["version"].to_list(),
        "runs": [json.loads(f)["version"] for f in runs["figures"]],
    }


# The statements of one save, in order: a failure just before any of them loses nothing.
CRASH_POINTS = [
    r'CREATE OR REPLACE TABLE "audit_shape_strata"',
    r'CREATE OR REPLACE TABLE "audit_shape_concepts"',  # after the first table was replaced
    r"INSERT INTO audit_runs",  # after both tables
    r"^COMMIT",  # everything written, not committed
]


@pytest.mark.parametrize("pattern", CRASH_POINTS)
@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("disk on fire")])
def test_interrupted_save_leaves_previous_result_whole(store, pattern, error):
    save(store, result(1))
    before = catalog(store)
    point = crash_at(store, pattern, error)
    with pytest.raises(type(error)):
        save(store, result(2))
    assert point.fired, point.statements
    assert catalog(store) == before
    assert saved_versions(Store(store.root)) == {"strata": [1], "concepts": [1], "runs": [1]}
    # The next run works and replaces the result as a whole.
    save(Store(store.root), result(2))
    assert saved_versions(Store(store.root)) == {"strata": [2], "concepts": [2], "runs": [1, 2]}


def test_interrupted_first_save_leaves_no_audit_tables(store):
    point = crash_at(store, r"INSERT INTO audit_runs", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        save(store, result(1))
    assert point.fired
    left = [t for t in catalog(store) if t.startswith("audit_")]
    assert left == []
    save(Store(store.root), result(1))
    assert saved_versions(Store(store.root)) == {"strata": [1], "concepts": [1], "runs": [1]}


def test_killed_save_leaves_previous_result_whole(store, tmp_path: Path):
    """A kill -9 mid-save (no ROLLBACK runs, no cleanup): reopening the corpus shows the
    previous result, and saving again works."""
    save(store, result(1))
    before = catalog(store)
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(Path(__file__).parent)!r}]
        from crash_points import crash_at
        from test_audit_store import result
        from sdfkit.audits import save
        from sdfkit.store.catalog import Store
        store = Store({str(store.root)!r})
        crash_at(store, r"INSERT INTO audit_runs", None)
        save(store, result(2))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 17, proc.stderr  # died at the crash point, not elsewhere
    assert catalog(store) == before
    save(store, result(2))
    assert saved_versions(store) == {"strata": [2], "concepts": [2], "runs": [1, 2]}


def test_real_audit_save_interrupted_keeps_previous_findings(store):
    """The shape audit for real: a re-save interrupted after new documents landed leaves
    the old tables and figures, which still agree with each other; the next save shows both
    concepts."""
    docs = [{"text": f"doc {i} " + "word " * (10 + i), "concept": "a"} for i in range(6)]
    store.append("documents_raw", build_documents(docs))
    save(store, shape.run(store))
    before = catalog(store)
    store.append("documents_raw", build_documents([{"text": "late doc " * 50, "concept": "b"}]))
    second = shape.run(store)
    point = crash_at(store, r"INSERT INTO audit_runs", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        save(store, second)
    assert point.fired
    assert catalog(store) == before
    fresh = Store(store.root)

    def stored() -> tuple[list[str], int]:
        concepts = fresh.query("SELECT concept FROM audit_shape_concepts ORDER BY 1")
        figures = fresh.query("SELECT figures FROM audit_runs ORDER BY created_at DESC LIMIT 1")
        return concepts["concept"].to_list(), json.loads(figures["figures"][0])["documents"]

    assert stored() == (["a"], 6)
    save(fresh, second)
    assert stored() == (["a", "b"], 7)


def result_with_writes(version: int) -> AuditResult:
    """``result(version)`` that also replaces the exclusions of source 'test' by one row."""
    from sdfkit.audits import CatalogWrite

    res = result(version)
    res.writes = [
        CatalogWrite("DELETE FROM exclusions WHERE source = 'test'"),
        CatalogWrite(
            "INSERT INTO exclusions (doc_id, reason, source, created_at) "
            "SELECT doc_id, ?, 'test', now() FROM _test_rows",
            [f"v{version}"],
            {"_test_rows": pl.DataFrame({"doc_id": [f"doc-v{version}"]})},
        ),
    ]
    return res


def test_catalog_writes_run_in_the_save_transaction(store):
    save(store, result_with_writes(1))
    assert store.query("SELECT doc_id, reason FROM exclusions").rows() == [("doc-v1", "v1")]
    before = catalog(store)
    for pattern in [r"DELETE FROM exclusions", r"INSERT INTO exclusions", r"^COMMIT"]:
        point = crash_at(store, pattern, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            save(store, result_with_writes(2))
        assert point.fired, point.statements
        assert catalog(store) == before
        store = Store(store.root)
    save(store, result_with_writes(2))
    assert store.query("SELECT doc_id, reason FROM exclusions").rows() == [("doc-v2", "v2")]
    assert saved_versions(store) == {"strata": [2], "concepts": [2], "runs": [1, 2]}


def test_saving_the_same_result_again_is_a_no_op(store, tmp_path: Path):
    res = result(1)
    save(store, res)
    save(store, res)  # e.g. an audit whose run saved, then `sdf report` saving it
    assert saved_versions(store)["runs"] == [1]
    other = Store(tmp_path / "other")
    save(other, res)  # another catalog still gets it
    assert saved_versions(other) == {"strata": [1], "concepts": [1], "runs": [1]}
    save(store, result(1))  # a new result object is a new run
    assert saved_versions(store)["runs"] == [1, 1]
