"""Sampling checkpoints: the one sampling loop (``sample_requests``) that ``sdf eval``
(recall: ``sample_targets``; belief depth) and ``sdf sample`` share, and talking to a
checkpoint: a file of prompts in batch (``sdf sample``) or a chat (``sdf chat``), through the
same chat renderer and stop tokens as ``sdf eval``.

The seed write-up's advice is to "simply talk to" the trained model. What a researcher saw
should not vanish with the terminal: ``sample_prompts`` lands every answer in the catalog
table ``samples`` (one row per prompt, model and sample index, with the completion split into
reasoning and answer and its cheap gibberish signals), so answers can be queried and compared
across checkpoints in SQL. Rows are keyed by a hash of (run, model, prompt, index, sampling
settings): rerunning the same command asks only for what is missing, and ``--n 5`` after
``--n 3`` asks for two more per prompt.

``ChatSession`` keeps one conversation with one model; earlier assistant turns go back to the
model as their final answers only (the reasoning channel is shown, never replayed), as
gpt-oss expects.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdfkit.errors import SdfError
from sdfkit.store.records import content_id, utc_now

if TYPE_CHECKING:  # pragma: no cover
    from sdfkit.evaluate.recall import ChatRenderer, Completion, EvalConfig, Target
    from sdfkit.store.catalog import Store


class SampleError(SdfError, ValueError):
    """A prompts file or a sampling request is unusable; the message names what and where."""


SAMPLES_TABLE = """CREATE TABLE IF NOT EXISTS samples (
    sample_id VARCHAR PRIMARY KEY, train_run VARCHAR, step BIGINT, model_label VARCHAR,
    model_path VARCHAR, base_model VARCHAR, source VARCHAR, prompt_id VARCHAR,
    prompt_key VARCHAR, messages VARCHAR, prompt VARCHAR, sample_index BIGINT,
    renderer VARCHAR, temperature DOUBLE, max_tokens BIGINT, prompt_tokens BIGINT,
    completion_tokens BIGINT, stop_reason VARCHAR, text VARCHAR, reasoning VARCHAR,
    answer VARCHAR, after_answer VARCHAR, well_formed BOOLEAN, gibberish_cheap BOOLEAN,
    gibberish_detail VARCHAR, created_at TIMESTAMPTZ)"""


@dataclass
class SampleConfig:
    """Every switch of ``sdf sample`` / ``sdf chat``, defaults written once."""

    n: int = 1  # samples per prompt and model
    max_tokens: int = 2048
    temperature: float = 1.0
    renderer: str = "auto"
    system: str | None = None  # a system message for prompts that carry none
    deadline: float = 600.0
    health_timeout: float = 10.0
    max_retries: int = 2

    def __post_init__(self) -> None:
        if self.n < 1:
            raise SampleError("n must be at least 1", settings=("n",))
        if self.max_tokens < 1:
            raise SampleError("max_tokens must be at least 1", settings=("max_tokens",))
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise SampleError(
                f"temperature {self.temperature}: give a number of 0 or more",
                settings=("temperature",),
            )
        from sdfkit.train.service import MAX_DEADLINE

        for name, v in (("deadline", self.deadline), ("health_timeout", self.health_timeout)):
            if not math.isfinite(v) or not 0 < v <= MAX_DEADLINE:
                raise SampleError(
                    f"{name} {v}: give a number of seconds above 0 and at most {MAX_DEADLINE:.0f}",
                    settings=(name,),
                )
        if self.max_retries < 0:
            raise SampleError(
                f"max_retries {self.max_retries}: give 0 or more", settings=("max_retries",)
            )


@dataclass
class PromptItem:
    """One conversation to answer: messages ending with the user's turn."""

    key: str  # the file's ``id`` if given, else "file:line"
    messages: list[dict[str, str]]
    where: str  # "file:line"


