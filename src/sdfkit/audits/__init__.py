"""Corpus audits: each module is one audit with one entry point.

Every audit module is the whole of its audit; it exposes::

    class Config            # typed settings with the defaults written once
    def run(store, config=None, engine=None) -> AuditResult
    JSON_KEY, TITLE         # its key in report.json, its section's heading
    COMMAND                 # how `sdf audit <name>` looks (a ``Command``)
    def section(figures) -> str          # its HTML section of the report
    class Gates             # its thresholds of `sdf check` (the `check:` keys), with defaults
    def verdicts(report, thresholds) -> list[Verdict]   # those gates against its figures
    def summary(result) -> list[str]     # the lines `sdf audit <name>` prints

and may provide ``prepare(store, config)``/``release()`` (slow work started before the first
audit of a report) and ``finish(store, result, config)`` (figures drawn from the tables other
audits store, completed once every audit of a report ran).

``sdf report``, ``sdf check`` and ``sdf audit`` loop over ``AUDITS``: adding an audit is one
module and one line there. An audit that writes exclusions is also one line of
``EXCLUDERS``; a report runs those first.

An audit's ``where`` (a condition on ``documents``) is checked before any audit runs
(``check_where``) and evaluated once as ``sdf sql`` runs queries, read-only and without
DuckDB extensions (``where_ids``); one that selects no document is refused.

Per-document work (signatures, name candidates, embeddings, keyword hits) runs as
``sdfkit.engine.local.Stage`` objects, cached by content hash in the store; corpus-wide steps
(counting, clustering, aggregation) run in DuckDB/polars over those results.
``save(store, result)`` keeps each table in the catalog as ``audit_<name>_<table>`` so
users can join findings with documents in ``sdf sql``, and runs the result's other catalog
writes (``result.writes``, e.g. the dedup audit's exclusions) in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

    from sdfkit.store.catalog import Store

#: Audit name -> module; also the order of the report's sections.
AUDITS: dict[str, str] = {
    "shape": "sdfkit.audits.shape",
    "ngrams": "sdfkit.audits.ngrams",
    "names": "sdfkit.audits.names",
    "dedup": "sdfkit.audits.dedup",
    "diversity": "sdfkit.audits.diversity",
    "keywords": "sdfkit.audits.keywords",
    # last: it proposes bans from the names and n-gram tables the audits above just stored
    "anti_universe": "sdfkit.audits.anti_universe",
}

#: Audits that write exclusions -> the ``exclusions.source`` they write, in the order their
#: exclusions are derived. ``sdf report`` runs them before every other audit (``run_order``),
#: so an audit whose ``where`` reads ``excluded`` sees the exclusions this very report
#: derives: a second report on an unchanged corpus gives the same figures as the first.
EXCLUDERS: dict[str, str] = {"dedup": "dedup", "anti_universe": "anti_universe"}


def _register_table_makers() -> None:
    """Tell the store which command makes each audit's tables (``audit_<name>_*``)."""
    from sdfkit.store.sql import register_table_maker

    for name in AUDITS:
        register_table_maker(f"audit_{name}_", f"sdf audit {name}` or `sdf report")


_register_table_makers()

#: The five parts every audit module provides besides ``Config`` and ``run`` (``Gates`` may be
#: None for an audit with no threshold, and ``verdicts`` then returns nothing).
PARTS = ("JSON_KEY", "TITLE", "COMMAND", "section", "Gates", "verdicts", "summary")


@dataclass
class CatalogWrite:
    """A catalog statement an audit's findings entail beyond its own tables (the dedup
    audit's exclusions): ``save`` runs it inside its one transaction, so it lands together
    with the tables that explain it, or not at all.

    ``relations`` (name -> Arrow table or polars DataFrame) are registered on the connection
    for ``sql`` to read, e.g. ``INSERT INTO exclusions SELECT ... FROM <name>``.
    """

    sql: str
    params: list[Any] = field(default_factory=list)
    relations: dict[str, Any] = field(default_factory=dict)


@dataclass
class AuditResult:
    """What an audit found.

    ``figures`` is JSON-able and becomes ``report.json[<the module's JSON_KEY>]``; ``tables`` are the
    detailed results (saved to the catalog); ``flags`` are findings a person should read,
    one sentence each; ``notes`` say how the figures were computed; ``writes`` are further
    catalog statements ``save`` runs in the same transaction as the tables.
    """

    name: str
    figures: dict[str, Any]
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    writes: list[CatalogWrite] = field(default_factory=list)
    #: Catalogs (``sdf.duckdb`` paths) this very result was saved in: saving it there again
    #: is a no-op (an audit whose ``run`` saves, like dedup's, is then saved once by
    #: ``sdf report``, not twice).
    saved_in: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    #: ``created_at`` of its ``audit_runs`` row, once saved (``save_figures`` rewrites it).
    saved_at: datetime | None = field(default=None, init=False, repr=False, compare=False)


