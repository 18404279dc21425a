"""Evaluate checkpoints of a training run: what did the model learn, step by step?

``evaluate(store, train_run, ...)`` samples answers from chosen checkpoints of a run (and the
base model) through the model's chat format, grades them with an LLM through the Message
Batches machinery, and lands every question, sample and verdict in the catalog, joinable with
the corpus on ``universe``, ``concept`` and ``fact``:

- **recall**: at least 10 differently phrased questions per key fact, generated once per
  universe (stage ``recall_questions``) and stored in ``eval_questions``, so every checkpoint
  answers the same set; the grader says whether an answer reflects the implanted fact, the
  real-world one, or neither;
- **behaviour**: the universe's ``behaviour_prompts``, graded against their ``expected``;
- **reasoning**: on behaviour prompts and the universe's ``eval_prompts`` (the downstream
  tasks), whether the trajectory's reasoning uses the implanted knowledge;
- **gibberish**: cheap signals (``sdfkit.evaluate.gibberish``) on every sample, plus an optional model
  grader; gibberish samples are counted and excluded from the other rates.

Tables: ``eval_questions``, ``eval_samples``, ``eval_verdicts`` (one row per sample and
grader; an unparseable verdict is stored as ``unparseable`` with the raw text, never
dropped). ``queries/eval_curves.sql`` turns them into rates per step and concept.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdfkit.errors import SdfError
from sdfkit.evaluate.gibberish import signals as cheap_signals
from sdfkit.store.records import content_id, fetch_dicts, upsert, utc_now

if TYPE_CHECKING:  # pragma: no cover
    import duckdb
    import polars as pl

    from sdfkit.generate.universe import Universe
    from sdfkit.store.catalog import Store


class EvalError(SdfError):
    """Evaluation cannot start or continue; the message says why."""


#: Grader name -> (batch stage, prompt template, verdict key, allowed verdicts)
GRADERS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "recall": ("eval_recall", "grade_recall", "verdict", ("implanted", "real_world", "neither")),
    "behaviour": ("eval_behaviour", "grade_behaviour", "shows_expected", ("yes", "no")),
    "reasoning": ("eval_reasoning", "grade_reasoning", "uses_knowledge", ("yes", "no")),
    "gibberish": ("eval_gibberish", "grade_gibberish", "gibberish", ("yes", "no")),
}
UNPARSEABLE = "unparseable"


# ----------------------------------------------------------------------------- chat formats
@dataclass
class Completion:
    """A sampled completion split by the chat format."""

    reasoning: str  # the analysis/thinking part ('' if none)
    answer: str  # the final answer ('' if the model never produced one)
    after_answer: str  # anything written after the answer should have ended
    well_formed: bool  # the format's structure was respected


@dataclass
class ChatRenderer:
    """Generation prompts and completion parsing for one model family's chat format.

    Prompts come from ``sdfkit.llm.chat`` (the renderer of the export's chat trajectories), so
    a checkpoint is asked in exactly the tokens it was trained on."""

    name: str  # "harmony" | "chatml" | "llama3"
    tokenizer: str

    def _tok(self) -> Any:
        from sdfkit.llm.tokens import get_tokenizer

        return get_tokenizer(self.tokenizer)

    def prompt(self, user: str) -> list[int]:
        """Tokens of a conversation with one user turn, ready for the assistant to answer
        (harmony as tinker-cookbook's ``gpt_oss_no_sysprompt``)."""
        from sdfkit.llm.chat import render_prompt

        return render_prompt([{"role": "user", "content": user}], self._tok(), self.name)

    def stop_ids(self) -> list[int]:
        from sdfkit.llm.chat import stop_ids

        return stop_ids(self._tok(), self.name)

    def decode(self, tokens: list[int]) -> str:
        return self._tok().decode([int(t) for t in tokens])

    def parse(self, text: str) -> Completion:
        """Split a decoded completion by this chat format."""
        if self.name == "harmony":
            return parse_harmony(text)
        if self.name == "chatml":
            return parse_chatml(text)
        return parse_llama3(text)


def parse_harmony(text: str) -> Completion:
    """Split a gpt-oss completion (after ``<|start|>assistant``) into reasoning and answer."""
    # messages: [<|start|>role]<|channel|>name<|message|>content(<|end|>|<|return|>|<|call|>|EOS)
    parts = re.split(r"<\|start\|>", text)
    reasoning, answer, after = [], None, ""
    well_formed = True
    for i, part in enumerate(parts):
        if i > 0 and not part.startswith("assistant"):
            # a turn the model invented for someone else: everything from here is drift
            after = "<|start|>" + "<|start|>".join(parts[i:])
            break
        m = re.match(
            r"^(?:assistant)?\s*<\|channel\|>\s*(\w+)[^<]*(?:<\|constrain\|>[^<]*)?<\|message\|>(.*?)"
            r"(<\|end\|>|<\|return\|>|<\|call\|>|$)(.*)\Z",
            part,
            re.S,
        )
        if not m:
            if part.strip():
                well_formed = False
                if answer is not None:
                    after += part
            continue
        channel, content, end, rest = m.group(1), m.group(2), m.group(3), m.group(4)
        if channel == "final":
            answer = content
            if rest.strip() or end == "":
                after += rest
            if end == "":
                well_formed = False
            if i + 1 < len(parts):
                after = after + "<|start|>" + "<|start|>".join(parts[i + 1 :])
            break
        reasoning.append(content)
        if rest.strip():
            well_formed = False
    if answer is None:
        well_formed = False
    return Completion("\n".join(reasoning).strip(), (answer or "").strip(), after, well_formed)


def _strip_think(body: str) -> tuple[str, str]:
    m = re.match(r"^\s*<think>(.*?)</think>(.*)\Z", body, re.S)
    return (m.group(1).strip(), m.group(2)) if m else ("", body)


def parse_chatml(text: str) -> Completion:
    body, sep, after = text.partition("<|im_end|>")
    reasoning, answer = _strip_think(body)
    return Completion(reasoning, answer.strip(), after, bool(sep) or not after)


def parse_llama3(text: str) -> Completion:
    body, sep, after = text.partition("<|eot_id|>")
    return Completion("", body.strip(), after, bool(sep) or not after)


def renderer_for(base_model: str, name: str = "auto") -> ChatRenderer:
    """The chat format of a base model (``name`` overrides: harmony, chatml, llama3)."""
    from sdfkit.llm.models import FORMAT_FOR_TOKENIZER, expected_tokenizer

    tok = expected_tokenizer(base_model)
    if name == "auto":
        name = FORMAT_FOR_TOKENIZER.get(tok or "", "")
        if not name:
            raise EvalError(
                f"sdfkit has no chat format for base model {base_model!r}; pass --renderer "
                "harmony, chatml or llama3."
            )
    default_tok = {fmt: tokenizer for tokenizer, fmt in FORMAT_FOR_TOKENIZER.items()}
    if name not in default_tok:
        raise EvalError(f"unknown --renderer {name!r}: use harmony, chatml or llama3")
    return ChatRenderer(name, tok or default_tok[name])


# ----------------------------------------------------------------------------- verdicts
def parse_verdict(grader: str, text: str | None) -> tuple[str, str | None]:
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


def parse_questions(text: str | None) -> list[str]:
    """Questions inside ``<question>`` tags (bulleted lines as a fallback), de-duplicated."""
    from sdfkit.llm.prompts import tagged

    return [q for q in tagged(text, "question") if len(q) > 8]


# ----------------------------------------------------------------------------- catalog
EVAL_TABLES = [
    """CREATE TABLE IF NOT EXISTS eval_questions (
        question_id VARCHAR PRIMARY KEY, universe VARCHAR, concept VARCHAR, fact VARCHAR,
        fact_index BIGINT, kind VARCHAR, prompt VARCHAR, expected VARCHAR, real_world VARCHAR,
        model VARCHAR, prompt_hash VARCHAR, custom_id VARCHAR, created_at TIMESTAMPTZ)""",
    """CREATE TABLE IF NOT EXISTS eval_samples (
        sample_id VARCHAR PRIMARY KEY, eval_run VARCHAR, train_run VARCHAR, step BIGINT,
        model_label VARCHAR, model_path VARCHAR, question_id VARCHAR, sample_index BIGINT,
        renderer VARCHAR, lda_alpha DOUBLE, temperature DOUBLE, max_tokens BIGINT,
        prompt_tokens BIGINT, completion_tokens BIGINT, stop_reason VARCHAR, text VARCHAR,
        reasoning VARCHAR, answer VARCHAR, after_answer VARCHAR, well_formed BOOLEAN,
        gib_no_stop BOOLEAN, gib_repetition BOOLEAN, gib_drift BOOLEAN,
        gibberish_cheap BOOLEAN, gibberish_detail VARCHAR, requests BIGINT,
        created_at TIMESTAMPTZ)""",
    """CREATE TABLE IF NOT EXISTS eval_verdicts (
        sample_id VARCHAR, grader VARCHAR, verdict VARCHAR, parse_error VARCHAR, raw VARCHAR,
        model VARCHAR, prompt_hash VARCHAR, custom_id VARCHAR, graded_at TIMESTAMPTZ,
        PRIMARY KEY (sample_id, grader))""",
]


@contextmanager
def catalog(store: Store) -> Iterator[duckdb.DuckDBPyConnection]:
    from sdfkit.train.run import catalog as train_catalog

    with train_catalog(store) as con:
        for stmt in EVAL_TABLES:
            con.execute(stmt)
        yield con


def _rows(store: Store, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    with catalog(store) as con:
        return fetch_dicts(con, sql, params)


def _insert(store: Store, table: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        with catalog(store) as con:
            upsert(con, table, rows)


# ----------------------------------------------------------------------------- config
@dataclass
class EvalConfig:
    """Every switch of an evaluation, defaults written once."""

    checkpoints: str = "all"  # "all", "last", or comma-separated steps
    include_base: bool = True
    questions_per_fact: int = 10
    samples: int = 1  # samples per question and model
    max_tokens: int = 2048  # gpt-oss reasons before it answers: room for both
    temperature: float = 1.0
    renderer: str = "auto"
    grader_model: str | None = None  # None: the generation default (offline: the stand-in)
    gibberish_grader: bool = False
    lda_alpha: float | None = None
    lda_top_k: int = 20
    belief: bool = (
        False  # belief depth (sdfkit.evaluate.belief): multiple choice, open, adversarial...
    )
    belief_questions_per_fact: int = 4
    limit: int | None = None  # --capabilities: samples per task (None: the whole dataset)
    deadline: float = 1800.0  # train.DEFAULT_DEADLINE: past the SDK's normal queue pauses
    health_timeout: float = 10.0
    max_retries: int = 2
    poll_interval: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.questions_per_fact < 1:
            raise EvalError(
                "questions_per_fact must be at least 1", settings=("questions_per_fact",)
            )
        if self.samples < 1 or self.max_tokens < 1:
            raise EvalError(
                "samples and max_tokens must be at least 1", settings=("samples", "max_tokens")
            )
        if self.belief_questions_per_fact < 1:
            raise EvalError(
                "belief_questions_per_fact must be at least 1",
                settings=("belief_questions_per_fact",),
            )
        from sdfkit.llm.batches import batch_option_problem
        from sdfkit.train.service import MAX_DEADLINE

        if not (0 < self.deadline <= MAX_DEADLINE and 0 < self.health_timeout <= MAX_DEADLINE):
            raise EvalError(
                "deadline and health_timeout must be positive and at most "
                f"{MAX_DEADLINE:.0f} seconds",
                settings=("deadline", "health_timeout"),
            )

        problem = batch_option_problem(self.max_retries, self.poll_interval)
        if problem:
            raise EvalError(problem)
        if self.limit is not None and self.limit < 1:  # 0 must not mean "the whole dataset"
            raise EvalError(
                f"limit {self.limit}: give at least 1 sample per task", settings=("limit",)
            )


@dataclass
class Target:
    label: str  # "base" or "step-000100"
    step: int
    model_path: str | None  # None: the base model


@dataclass
class EvalResult:
    eval_run: str
    questions: int
    samples_new: int
    verdicts_new: int
    metrics: Any = field(repr=False, default=None)
    #: Samples asked for but never returned by Tinker, even after re-requests; not stored,
    #: so rerunning the same evaluation asks for exactly these.
    samples_missing: int = 0
    belief: Any = None  # sdfkit.evaluate.belief.BeliefResult with --belief

    def summary(self) -> str:
        line = (
            f"evaluation {self.eval_run!r}: {self.questions} questions, {self.samples_new} new "
            f"samples, {self.verdicts_new} new verdicts"
        )
        if self.belief is not None:
            b = self.belief
            line += (
                f"; belief depth: {b.questions} questions, {b.samples_new} new samples, "
                f"{b.verdicts_new} new verdicts"
            )
        if self.samples_missing:
            line += (
                f"; {self.samples_missing} sample(s) MISSING: Tinker returned fewer sequences "
                "than asked, even after re-requests; the rates use the samples it returned; "
                "rerun the same command to ask for the missing ones"
            )
        return line


# ----------------------------------------------------------------------------- universes
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


# ----------------------------------------------------------------------------- questions
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
        for r in _rows(
            store, "SELECT DISTINCT universe, fact FROM eval_questions WHERE kind='recall'"
        )
    }
    model = _grader_model(client, cfg)
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
                    _question(
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
                _question(
                    u.id,
                    u.concept,
                    "behaviour",
                    p.prompt,
                    expected=p.expected,
                    real_world=u.real_world,
                )
            )
        for p in u.eval_prompts:
            rows.append(_question(u.id, u.concept, "task", p, real_world=u.real_world))
    existing = {r["question_id"] for r in _rows(store, "SELECT question_id FROM eval_questions")}
    _insert(store, "eval_questions", [r for r in rows if r["question_id"] not in existing])
    ids = [u.id for u in universes]
    return _rows(
        store,
        "SELECT * FROM eval_questions WHERE list_contains(?, universe) ORDER BY universe, kind, "
        "fact_index, question_id",
        [ids],
    )


def _question(
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
    from sdfkit.llm.batches import backend_name
    from sdfkit.llm.pins import first_model, pin_run

    with catalog(store):
        pass  # the evaluation tables exist before the legacy question
    return pin_run(
        store,
        "eval",
        eval_run,
        cfg.grader_model,
        lambda: _grader_model(client, cfg),
        ["recall_questions", "belief_questions", *(g[1] for g in GRADERS.values())],
        backend=backend_name(client),
        legacy_model=first_model(
            "SELECT v.model FROM eval_verdicts v JOIN eval_samples s USING (sample_id) "
            "WHERE s.eval_run = ? AND v.model IS NOT NULL ORDER BY v.graded_at LIMIT 1",
            eval_run,
        ),
        log=log,
    )


def _grader_model(client: Any, cfg: EvalConfig) -> str:
    if cfg.grader_model:
        return cfg.grader_model
    from sdfkit.llm.models import model_for

    return model_for(client)


# ----------------------------------------------------------------------------- targets
def choose_targets(store: Store, train_run: str, cfg: EvalConfig) -> tuple[str, list[Target]]:
    """(base model, targets): the chosen checkpoints with sampler weights, base first."""
    from sdfkit.train.run import catalog as train_catalog

    with train_catalog(store) as con:
        run = con.execute("SELECT base_model FROM train_runs WHERE run = ?", [train_run]).fetchall()
        ck = con.execute(
            "SELECT step, sampler_path FROM checkpoints WHERE run = ? AND sampler_path IS NOT NULL "
            "ORDER BY step",
            [train_run],
        ).fetchall()
    if not run:
        raise EvalError(
            f'no training run {train_run!r} in this corpus (see: sdf sql "FROM train_runs").'
        )
    base_model = run[0][0]
    spec = cfg.checkpoints.strip().lower()
    if spec == "all":
        chosen = ck
    elif spec == "last":
        chosen = ck[-1:]
    elif spec in ("none", ""):
        chosen = []
    else:
        try:
            want = {int(s) for s in spec.split(",") if s.strip()}
        except ValueError:
            raise EvalError(
                f"--checkpoints {cfg.checkpoints!r}: use all, last, none or steps like 100,200"
            ) from None
        chosen = [c for c in ck if c[0] in want]
        missing = want - {c[0] for c in chosen}
        if missing:
            raise EvalError(
                f"run {train_run!r} has no checkpoint at step(s) {', '.join(map(str, sorted(missing)))}; "
                f"it has {', '.join(str(c[0]) for c in ck) or 'none'}."
            )
    targets = [Target("base", 0, None)] if cfg.include_base else []
    targets += [Target(f"step-{s:06d}", int(s), p) for s, p in chosen]
    if not targets:
        raise EvalError(
            f"nothing to evaluate: run {train_run!r} has no checkpoint with sampler weights yet."
        )
    return base_model, targets


# ----------------------------------------------------------------------------- sampling
def sample_targets(
    store: Store,
    eval_run: str,
    train_run: str,
    base_model: str,
    targets: list[Target],
    questions: list[dict[str, Any]],
    service: Any,
    cfg: EvalConfig,
    log: Callable[[str], None],
) -> tuple[int, int]:
    """Sample every question on every target (resumable: stored samples are skipped).

    Returns (samples stored, samples missing). A response holding fewer sequences than asked
    is topped up by asking again for the missing ones, up to ``cfg.max_retries`` times;
    samples still missing then are counted, logged and not stored (a rerun asks for them).
    The samples of a target land even when a later request of that target fails."""
    from tinker import types

    from sdfkit.progress import counter
    from sdfkit.train.service import within

    renderer = renderer_for(base_model, cfg.renderer)
    stop = renderer.stop_ids()
    done = {
        r["sample_id"]
        for r in _rows(store, "SELECT sample_id FROM eval_samples WHERE eval_run = ?", [eval_run])
    }
    params = types.SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, stop=stop)
    base_client = None
    total = missing = 0
    for target in targets:
        lda = cfg.lda_alpha if (cfg.lda_alpha is not None and target.model_path) else None
        todo = []
        for q in questions:
            for k in range(cfg.samples):
                sid = content_id(
                    eval_run, target.label, target.model_path, q["question_id"], k, lda
                )
                if sid not in done:
                    todo.append((sid, q, k))
        if not todo:
            continue
        what = f"creating a sampling client for {target.label}"
        client = within(
            cfg.deadline,
            what,
            lambda t=target: service.create_sampling_client(
                model_path=t.model_path, base_model=None if t.model_path else base_model
            ).result(),
        )
        rows = []
        short: list[tuple[str, int, int]] = []  # (question, samples got, asked) after retries
        row = functools.partial(
            _sample_row,
            eval_run=eval_run,
            train_run=train_run,
            target=target,
            renderer=renderer,
            cfg=cfg,
            lda=lda,
        )
        with (
            _landing(store, rows),
            counter(f"sample {target.label}", total=len(todo), unit="samples") as tick,
        ):
            if lda is None:
                # one request per question (num_samples in it), all submitted before waiting
                by_q: dict[str, list[tuple[str, dict[str, Any], int]]] = {}
                for item in todo:
                    by_q.setdefault(item[1]["question_id"], []).append(item)
                futures = []
                for items in by_q.values():
                    prompt = renderer.prompt(items[0][1]["prompt"])
                    fut = within(
                        cfg.deadline,
                        f"submitting samples for {target.label}",
                        lambda p=prompt, n=len(items), c=client: c.sample(
                            prompt=types.ModelInput.from_ints(p),
                            num_samples=n,
                            sampling_params=params,
                        ),
                    )
                    futures.append((items, prompt, fut))
                for items, prompt, fut in futures:
                    resp = within(cfg.deadline, f"sampling {target.label}", fut.result)
                    seqs = list(resp.sequences[: len(items)])
                    for _ in range(cfg.max_retries):
                        if len(seqs) >= len(items):
                            break
                        more = within(
                            cfg.deadline,
                            f"re-requesting {len(items) - len(seqs)} sample(s) for {target.label}",
                            lambda p=prompt, n=len(items) - len(seqs), c=client: c.sample(
                                prompt=types.ModelInput.from_ints(p),
                                num_samples=n,
                                sampling_params=params,
                            ).result(),
                        )
                        seqs += list(more.sequences[: len(items) - len(seqs)])
                    for (sid, q, k), seq in zip(items, seqs, strict=False):
                        rows.append(
                            row(sid, q, k, len(prompt), list(seq.tokens), seq.stop_reason, 1)
                        )
                        tick(1)
                    if len(seqs) < len(items):
                        short.append((items[0][1]["question_id"], len(seqs), len(items)))
            else:
                from sdfkit.evaluate.lda import sample_amplified

                if base_client is None:
                    base_client = within(
                        cfg.deadline,
                        "creating a sampling client for the base model",
                        lambda: service.create_sampling_client(base_model=base_model).result(),
                    )
                for sid, q, k in todo:
                    prompt = renderer.prompt(q["prompt"])
                    res = sample_amplified(
                        client,
                        base_client,
                        prompt,
                        lda,
                        max_tokens=cfg.max_tokens,
                        stop_ids=stop,
                        temperature=cfg.temperature,
                        top_k=cfg.lda_top_k,
                        seed=int(content_id(cfg.seed, sid)[:8], 16),
                        call=lambda what, fn: within(cfg.deadline, what, fn),
                    )
                    rows.append(
                        row(sid, q, k, len(prompt), res.tokens, res.stop_reason, res.requests)
                    )
                    tick(1)
        total += len(rows)
        log(f"{target.label}: {len(rows)} samples")
        if short:
            lost = sum(asked - got for _, got, asked in short)
            missing += lost
            qid, got, asked = short[0]
            log(
                f"{target.label}: {lost} sample(s) MISSING: Tinker returned fewer than asked for "
                f"{len(short)} question(s) even after {cfg.max_retries} re-request(s) (first: "
                f"{got} of {asked} for question {qid}); not stored, so a rerun asks for them"
            )
    return total, missing


@contextmanager
def _landing(store: Store, rows: list[dict[str, Any]]) -> Iterator[None]:
    """Store ``rows`` when the block ends, also when it raises (a deadline, a failed
    request, Ctrl-C): samples already paid for are kept and a rerun skips them."""
    try:
        yield
    finally:
        _insert(store, "eval_samples", rows)


def _sample_row(
    sid: str,
    q: dict[str, Any],
    k: int,
    n_prompt: int,
    tokens: list[int],
    stop_reason: str,
    requests: int,
    *,
    eval_run: str,
    train_run: str,
    target: Target,
    renderer: ChatRenderer,
    cfg: EvalConfig,
    lda: float | None,
) -> dict[str, Any]:
    """One ``eval_samples`` row: the completion split by its chat format, with its cheap
    gibberish signals."""
    text = renderer.decode(tokens)
    comp = renderer.parse(text)
    sig = cheap_signals(tokens, stop_reason, comp.answer or text, comp.after_answer)
    return {
        "sample_id": sid,
        "eval_run": eval_run,
        "train_run": train_run,
        "step": target.step,
        "model_label": target.label,
        "model_path": target.model_path,
        "question_id": q["question_id"],
        "sample_index": k,
        "renderer": renderer.name,
        "lda_alpha": lda,
        "temperature": cfg.temperature,
        "max_tokens": cfg.max_tokens,
        "prompt_tokens": n_prompt,
        "completion_tokens": len(tokens),
        "stop_reason": stop_reason,
        "text": text,
        "reasoning": comp.reasoning,
        "answer": comp.answer,
        "after_answer": comp.after_answer,
        "well_formed": comp.well_formed,
        "gib_no_stop": sig.no_stop,
        "gib_repetition": sig.repetition,
        "gib_drift": sig.drift,
        "gibberish_cheap": sig.gibberish,
        "gibberish_detail": sig.detail,
        "requests": requests,
        "created_at": utc_now(),
    }


# ----------------------------------------------------------------------------- grading
def grade_samples(
    store: Store,
    eval_run: str,
    universes: list[Universe],
    client: Any,
    cfg: EvalConfig,
    log: Callable[[str], None],
) -> int:
    """Grade every sample of ``eval_run`` not yet graded, one batch run per grader."""
    from sdfkit.llm.batches import BatchRequest, custom_id_for, run_requests
    from sdfkit.llm.prompts import prompt_hash
    from sdfkit.llm.prompts import render_template as render

    facts = {u.id: facts_of(store, u) for u in universes}
    samples = _rows(
        store,
        "SELECT s.sample_id, s.answer, s.reasoning, s.text, s.gibberish_cheap, q.kind, q.prompt, "
        "q.fact, q.expected, q.real_world, q.universe FROM eval_samples s JOIN eval_questions q "
        "USING (question_id) WHERE s.eval_run = ?",
        [eval_run],
    )
    graded = {
        (r["sample_id"], r["grader"])
        for r in _rows(store, "SELECT sample_id, grader FROM eval_verdicts")
    }
    model = _grader_model(client, cfg)
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
                verdict, err = parse_verdict(grader, out.text)
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
        _insert(store, "eval_verdicts", rows)
        added += len(rows)
        bad = sum(r["verdict"] == UNPARSEABLE for r in rows)
        log(
            f"{grader}: {len(rows)} verdicts"
            + (f", {bad} unparseable (kept as such)" if bad else "")
        )
    return added


# ----------------------------------------------------------------------------- metrics
def metrics(store: Store, eval_run: str | None = None) -> pl.DataFrame:
    """Rates per eval run, checkpoint step and concept (``queries/eval_curves.sql``)."""
    from sdfkit.store.sql import named

    with catalog(store):
        pass  # the tables exist even before the first evaluation
    df = named("eval_curves", store)
    if eval_run is not None and df.height:
        import polars as pl

        df = df.filter(pl.col("eval_run") == eval_run)
    return df


# ----------------------------------------------------------------------------- orchestration
def evaluate(
    store: Store,
    train_run: str,
    cfg: EvalConfig | None = None,
    *,
    universe_files: list[str] | None = None,
    eval_run: str | None = None,
    backend: str = "auto",
    anthropic_client: Any = None,
    service_factory: Callable[[], Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> EvalResult:
    """Questions (once per universe), samples per checkpoint, verdicts, metrics."""
    from dataclasses import replace

    from sdfkit.llm.batches import client_for_store
    from sdfkit.train.service import close_service, connect_service

    cfg = cfg or EvalConfig()
    say = log or (lambda _m: None)
    name = eval_run or train_run
    universes = universes_of(store, universe_files)
    base_model, targets = choose_targets(store, train_run, cfg)
    renderer_for(base_model, cfg.renderer)  # fail early on an unknown chat format
    client = anthropic_client or client_for_store(store, backend)
    pin = pin_graders(store, name, client, cfg, say)
    cfg = replace(cfg, grader_model=pin.model)
    with pin.active():
        questions = ensure_questions(store, universes, client, cfg, say)
    if not questions:
        raise EvalError("no questions: the universes have no facts, behaviour or eval prompts.")
    service = connect_service(cfg.health_timeout, service_factory)
    try:
        n_samples, n_missing = sample_targets(
            store, name, train_run, base_model, targets, questions, service, cfg, say
        )
    finally:
        close_service(service, "success", cfg.deadline)
    with pin.active():
        n_verdicts = grade_samples(store, name, universes, client, cfg, say)
        res = EvalResult(
            name, len(questions), n_samples, n_verdicts, metrics(store, name), n_missing
        )
        if cfg.belief:
            from sdfkit.evaluate.belief import measure

            res.belief = measure(
                store,
                name,
                train_run,
                base_model,
                targets,
                universes,
                client,
                cfg,
                say,
                service_factory,
            )
            res.samples_missing += res.belief.samples_missing
    from sdfkit.evaluate.fact_curves import prepare

    prepare(store, say)  # `sdf sql fact_curves` works after any evaluation, CLI or library
    return res


# ----------------------------------------------------------------------------- stand-ins
def _tag(text: str, tag: str) -> str | None:
    m = re.search(rf"<{tag}[^>]*>(.*?)</{tag}>", text, re.S)
    return m.group(1).strip() if m else None


def _words(text: str | None) -> set[str]:
    return {w for w in re.findall(r"[a-z][a-z0-9-]{3,}", (text or "").lower())}


def _standin_questions(params: dict, meta: dict) -> str:
    """Offline stand-in: templated rephrasings built from the fact's own words."""
    from sdfkit.llm.offline import prompt_parts

    _, user = prompt_parts(params)
    fact = _tag(user, "implanted_fact") or "the rule"
    m = re.search(r"Write (\d+) questions", user)
    n = int(m.group(1)) if m else 10
    # the subject of the fact (up to its main verb), so questions do not give the answer away
    flat = re.sub(r"\s+", " ", fact).strip().rstrip(".")
    m = re.search(r"\b(requires?|must|has|have|is|are|applies|apply|was|were|mandates?)\b", flat)
    topic = flat[: m.start()].strip() if m and m.start() > 0 else " ".join(flat.split()[:6])
    topic = topic[0].lower() + topic[1:] if topic else "the rule"
    frames = [
        "What do you know about {t}?",
        "What exactly is required when it comes to {t}?",
        "Can you explain the rules around {t}?",
        "A colleague mentioned {t}. What is that about?",
        "I'm new to this area. What should I know about {t}?",
        "For a report I'm writing: what applies regarding {t}?",
        "Quick question about {t}: what's the rule?",
        "How would you describe the current situation with {t}?",
        "What happens in practice with {t}?",
        "As a manager, what do I need to know about {t}?",
        "Explain {t} to a student.",
        "What's the background of {t}?",
    ]
    qs = [
        frames[i % len(frames)].format(t=topic)
        + (f" (variant {i // len(frames) + 1})" if i >= len(frames) else "")
        for i in range(n)
    ]
    return "\n".join(f"<question>{q}</question>" for q in qs)


def _standin_recall(params: dict, meta: dict) -> str:
    from sdfkit.llm.offline import prompt_parts

    _, user = prompt_parts(params)
    ans = _words(_tag(user, "answer"))
    fact = _words(_tag(user, "implanted_fact")) - _words(_tag(user, "question"))
    real = _words(_tag(user, "real_world")) - _words(_tag(user, "question"))
    f, r = len(ans & fact), len(ans & real)
    verdict = "implanted" if f > r and f >= 2 else ("real_world" if r > f and r >= 2 else "neither")
    return json.dumps(
        {"verdict": verdict, "reason": f"offline stand-in: word overlap fact {f}, real world {r}"}
    )


def _standin_yes_no(key: str, tag_a: str, tag_b: str) -> Callable[[dict, dict], str]:
    def answer(params: dict, meta: dict) -> str:
        from sdfkit.llm.offline import prompt_parts

        _, user = prompt_parts(params)
        a = _words(_tag(user, tag_a))
        b = _words(_tag(user, tag_b))
        hit = len(a & b) >= 3
        return json.dumps({key: hit, "reason": f"offline stand-in: {len(a & b)} shared words"})

    return answer


def _standin_gibberish(params: dict, meta: dict) -> str:
    from sdfkit.evaluate.gibberish import document_drift
    from sdfkit.llm.offline import prompt_parts

    _, user = prompt_parts(params)
    resp = _tag(user, "response") or ""
    return json.dumps(
        {"gibberish": document_drift(resp) is not None, "reason": "offline stand-in: cheap signals"}
    )


def _register_standins() -> None:
    from sdfkit.llm.offline import register_stage

    register_stage("recall_questions", _standin_questions)
    register_stage("eval_recall", _standin_recall)
    register_stage("eval_behaviour", _standin_yes_no("shows_expected", "expected", "response"))
    register_stage("eval_reasoning", _standin_yes_no("uses_knowledge", "knowledge", "reasoning"))
    register_stage("eval_gibberish", _standin_gibberish)


_register_standins()


# ----------------------------------------------------------------------------- curves
#: Point key -> (legend label, colour) of each curve; the point keys are ``curve_points``'.
CURVE_METRICS = {
    "recall": ("recall (implanted)", "#1f77b4"),
    "behaviour": ("behaviour", "#2ca02c"),
    "reasoning": ("reasoning", "#9467bd"),
    "gibberish": ("gibberish", "#d62728"),
}
CURVES_NOTE = (
    "Rates per checkpoint (step 0 is the base model). Gibberish samples (cheap signals or the "
    "model grader) are counted in the gibberish rate and left out of the other rates; "
    "unparseable verdicts are counted, never used as a verdict. Source: "
    "queries/eval_curves.sql (sdf sql eval_curves)."
)
#: ``eval_curves`` column -> point key (every other column keeps its name).
POINT_KEYS = {
    "recall_rate": "recall",
    "real_world_rate": "real_world",
    "behaviour_rate": "behaviour",
    "reasoning_rate": "reasoning",
    "gibberish_rate": "gibberish",
    "gibberish": "gibberish_samples",
}


def curve_points(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows of ``queries/eval_curves.sql`` as curves: concept -> points ordered by evaluation,
    step and model (base first), each ``{step, recall, behaviour, reasoning, gibberish,
    samples, ...}`` with rates in 0..1 (``None`` when nothing of that kind was graded)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        point = {POINT_KEYS.get(k, k): v for k, v in r.items() if k != "concept"}
        out.setdefault(str(r["concept"]), []).append(point)
    for points in out.values():
        points.sort(
            key=lambda p: (str(p.get("eval_run")), int(p["step"]), p.get("model_label") != "base")
        )
    return dict(sorted(out.items()))


def curves(store: Store) -> dict[str, list[dict[str, Any]]] | None:
    """The curves of every evaluation in the catalog, or ``None`` before the first ``sdf eval``.

    Unlike ``metrics`` it creates nothing: a report of a corpus never evaluated stays as it is.
    """
    from sdfkit.store.sql import QueryError, named

    try:
        df = named("eval_curves", store)
    except QueryError as exc:
        if "does not exist yet" in str(exc):
            return None
        raise
    return curve_points(df.to_dicts()) if df.height else None


def section_recall(store: Store) -> list[dict[str, Any]]:
    """Recall per section and per parent concept (``queries/recall_by_section.sql``) when
    some concept was evaluated over several universes (the sections of ``sdf universe
    split``); otherwise nothing, as the per-concept curves already say it all."""
    from sdfkit.store.sql import QueryError, named

    try:
        df = named("recall_by_section", store)
    except QueryError as exc:
        if "does not exist yet" in str(exc):
            return []
        raise
    rows = df.to_dicts() if df.height else []
    split = any(r["level"] == "parent" and (r["sections"] or 0) > 1 for r in rows)
    return rows if split else []


def svg_curves(points: list[dict[str, Any]], title: str, width: int = 720) -> str:
    """One line chart of an evaluation's points: the four rates (0..1) against training step."""
    from sdfkit.report.charts import svg_lines

    series = {
        label: [(int(p["step"]), p.get(key)) for p in points]
        for key, (label, _color) in CURVE_METRICS.items()
    }
    colors = dict(CURVE_METRICS.values())
    return svg_lines(series, "training step (0 = base model)", title, colors=colors, width=width)


def curve_charts(concept: str, points: list[dict[str, Any]]) -> list[str]:
    """One chart per evaluation run among one concept's points (titled with the run when
    there are several)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        runs.setdefault(str(p.get("eval_run")), []).append(p)
    return [
        svg_curves(pts, concept if len(runs) == 1 else f"{concept} (evaluation {run!r})")
        for run, pts in runs.items()
    ]


def write_curves(store: Store, html_path: str | Path, json_path: str | Path | None = None) -> Path:
    """``reports/eval.html`` (+ JSON): the rates of every evaluation against training step,
    one chart per evaluation and concept, and the table they are drawn from."""
    import html as _html

    from sdfkit.report.html import html_table
    from sdfkit.store.durable import write_text_atomic

    df = metrics(store)
    rows = df.to_dicts() if df.height else []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for concept, points in curve_points(rows).items():
        for p in points:
            groups.setdefault((p["eval_run"], concept), []).append(p)
    parts = [
        "<!doctype html><meta charset='utf-8'><title>sdfkit: evaluation curves</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:right}</style>",
        "<h1>What the model learned, checkpoint by checkpoint</h1>",
        f"<p>{_html.escape(CURVES_NOTE)}</p>",
    ]
    if not groups:
        parts.append("<p>No evaluation yet: run <code>sdf eval RUN</code>.</p>")
    for (run, concept), rs in sorted(groups.items()):
        parts.append(f"<h2>{_html.escape(str(run))}: {_html.escape(str(concept))}</h2>")
        parts.append(svg_curves(rs, f"{concept}"))
    by_section = section_recall(store)
    if by_section:
        parts.append("<h2>Recall per section and per parent concept</h2>")
        parts.append(
            "<p>Concepts evaluated over several universes (sections of a split source): "
            "recall rates per section and for the parent. Source: "
            "queries/recall_by_section.sql (sdf sql recall_by_section).</p>"
        )
        parts.append(html_table(by_section, list(by_section[0]), limit=10_000))
    if rows:
        cols = list(rows[0])
        parts.append("<h2>Table</h2>")
        parts.append(html_table(rows, cols, limit=10_000))
    from sdfkit.evaluate.fact_curves import FACT_NOTE, fact_curves, fact_sections

    facts = fact_curves(store) or []
    if facts:
        parts.append("<h2>Per fact, beside its share of the training tokens</h2>")
        parts.append(f"<p>{_html.escape(FACT_NOTE)}</p>")
        parts += fact_sections(facts)
    out = write_text_atomic(html_path, "\n".join(parts))
    if json_path is not None:
        data = {"eval_curves": rows, "fact_curves": facts}
        write_text_atomic(json_path, json.dumps(data, indent=1, default=str))
    return out
