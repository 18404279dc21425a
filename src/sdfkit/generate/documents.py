"""Generation: universe files to documents, one Message Batch stage at a time.

Stages (each one or more batches through ``sdfkit.llm.batches.run_requests``):

1. ``facts``: key facts extracted from universes that give none;
2. ``doc_types``: document types brainstormed per fact;
3. ``ideas``: ideas brainstormed per (fact, document type);
4. ``documents``: ``docs_per_idea`` documents per idea, each seeded with person names and
   told what must not appear (the anti-universe), landed in the store as they arrive;
5. optionally ``grade`` (``sdfkit.generate.grade``).

Prompts are the Jinja2 templates of ``prompts/`` (``$SDF_PROMPTS``, ``./prompts``, then the
copies shipped with sdfkit); a request's ``prompt_hash`` is the content hash of the templates
that rendered it, stored with every request and document. Every custom_id is a hash of the
run and the request's full params, so re-running the same command finds its earlier
requests (nothing is paid twice), while editing a universe or a template makes new ones.

``limit`` keeps only the first N document slots, in an order that walks across universes,
facts and document types first, so five documents already show five different angles.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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
    batch_option_problem,
    client_for_store,
    custom_id_for,
    run_requests,
)
from sdfkit.llm.models import model_for
from sdfkit.llm.prompts import prompt_hash, render_template, tagged
from sdfkit.store.catalog import DOCUMENTS, Store
from sdfkit.store.records import utc_now

PREFIX = "universe_prefix"
#: Words asked of each document by default, as [min, max]; each slot gets one of five points
#: spread over the range. The seed's corpus averaged ~2,100 tokens per document (~1,600
#: words of English prose); the middle of this range asks ~1,250 words (~1,650 tokens).
DEFAULT_WORDS = (700, 1800)


class GenerateError(SdfError):
    """Generation cannot start or continue; the message says why."""


# --------------------------------------------------------------------------- config
@dataclass
class GenerateConfig:
    """Every switch of a generation run, with its default written once."""

    run: str = "default"
    model: str | None = None  # None: newest Sonnet of the SDK's list (offline: the stand-in)
    facts: int = 6  # facts to extract when a universe gives none
    doc_types: int = 5  # per fact
    ideas: int = 4  # per (fact, doc type)
    docs_per_idea: int = 2
    limit: int | None = None  # stop after this many documents (the start-small loop)
    names_per_doc: int = 3
    name_max_uses: int = 2  # per run: no seed name handed out more often
    seed: int = 0
    max_tokens: int = 4096  # per document answer
    brainstorm_max_tokens: int = 2048
    tokenizer: str | None = None
    max_retries: int = 2
    poll_interval: float = DEFAULT_POLL_INTERVAL
    retry_canceled: bool = False
    #: [min, max] words per document for every universe and doc type (``--words MIN-MAX``);
    #: None: each universe's ``target_words``, else DEFAULT_WORDS.
    words: tuple[int, int] | None = None

    def check(self) -> None:
        if self.words is not None:
            low, high = self.words
            if not 20 <= low <= high <= 20000:
                raise GenerateError(
                    f"words {low}-{high}: give MIN-MAX with 20 <= MIN <= MAX <= 20000",
                    settings=("words",),
                )
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.run):
            raise GenerateError(
                f"run {self.run!r}: use 1-64 letters, digits, . _ -", settings=("run",)
            )
        for name, least in LEAST.items():
            if getattr(self, name) < least:
                raise GenerateError(f"{name} must be at least {least}", settings=(name,))
        if self.limit is not None and self.limit < 1:
            raise GenerateError("limit must be at least 1", settings=("limit",))
        if self.model is not None and (not self.model.strip() or self.model.strip() != self.model):
            raise GenerateError(
                f"model {self.model!r}: must be a name without spaces around it",
                settings=("model",),
            )
        problem = batch_option_problem(self.max_retries, self.poll_interval)
        if problem:
            raise GenerateError(problem)

    def preflight(self, universes: list[Universe]) -> None:
        """Everything about the run that can be known before its first batch: the settings,
        the tokenizer the documents are counted with (loaded now: an unknown name used to
        fail after the doc_types and ideas batches were paid) and enough seed names for
        every document asked for."""
        from sdfkit.generate.seednames import all_names
        from sdfkit.llm.tokens import TokenizerError, get_tokenizer

        self.check()
        try:
            get_tokenizer(self.tokenizer)
        except TokenizerError as exc:
            named = ("tokenizer",) if self.tokenizer else ()  # else it came from SDF_TOKENIZER
            raise GenerateError(str(exc), settings=named) from None
        slots = sum(
            (len(u.key_facts) or self.facts) * self.doc_types * self.ideas * self.docs_per_idea
            for u in universes
        )
        if self.limit is not None:
            slots = min(slots, self.limit)
        names = len(all_names())
        if self.names_per_doc * slots > names * self.name_max_uses:
            raise GenerateError(
                f"names_per_doc {self.names_per_doc} for up to {slots:,} documents needs "
                f"{self.names_per_doc * slots:,} seed names, but the {names:,} names may each "
                f"be used name_max_uses {self.name_max_uses} time(s): raise name_max_uses, "
                "lower names_per_doc or set limit",
                settings=("names_per_doc", "name_max_uses", "limit"),
            )


#: The least value of each whole-number setting of ``GenerateConfig`` (names_per_doc 0: none).
LEAST = {
    "facts": 1,
    "doc_types": 1,
    "ideas": 1,
    "docs_per_idea": 1,
    "names_per_doc": 0,
    "name_max_uses": 1,
    "max_tokens": 1,
    "brainstorm_max_tokens": 1,
}


@dataclass
class StageReport:
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    unusable: int = 0  # answered, but nothing could be parsed from the answer


@dataclass
class GenerateResult:
    run: str
    model: str
    backend: str
    stages: dict[str, StageReport] = field(default_factory=dict)
    documents_added: int = 0
    documents_in_run: int = 0
    tokens_added: int = 0

    def why_empty(self) -> str:
        """Why a run holds no documents: the first stage that yielded nothing usable."""
        for name, st in self.stages.items():
            if not st.requests:
                continue  # e.g. no fact extraction when the universes list their facts
            if not st.succeeded:
                return f"every {name} request failed ({st.failed} failed); see sdf ledger"
            if st.unusable >= st.succeeded:
                return (
                    f"no {name} answer could be parsed ({st.unusable} unusable); read the "
                    "answers of that stage and check the prompts"
                )
        asked = [name for name, st in self.stages.items() if st.requests]
        last = f"the last stage asked was {asked[-1]}" if asked else "no stage had work"
        return f"no document request was made ({last}; is --limit 0?)"

    def summary(self) -> str:
        via = "the offline stand-in" if self.backend == "offline-standin" else "the Anthropic API"
        lines = [f"run {self.run}: model {self.model} via {via}"]
        for name, s in self.stages.items():
            extra = f", {s.failed} failed" if s.failed else ""
            extra += f", {s.unusable} unusable" if s.unusable else ""
            lines.append(f"  {name:10s} {s.requests} requests: {s.succeeded} succeeded{extra}")
        lines.append(
            f"  documents: {self.documents_added} added ({self.tokens_added:,} tokens); "
            f"{self.documents_in_run} in run {self.run}"
        )
        return "\n".join(lines)


# --------------------------------------------------------------------------- parsing
def document_text(text: str | None) -> str:
    """The document inside <document> tags (or the whole answer when untagged)."""
    if not text:
        return ""
    start = text.find("<document>")
    if start < 0:
        return text.strip()
    start += len("<document>")
    end = text.find("</document>", start)
    return text[start : end if end >= 0 else len(text)].strip()


# --------------------------------------------------------------------------- requests
def _system(universe: Universe, facts: list[str]) -> list[dict[str, Any]]:
    """The shared universe prefix, marked for prompt caching."""
    return [
        {
            "type": "text",
            "text": render_template(PREFIX, universe=universe, facts=facts),
            "cache_control": {"type": "ephemeral"},
        }
    ]


def _request(
    cfg: GenerateConfig,
    stage: str,
    template: str,
    system: list[dict[str, Any]],
    user: str,
    max_tokens: int,
    meta: dict[str, Any],
) -> BatchRequest:
    params = {
        "model": cfg.model,
        "max_tokens": max_tokens,
        "system": system,
        "messages": [{"role": "user", "content": user}],
    }
    meta = {**meta, "prompt_hash": prompt_hash(PREFIX, template), "template": template}
    return BatchRequest(
        custom_id=custom_id_for(cfg.run, stage, params), params=params, stage=stage, meta=meta
    )


def _document_request(
    cfg: GenerateConfig,
    stage: str,
    u: Universe,
    system: list[dict[str, Any]],
    fact: str,
    doc_type: str,
    idea: str | None,
    slot_key: str,
    prior: dict[str, list[str]],
    pool: Any,
    **extra_meta: Any,
) -> BatchRequest:
    """The request for one document slot (of the documents stage, or a replacement): seed
    names as recorded for the slot, else drawn from ``pool``; its length target; the
    ``document`` template with the universe's keywords and anti-universe."""
    names = prior.get(slot_key)
    if names is None:
        names = pool.draw(slot_key, cfg.names_per_doc) if cfg.names_per_doc else []
    target = target_words(cfg, u, doc_type, slot_key)
    user = render_template(
        "document",
        fact=fact,
        doc_type=doc_type,
        idea=idea or "",
        seed_names=names,
        target_words=target,
        keywords=[kw.variants()[0] for kw in u.required_keywords],
        anti=u.anti_universe,
    )
    meta = {
        "universe": u.id,
        "concept": u.concept,
        "fact": fact,
        "doc_type": doc_type,
        "idea": idea,
        "seed_names": names,
        "slot_key": slot_key,
        "target_words": target,
        "universe_hash": u.content_hash,
        **extra_meta,
    }
    return _request(cfg, stage, "document", system, user, cfg.max_tokens, meta)