# ----------------------------------------------------------------------------- prompts file
def check_messages(obj: Any, where: str) -> list[dict[str, str]]:
    """Messages of a conversation awaiting the assistant (system/developer first, then user
    and assistant alternating, ending with user), or ``SampleError`` naming the place."""
    if not isinstance(obj, list) or not obj:
        raise SampleError(f"{where}: field 'messages' must be a non-empty list")
    out: list[dict[str, str]] = []
    expect, started = "user", False
    for i, m in enumerate(obj):
        f = f"{where}: messages[{i}]"
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise SampleError(f"{f}: expected an object with exactly role and content")
        role, content = m["role"], m["content"]
        if not isinstance(content, str) or not content.strip():
            raise SampleError(f"{f}: field 'content' must be a non-empty string")
        if role in ("system", "developer"):
            if started:
                raise SampleError(f"{f}: role {role!r} after the conversation started")
        elif role in ("user", "assistant"):
            if role != expect:
                raise SampleError(f"{f}: role {role!r} where {expect!r} was expected")
            started = True
            expect = "assistant" if role == "user" else "user"
        else:
            raise SampleError(f"{f}: unknown role {role!r} (system, developer, user, assistant)")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise SampleError(f"{where}: the last message must be the user's (the model answers it)")
    return out


def read_prompts(path: str | Path, system: str | None = None) -> list[PromptItem]:
    """Prompts of a file: JSONL (``.jsonl``) lines ``{"prompt": "..."}`` or
    ``{"messages": [...]}``, each with an optional ``"id"``; any other file holds one prompt
    per non-blank line. ``system`` is prepended to conversations that have no system message."""
    p = Path(path)
    if p.is_dir():
        raise SampleError(f"--prompts {p}: is a directory, not a file of prompts")
    if not p.is_file():
        raise SampleError(f"--prompts {p}: no such file")
    try:
        items = _parse_prompts(p)
    except OSError as exc:  # unreadable: one line, not a traceback
        raise SampleError(f"--prompts {p}: cannot be read: {exc.strerror or exc}") from None
    if not items:
        raise SampleError(f"--prompts {p}: no prompts in the file")
    keys: dict[str, str] = {}
    for it in items:
        if it.key in keys:
            raise SampleError(f"{it.where}: id {it.key!r} already used at {keys[it.key]}")
        keys[it.key] = it.where
    if system:
        for it in items:
            if it.messages[0]["role"] not in ("system", "developer"):
                it.messages.insert(0, {"role": "system", "content": system})
    return items


def _parse_prompts(p: Path) -> list[PromptItem]:
    """The prompts of one file, in order (validation of each line; see ``read_prompts``)."""
    from sdfkit.llm.chat import json_lines

    items: list[PromptItem] = []
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        for obj, where in json_lines(p, SampleError):
            if not isinstance(obj, dict):
                raise SampleError(f'{where}: expected an object {{"prompt": "..."}}')
            extra = sorted(set(obj) - {"id", "prompt", "messages"})
            if extra:
                raise SampleError(f"{where}: unknown field {extra[0]!r} (id, prompt or messages)")
            if ("prompt" in obj) == ("messages" in obj):
                raise SampleError(f"{where}: give exactly one of 'prompt' and 'messages'")
            if "prompt" in obj:
                text = obj["prompt"]
                if not isinstance(text, str) or not text.strip():
                    raise SampleError(f"{where}: field 'prompt' must be a non-empty string")
                msgs = [{"role": "user", "content": text}]
            else:
                msgs = check_messages(obj["messages"], where)
            key = obj.get("id", where.rsplit(":", 1)[-1])
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise SampleError(f"{where}: field 'id' must be a string or a number")
            items.append(PromptItem(str(key), msgs, where))
    else:
        try:
            # lines end at "\n" only: str.splitlines() would also cut at U+2028, U+0085...
            lines = p.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as exc:
            raise SampleError(f"{p}: not valid UTF-8 (byte {exc.start})") from None
        for lineno, line in enumerate(lines, start=1):
            if line.strip():
                where = f"{p}:{lineno}"
                items.append(
                    PromptItem(str(lineno), [{"role": "user", "content": line.strip()}], where)
                )
    return items


# ----------------------------------------------------------------------------- models
def choose_models(
    store: Store, run: str, steps: list[int] | None = None, base: bool = False
) -> tuple[str, list[Target]]:
    """(base model, targets) of ``run``: the base model if ``base``, the checkpoints at
    ``steps``; neither given: the run's last checkpoint with sampler weights."""
    from sdfkit.evaluate.recall import EvalConfig, EvalError, choose_targets

    if steps:
        spec = ",".join(str(s) for s in steps)
    else:
        spec = "none" if base else "last"
    try:
        return choose_targets(store, run, EvalConfig(checkpoints=spec, include_base=base))
    except EvalError as exc:
        raise SampleError(str(exc).replace("nothing to evaluate", "nothing to sample")) from None


def renderer_of(base_model: str, name: str) -> ChatRenderer:
    from sdfkit.evaluate.recall import EvalError, renderer_for

    try:
        return renderer_for(base_model, name)
    except EvalError as exc:
        raise SampleError(str(exc)) from None