#: One row per saved audit result; ``figures`` and ``flags`` are JSON text.
AUDIT_RUNS_TABLE = """CREATE TABLE IF NOT EXISTS audit_runs (
    audit VARCHAR, figures VARCHAR, flags VARCHAR, seconds DOUBLE, created_at TIMESTAMPTZ)"""


def ensure_tables(con: Any) -> None:
    """Create the audits' own catalog tables (``audit_runs``) on ``con`` if missing; the
    per-audit ``audit_<name>_<table>`` tables are made by ``save``."""
    con.execute(AUDIT_RUNS_TABLE)


def save(store: Store, result: AuditResult) -> None:
    """Store the result's tables as ``audit_<name>_<table>``, run its ``writes`` and add its
    figures to ``audit_runs``.

    All of it is one catalog transaction: a crash or Ctrl-C part-way leaves the previous
    result of this audit whole (its tables, the writes' targets and its ``audit_runs``
    row), never new tables beside old ones. Saving the same result object again into the
    same catalog does nothing.
    """
    import polars as pl

    from sdfkit.store.catalog import _ident

    catalog_key = str(store.db_path.resolve())
    if catalog_key in result.saved_in:
        return
    incoming: dict[str, tuple[str, Any]] = {}  # registered view -> (table, data)
    for i, (tname, df) in enumerate(result.tables.items()):
        target = _ident(f"audit_{result.name}_{tname}")
        if isinstance(df, list):
            df = pl.DataFrame(df)
        incoming[f"_audit_incoming_{i}"] = (
            target,
            df.to_arrow() if isinstance(df, pl.DataFrame) else df,
        )
    run_row = [
        result.name,
        json.dumps(result.figures, default=str),
        json.dumps(result.flags),
        float(result.seconds),
        datetime.now(timezone.utc),
    ]
    relations: dict[str, Any] = {}  # registered for the writes
    for write in result.writes:
        for rname, data in write.relations.items():
            relations[rname] = data.to_arrow() if isinstance(data, pl.DataFrame) else data
    with store.connect() as con:
        try:
            for view, (_, data) in incoming.items():
                con.register(view, data)
            for rname, data in relations.items():
                con.register(rname, data)
            con.execute("BEGIN")
            try:
                for view, (target, _) in incoming.items():
                    con.execute(f"CREATE OR REPLACE TABLE {target} AS FROM {view}")
                for write in result.writes:
                    con.execute(write.sql, write.params)
                ensure_tables(con)
                con.execute(
                    "INSERT INTO audit_runs (audit, figures, flags, seconds, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    run_row,
                )
                con.execute("COMMIT")
            except BaseException:  # KeyboardInterrupt too: nothing of this save may stay
                _rollback(con)
                raise
        finally:
            for view in [*incoming, *relations]:
                con.unregister(view)
    result.saved_in.add(catalog_key)
    result.saved_at = run_row[4]


def save_figures(store: Store, result: AuditResult) -> None:
    """Write ``result.figures`` again into its ``audit_runs`` row (``save`` made it), after a
    module's ``finish`` completed them in ``sdf report``."""
    if result.saved_at is None:
        return
    with store.connect() as con:
        con.execute(
            "UPDATE audit_runs SET figures = ? WHERE audit = ? AND created_at = ?",
            [json.dumps(result.figures, default=str), result.name, result.saved_at],
        )


def _rollback(con: Any) -> None:
    """Roll back the open transaction; if DuckDB already ended it (a failed COMMIT), closing
    the connection discards what is left, and the original error is the one to report."""
    import duckdb

    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


def run_order(names: Iterable[str]) -> list[str]:
    """The order ``sdf report`` runs these audits in: those that write exclusions
    (``EXCLUDERS``) first, then the others, each group in registry order."""
    chosen = set(names)
    first = [n for n in EXCLUDERS if n in chosen]
    return first + [n for n in AUDITS if n in chosen and n not in EXCLUDERS]


def unseen_sources(name: str) -> tuple[str, ...]:
    """The exclusion sources an audit's ``where`` does not see (through ``excluded``,
    ``exclusion_reason`` or ``exclusions``): its own, which it is deriving again, and those of
    the excluders after it, which are derived from its result. Seeing them, dedup with
    ``where: NOT excluded`` would skip the copies it excluded last time and release them the
    time after."""
    order = list(EXCLUDERS)
    return tuple(EXCLUDERS[n] for n in order[order.index(name) :]) if name in order else ()


