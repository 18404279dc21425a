"""Checks on SQL that comes from users, made by DuckDB's own parser before anything runs.

- ``check_read_query``: ``sdf sql`` runs exactly one query (``SELECT``, ``FROM``, ``WITH``,
  ``DESCRIBE``, ``SUMMARIZE``, ``EXPLAIN``...); every other statement is refused in one line.
  The connection it runs on is read-only besides (``Store.reader``), so this is the first of
  two locks, and the one with the clear message.
- ``where_expression``: an option taking a SQL condition (``--where`` of select, exclude,
  grade, the audits' ``where``) holds exactly one expression. It is parsed as the only item of
  a ``SELECT`` list and the parsed tree is written back as SQL, so what runs is what the parser
  saw: ``1=1) ; DROP TABLE grades; --`` is a parse error, never two statements.
- ``check_boolean``: the expression binds against ``documents`` and is a boolean.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sdfkit.errors import SdfError

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

#: Statement kinds ``sdf sql`` runs; DESCRIBE/SHOW/SUMMARIZE/VALUES/FROM parse as SELECT.
READ_STATEMENTS = frozenset({"SELECT", "EXPLAIN"})


class SqlInputError(SdfError, ValueError):
    """User SQL that sdfkit will not run; the message names the option or command."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    for prefix in ("Parser Error: ", "Invalid Input Error: "):
        first = first.replace(prefix, "")
    if "requires the extension" in first:  # e.g. httpfs for a URL: never installed here
        first += " (sdfkit neither installs nor loads DuckDB extensions: no network access)"
    return first


def check_read_query(sql: str, what: str = "sdf sql") -> str:
    """``sql`` if it is one read-only statement, else a ``SqlInputError`` naming ``what``."""
    import duckdb

    if not sql.strip():
        raise SqlInputError(f"{what}: the query is empty; give SQL, a .sql file or a named query")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlInputError(f"{what}: {_first_line(exc)}") from None
    if not statements:
        raise SqlInputError(f"{what}: the query holds no statement (only comments?)")
    if len(statements) > 1:
        raise SqlInputError(
            f"{what}: {len(statements)} statements given; it runs one query at a time"
        )
    kind = statements[0].type.name
    if kind == "EXPLAIN":
        # EXPLAIN ANALYZE runs the statement it wraps: EXPLAIN ANALYZE COPY ... TO wrote over
        # the corpus's own parts. Only a SELECT may be explained.
        kind = _explained_kind(statements[0].query, what)
    if kind not in READ_STATEMENTS:
        raise SqlInputError(
            f"{what} only reads: a {kind} statement is refused (the corpus is changed only by "
            "sdf commands: ingest, exclude, select, grade, audit...)"
        )
    return sql


def _explained_kind(query: str, what: str) -> str:
    """The kind of the statement an EXPLAIN [ANALYZE] [(options)] wraps ("SELECT"...)."""
    import duckdb

    tokens = [(pos, kind.name) for pos, kind in duckdb.tokenize(query) if kind.name != "comment"]
    ends = [pos for pos, _ in tokens[1:]] + [len(query)]
    words = [
        (pos, query[pos:end].strip(), kind) for (pos, kind), end in zip(tokens, ends, strict=True)
    ]
    i = 1  # past EXPLAIN
    if i < len(words) and words[i][1].upper() in ("ANALYZE", "ANALYSE"):
        i += 1
    if i < len(words) and words[i][1] == "(":  # options: EXPLAIN (FORMAT json) ...
        depth = 0
        while i < len(words):
            depth += words[i][1].count("(") - words[i][1].count(")")
            i += 1
            if depth <= 0:
                break
    inner = query[words[i][0] :] if i < len(words) else ""
    try:
        wrapped = duckdb.extract_statements(inner)
    except duckdb.Error:
        wrapped = []
    if len(wrapped) != 1:
        raise SqlInputError(f"{what}: EXPLAIN must wrap one query: {query.strip()[:80]!r}")
    kind = wrapped[0].type.name
    return "SELECT" if kind == "SELECT" else f"{kind} (explained)"


