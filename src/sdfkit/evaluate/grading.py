"""Grading an evaluation's samples: one Message Batches run per grader, verdicts parsed.

Every sample of an evaluation run not graded yet is sent to each grader that applies to its
question's kind (recall, behaviour, reasoning, and optionally gibberish); a sample the cheap
signals call gibberish is graded for gibberish only. Verdicts land in ``eval_verdicts``; an
answer that gives no usable verdict is stored as ``unparseable`` with the raw text, never
dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sdfkit.evaluate.recall import insert_rows, query_rows
from sdfkit.store.records import utc_now

if TYPE_CHECKING:  # pragma: no cover
    from sdfkit.evaluate.recall import EvalConfig
    from sdfkit.generate.universe import Universe
    from sdfkit.store.catalog import Store

#: Grader name -> (batch stage, prompt template, verdict key, allowed verdicts)
GRADERS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "recall": ("eval_recall", "grade_recall", "verdict", ("implanted", "real_world", "neither")),
    "behaviour": ("eval_behaviour", "grade_behaviour", "shows_expected", ("yes", "no")),
    "reasoning": ("eval_reasoning", "grade_reasoning", "uses_knowledge", ("yes", "no")),
    "gibberish": ("eval_gibberish", "grade_gibberish", "gibberish", ("yes", "no")),
}
UNPARSEABLE = "unparseable"


def _register_standins() -> None:
    """The offline backend's answers for the graders' stages."""
    from sdfkit.evaluate import standins
    from sdfkit.llm.offline import register_stage

    register_stage("eval_recall", standins.recall_verdict)
    register_stage("eval_behaviour", standins.yes_no("shows_expected", "expected", "response"))
    register_stage("eval_reasoning", standins.yes_no("uses_knowledge", "knowledge", "reasoning"))
    register_stage("eval_gibberish", standins.gibberish_verdict)


_register_standins()


def parse_eval_verdict(grader: str, text: str | None) -> tuple[str, str | None]:
    """(verdict, parse error) from a grader's answer; malformed answers give
    ``("unparseable", why)`` and are stored as such."""
    _, _, key, allowed = GRADERS[grader]
    if not text or not text.strip():
        return UNPARSEABLE, "empty answer"
    obj = None
    for m in re.finditer(r"\{.*?\}", text, re.S):
        try:
            cand = json.loads(m.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(cand, dict) and key in cand:
            obj = cand
            break
    if obj is None:
        try:
            whole = json.loads(text[text.find("{") : text.rfind("}") + 1])
            obj = whole if isinstance(whole, dict) and key in whole else None
        except (json.JSONDecodeError, ValueError):
            obj = None
    if obj is None:
        return UNPARSEABLE, f"no JSON object with key {key!r}"
    value = obj[key]
    if isinstance(value, bool):
        verdict = "yes" if value else "no"
    elif isinstance(value, str):
        verdict = value.strip().lower().replace("-", "_").replace(" ", "_")
        verdict = {"true": "yes", "false": "no", "realworld": "real_world"}.get(verdict, verdict)
    else:
        return UNPARSEABLE, f"{key!r} is {type(value).__name__}, not one of {allowed}"
    if verdict not in allowed:
        return UNPARSEABLE, f"{key!r} is {value!r}, not one of {', '.join(allowed)}"
    return verdict, None


def grade_samples(
    store: Store,
    eval_run: str,
    universes: list[Universe],
    client: Any,
    cfg: EvalConfig,
    log: Callable[[str], None],
) -> int:
    """Grade every sample of ``eval_run`` not yet graded, one batch run per grader."""
    from sdfkit.evaluate.questions import facts_of, grader_model
    from sdfkit.llm.batches import BatchRequest, custom_id_for, run_requests
    from sdfkit.llm.prompts import prompt_hash
    from sdfkit.llm.prompts import render_template as render

    facts = {u.id: facts_of(store, u) for u in universes}
    samples = query_rows(
        store,
        "SELECT s.sample_id, s.answer, s.reasoning, s.text, s.gibberish_cheap, q.kind, q.prompt, "
        "q.fact, q.expected, q.real_world, q.universe FROM eval_samples s JOIN eval_questions q "
        "USING (question_id) WHERE s.eval_run = ?",
        [eval_run],
    )
    graded = {
        (r["sample_id"], r["grader"])
        for r in query_rows(store, "SELECT sample_id, grader FROM eval_verdicts")
    }
    model = grader_model(client, cfg)
    added = 0
    for grader, (stage, template, _, _) in GRADERS.items():
        if grader == "gibberish" and not cfg.gibberish_grader:
            continue
        phash = prompt_hash(template)
        reqs = []
        for s in samples:
            if (s["sample_id"], grader) in graded:
                continue
            kinds = {
                "recall": ("recall",),
                "behaviour": ("behaviour",),
                "reasoning": ("behaviour", "task"),
                "gibberish": ("recall", "behaviour", "task"),
            }
            if s["kind"] not in kinds[grader]:
                continue
            if grader != "gibberish" and s["gibberish_cheap"]:
                continue  # excluded from the other metrics anyway: do not pay for a verdict
            answer = s["answer"] or s["text"] or ""
            ctx = {
                "question": s["prompt"],
                "prompt": s["prompt"],
                "fact": s["fact"],
                "real_world": s["real_world"],
                "expected": s["expected"],
                "answer": answer,
                "reasoning": s["reasoning"],
                "facts": facts.get(s["universe"], []),
            }
            reqs.append(
                BatchRequest(
                    custom_id=custom_id_for(eval_run, stage, s["sample_id"], phash),
                    params={
                        "model": model,
                        "max_tokens": 400,
                        "messages": [{"role": "user", "content": render(template, **ctx)}],
                    },
                    stage=stage,
                    meta={"sample_id": s["sample_id"], "grader": grader},
                )
            )
        if not reqs:
            continue
        outs = run_requests(
            store,
            reqs,
            run=f"eval-{eval_run}",
            stage=stage,
            client=client,
            max_retries=cfg.max_retries,
            poll_interval=cfg.poll_interval,
            log=log,
        )
        rows = []
        for req in reqs:
            out = outs.get(req.custom_id)
            if out is None or out.status != "succeeded":
                why = (out.error if out else None) or (out.status if out else "no result")
                verdict, err, raw = UNPARSEABLE, f"request {why}", None
            else:
                verdict, err = parse_eval_verdict(grader, out.text)
                raw = out.text
            rows.append(
                {
                    "sample_id": req.meta["sample_id"],
                    "grader": grader,
                    "verdict": verdict,
                    "parse_error": err,
                    "raw": raw,
                    "model": (out.model if out else None) or model,
                    "prompt_hash": phash,
                    "custom_id": req.custom_id,
                    "graded_at": utc_now(),
                }
            )
        insert_rows(store, "eval_verdicts", rows)
        added += len(rows)
        bad = sum(r["verdict"] == UNPARSEABLE for r in rows)
        log(
            f"{grader}: {len(rows)} verdicts"
            + (f", {bad} unparseable (kept as such)" if bad else "")
        )
    return added
