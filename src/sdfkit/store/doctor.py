"""`sdf doctor`: read every part and catalog table, set damaged parts aside, name the loss.

Every command already checks each part's Parquet frame when it opens the corpus (cheap; see
``Store.check_parts``). The doctor reads every part in full, so damage inside a file is found
too, moves each damaged part into ``quarantine/<table>/`` (never deleting anything), counts
every catalog table and view, removes temporaries of dead writers, and lists the documents
affected: ids the catalog or a cache still names that no readable documents part holds.

A document stored twice (the same ``doc_id`` in two documents parts: a part set aside put
back after its documents were ingested again) is set aside too: the first copy of each
document (parts in the order they were written) stays, a part holding only second copies
is moved into quarantine, and a part holding some is rewritten without them (the original
moved into quarantine). The views do not de-duplicate: that would cost every query a pass
over every row, and plain Parquet readers of ``documents/`` would still count twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sdfkit.errors import SdfError
from sdfkit.store.catalog import (
    DOCUMENTS,
    PART_GLOB,
    QUARANTINE,
    TMP_DIR,
    CorpusLayoutError,
    Store,
    make_folder,
    read_part,
    read_problem,
)


@dataclass
class DoctorReport:
    corpus: Path
    parts_checked: int = 0
    tables_checked: int = 0
    moved: list[tuple[Path, Path, str]] = field(default_factory=list)
    table_problems: list[str] = field(default_factory=list)
    #: Things in the corpus folder that are not sdf's (a user's folder of parts named like
    #: a catalog table): named, never moved.
    layout_problems: list[str] = field(default_factory=list)
    #: Lines on documents stored twice, each naming the parts and what was done.
    doubles: list[str] = field(default_factory=list)
    affected: dict[str, list[str]] = field(default_factory=dict)
    affected_file: Path | None = None
    temporaries_removed: int = 0

    @property
    def healthy(self) -> bool:
        return not (
            self.moved
            or self.table_problems
            or self.layout_problems
            or self.affected
            or self.doubles
        )

    def lines(self) -> list[str]:
        out = [
            f"checked {self.parts_checked} parts and {self.tables_checked} catalog tables/views "
            f"in {self.corpus}"
        ]
        for part, dest, problem in self.moved:
            out.append(f"damaged: {part} ({problem}); moved to {dest}")
        out += [f"damaged: {p}" for p in self.table_problems]
        out += [f"problem: {p}" for p in self.layout_problems]
        out += [f"stored twice: {line}" for line in self.doubles]
        if self.temporaries_removed:
            out.append(f"removed {self.temporaries_removed} temporary files of dead writers")
        if self.affected:
            first = ", ".join(sorted(self.affected)[:5])
            more = "..." if len(self.affected) > 5 else ""
            out.append(
                f"{len(self.affected)} documents affected (named by the catalog or a cache, held "
                f"by no readable documents part): {first}{more}; all listed in "
                f"{self.affected_file}"
            )
        if any(part.parent.name == "documents" for part, _, _ in self.moved):
            out.append(
                "to get the documents of a part set aside back: EITHER put the part back once "
                "repaired, OR re-ingest (re-generate) them, not both (a document then stored "
                "twice is set aside by the next `sdf doctor`)"
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
    _set_aside_second_copies(store, report)

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
    except CorpusLayoutError as exc:  # a folder not sdf's: named, left in place
        report.layout_problems.append(str(exc))
    except SdfError as exc:  # the catalog itself cannot be opened: named, left in place
        report.table_problems.append(str(exc))
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        report.table_problems.append(f"{store.db_path}: {first}")
    try:
        caches = [name for name in store.parquet_tables() if name != DOCUMENTS]
    except CorpusLayoutError:  # named above, when the catalog was opened
        caches = []
    for name in caches:
        for part in store.parts(name):
            if "doc_id" in pq.read_schema(part).names:
                for doc_id in read_part(part, ["doc_id"]).column("doc_id").to_pylist():
                    if doc_id is not None:
                        named.setdefault(str(doc_id), []).append(name)
    present = store.keys(DOCUMENTS)
    report.affected = {
        k: sorted(set(v)) for k, v in named.items() if k not in present and len(k) == 32
    }
    if report.affected:
        qdir = make_folder(store.root / QUARANTINE, "the parts sdf doctor sets aside")
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        report.affected_file = qdir / f"affected-{stamp}.tsv"
        lines = ["doc_id\tnamed_by"] + [
            f"{k}\t{','.join(v)}" for k, v in sorted(report.affected.items())
        ]
        report.affected_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


def _set_aside_second_copies(store: Store, report: DoctorReport) -> None:
    """Keep one copy of each document: the first, in the order the parts were written
    (their names begin with the time). A part holding only second copies is moved into
    quarantine; one holding some is rewritten without them, then moved there itself (a
    new part is published first: stopped between the two steps, the next doctor finds the
    copies again, and nothing is ever missing). Under the documents' append lock, so no
    ingest publishes a part meanwhile."""
    from collections import Counter

    import pyarrow as pa

    with store.append_lock(DOCUMENTS):
        first: dict[str, str] = {}  # doc_id -> the part holding its first copy
        for part in store.parts(DOCUMENTS):
            ids = read_part(part, ["doc_id"]).column("doc_id").to_pylist()
            held: Counter[str] = Counter()  # earlier part -> copies of its documents here
            keep = []
            for i, doc_id in enumerate(ids):
                if doc_id in first:
                    held[first[doc_id]] += 1
                else:
                    first[doc_id] = part.name
                    keep.append(i)
            if len(keep) == len(ids):
                continue
            where = ", ".join(
                f"{n} in {'this part itself' if name == part.name else name}"
                for name, n in held.most_common()
            )
            copies = len(ids) - len(keep)
            if not keep:
                dest = store.quarantine(part)
                report.doubles.append(
                    f"{part}: all {len(ids)} of its documents are stored before it ({where}); "
                    f"moved to {dest}"
                )
                continue
            table = read_part(part)
            rest = table.take(pa.array(keep, type=pa.int64()))
            with store.part_writer(DOCUMENTS, schema=rest.schema) as writer:
                writer.write(rest)
            dest = store.quarantine(part)
            report.doubles.append(
                f"{part}: {copies} of its {len(ids)} documents are stored before it ({where}); "
                f"its other {len(keep)} rewritten to {writer.final}, the part moved to {dest}"
            )
