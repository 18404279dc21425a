"""`sdf doctor`: read every part and catalog table, set damaged parts aside, name the loss.

Every command already checks each part's Parquet frame when it opens the corpus (cheap; see
``Store.check_parts``). The doctor reads every part in full, so damage inside a file is found
too, moves each damaged part into ``quarantine/<table>/`` (never deleting anything), counts
every catalog table and view, removes temporaries of dead writers, and lists the documents
affected: ids the catalog or a cache still names that no readable documents part holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sdfkit.errors import SdfError
from sdfkit.store.catalog import DOCUMENTS, PART_GLOB, QUARANTINE, TMP_DIR, Store, read_problem


@dataclass
class DoctorReport:
    corpus: Path
    parts_checked: int = 0
    tables_checked: int = 0
    moved: list[tuple[Path, Path, str]] = field(default_factory=list)
    table_problems: list[str] = field(default_factory=list)
    affected: dict[str, list[str]] = field(default_factory=dict)
    affected_file: Path | None = None
    temporaries_removed: int = 0

    @property
    def healthy(self) -> bool:
        return not self.moved and not self.table_problems and not self.affected

    def lines(self) -> list[str]:
        out = [
            f"checked {self.parts_checked} parts and {self.tables_checked} catalog tables/views "
            f"in {self.corpus}"
        ]
        for part, dest, problem in self.moved:
            out.append(f"damaged: {part} ({problem}); moved to {dest}")
        out += [f"damaged: {p}" for p in self.table_problems]
        if self.temporaries_removed:
            out.append(f"removed {self.temporaries_removed} temporary files of dead writers")
        if self.affected:
            first = ", ".join(sorted(self.affected)[:5])
            more = "..." if len(self.affected) > 5 else ""
            out.append(
                f"{len(self.affected)} documents affected (named by the catalog or a cache, held "
                f"by no readable documents part): {first}{more}; all listed in "
                f"{self.affected_file}. Re-ingest or re-generate them; a moved part can be "
                "put back once repaired"
            )
        if self.healthy:
            out.append("all parts and tables read back whole")
        return out


def doctor(store: Store) -> DoctorReport:
    """Check ``store`` through; move damaged parts aside; list the documents affected."""
    import duckdb
    import pyarrow.parquet as pq

    report = DoctorReport(store.root)
    for d in sorted(p for p in store.root.iterdir() if p.is_dir()):
        if d.name in (TMP_DIR, QUARANTINE):
            continue
        for part in sorted(d.glob(PART_GLOB)):
            report.parts_checked += 1
            problem = read_problem(part)
            if problem:
                report.moved.append((part, store.quarantine(part), problem))
    report.temporaries_removed = store.clean_temporaries()

    named: dict[str, list[str]] = {}
    try:
        with store.connect() as con:
            objects = con.execute(
                "SELECT table_name, 'table' FROM duckdb_tables() WHERE NOT internal "
                "UNION ALL SELECT view_name, 'view' FROM duckdb_views() WHERE NOT internal "
                "ORDER BY 1"
            ).fetchall()
            for name, kind in objects:
                report.tables_checked += 1
                try:
                    con.execute(f'SELECT count(*) FROM "{name}"').fetchall()
                    cols = {
                        r[0]
                        for r in con.execute(
                            "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [name]
                        ).fetchall()
                    }
                    if kind == "table" and "doc_id" in cols:
                        for (doc_id,) in con.execute(
                            f'SELECT DISTINCT doc_id FROM "{name}" WHERE doc_id IS NOT NULL'
                        ).fetchall():
                            named.setdefault(str(doc_id), []).append(name)
                except duckdb.Error as exc:
                    first = str(exc).strip().splitlines()[0]
                    report.table_problems.append(f"{kind} {name} in {store.db_path}: {first}")
    except SdfError as exc:  # the catalog itself cannot be opened: named, left in place
        report.table_problems.append(str(exc))
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        report.table_problems.append(f"{store.db_path}: {first}")
    for name in store.parquet_tables():
        if name == DOCUMENTS:
            continue
        for part in store.parts(name):
            schema = pq.read_schema(part)
            if "doc_id" in schema.names:
                for doc_id in pq.read_table(part, columns=["doc_id"]).column("doc_id").to_pylist():
                    if doc_id is not None:
                        named.setdefault(str(doc_id), []).append(name)
    present = store.keys(DOCUMENTS)
    report.affected = {
        k: sorted(set(v)) for k, v in named.items() if k not in present and len(k) == 32
    }
    if report.affected:
        qdir = store.root / QUARANTINE
        qdir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        report.affected_file = qdir / f"affected-{stamp}.tsv"
        lines = ["doc_id\tnamed_by"] + [
            f"{k}\t{','.join(v)}" for k, v in sorted(report.affected.items())
        ]
        report.affected_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report