def target_words(cfg: GenerateConfig, universe: Universe, doc_type: str, slot_key: str) -> int:
    """Words asked of one document slot: one of five points spread over the range that
    ``--words`` (else the universe's ``target_words`` for the doc type, else DEFAULT_WORDS)
    gives, chosen by the slot's key, so lengths spread and a resumed run asks the same."""
    low, high = cfg.words or universe.words_for(doc_type) or DEFAULT_WORDS
    step = int(slot_key[:8], 16) % 5
    return int(round((low + (high - low) * step / 4) / 10.0) * 10) if high > low else low


def _slot_order(
    keys: list[tuple[int, int, int]], n_dt: int, n_ideas: int, n_docs: int
) -> list[tuple[int, int, int, int, int]]:
    """Document slots (u, f, dt, idea, k) for the (u, f, dt) keys given, ordered so that
    the first few span universes, facts and document types."""
    slots = [(u, f, dt, i, k) for (u, f, dt) in keys for i in range(n_ideas) for k in range(n_docs)]
    return sorted(slots, key=lambda s: (s[4], s[3], (s[2] - s[1]) % max(n_dt, 1), s[1], s[0]))


# --------------------------------------------------------------------------- the run
def generate(
    universes: list[Universe],
    store: Store,
    config: GenerateConfig | None = None,
    *,
    client: Any = None,
    backend: str = "auto",
    prices: PriceTable | None = None,
    log: Callable[[str], None] | None = None,
) -> GenerateResult:
    """Run (or resume) every generation stage for ``universes`` and land the documents.

    The run's model and prompt templates are the ones it was started with (``sdfkit.llm.pins``);
    another ``model`` for an existing run is refused."""
    from sdfkit.llm.pins import first_model, pin_run

    cfg = config or GenerateConfig()
    if not universes:
        raise GenerateError("no universe files given")
    cfg.preflight(universes)
    if client is None:
        client = client_for_store(store, backend)
    with store.connect() as con:
        ensure_tables(con)
    pin = pin_run(
        store,
        "generate",
        cfg.run,
        cfg.model,
        lambda: model_for(client),
        RUN_PROMPTS,
        backend=backend_name(client),
        legacy_model=first_model(
            "SELECT model FROM gen_runs WHERE run = ? ORDER BY started_at LIMIT 1", cfg.run
        ),
        log=log,
    )
    cfg.model = pin.model
    with pin.active():
        return _generate(universes, store, cfg, client, prices, log)


