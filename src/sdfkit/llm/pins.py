"""What a run was started with, kept for as long as the run: its model and its prompts.

A default model comes from the installed SDK's model list, and prompt templates are files
anyone may edit; either changing under a run would change every custom_id of the run and
regenerate (and pay for) everything on resume. So the first invocation of a run records
its model and the text of its templates in ``run_pins``; every later invocation of the same
run uses them. Asking an existing run for another model is refused in one line (a new run
name starts fresh); edited templates are reported once and left for a new run.

Kinds of runs: ``generate`` (``sdf generate --run``), ``grade`` (``sdf grade --run``) and
``eval`` (the graders of ``sdf eval``, per evaluation run).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sdfkit.errors import SdfError
from sdfkit.store.catalog import Store
from sdfkit.store.records import utc_now

TABLES = [
    """CREATE TABLE IF NOT EXISTS run_pins (
    kind VARCHAR, run VARCHAR, model VARCHAR, prompts VARCHAR, created_at TIMESTAMPTZ,
    backend VARCHAR)""",
]


def ensure_tables(con: Any) -> None:
    """Create this module's catalog tables (``TABLES``) if missing, on an open connection."""
    for stmt in TABLES:
        con.execute(stmt)


#: How each kind of run is named on the command line, for messages.
RUN_OPTION = {"generate": "--run", "grade": "--run", "eval": "--name"}
MODEL_OPTION = {"generate": "--model", "grade": "--model", "eval": "--grader-model"}


class PinError(SdfError):
    """A run was asked to change what it was started with."""


@dataclass
class Pin:
    kind: str
    run: str
    model: str
    prompts: dict[str, str] = field(default_factory=dict)  # template name -> text
    new: bool = True  # recorded by this invocation
    edited: list[str] = field(default_factory=list)  # templates changed on disk since

    @contextmanager
    def active(self) -> Iterator[None]:
        """Render and hash prompts from the run's recorded templates while inside."""
        from sdfkit.llm.prompts import pinned_prompts

        with pinned_prompts(self.prompts):
            yield


def read_templates(names: Iterable[str]) -> dict[str, str]:
    from sdfkit.llm.prompts import find_prompt

    return {n: find_prompt(n).read_bytes().decode("utf-8") for n in names}


def pin_run(
    store: Store,
    kind: str,
    run: str,
    model: str | None,
    default_model: Callable[[], str],
    prompts: Iterable[str] = (),
    *,
    backend: str | None = None,
    legacy_model: Callable[[Any], str | None] | None = None,
    log: Callable[[str], None] | None = None,
) -> Pin:
    """The run's pin: recorded now for a new run (``model`` or ``default_model()``), read
    back for an existing one. ``legacy_model(con)`` finds the model of a run started before
    pins existed (its templates are pinned as they are now). A run stays with the ``backend``
    that started it ("anthropic" or "offline-standin"): its batches live there."""
    names = list(dict.fromkeys(prompts))
    with store.connect() as con:
        ensure_tables(con)
        row = con.execute(
            "SELECT model, prompts, backend FROM run_pins WHERE kind = ? AND run = ? "
            "ORDER BY created_at LIMIT 1",
            [kind, run],
        ).fetchall()
        old_model = None if row or legacy_model is None else legacy_model(con)
    if row:
        pinned_model, pinned_prompts = row[0][0], json.loads(row[0][1] or "{}")
        _refuse_other_backend(kind, run, row[0][2], backend)
        _refuse_other_model(kind, run, pinned_model, model)
        missing = [n for n in names if n not in pinned_prompts]
        if missing:  # a template this run had no use for before (a new grader, say)
            pinned_prompts |= read_templates(missing)
            _write(store, kind, run, pinned_model, pinned_prompts, row[0][2], replace=True)
        now = read_templates(names)
        edited = [n for n in names if now[n] != pinned_prompts[n]]
        pin = Pin(kind, run, pinned_model, pinned_prompts, new=False, edited=edited)
        if edited and log is not None:
            log(
                f"{kind} run {run!r} keeps the prompts it started with; edited since: "
                + ", ".join(f"{n}.j2" for n in edited)
                + f" (a new {RUN_OPTION.get(kind, '--run')} uses them)"
            )
        return pin
    if old_model is not None:
        _refuse_other_model(kind, run, old_model, model)
    chosen = model or old_model or default_model()
    texts = read_templates(names)
    _write(store, kind, run, chosen, texts, backend)
    return Pin(kind, run, chosen, texts, new=True)


def first_model(sql: str, *params: Any) -> Callable[[Any], str | None]:
    """A ``legacy_model`` reading the first value of ``sql`` (None when no row)."""

    def read(con: Any) -> str | None:
        rows = con.execute(sql, list(params)).fetchall()
        return rows[0][0] if rows else None

    return read


def _refuse_other_model(kind: str, run: str, pinned: str, asked: str | None) -> None:
    if asked and asked != pinned:
        raise PinError(
            f"{kind} run {run!r} was started with model {pinned}: resume it with "
            f"{MODEL_OPTION.get(kind, '--model')} {pinned} (or without the option), or start "
            f"a new run with another {RUN_OPTION.get(kind, '--run')} to use {asked}"
        )


def _refuse_other_backend(kind: str, run: str, pinned: str | None, asked: str | None) -> None:
    if pinned and asked and pinned != asked:
        names = {"offline-standin": "the offline stand-in", "anthropic": "the Anthropic API"}
        raise PinError(
            f"{kind} run {run!r} was started with {names.get(pinned, pinned)}, and its batches "
            f"live there: start a new run with another {RUN_OPTION.get(kind, '--run')} to use "
            f"{names.get(asked, asked)}"
        )


def _write(
    store: Store,
    kind: str,
    run: str,
    model: str,
    prompts: dict[str, str],
    backend: str | None,
    replace: bool = False,
) -> None:
    with store.connect() as con:
        ensure_tables(con)
        con.execute("BEGIN")
        created = utc_now()
        if replace:
            old = con.execute(
                "SELECT min(created_at) FROM run_pins WHERE kind = ? AND run = ?", [kind, run]
            ).fetchall()
            created = old[0][0] or created
            con.execute("DELETE FROM run_pins WHERE kind = ? AND run = ?", [kind, run])
        con.execute(
            "INSERT INTO run_pins VALUES (?, ?, ?, ?, ?, ?)",
            [kind, run, model, json.dumps(prompts, ensure_ascii=False), created, backend],
        )
        con.execute("COMMIT")


def pins(store: Store) -> list[dict[str, Any]]:
    """Every run's pin (model and template names), oldest first."""
    with store.connect() as con:
        ensure_tables(con)
        rows = con.execute(
            "SELECT kind, run, model, prompts, created_at FROM run_pins ORDER BY created_at"
        ).fetchall()
    return [
        {"kind": k, "run": r, "model": m, "prompts": sorted(json.loads(p or "{}")), "created_at": c}
        for k, r, m, p, c in rows
    ]
