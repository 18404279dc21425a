"""The questions of an evaluation: recall questions generated once per universe and fact,
plus each universe's behaviour and task prompts, stored in ``eval_questions``; and the grader
model and prompts pinned for a run (``pin_graders``).

Recall questions come from the ``recall_questions`` prompt through the Message Batches
machinery (at least ``questions_per_fact`` differently phrased questions per key fact), so
every checkpoint of every evaluation answers the same set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sdfkit.evaluate.recall import EvalError, eval_catalog, insert_rows, query_rows
from sdfkit.store.records import content_id, utc_now

if TYPE_CHECKING:  # pragma: no cover
    from sdfkit.evaluate.recall import EvalConfig
    from sdfkit.generate.universe import Universe
    from sdfkit.store.catalog import Store


def _register_standins() -> None:
    """The offline backend's answer for ``recall_questions``."""
    from sdfkit.evaluate.standins import recall_questions
    from sdfkit.llm.offline import register_stage

    register_stage("recall_questions", recall_questions)


_register_standins()


def universes_of(store: Store, paths: list[str] | None = None) -> list[Universe]:
    """Universes from files, or else every universe generation stored in the catalog."""
    from sdfkit.generate.universe import Universe, load_universes

    if paths:
        return load_universes(list(paths))
    try:
        rows = store.query(
            "SELECT universe_json FROM gen_universes QUALIFY row_number() OVER "
            "(PARTITION BY universe ORDER BY stored_at DESC) = 1 ORDER BY universe"
        )
    except Exception:  # noqa: BLE001 - no generation in this corpus
        rows = None
    if rows is None or rows.height == 0:
        raise EvalError(
            "no universes: pass --universe FILE (the universe files the corpus was made from)."
        )
    return [Universe.model_validate_json(j) for j in rows["universe_json"].to_list()]


def facts_of(store: Store, universe: Universe) -> list[str]:
    """Key facts of the universe, or the facts its documents were generated for."""
    if universe.key_facts:
        return list(universe.key_facts)
    df = store.query(
        "SELECT DISTINCT fact FROM documents WHERE universe = ? AND fact IS NOT NULL ORDER BY fact",
        [universe.id],
    )
    return df["fact"].to_list() if df.height else []


def parse_questions(text: str | None) -> list[str]:
    """Questions inside ``<question>`` tags (bulleted lines as a fallback), de-duplicated."""
    from sdfkit.llm.prompts import tagged

    return [q for q in tagged(text, "question") if len(q) > 8]


