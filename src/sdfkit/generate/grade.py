"""Model-graded quality filter: a rubric verdict per document, stored and used by selection.

Each document is sent (as a Message Batch, through ``sdfkit.llm.batches``) with the rubric of
``prompts/grade.j2``: is the concept represented accurately, are there no unwanted
implications for how a model should behave, are the required keywords present. The answer
must be a JSON object; ``passed`` is the conjunction of the three checks. Verdicts land in
the ``grades`` table (one row per document and grading run; the ``documents`` view shows the
newest). An answer that is not the JSON asked for is stored with its raw text in ``verdict``
and the reason in ``parse_error``, never dropped. A failing document gets an ``exclusions``
row (source ``grade``) so selection skips it; a later passing verdict lifts it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdfkit.errors import SdfError
from sdfkit.generate.tables import ensure_tables
from sdfkit.generate.universe import Universe
from sdfkit.llm.batches import (
    DEFAULT_POLL_INTERVAL,
    BatchOutcome,
    BatchRequest,
    PriceTable,
    backend_name,
    client_for_store,
    custom_id_for,
    run_requests,
)
from sdfkit.llm.models import model_for
from sdfkit.llm.prompts import prompt_hash, render_template
from sdfkit.store.catalog import Store
from sdfkit.store.records import utc_now

CHECKS = ("concept_accurate", "no_unwanted_implications", "keywords_present")
GRADE_STAGE = "grade"


class GradeError(SdfError):
    """Grading cannot run; the message says why."""


@dataclass
class GradeConfig:
    run: str = "grade"  # the grading run: its requests, ledger rows and grades rows
    model: str | None = None  # None: newest Haiku of the SDK's list (offline: the stand-in)
    max_tokens: int = 512
    max_retries: int = 2
    poll_interval: float = DEFAULT_POLL_INTERVAL
    max_doc_chars: int = 60_000  # longer documents are graded on their head (said in verdict)
    # Required keywords are corpus-level rates; a keyword whose minimum rate is at least
    # this is required of every single document by the rubric.
    keyword_min_rate: float = 0.8


@dataclass
class GradeResult:
    graded: int = 0
    passed: int = 0
    failed: int = 0
    parse_errors: int = 0
    not_answered: int = 0
    model: str = ""

    def summary(self) -> str:
        s = (
            f"graded {self.graded} documents with {self.model}: {self.passed} passed, "
            f"{self.failed} failed (excluded from selection), {self.parse_errors} unparseable "
            "(stored with parse_error)"
        )
        if self.not_answered:
            s += f", {self.not_answered} got no answer (errored/expired after retries)"
        return s


def parse_grade_verdict(text: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """(verdict, None) for a well-formed answer, else (None, why it is not)."""
    if not text or not text.strip():
        return None, "empty answer"
    m = re.search(r"\{.*\}", text, re.S)
    if not m:
        return None, "no JSON object in the answer"
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} at char {exc.pos}"
    if not isinstance(obj, dict):
        return None, "the JSON is not an object"
    missing = [k for k in CHECKS if not isinstance(obj.get(k), bool)]
    if missing:
        return None, "missing or non-boolean: " + ", ".join(missing)
    obj["passed"] = all(obj[k] for k in CHECKS)
    return obj, None


def _universes(store: Store, extra: list[Universe] | None) -> dict[str, Universe]:
    """Universes by id: those given, then the newest stored by generation runs."""
    with store.connect() as con:
        ensure_tables(con)
    out: dict[str, Universe] = {}
    rows = store.query(
        "SELECT universe, universe_json FROM gen_universes ORDER BY stored_at"
    ).to_dicts()
    for r in rows:
        out[r["universe"]] = Universe.model_validate_json(r["universe_json"])
    for u in extra or []:
        out[u.id] = u
    return out


def grade(
    store: Store,
    config: GradeConfig | None = None,
    *,
    where: str | None = None,
    params: list[Any] | None = None,
    limit: int | None = None,
    universes: list[Universe] | None = None,
    client: Any = None,
    backend: str = "auto",
    prices: PriceTable | None = None,
    log: Callable[[str], None] | None = None,
) -> GradeResult:
    """Grade the documents matching ``where`` (SQL over ``documents``) and store verdicts.

    The grading run's model and rubric are the ones it was started with (``sdfkit.llm.pins``)."""
    from sdfkit.llm.batches import batch_option_problem
    from sdfkit.llm.pins import first_model, pin_run

    if limit is not None and limit < 1:  # LIMIT 0 used to mean "all": every document paid for
        raise GradeError(f"limit {limit}: must be at least 1", settings=("limit",))
    condition = _condition(store, where, params)  # a bad --where stops before anything is written
    cfg = config or GradeConfig()
    problem = batch_option_problem(cfg.max_retries, cfg.poll_interval)
    if problem:
        raise GradeError(problem)
    if client is None:
        client = client_for_store(store, backend)
    with store.connect() as con:
        ensure_tables(con)
    pin = pin_run(
        store,
        "grade",
        cfg.run,
        cfg.model,
        lambda: model_for(client, "haiku"),
        ["grade"],
        backend=backend_name(client),
        legacy_model=first_model(
            "SELECT model FROM grades WHERE run = ? AND model IS NOT NULL "
            "ORDER BY graded_at LIMIT 1",
            cfg.run,
        ),
        log=log,
    )
    cfg.model = pin.model
    with pin.active():
        return _grade(store, cfg, where, condition, params, limit, universes, client, prices, log)