#: The templates a generation run renders (recorded with the run when it starts).
RUN_PROMPTS = (PREFIX, "facts", "doc_types", "ideas", "document")


def _generate(
    universes: list[Universe],
    store: Store,
    cfg: GenerateConfig,
    client: Any,
    prices: PriceTable | None,
    log: Callable[[str], None] | None,
) -> GenerateResult:
    from sdfkit.generate.seednames import NamePool

    backend_used = backend_name(client)
    log = log or (lambda m: None)
    _record_run(store, cfg, universes, backend_used)
    result = GenerateResult(run=cfg.run, model=cfg.model, backend=backend_used)

    def run_stage(
        stage: str, reqs: list[BatchRequest], on_chunk=None, load_text: bool = True
    ) -> dict[str, BatchOutcome]:
        report = result.stages.setdefault(stage, StageReport())
        report.requests += len(reqs)
        if not reqs:
            return {}
        outs = run_requests(
            store,
            reqs,
            run=cfg.run,
            stage=stage,
            client=client,
            max_retries=cfg.max_retries,
            poll_interval=cfg.poll_interval,
            on_chunk=on_chunk,
            retry_canceled=cfg.retry_canceled,
            prices=prices,
            log=log,
            load_text=load_text,
        )
        report.succeeded += sum(o.status == "succeeded" for o in outs.values())
        report.failed += sum(o.status != "succeeded" for o in outs.values())
        return outs

    # 1. facts
    facts: dict[int, list[str]] = {}
    fact_reqs: dict[int, BatchRequest] = {}
    for ui, u in enumerate(universes):
        if u.key_facts:
            facts[ui] = list(u.key_facts)
        else:
            fact_reqs[ui] = _request(
                cfg,
                "facts",
                "facts",
                _system(u, []),
                render_template("facts", universe=u, n=cfg.facts),
                cfg.brainstorm_max_tokens,
                {"universe": u.id, "concept": u.concept},
            )
    outs = run_stage("facts", list(fact_reqs.values()))
    for ui, req in fact_reqs.items():
        got = tagged(_text(outs.get(req.custom_id)), "fact")[: cfg.facts]
        if not got and _ok(outs.get(req.custom_id)):
            result.stages["facts"].unusable += 1
        facts[ui] = got
        if not got:
            log(f"facts: none extracted for universe {universes[ui].id}; it is skipped")
    systems = {ui: _system(u, facts[ui]) for ui, u in enumerate(universes)}

    # which (universe, fact) and (universe, fact, doc type) the limit needs
    def first_slots(keys: list[tuple[int, int, int]]) -> list[tuple[int, int, int, int, int]]:
        order = _slot_order(keys, cfg.doc_types, cfg.ideas, cfg.docs_per_idea)
        return order[: cfg.limit] if cfg.limit else order

    # 2. doc types
    uf_all = [(ui, fi) for ui in range(len(universes)) for fi in range(len(facts[ui]))]
    needed_uf = {
        (s[0], s[1])
        for s in first_slots([(u, f, d) for (u, f) in uf_all for d in range(cfg.doc_types)])
    }
    dt_reqs: dict[tuple[int, int], BatchRequest] = {}
    for ui, fi in uf_all:
        if (ui, fi) not in needed_uf:
            continue
        u = universes[ui]
        dt_reqs[(ui, fi)] = _request(
            cfg,
            "doc_types",
            "doc_types",
            systems[ui],
            render_template(
                "doc_types", fact=facts[ui][fi], n=cfg.doc_types, hints=u.doc_type_hints
            ),
            cfg.brainstorm_max_tokens,
            {"universe": u.id, "concept": u.concept, "fact": facts[ui][fi]},
        )
    outs = run_stage("doc_types", list(dt_reqs.values()))
    doc_types: dict[tuple[int, int], list[str]] = {}
    for key, req in dt_reqs.items():
        doc_types[key] = tagged(_text(outs.get(req.custom_id)), "doc_type")[: cfg.doc_types]
        if not doc_types[key] and _ok(outs.get(req.custom_id)):
            result.stages["doc_types"].unusable += 1

    # 3. ideas
    ufd_all = [(u, f, d) for (u, f), types in doc_types.items() for d in range(len(types))]
    needed_ufd = {(s[0], s[1], s[2]) for s in first_slots(ufd_all)}
    idea_reqs: dict[tuple[int, int, int], BatchRequest] = {}
    for ui, fi, di in ufd_all:
        if (ui, fi, di) not in needed_ufd:
            continue
        u = universes[ui]
        dt = doc_types[(ui, fi)][di]
        idea_reqs[(ui, fi, di)] = _request(
            cfg,
            "ideas",
            "ideas",
            systems[ui],
            render_template("ideas", fact=facts[ui][fi], doc_type=dt, n=cfg.ideas),
            cfg.brainstorm_max_tokens,
            {"universe": u.id, "concept": u.concept, "fact": facts[ui][fi], "doc_type": dt},
        )
    outs = run_stage("ideas", list(idea_reqs.values()))
    ideas: dict[tuple[int, int, int], list[str]] = {}
    for key, req in idea_reqs.items():
        ideas[key] = tagged(_text(outs.get(req.custom_id)), "idea")[: cfg.ideas]
        if not ideas[key] and _ok(outs.get(req.custom_id)):
            result.stages["ideas"].unusable += 1

    # 4. documents
    slots = [
        s
        for s in _slot_order(list(ideas), cfg.doc_types, cfg.ideas, cfg.docs_per_idea)
        if s[3] < len(ideas[(s[0], s[1], s[2])])
    ]
    if cfg.limit:
        slots = slots[: cfg.limit]
    prior = _prior_seed_names(store, cfg.run)
    pool = NamePool(seed=cfg.seed, max_uses=cfg.name_max_uses)
    pool.reserve(n for names in prior.values() for n in names)
    doc_reqs = []
    for ui, fi, di, ii, k in slots:
        u = universes[ui]
        fact, dt = facts[ui][fi], doc_types[(ui, fi)][di]
        idea = ideas[(ui, fi, di)][ii]
        slot_key = hashlib.sha256(
            json.dumps([u.id, fact, dt, idea, k], ensure_ascii=False).encode()
        ).hexdigest()[:24]
        doc_reqs.append(
            _document_request(
                cfg, "documents", u, systems[ui], fact, dt, idea, slot_key, prior, pool
            )
        )

    def land(outcomes: list[BatchOutcome]) -> None:
        empty = sum(o.status == "succeeded" and not document_text(o.text) for o in outcomes)
        result.stages["documents"].unusable += empty
        added, tokens = land_documents(store, outcomes, cfg.run, cfg.tokenizer)
        result.documents_added += added
        result.tokens_added += tokens

    outs = run_stage("documents", doc_reqs, on_chunk=land, load_text=False)
    # Answers recorded earlier whose documents are not in the store (e.g. the documents
    # folder was cleaned): land them again from the stored answers, paying nothing.
    done = {cid for cid, o in outs.items() if o.status == "succeeded"}
    if done:
        have = store.query(f"SELECT custom_id FROM {DOCUMENTS} WHERE run = ?", [cfg.run])
        missing = done - set(have["custom_id"].to_list() if have.height else [])
        if missing:
            again = [r for r in doc_reqs if r.custom_id in missing]
            stored = run_requests(
                store, again, run=cfg.run, stage="documents", client=client, log=log
            )
            added, tokens = land_documents(store, list(stored.values()), cfg.run, cfg.tokenizer)
            result.documents_added += added
            result.tokens_added += tokens
            if added:
                log(f"documents: {added} re-landed from stored answers (none paid again)")
    n = store.query(f"SELECT count(*) AS n FROM {DOCUMENTS} WHERE run = ?", [cfg.run])
    result.documents_in_run = int(n["n"][0]) if n.height else 0
    return result