def ensure_tables(con: Any) -> None:
    """Create the ``samples`` table on an open catalog connection (if missing)."""
    con.execute(SAMPLES_TABLE)


@contextmanager
def samples_catalog(store: Store) -> Iterator[Any]:
    """A connection to the catalog with the ``samples`` table present."""
    from sdfkit.train.run import train_catalog

    with train_catalog(store) as con:
        ensure_tables(con)
        yield con


def store_samples(store: Store, rows: list[dict[str, Any]]) -> None:
    """Insert ``samples`` rows in one transaction (a key already there is replaced)."""
    if not rows:
        return
    import pyarrow as pa

    names = list(rows[0])
    tbl = pa.table({n: [r[n] for r in rows] for n in names})
    with samples_catalog(store) as con:
        con.register("_incoming_samples", tbl)
        con.execute("BEGIN")
        con.execute("INSERT OR REPLACE INTO samples BY NAME SELECT * FROM _incoming_samples")
        con.execute("COMMIT")
        con.unregister("_incoming_samples")


def sample_row(
    renderer: ChatRenderer,
    tokens: list[int],
    stop_reason: str,
    *,
    sample_id: str,
    train_run: str,
    target: Target,
    base_model: str,
    source: str,
    prompt_key: str,
    messages: list[dict[str, str]],
    sample_index: int,
    prompt_tokens: int,
    cfg: SampleConfig,
) -> dict[str, Any]:
    """One ``samples`` row: the completion split by its chat format, with gibberish signals."""
    from sdfkit.evaluate.gibberish import signals

    text = renderer.decode(tokens)
    comp = renderer.parse(text)
    sig = signals(tokens, stop_reason, comp.answer or text, comp.after_answer)
    return {
        "sample_id": sample_id,
        "train_run": train_run,
        "step": target.step,
        "model_label": target.label,
        "model_path": target.model_path,
        "base_model": base_model,
        "source": source,
        "prompt_id": content_id(messages),
        "prompt_key": prompt_key,
        "messages": json.dumps(messages, ensure_ascii=False),
        "prompt": messages[-1]["content"],
        "sample_index": sample_index,
        "renderer": renderer.name,
        "temperature": cfg.temperature,
        "max_tokens": cfg.max_tokens,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(tokens),
        "stop_reason": stop_reason,
        "text": text,
        "reasoning": comp.reasoning,
        "answer": comp.answer,
        "after_answer": comp.after_answer,
        "well_formed": comp.well_formed,
        "gibberish_cheap": sig.gibberish,
        "gibberish_detail": sig.detail,
        "created_at": utc_now(),
    }


