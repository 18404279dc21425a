"""What a report.json measured, so ``sdf check`` judges the corpus only by a report of it.

``sdf report`` records the corpus workspace it audited (``corpus``: its resolved path) and
``corpus_state``, a cheap fingerprint of what every audit reads through the ``documents``
view:

- ``documents`` and ``record``: the rows of the record and a digest of its parts (the name
  and size of each: parts are written once under unique names, so an added, removed or
  replaced part changes it). Read from the file system and the Parquet footers, before the
  first audit: documents that land while a report runs make it stale, never fresh;
- ``marks``: a digest of the exclusions (document, reason, source) and the grades, the
  view's ``excluded`` and ``grade_passed``. Taken after the last audit, since the dedup and
  anti-universe audits write exclusions themselves. An exclusion changed afterwards
  (``sdf exclude``, ``sdf grade``, ``sdf audit dedup``) makes the report stale too: the
  anti-universe gate counts only documents not excluded for another reason, and an audit's
  ``where`` may read ``excluded`` or ``grade_passed``.

``check_fresh`` refuses (one line, exit 2) a report of another corpus, of a corpus that
changed since, or without a ``corpus_state`` (written by an older sdfkit: it cannot say what
it measured). Universe files and audit settings are not part of the fingerprint.

Cost: one ``stat`` and one footer read per part, and one aggregate over the two catalog
tables: 11 ms and 38 ms for 102,000 documents in 300 parts, each excluded once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdfkit.errors import SdfError

if TYPE_CHECKING:  # pragma: no cover
    from sdfkit.store.catalog import Store

#: One row of each catalog table as text; md5 per row, XOR over rows: no sort, any order.
MARKS_SQL = """
SELECT (SELECT count(*) FROM exclusions),
       (SELECT bit_xor(md5_number(concat_ws(chr(0), doc_id, coalesce(reason, ''),
                                            coalesce(source, '')))) FROM exclusions),
       (SELECT count(*) FROM grades),
       (SELECT bit_xor(md5_number(concat_ws(chr(0), doc_id, coalesce(run, ''),
                                            coalesce(passed::VARCHAR, ''), coalesce(verdict, ''),
                                            coalesce(epoch_us(graded_at)::VARCHAR, ''))))
        FROM grades)
"""

#: What every refusal ends with.
AGAIN = "run `sdf report` or `sdf check --run`"


class StaleReport(SdfError):
    """The report.json did not measure the corpus as it is now (exit code 2)."""


def record_state(store: Store) -> dict[str, Any]:
    """``documents`` (rows of the record) and ``record`` (a digest of its parts)."""
    import pyarrow.parquet as pq

    from sdfkit.store.catalog import DOCUMENTS

    digest = hashlib.sha256()
    rows = 0
    for part in store.parts(DOCUMENTS):
        try:
            size = part.stat().st_size
            with pq.ParquetFile(part) as pf:
                n = pf.metadata.num_rows
        except FileNotFoundError:  # set aside meanwhile: left out, as the next open does
            continue
        rows += n
        digest.update(f"{part.name}:{size}:{n}\0".encode())
    return {"documents": rows, "record": digest.hexdigest()[:32]}


def marks_state(store: Store) -> str:
    """A digest of the exclusions and grades (read-only: nothing is written)."""
    with store.reader() as con:
        row = con.execute(MARKS_SQL).fetchone()
    return hashlib.sha256(repr(row).encode()).hexdigest()[:32]


def corpus_state(store: Store) -> dict[str, Any]:
    """The whole fingerprint at once (``sdf report`` takes its two halves apart)."""
    return {**record_state(store), "marks": marks_state(store)}


def check_fresh(report: dict[str, Any], store: Store, path: str | Path) -> None:
    """Raise ``StaleReport`` unless ``report`` measured ``store`` as it is now."""
    then = report.get("corpus_state")
    if not isinstance(then, dict) or "record" not in then:
        raise StaleReport(
            f"{path}: it does not record the corpus state it measured (written by an older "
            f"sdfkit): {AGAIN}"
        )
    here = str(store.root.resolve())
    if report.get("corpus") != here:
        raise StaleReport(
            f"{path} measured the corpus {report.get('corpus')}, not {here} (--corpus or "
            f"$SDF_CORPUS): {AGAIN}"
        )
    now = record_state(store)
    if now["record"] != then["record"]:
        added = now["documents"] - int(then.get("documents") or 0)
        what = "its documents changed"
        if added:
            many = "1 document was" if abs(added) == 1 else f"{abs(added)} documents were"
            what = f"{many} {'added' if added > 0 else 'removed'}"
        raise StaleReport(f"{path} measured {here} before {what}: {AGAIN}")
    if marks_state(store) != then.get("marks"):
        raise StaleReport(
            f"{path} measured {here} before its exclusions or grades changed: {AGAIN}"
        )