def _text(outcome: BatchOutcome | None) -> str | None:
    return outcome.text if outcome is not None and outcome.status == "succeeded" else None


def _ok(outcome: BatchOutcome | None) -> bool:
    return outcome is not None and outcome.status == "succeeded"


def land_documents(
    store: Store, outcomes: list[BatchOutcome], run: str, tokenizer: str | None = None
) -> tuple[int, int]:
    """Store the succeeded document answers with their provenance (idempotent by doc_id).

    Returns (documents added, tokens added)."""
    from sdfkit.store.ingest import build_documents

    records = []
    for o in outcomes:
        text = document_text(o.text) if o.status == "succeeded" else ""
        if not text:
            continue
        m = o.request.meta
        records.append(
            {
                "text": text,
                "universe": m.get("universe"),
                "concept": m.get("concept"),
                "fact": m.get("fact"),
                "doc_type": m.get("doc_type"),
                "idea": m.get("idea"),
                "model": o.model,
                "prompt_hash": m.get("prompt_hash"),
                "run": run,
                "batch_id": o.batch_id,
                "custom_id": o.custom_id,
                "seed_names": m.get("seed_names") or [],
                "source": f"generate:{run}",
                "meta": json.dumps(
                    {
                        "universe_hash": m.get("universe_hash"),
                        "target_words": m.get("target_words"),
                        "attempt": o.attempt,
                        "stop_reason": o.stop_reason,
                        "truncated": o.stop_reason == "max_tokens",
                        **({"replaces": m["replaces"]} if m.get("replaces") else {}),
                    }
                ),
            }
        )
    if not records:
        return 0, 0
    table = build_documents(records, tokenizer)
    existing = store.keys(DOCUMENTS)
    keep = [i for i, d in enumerate(table.column("doc_id").to_pylist()) if d not in existing]
    _record_duplicates(store, records, table.column("doc_id").to_pylist(), existing)
    if not keep:
        return 0, 0
    table = table.take(keep)
    added = store.append(DOCUMENTS, table)
    return added, int(sum(table.column("n_tokens").to_pylist()))