def where_expression(text: str, option: str, error: type[SdfError] = SqlInputError) -> str:
    """The one SQL expression of ``text``, re-written by DuckDB's parser, in parentheses.

    ``option`` (e.g. ``--where``) names the source in the one-line error for anything else:
    a syntax error, several expressions, an alias, or a whole statement."""
    import duckdb

    from sdfkit.store.catalog import CONNECTION_CONFIG

    if not text or not text.strip():
        raise error(f'{option}: empty; give one SQL condition, e.g. "n_tokens > 800"')
    try:
        count = len(duckdb.extract_statements("SELECT " + text))
    except duckdb.Error as exc:
        raise error(f"{option} {text!r}: not one SQL expression ({_first_line(exc)})") from None
    if count != 1:
        raise error(f"{option} {text!r}: holds {count} SQL statements; give exactly one condition")
    con = duckdb.connect(config=dict(CONNECTION_CONFIG))
    try:
        raw = con.execute("SELECT json_serialize_sql(?)", ["SELECT " + text]).fetchone()
        tree = json.loads(raw[0]) if raw else {"error": True, "error_message": "no result"}
        if tree.get("error"):
            raise error(f"{option} {text!r}: not one SQL expression ({tree.get('error_message')})")
        statements = tree["statements"]
        node = statements[0]["node"] if len(statements) == 1 else {}
        items = node.get("select_list", [])
        single = (
            len(statements) == 1
            and node.get("type") == "SELECT_NODE"
            and len(items) == 1
            and not items[0].get("alias")
            and items[0].get("class") not in ("STAR", "COLUMNS")
            and node.get("from_table", {}).get("type") == "EMPTY"
            and not node.get("where_clause")
            and not node.get("group_expressions")
            and not node.get("having")
            and not node.get("qualify")
            and not node.get("modifiers")
            and not node.get("cte_map", {}).get("map")
        )
        if not single:
            raise error(
                f"{option} {text!r}: must be exactly one SQL expression (a condition such as "
                "\"concept = 'x' AND n_tokens > 800\"), not a list or a statement"
            )
        back = con.execute(
            "SELECT json_deserialize_sql(?)",
            [json.dumps({"error": False, "statements": statements})],
        ).fetchone()
    finally:
        con.close()
    sql = back[0] if back else ""
    if not sql.startswith("SELECT "):  # pragma: no cover - DuckDB always writes SELECT first
        raise error(f"{option} {text!r}: could not be checked")
    return "(" + sql[len("SELECT ") :] + ")"


def check_boolean(
    con: duckdb.DuckDBPyConnection,
    expression: str,
    option: str,
    text: str,
    table: str = "documents",
    error: type[SdfError] = SqlInputError,
) -> None:
    """Bind ``expression`` (from ``where_expression``) over ``table``: it must be a boolean."""
    import duckdb

    try:
        rows = con.execute(f"DESCRIBE SELECT {expression} AS cond FROM {table}").fetchall()
    except duckdb.Error as exc:
        raise error(
            f"{option} {text!r}: not a valid condition on {table}: {_first_line(exc)}"
        ) from None
    kind = str(rows[0][1]) if rows else "?"
    if kind not in ("BOOLEAN", '"NULL"', "NULL"):
        raise error(
            f"{option} {text!r}: has type {kind}, not a condition (true/false) over {table}"
        )


def where_sql(
    con: duckdb.DuckDBPyConnection,
    text: str,
    option: str,
    table: str = "documents",
    error: type[SdfError] = SqlInputError,
) -> str:
    """``where_expression`` + ``check_boolean`` in one call: the checked condition's SQL."""
    expression = where_expression(text, option, error)
    check_boolean(con, expression, option, text, table, error)
    return expression