def where_option(name: str, source: str | None) -> str:
    """How errors name an audit's ``where``: ``source`` (the file and key, or the option),
    else the key."""
    return source or f"audits.{name}.where"


@contextmanager
def _where_reader(store: Store, name: str) -> Iterator[Any]:
    """The connection an audit's ``where`` is evaluated on: ``sdf sql``'s (``Store.reader``:
    the catalog attached read-only, no extension installed or loaded, configuration locked),
    with ``documents`` and ``exclusions`` leaving out the sources the audit does not see
    (``unseen_sources``), as temporary views that shadow the catalog's."""
    from sdfkit.store.catalog import _sql_str
    from sdfkit.store.schema import DOCUMENTS_SELECT

    unseen = unseen_sources(name)
    with store.reader() as con:
        if unseen:
            sources = ", ".join(_sql_str(s) for s in unseen)
            con.execute(
                "CREATE TEMP VIEW exclusions AS SELECT * FROM corpus.main.exclusions "
                f"WHERE source NOT IN ({sources})"
            )
            con.execute(f"CREATE TEMP VIEW documents AS {DOCUMENTS_SELECT}")
        yield con


def check_where(store: Store, name: str, where: str | None, source: str | None = None) -> None:
    """Refuse an audit's ``where`` before any audit runs: empty, not exactly one SQL
    expression, or not a condition DuckDB can bind over ``documents`` (an unknown column, a
    file it cannot read, a function it does not have). One line naming ``source``."""
    if where is None:
        return
    from sdfkit.store.sqlguard import check_boolean, where_expression

    option = where_option(name, source)
    expression = where_expression(where, option)  # before anything opens
    with _where_reader(store, name) as con:
        check_boolean(con, expression, option, where)


def where_ids(
    store: Store, name: str, where: str | None, source: str | None = None
) -> set[str] | None:
    """The doc ids an audit's ``where`` selects (None without one: every document).

    Evaluated once, up front, as ``sdf sql`` runs queries (``_where_reader``); the audit then
    reads its documents by these ids. A condition that selects no document is refused: the
    audit would replace its stored tables (the last full results) with empty ones."""
    if where is None:
        return None
    import duckdb

    from sdfkit.errors import SdfError
    from sdfkit.store.sqlguard import _first_line, check_boolean, where_expression

    option = where_option(name, source)
    expression = where_expression(where, option)
    with _where_reader(store, name) as con:
        check_boolean(con, expression, option, where)
        try:
            rows = con.execute(
                f"SELECT DISTINCT doc_id FROM documents WHERE {expression}"
            ).fetchall()
        except duckdb.Error as exc:
            raise SdfError(f"{option} {where!r}: failed on documents: {_first_line(exc)}") from None
    ids = {r[0] for r in rows}
    if not ids:
        raise SdfError(
            f"{option} {where!r}: selects no documents; the stored audit_{name}_* tables are "
            "left as they were"
        )
    return ids


def get(name: str) -> Any:
    """The module of an audit by name."""
    import importlib

    if name not in AUDITS:
        from sdfkit.errors import SdfError

        raise SdfError(f"unknown audit {name!r}: one of {', '.join(AUDITS)}")
    return importlib.import_module(AUDITS[name])


def module(name: str) -> Any:
    """The module of a registered audit, for its report section, verdicts and command
    (``get`` is the one to run it; tests replace that one with stand-ins)."""
    import importlib

    return importlib.import_module(AUDITS[name])


def json_key(name: str) -> str:
    """The key of an audit's figures in report.json."""
    return str(getattr(module(name), "JSON_KEY", name))


@dataclass(frozen=True)
class Command:
    """How ``sdf audit <name>`` looks, beyond the options every audit takes (``--corpus``,
    ``--config``, ``--set``).

    ``options``: Config fields that get a flag of their own (field -> help; the flag is the
    field with dashes, e.g. ``top_k`` -> ``--top-k``; a tuple field is a repeatable flag).
    ``engine``: it runs per-document stages, so it takes ``--engine`` and ``--ray-address``.
    ``universe``: it reads universe files (``--universe FILE``, repeatable).
    ``flags``: further on/off flags (name -> help) handed to the module's
    ``after_command(store, report_config, flags) -> list[str]`` (lines to print), which runs
    after the audit; its ``check_flags(flags)`` (optional) runs before it.
    """

    help: str
    options: dict[str, str] = field(default_factory=dict)
    engine: bool = False
    universe: bool = False
    flags: dict[str, str] = field(default_factory=dict)


def figure_lines(result: AuditResult) -> list[str]:
    """``key: value`` for each plain figure of a result: a summary for audits whose figures
    speak for themselves."""
    return [
        f"{key}: {value}"
        for key, value in result.figures.items()
        if isinstance(value, (int, float, str))
    ]