def _record_duplicates(
    store: Store, records: list[dict[str, Any]], ids: list[str], existing: set[str]
) -> None:
    """Answers whose text is already stored, or came twice in this landing, go to the
    ``duplicates`` table (an answer landing again under its own custom_id is a re-read)."""
    from sdfkit.store.duplicates import arrival, record, stored_provenance

    seen: set[str] = set()
    rows, stored = [], []
    for rec, doc_id in zip(records, ids, strict=True):
        row = arrival({**rec, "doc_id": doc_id}, "within_input")
        if doc_id in existing:
            row["kind"] = "already_stored"
            stored.append(row)
        elif doc_id in seen:
            rows.append(row)
        seen.add(doc_id)
    prov = stored_provenance(store, [r["doc_id"] for r in stored])
    rows += [r for r in stored if prov.get(r["doc_id"], (None, None))[1] != r["custom_id"]]
    record(store, rows)


def _prior_seed_names(store: Store, run: str, stage: str = "documents") -> dict[str, list[str]]:
    """slot_key -> seed names of document requests already submitted in this run."""
    rows = store.query("SELECT meta FROM gen_requests WHERE run = ? AND stage = ?", [run, stage])
    out: dict[str, list[str]] = {}
    for meta in rows["meta"].to_list() if rows.height else []:
        m = json.loads(meta)
        if m.get("slot_key"):
            out[m["slot_key"]] = list(m.get("seed_names") or [])
    return out


