"""Evaluate checkpoints of a training run: what did the model learn, step by step?

This module holds the evaluation's configuration, chat formats, tables, checkpoint choice and
``evaluate`` itself, which runs the parts kept in their own modules: ``questions`` (recall
questions, graders pinned), ``sampling`` (the one sampling loop, shared with ``sdf sample``
and belief depth), ``grading`` (verdicts), ``standins`` (offline answers) and ``curves``
(rates against training step, ``reports/eval.html``).

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

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sdfkit.errors import SdfError
from sdfkit.store.records import fetch_dicts, upsert

if TYPE_CHECKING:  # pragma: no cover
    import duckdb
    import polars as pl

    from sdfkit.store.catalog import Store


class EvalError(SdfError):
    """Evaluation cannot start or continue; the message says why."""


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


def ensure_tables(con: Any) -> None:
    """Create the evaluation's tables on an open catalog connection (if missing)."""
    for stmt in EVAL_TABLES:
        con.execute(stmt)


@contextmanager
def eval_catalog(store: Store) -> Iterator[duckdb.DuckDBPyConnection]:
    """A catalog connection with the evaluation's tables present."""
    from sdfkit.train.run import train_catalog

    with train_catalog(store) as con:
        ensure_tables(con)
        yield con


def query_rows(
    store: Store, sql: str, params: list[Any] | None = None, *, catalog: Any = None
) -> list[dict[str, Any]]:
    """Rows of ``sql`` over the catalog (the evaluation tables present) as dicts; ``catalog``
    opens it another way (e.g. with a stage's own tables ensured too)."""
    with (catalog or eval_catalog)(store) as con:
        return fetch_dicts(con, sql, params)


def insert_rows(
    store: Store, table: str, rows: list[dict[str, Any]], *, catalog: Any = None
) -> None:
    """Upsert ``rows`` into an evaluation table by its primary key (``catalog`` as above)."""
    if rows:
        with (catalog or eval_catalog)(store) as con:
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
        # inf and nan pass a plain comparison (nan: some of them), and reach Tinker unchecked
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise EvalError(
                f"temperature {self.temperature}: give a number of 0 or more",
                settings=("temperature",),
            )
        if self.lda_alpha is not None and not (
            math.isfinite(self.lda_alpha) and self.lda_alpha > 0
        ):
            raise EvalError(
                f"lda_alpha {self.lda_alpha}: give an amplification above 0 (leave it out "
                "for plain sampling)",
                settings=("lda_alpha",),
            )
        if self.lda_top_k < 1:
            raise EvalError("lda_top_k must be at least 1", settings=("lda_top_k",))
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


# ----------------------------------------------------------------------------- targets
def choose_targets(store: Store, train_run: str, cfg: EvalConfig) -> tuple[str, list[Target]]:
    """(base model, targets): the chosen checkpoints with sampler weights, base first."""
    from sdfkit.train.run import train_catalog

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


# ----------------------------------------------------------------------------- metrics
def metrics(store: Store, eval_run: str | None = None) -> pl.DataFrame:
    """Rates per eval run, checkpoint step and concept (``queries/eval_curves.sql``)."""
    from sdfkit.store.sql import named

    with eval_catalog(store):
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

    from sdfkit.evaluate.grading import grade_samples
    from sdfkit.evaluate.questions import ensure_questions, pin_graders, universes_of
    from sdfkit.evaluate.sampling import sample_targets
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