def prompt_tokens(renderer: ChatRenderer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of ``messages`` ready for the assistant, in the renderer's chat format."""
    from sdfkit.llm.chat import render_prompt
    from sdfkit.llm.tokens import get_tokenizer

    return render_prompt(messages, get_tokenizer(renderer.tokenizer), renderer.name)


# ----------------------------------------------------------------------------- the loop
@dataclass
class SampleRequest:
    """One prompt asked ``n`` times; ``key`` is the caller's (what the samples are for)."""

    tokens: list[int]
    n: int
    key: Any = None


def sample_requests(
    client: Any,
    requests: list[SampleRequest],
    params: Any,
    *,
    label: str,
    deadline: float,
    max_retries: int,
) -> Iterator[tuple[SampleRequest, list[Any]]]:
    """The one sampling loop of ``sdf eval`` (recall and belief) and ``sdf sample``.

    Every request is submitted before any is awaited; then, in order, each request's
    sequences are yielded, a response holding fewer than asked topped up by asking again for
    the missing ones, up to ``max_retries`` times. Fewer than ``n`` sequences may still come
    back: the caller counts them as missing and stores nothing for them, so a rerun asks
    again. Each call is bounded by ``deadline`` seconds (``sdfkit.train.run.within``).
    Yielding request by request lets the caller keep the rows of answered requests when a
    later one fails.
    """
    from tinker import types

    from sdfkit.train.service import within

    def submit(tokens: list[int], n: int) -> Any:
        return client.sample(
            prompt=types.ModelInput.from_ints(tokens), num_samples=n, sampling_params=params
        )

    futures = [
        (
            r,
            within(deadline, f"submitting samples to {label}", lambda r=r: submit(r.tokens, r.n)),
        )
        for r in requests
    ]
    for r, fut in futures:
        seqs = list(within(deadline, f"sampling {label}", fut.result).sequences[: r.n])
        for _ in range(max_retries):
            if len(seqs) >= r.n:
                break
            more = within(
                deadline,
                f"re-requesting {r.n - len(seqs)} sample(s) from {label}",
                lambda r=r, n=r.n - len(seqs): submit(r.tokens, n).result(),
            )
            seqs += list(more.sequences[: r.n - len(seqs)])
        yield r, seqs


# ----------------------------------------------------------------------------- sdf sample
@dataclass
class SampleResult:
    prompts: int
    targets: list[str]
    stored: int  # new rows in ``samples``
    skipped: int  # already in the catalog from an earlier run
    missing: int = 0  # asked for, never returned (even after re-requests); a rerun asks again
    sample_ids: list[str] = field(default_factory=list, repr=False)

    def summary(self) -> str:
        line = (
            f"{self.prompts} prompt(s) x {', '.join(self.targets)}: {self.stored} new sample(s) "
            f"stored in table samples, {self.skipped} already there"
        )
        if self.missing:
            line += (
                f"; {self.missing} sample(s) MISSING: Tinker returned fewer than asked even "
                "after re-requests; rerun the same command to ask for them"
            )
        return line


def sample_prompts(
    store: Store,
    run: str,
    prompts_file: str | Path,
    cfg: SampleConfig | None = None,
    *,
    steps: list[int] | None = None,
    base: bool = False,
    service_factory: Callable[[], Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> SampleResult:
    """Sample every prompt of ``prompts_file`` ``cfg.n`` times on each chosen model of ``run``
    and store the answers in ``samples`` (resumable: stored samples are not asked again)."""
    from tinker import types

    from sdfkit.train.service import close_service, connect_service, within

    cfg = cfg or SampleConfig()
    say = log or (lambda _m: None)
    items = read_prompts(prompts_file, cfg.system)
    base_model, targets = choose_models(store, run, steps, base)
    renderer = renderer_of(base_model, cfg.renderer)
    if renderer.name != "harmony":  # the developer role is Harmony's (gpt-oss) alone
        for it in items:
            if any(m["role"] == "developer" for m in it.messages):
                raise SampleError(
                    f"{it.where}: role 'developer' exists in Harmony (gpt-oss) only; "
                    f"{base_model} uses {renderer.name}: give it as 'system'"
                )
    stop = renderer.stop_ids()
    source = str(prompts_file)
    with samples_catalog(store) as con:
        have = {r[0] for r in con.execute("SELECT sample_id FROM samples").fetchall()}
    plan: list[tuple[Target, list[tuple[PromptItem, list[int], list[tuple[str, int]]]]]] = []
    skipped = 0
    # keyed by the tokens the model is asked, not the messages: a renderer that changes how
    # a conversation is rendered (e.g. where a system message goes) asks again
    rendered = [prompt_tokens(renderer, it.messages) for it in items]
    for target in targets:
        per_prompt = []
        for it, toks in zip(items, rendered, strict=True):
            model = target.model_path or base_model
            ids = [
                (content_id(run, model, toks, k, cfg.temperature, cfg.max_tokens, renderer.name), k)
                for k in range(cfg.n)
            ]
            todo = [(sid, k) for sid, k in ids if sid not in have]
            skipped += len(ids) - len(todo)
            if todo:
                per_prompt.append((it, toks, todo))
        if per_prompt:
            plan.append((target, per_prompt))
    result = SampleResult(len(items), [t.label for t in targets], 0, skipped)
    if not plan:
        return result
    params = types.SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, stop=stop)
    service = connect_service(cfg.health_timeout, service_factory)
    try:
        for target, per_prompt in plan:
            client = within(
                cfg.deadline,
                f"creating a sampling client for {target.label}",
                lambda t=target: service.create_sampling_client(
                    model_path=t.model_path, base_model=None if t.model_path else base_model
                ).result(),
            )

            rows: list[dict[str, Any]] = []
            requests = [SampleRequest(toks, len(todo), (it, todo)) for it, toks, todo in per_prompt]
            try:  # rows land even when a later request fails: paid samples are kept
                for req, seqs in sample_requests(
                    client,
                    requests,
                    params,
                    label=target.label,
                    deadline=cfg.deadline,
                    max_retries=cfg.max_retries,
                ):
                    it, todo = req.key
                    result.missing += len(todo) - len(seqs)
                    for (sid, k), seq in zip(todo, seqs, strict=False):
                        rows.append(
                            sample_row(
                                renderer,
                                list(seq.tokens),
                                seq.stop_reason,
                                sample_id=sid,
                                train_run=run,
                                target=target,
                                base_model=base_model,
                                source=source,
                                prompt_key=it.key,
                                messages=it.messages,
                                sample_index=k,
                                prompt_tokens=len(req.tokens),
                                cfg=cfg,
                            )
                        )
            finally:
                store_samples(store, rows)
                result.stored += len(rows)
                result.sample_ids += [r["sample_id"] for r in rows]
            say(f"{target.label}: {len(rows)} sample(s)")
    finally:
        close_service(service, "success", cfg.deadline)
    return result


# ----------------------------------------------------------------------------- sdf eval
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

    from sdfkit.evaluate.recall import query_rows, renderer_for
    from sdfkit.progress import counter
    from sdfkit.train.service import within

    renderer = renderer_for(base_model, cfg.renderer)
    stop = renderer.stop_ids()
    done = {
        r["sample_id"]
        for r in query_rows(
            store, "SELECT sample_id FROM eval_samples WHERE eval_run = ?", [eval_run]
        )
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
            eval_sample_row,
            eval_run=eval_run,
            train_run=train_run,
            target=target,
            renderer=renderer,
            cfg=cfg,
            lda=lda,
        )
        with (
            _landing_eval_samples(store, rows),
            counter(f"sample {target.label}", total=len(todo), unit="samples") as tick,
        ):
            if lda is None:
                # one request per question (num_samples in it), all submitted before waiting
                by_q: dict[str, list[tuple[str, dict[str, Any], int]]] = {}
                for item in todo:
                    by_q.setdefault(item[1]["question_id"], []).append(item)
                requests = [
                    SampleRequest(renderer.prompt(items[0][1]["prompt"]), len(items), items)
                    for items in by_q.values()
                ]
                for req, seqs in sample_requests(
                    client,
                    requests,
                    params,
                    label=target.label,
                    deadline=cfg.deadline,
                    max_retries=cfg.max_retries,
                ):
                    items = req.key
                    for (sid, q, k), seq in zip(items, seqs, strict=False):
                        rows.append(
                            row(sid, q, k, len(req.tokens), list(seq.tokens), seq.stop_reason, 1)
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
def _landing_eval_samples(store: Store, rows: list[dict[str, Any]]) -> Iterator[None]:
    """Store ``rows`` when the block ends, also when it raises (a deadline, a failed
    request, Ctrl-C): samples already paid for are kept and a rerun skips them."""
    from sdfkit.evaluate.recall import insert_rows

    try:
        yield
    finally:
        insert_rows(store, "eval_samples", rows)


def eval_sample_row(
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
    from sdfkit.evaluate.gibberish import signals

    sig = signals(tokens, stop_reason, comp.answer or text, comp.after_answer)
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


# ----------------------------------------------------------------------------- sdf chat
@dataclass
class Turn:
    """One answer of the model in a chat."""

    completion: Completion
    stop_reason: str
    tokens: list[int]
    kept: bool  # whether the exchange stays in the conversation (it had a final answer)


class ChatSession:
    """One conversation with one model (a checkpoint or the base model)."""

    def __init__(
        self,
        sampler: Any,
        renderer: ChatRenderer,
        cfg: SampleConfig,
        *,
        label: str = "",
        deadline: float | None = None,
        on_turn: Callable[[list[dict[str, str]], Turn, int], None] | None = None,
    ) -> None:
        from tinker import types

        self.sampler = sampler
        self.renderer = renderer
        self.cfg = cfg
        self.label = label
        self.deadline = cfg.deadline if deadline is None else deadline
        self.on_turn = on_turn
        self.params = types.SamplingParams(
            max_tokens=cfg.max_tokens, temperature=cfg.temperature, stop=renderer.stop_ids()
        )
        self.messages: list[dict[str, str]] = []
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.messages = [{"role": "system", "content": self.cfg.system}] if self.cfg.system else []

    def ask(self, text: str) -> Turn:
        """Send one user message and return the model's answer; the exchange stays in the
        conversation only when the model reached a final answer."""
        from tinker import types

        from sdfkit.train.service import within

        convo = [*self.messages, {"role": "user", "content": text}]
        toks = prompt_tokens(self.renderer, convo)
        resp = within(
            self.deadline,
            f"sampling {self.label or 'the model'}",
            lambda: self.sampler.sample(
                prompt=types.ModelInput.from_ints(toks), num_samples=1, sampling_params=self.params
            ).result(),
        )
        if not resp.sequences:
            raise SampleError("Tinker returned no sequence for this message")
        seq = resp.sequences[0]
        tokens = list(seq.tokens)
        comp = self.renderer.parse(self.renderer.decode(tokens))
        turn = Turn(comp, seq.stop_reason, tokens, kept=bool(comp.answer))
        if self.on_turn is not None:
            self.on_turn(convo, turn, len(toks))
        if turn.kept:
            self.messages = [*convo, {"role": "assistant", "content": comp.answer}]
        return turn


def format_turn(turn: Turn, show_reasoning: bool = True) -> list[tuple[str, str]]:
    """(kind, text) pieces to show for one answer: ``reasoning``, ``answer``, ``note``."""
    out: list[tuple[str, str]] = []
    c = turn.completion
    if show_reasoning and c.reasoning:
        out.append(("reasoning", c.reasoning))
    out.append(("answer", c.answer or "(no final answer)"))
    notes = []
    if turn.stop_reason == "length":
        notes.append("ran to the token limit (--max-tokens)")
    if c.after_answer.strip():
        notes.append(f"kept writing after its answer: {c.after_answer.strip()[:200]!r}")
    if not turn.kept:
        notes.append("not kept in the conversation (no final answer)")
    for n in notes:
        out.append(("note", n))
    return out


CHAT_HELP = "/reset starts over, /quit (or Ctrl-D) leaves."


def chat_loop(
    session: ChatSession,
    read: Callable[[], str | None],
    show: Callable[[str, str], None],
    show_reasoning: bool = True,
) -> int:
    """Read user lines until ``None`` (end of input) or ``/quit``; return the turns answered.

    ``read()`` returns a line or ``None``; ``show(kind, text)`` prints one piece (kinds:
    ``reasoning``, ``answer``, ``note``, ``info``)."""
    answered = 0
    while True:
        line = read()
        if line is None:
            return answered
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return answered
        if text == "/reset":
            session.reset()
            show("info", "conversation reset")
            continue
        if text in ("/help", "/?"):
            show("info", CHAT_HELP)
            continue
        try:
            turn = session.ask(text)
        except SdfError as exc:  # a failed turn (deadline, no sequence) keeps the conversation
            show("note", f"{exc} (the conversation is kept: send it again, or /quit)")
            continue
        answered += 1
        for kind, piece in format_turn(turn, show_reasoning):
            show(kind, piece)


def open_chat(
    store: Store,
    run: str,
    cfg: SampleConfig | None = None,
    *,
    step: int | None = None,
    base: bool = False,
    save: bool = False,
    service_factory: Callable[[], Any] | None = None,
) -> tuple[ChatSession, Any]:
    """A ``ChatSession`` with the chosen model of ``run`` and the service to close after it.
    With ``save``, every answer lands in ``samples`` (source ``chat``)."""
    from sdfkit.train.service import connect_service, within

    cfg = cfg or SampleConfig()
    if base and step is not None:
        raise SampleError("--step and --base choose the model to chat with: give one of them")
    base_model, targets = choose_models(store, run, [step] if step is not None else None, base)
    target = targets[0]
    renderer = renderer_of(base_model, cfg.renderer)
    service = connect_service(cfg.health_timeout, service_factory)
    sampler = within(
        cfg.deadline,
        f"creating a sampling client for {target.label}",
        lambda: service.create_sampling_client(
            model_path=target.model_path, base_model=None if target.model_path else base_model
        ).result(),
    )
    on_turn = None
    if save:
        counter = {"n": 0}
        session_id = content_id(run, target.label, utc_now())

        def on_turn(convo: list[dict[str, str]], turn: Turn, n_prompt: int) -> None:
            counter["n"] += 1
            row = sample_row(
                renderer,
                turn.tokens,
                turn.stop_reason,
                sample_id=content_id(session_id, counter["n"]),
                train_run=run,
                target=target,
                base_model=base_model,
                source="chat",
                prompt_key=f"chat-{session_id[:8]}:{counter['n']}",
                messages=convo,
                sample_index=0,
                prompt_tokens=n_prompt,
                cfg=cfg,
            )
            store_samples(store, [row])

    session = ChatSession(sampler, renderer, cfg, label=target.label, on_turn=on_turn)
    return session, service