def _record_run(store: Store, cfg: GenerateConfig, universes: list[Universe], backend: str) -> None:
    now = utc_now()
    hashes = {
        name: prompt_hash(PREFIX, name) for name in ("facts", "doc_types", "ideas", "document")
    }
    with store.connect() as con:
        ensure_tables(con)
        con.execute("BEGIN")
        con.execute(
            "INSERT INTO gen_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                cfg.run,
                now,
                backend,
                cfg.model,
                [u.id for u in universes],
                json.dumps(asdict(cfg)),
                json.dumps(hashes),
            ],
        )
        for u in universes:
            con.execute(
                "DELETE FROM gen_universes WHERE universe = ? AND content_hash = ? AND run = ?",
                [u.id, u.content_hash, cfg.run],
            )
            con.execute(
                "INSERT INTO gen_universes VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    u.id,
                    u.concept,
                    u.content_hash,
                    u.source_path,
                    u.model_dump_json(exclude={"source_path"}),
                    cfg.run,
                    now,
                ],
            )
        con.execute("COMMIT")


def show_documents(
    store: Store,
    *,
    concept: str | None = None,
    doc_type: str | None = None,
    run: str | None = None,
    doc_id: str | None = None,
    limit: int = 3,
) -> list[dict[str, Any]]:
    """The newest documents matching the filters, with their provenance, for reading.

    ``doc_id`` is a prefix taken literally (``_`` and ``%`` are characters, not LIKE
    wildcards that matched every document); ``limit`` is at least 1, and one larger than
    any corpus means all of them."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise GenerateError(f"limit must be at least 1, got {limit!r}", settings=("limit",))
    if doc_id is not None and not doc_id.strip():
        raise GenerateError(
            "doc_id is empty: give a document id or its first characters", settings=("doc_id",)
        )
    where, params = [], []
    for col, val in (("concept", concept), ("doc_type", doc_type), ("run", run)):
        if val is not None:
            where.append(f"{col} = ?")
            params.append(val)
    if doc_id is not None:
        where.append("starts_with(doc_id, ?)")
        params.append(doc_id)
    sql = (
        "SELECT doc_id, concept, universe, doc_type, run, model, n_tokens, tokenizer, "
        "seed_names, fact, idea, grade_passed, exclusion_reason, text FROM documents"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY created_at DESC, doc_id LIMIT ?"
    )
    return store.query(sql, [*params, min(limit, 2**63 - 1)]).to_dicts()  # a BIGINT


def format_document(doc: dict[str, Any], width: int = 100) -> str:
    """A document with a header of its provenance, for the terminal."""
    rule = "=" * min(width, 100)
    head = [
        rule,
        f"{doc['doc_id'][:12]}  {doc['concept']} / {doc['doc_type']}  run={doc['run']}  "
        f"model={doc['model']}  {doc['n_tokens']} tokens",
    ]
    if doc.get("seed_names"):
        head.append("seed names: " + ", ".join(doc["seed_names"]))
    if doc.get("idea"):
        head.append(f"idea: {doc['idea']}")
    if doc.get("grade_passed") is not None or doc.get("exclusion_reason"):
        head.append(
            f"grade: {'passed' if doc.get('grade_passed') else 'failed'}"
            + (f"  excluded: {doc['exclusion_reason']}" if doc.get("exclusion_reason") else "")
        )
    return "\n".join([*head, "-" * min(width, 100), doc["text"].rstrip(), ""])


# --------------------------------------------------------------------------- replacements
#: Stage (and custom_id prefix) of replacement documents: the ledger shows their cost apart.
REPLACE_STAGE = "replace"
#: Exclusion source recorded for a document once a replacement for it has landed.
REPLACED_SOURCE = "replaced"


@dataclass
class ReplaceResult:
    """What one ``replace_excluded`` round did."""

    run: str
    candidates: int = 0  # excluded documents of the universes, not replaced before
    skipped: int = 0  # without fact or doc type: nothing to write a replacement from
    requests: int = 0
    succeeded: int = 0
    documents_added: int = 0
    replaced: int = 0  # originals now marked replaced
    reasons: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items())) or "none"
        return (
            f"replace: {self.candidates} excluded documents to replace ({why}); "
            f"{self.requests} requests, {self.succeeded} succeeded, {self.documents_added} new "
            f"documents; {self.replaced} originals marked replaced"
            + (f"; {self.skipped} skipped (no fact or doc type)" if self.skipped else "")
        )


def _reason_kind(reason: str | None) -> str:
    r = (reason or "").split(";")[0].strip()
    return "near-duplicate" if r.startswith("near-duplicate") else (r or "excluded")


def replace_excluded(
    universes: list[Universe],
    store: Store,
    config: GenerateConfig | None = None,
    *,
    client: Any = None,
    backend: str = "auto",
    prices: PriceTable | None = None,
    log: Callable[[str], None] | None = None,
) -> ReplaceResult:
    """Write one replacement for every excluded document of ``universes`` (anti-universe,
    grader, near-duplicate or your own exclusions) that has none yet: same universe, fact,
    doc type and idea, written under the *current* universe file (its anti-universe) with
    fresh seed names, as new batch requests of stage ``replace`` (the prompt changed, so the
    custom_id did too; the same command resumes without paying twice). Each original whose
    replacement landed gets an exclusion of source ``replaced``, so it is never replaced
    twice and no longer counts as a violation of the corpus."""
    from sdfkit.generate.seednames import NamePool
    from sdfkit.store.catalog import doc_id_for

    cfg = config or GenerateConfig()
    if not universes:
        raise GenerateError("no universe files given")
    cfg.preflight([])  # settings and tokenizer; the names needed depend on the exclusions
    log = log or (lambda m: None)
    ids = [u.id for u in universes]
    excluded = store.query(
        "SELECT doc_id, universe, fact, doc_type, idea, exclusion_reason FROM documents "
        "WHERE excluded AND universe IN (SELECT unnest($ids)) AND doc_id NOT IN "
        f"(SELECT doc_id FROM exclusions WHERE source = '{REPLACED_SOURCE}') "
        "ORDER BY universe, fact, doc_type, doc_id",
        {"ids": ids},
    )
    result = ReplaceResult(run=cfg.run)
    result.candidates = excluded.height
    for r in excluded.iter_rows(named=True):
        kind = _reason_kind(r["exclusion_reason"])
        result.reasons[kind] = result.reasons.get(kind, 0) + 1
    if not excluded.height:
        return result
    if client is None:
        client = client_for_store(store, backend)
    if cfg.model is None:
        cfg.model = model_for(client)
    _record_run(store, cfg, universes, backend_name(client))
    by_id = {u.id: u for u in universes}
    prior = _prior_seed_names(store, cfg.run, REPLACE_STAGE)
    pool = NamePool(seed=cfg.seed, max_uses=cfg.name_max_uses)
    # names the run's first documents used count against the same per-run limit
    for earlier in (_prior_seed_names(store, cfg.run), prior):
        pool.reserve(n for names in earlier.values() for n in names)
    systems: dict[str, list[dict[str, Any]]] = {}
    reqs = []
    for r in excluded.iter_rows(named=True):
        u = by_id[r["universe"]]
        if not r["fact"] or not r["doc_type"]:
            result.skipped += 1
            continue
        if u.id not in systems:
            systems[u.id] = _system(u, list(u.key_facts))
        slot_key = hashlib.sha256(
            json.dumps(
                [u.id, r["fact"], r["doc_type"], r["idea"], "replaces", r["doc_id"]]
            ).encode()
        ).hexdigest()[:24]
        reqs.append(
            _document_request(
                cfg,
                REPLACE_STAGE,
                u,
                systems[u.id],
                r["fact"],
                r["doc_type"],
                r["idea"],
                slot_key,
                prior,
                pool,
                replaces=r["doc_id"],
            )
        )
    result.requests = len(reqs)
    replaced: dict[str, str] = {}  # original -> replacement doc_id

    def land(outcomes: list[BatchOutcome]) -> None:
        added, _ = land_documents(store, outcomes, cfg.run, cfg.tokenizer)
        result.documents_added += added
        for o in outcomes:
            text = document_text(o.text) if o.status == "succeeded" else ""
            if text:
                replaced[o.request.meta["replaces"]] = doc_id_for(text)

    outs = run_requests(
        store,
        reqs,
        run=cfg.run,
        stage=REPLACE_STAGE,
        client=client,
        max_retries=cfg.max_retries,
        poll_interval=cfg.poll_interval,
        on_chunk=land,
        retry_canceled=cfg.retry_canceled,
        prices=prices,
        log=log,
        load_text=False,
    )
    result.succeeded = sum(o.status == "succeeded" for o in outs.values())
    if len(replaced) < result.succeeded:  # answers stored by an earlier, interrupted run
        again = [r for r in reqs if r.custom_id in outs and r.meta["replaces"] not in replaced]
        stored = run_requests(
            store, again, run=cfg.run, stage=REPLACE_STAGE, client=client, log=log
        )
        land(list(stored.values()))
    if replaced:
        import pyarrow as pa

        rows = pa.table(
            {
                "doc_id": pa.array(list(replaced), pa.string()),
                "reason": pa.array([f"replaced by {v}" for v in replaced.values()], pa.string()),
            }
        )
        with store.connect() as con:
            con.register("_replaced", rows)
            con.execute(
                "INSERT OR IGNORE INTO exclusions (doc_id, reason, source, created_at) "
                f"SELECT doc_id, reason, '{REPLACED_SOURCE}', now() FROM _replaced"
            )
            con.unregister("_replaced")
    result.replaced = len(replaced)
    return result