def _condition(store: Store, where: str | None, params: list[Any] | None) -> str | None:
    """``where`` as one checked SQL expression (``sdfkit.store.sqlguard``), or None."""
    if where is None:
        return None
    from sdfkit.store.sqlguard import where_expression, where_sql

    condition = where_expression(where, "--where", GradeError)
    if not params:  # with placeholders, binding waits for the values
        with store.connect() as con:
            condition = where_sql(con, where, "--where", error=GradeError)
    return condition


def _grade(
    store: Store,
    cfg: GradeConfig,
    where: str | None,
    condition: str | None,
    params: list[Any] | None,
    limit: int | None,
    universes: list[Universe] | None,
    client: Any,
    prices: PriceTable | None,
    log: Callable[[str], None] | None,
) -> GradeResult:
    known = _universes(store, universes)
    sql = "SELECT doc_id, text, universe, concept, fact FROM documents"
    if condition:
        sql += f" WHERE {condition}"
    sql += " ORDER BY doc_id"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    try:
        docs = store.query(sql, params or None).to_dicts()
    except Exception as exc:
        raise GradeError(f"--where {where!r}: {exc}") from None
    phash = prompt_hash("grade")
    requests = []
    for d in docs:
        u = known.get(d["universe"] or "")
        if u is None:
            u = next((x for x in known.values() if x.concept == d["concept"]), None)
        text = d["text"]
        if len(text) > cfg.max_doc_chars:
            text = text[: cfg.max_doc_chars] + "\n[... truncated for grading]"
        user = render_template(
            "grade",
            universe=u
            or Universe(id="unknown", concept=d["concept"] or "unknown", description="(none)"),
            facts=u.key_facts if u else [],
            fact=d["fact"],
            text=text,
            implications=u.anti_universe.implications if u else [],
            keywords=[
                k.keyword
                for k in (u.required_keywords if u else [])
                if k.min_rate >= cfg.keyword_min_rate
            ],
        )
        body = {
            "model": cfg.model,
            "max_tokens": cfg.max_tokens,
            "messages": [{"role": "user", "content": user}],
        }
        requests.append(
            BatchRequest(
                custom_id=custom_id_for(cfg.run, GRADE_STAGE, body),
                params=body,
                stage=GRADE_STAGE,
                meta={"doc_id": d["doc_id"], "prompt_hash": phash},
            )
        )
    result = GradeResult(model=cfg.model)
    if not requests:
        return result

    def store_verdicts(outcomes: list[BatchOutcome]) -> None:
        _store_verdicts(store, outcomes, cfg.run, phash, result)

    outs = run_requests(
        store,
        requests,
        run=cfg.run,
        stage=GRADE_STAGE,
        client=client,
        max_retries=cfg.max_retries,
        poll_interval=cfg.poll_interval,
        on_chunk=store_verdicts,
        prices=prices,
        log=log,
    )
    # Verdicts answered by an earlier invocation are already stored; count from the table.
    ids = [r.meta["doc_id"] for r in requests]
    with store.connect() as con:
        con.register("_ids", _arrow_ids(ids))
        rows = con.execute(
            "SELECT arg_max(passed, graded_at) AS passed, "
            "arg_max(parse_error, graded_at) AS parse_error FROM grades "
            "WHERE run = ? AND doc_id IN (SELECT doc_id FROM _ids) GROUP BY doc_id",
            [cfg.run],
        ).fetchall()
    result.graded = len(rows)
    result.passed = sum(1 for p, _ in rows if p is True)
    result.failed = sum(1 for p, e in rows if p is False and e is None)
    result.parse_errors = sum(1 for _, e in rows if e is not None)
    result.not_answered = sum(1 for r in requests if _status(outs, r) != "succeeded")
    return result


def _status(outs: dict[str, BatchOutcome], r: BatchRequest) -> str | None:
    o = outs.get(r.custom_id)
    return o.status if o else None


def _arrow_ids(ids: list[str]) -> Any:
    import pyarrow as pa

    return pa.table({"doc_id": pa.array(ids, pa.string())})


def _store_verdicts(
    store: Store, outcomes: list[BatchOutcome], run: str, phash: str, result: GradeResult
) -> None:
    """One transaction per chunk: grades rows replaced, exclusions set or lifted."""
    now = utc_now()
    grades, excl = [], []
    for o in outcomes:
        if o.status != "succeeded":
            continue
        doc_id = o.request.meta["doc_id"]
        verdict, err = parse_grade_verdict(o.text)
        if verdict is None:
            grades.append((doc_id, run, o.model, phash, None, o.text, err, now))
            continue
        grades.append(
            (doc_id, run, o.model, phash, verdict["passed"], json.dumps(verdict), None, now)
        )
        if not verdict["passed"]:
            failed = [k for k in CHECKS if not verdict[k]]
            excl.append((doc_id, "grade: failed " + ", ".join(failed), "grade", now))
    if not grades:
        return
    with store.connect() as con:
        con.execute("BEGIN")
        try:
            for g in grades:
                con.execute("DELETE FROM grades WHERE doc_id = ? AND run = ?", [g[0], run])
                con.execute("DELETE FROM exclusions WHERE doc_id = ? AND source = 'grade'", [g[0]])
            con.executemany("INSERT INTO grades VALUES (?, ?, ?, ?, ?, ?, ?, ?)", grades)
            if excl:
                con.executemany(
                    "INSERT INTO exclusions VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", excl
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