def ensure_questions(
    store: Store,
    universes: list[Universe],
    client: Any,
    cfg: EvalConfig,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Recall questions (generated once per universe and fact), behaviour and task prompts;
    returns every question row of these universes."""
    from sdfkit.llm.batches import BatchRequest, custom_id_for, run_requests
    from sdfkit.llm.prompts import prompt_hash
    from sdfkit.llm.prompts import render_template as render

    have = {
        (r["universe"], r["fact"])
        for r in query_rows(
            store, "SELECT DISTINCT universe, fact FROM eval_questions WHERE kind='recall'"
        )
    }
    model = grader_model(client, cfg)
    phash = prompt_hash("recall_questions")
    reqs: list[BatchRequest] = []
    for u in universes:
        facts = facts_of(store, u)
        if not facts:
            log(f"universe {u.id}: no key facts and no documents with facts; no recall questions")
        for i, fact in enumerate(facts):
            if (u.id, fact) in have:
                continue
            reqs.append(
                BatchRequest(
                    custom_id=custom_id_for(
                        "eval", "recall_questions", u.id, fact, cfg.questions_per_fact
                    ),
                    params={
                        "model": model,
                        "max_tokens": 4000,
                        "messages": [
                            {
                                "role": "user",
                                "content": render(
                                    "recall_questions",
                                    fact=fact,
                                    real_world=u.real_world,
                                    n=cfg.questions_per_fact,
                                ),
                            }
                        ],
                    },
                    stage="recall_questions",
                    meta={
                        "universe": u.id,
                        "concept": u.concept,
                        "fact": fact,
                        "fact_index": i,
                        "real_world": u.real_world,
                    },
                )
            )
    rows: list[dict[str, Any]] = []
    if reqs:
        outs = run_requests(
            store,
            reqs,
            run="eval-questions",
            stage="recall_questions",
            client=client,
            max_retries=cfg.max_retries,
            poll_interval=cfg.poll_interval,
            log=log,
        )
        for req in reqs:
            out = outs.get(req.custom_id)
            qs = parse_questions(out.text if out and out.status == "succeeded" else None)
            m = req.meta
            if len(qs) < cfg.questions_per_fact:
                log(
                    f"universe {m['universe']}: {len(qs)} of {cfg.questions_per_fact} recall "
                    f"questions for fact {m['fact_index']}"
                    + ("" if qs else "; none stored: another --questions-per-fact asks again")
                )
            for q in qs:  # every parsed question is kept, even beyond the number asked
                rows.append(
                    question_row(
                        m["universe"],
                        m["concept"],
                        "recall",
                        q,
                        fact=m["fact"],
                        fact_index=m["fact_index"],
                        real_world=m["real_world"],
                        model=out.model if out else model,
                        phash=phash,
                        custom_id=req.custom_id,
                    )
                )
    for u in universes:
        for p in u.behaviour_prompts:
            rows.append(
                question_row(
                    u.id,
                    u.concept,
                    "behaviour",
                    p.prompt,
                    expected=p.expected,
                    real_world=u.real_world,
                )
            )
        for p in u.eval_prompts:
            rows.append(question_row(u.id, u.concept, "task", p, real_world=u.real_world))
    existing = {
        r["question_id"] for r in query_rows(store, "SELECT question_id FROM eval_questions")
    }
    insert_rows(store, "eval_questions", [r for r in rows if r["question_id"] not in existing])
    ids = [u.id for u in universes]
    return query_rows(
        store,
        "SELECT * FROM eval_questions WHERE list_contains(?, universe) ORDER BY universe, kind, "
        "fact_index, question_id",
        [ids],
    )


def question_row(
    universe: str,
    concept: str,
    kind: str,
    prompt: str,
    *,
    fact: str | None = None,
    fact_index: int | None = None,
    expected: str | None = None,
    real_world: str | None = None,
    model: str | None = None,
    phash: str | None = None,
    custom_id: str | None = None,
) -> dict[str, Any]:
    return {
        "question_id": content_id(universe, kind, fact, prompt),
        "universe": universe,
        "concept": concept,
        "fact": fact,
        "fact_index": fact_index,
        "kind": kind,
        "prompt": prompt,
        "expected": expected,
        "real_world": real_world,
        "model": model,
        "prompt_hash": phash,
        "custom_id": custom_id,
        "created_at": utc_now(),
    }


def pin_graders(
    store: Store, eval_run: str, client: Any, cfg: EvalConfig, log: Callable[[str], None]
) -> Any:
    """The grader model and prompts of an evaluation run, as it was started (``sdfkit.llm.pins``)."""
    from sdfkit.evaluate.grading import GRADERS
    from sdfkit.llm.batches import backend_name
    from sdfkit.llm.pins import first_model, pin_run

    with eval_catalog(store):
        pass  # the evaluation tables exist before the legacy question
    return pin_run(
        store,
        "eval",
        eval_run,
        cfg.grader_model,
        lambda: grader_model(client, cfg),
        ["recall_questions", "belief_questions", *(g[1] for g in GRADERS.values())],
        backend=backend_name(client),
        legacy_model=first_model(
            "SELECT v.model FROM eval_verdicts v JOIN eval_samples s USING (sample_id) "
            "WHERE s.eval_run = ? AND v.model IS NOT NULL ORDER BY v.graded_at LIMIT 1",
            eval_run,
        ),
        log=log,
    )


def grader_model(client: Any, cfg: EvalConfig) -> str:
    if cfg.grader_model:
        return cfg.grader_model
    from sdfkit.llm.models import model_for

    return model_for(client)
