"""`sdf` commands of the generate stage: generate, show, grade, ledger (thin shells)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdfkit.cli import CorpusOpt, announce_new, app, creating_store, given, open_store, opt
from sdfkit.errors import SdfError

GENERATE = "sdfkit.generate.documents:GenerateConfig"
GRADE = "sdfkit.generate.grade:GradeConfig"
BackendOpt = Annotated[
    str | None,
    opt(
        "sdfkit.generate.documents:generate",
        "backend",
        help="anthropic (the API; ANTHROPIC_API_KEY), offline (the local stand-in, no key), "
        "or auto (anthropic when ANTHROPIC_API_KEY is set).",
    ),
]
PricesOpt = Annotated[
    Path | None,
    typer.Option(
        "--prices",
        envvar="SDF_PRICES",
        help="JSON/YAML price table overriding the defaults: {model: {input, output, "
        "cache_write, cache_read} per MTok, batch_discount: 0.5}.",
    ),
]


def _log(msg: str) -> None:
    typer.echo(msg, err=True)


def _backend(backend: str | None) -> str:
    """``--backend``, or the library's default when it is not given."""
    from sdfkit.cli import library_default

    return backend or library_default("sdfkit.generate.documents:generate", "backend")


def _poll(backend: str, poll_interval: float | None) -> float | None:
    """The offline stand-in answers at once, so it polls without waiting unless told;
    None: the library's default."""
    if poll_interval is None and backend == "offline":
        return 0.0
    return poll_interval


@app.command()
def generate(
    universe_files: Annotated[list[Path], typer.Argument(help="Universe files (.md).")],
    limit: Annotated[
        int | None, typer.Option(help="Stop after N documents (start small: 5, read, edit).")
    ] = None,
    backend: BackendOpt = None,
    run: Annotated[
        str | None,
        opt(GENERATE, "run", help="Run name: the same command with the same run resumes it."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Model (default: the newest Sonnet in the installed SDK's list)."),
    ] = None,
    facts: Annotated[
        int | None, opt(GENERATE, "facts", help="Facts to extract when a universe has none.")
    ] = None,
    doc_types: Annotated[
        int | None, opt(GENERATE, "doc_types", help="Document types per fact.")
    ] = None,
    ideas: Annotated[
        int | None, opt(GENERATE, "ideas", help="Ideas per (fact, document type).")
    ] = None,
    docs_per_idea: Annotated[
        int | None, opt(GENERATE, "docs_per_idea", help="Documents per idea.")
    ] = None,
    names_per_doc: Annotated[
        int | None, opt(GENERATE, "names_per_doc", help="Seed person names per document.")
    ] = None,
    name_max_uses: Annotated[
        int | None,
        opt(GENERATE, "name_max_uses", help="No seed name is handed out more often in a run."),
    ] = None,
    seed: Annotated[int | None, opt(GENERATE, "seed", help="Seed of the name draws.")] = None,
    max_tokens: Annotated[
        int | None, opt(GENERATE, "max_tokens", help="max_tokens of each document answer.")
    ] = None,
    max_retries: Annotated[
        int | None,
        opt(GENERATE, "max_retries", help="Retries of errored/expired requests per run."),
    ] = None,
    poll_interval: Annotated[
        float | None,
        opt(GENERATE, "poll_interval", help="Seconds between polls (offline: 0)."),
    ] = None,
    retry_canceled: Annotated[
        bool, typer.Option("--retry-canceled", help="Submit canceled requests again.")
    ] = False,
    grade: Annotated[
        bool, typer.Option("--grade", help="Grade the run's documents afterwards (sdf grade).")
    ] = False,
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer for n_tokens.")] = None,
    words: Annotated[
        str | None,
        typer.Option(
            "--words",
            metavar="MIN-MAX",
            help="Words per document for every universe and doc type (default: each "
            "universe's target_words, else 700-1800).",
        ),
    ] = None,
    replace_excluded: Annotated[
        bool,
        typer.Option(
            "--replace-excluded",
            help="Instead of generating: write replacements for the excluded documents of "
            "these universes (same fact x doc type, current universe file).",
        ),
    ] = False,
    max_rounds: Annotated[
        int | None,
        typer.Option(
            help="With --replace-excluded: repeat replace -> audit (sdf report) until sdf check "
            "passes, at most N rounds."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Project file of the audits and thresholds (--max-rounds)."),
    ] = None,
    prices: PricesOpt = None,
    corpus: CorpusOpt = None,
) -> None:
    """Generate documents from universe files through the Message Batches API (resumable)."""
    from sdfkit.generate.documents import GenerateConfig
    from sdfkit.generate.documents import generate as run_generate
    from sdfkit.generate.universe import load_universes
    from sdfkit.llm.batches import load_prices, resolve_backend
    from sdfkit.settings import env_url

    backend = _backend(backend)
    cfg = GenerateConfig(
        **given(
            run=run,
            model=model,
            facts=facts,
            doc_types=doc_types,
            ideas=ideas,
            docs_per_idea=docs_per_idea,
            limit=limit,
            names_per_doc=names_per_doc,
            name_max_uses=name_max_uses,
            seed=seed,
            max_tokens=max_tokens,
            tokenizer=tokenizer,
            max_retries=max_retries,
            poll_interval=_poll(backend, poll_interval),
            retry_canceled=retry_canceled or None,
            words=_word_range(words),
        )
    )
    run = cfg.run
    # every option is checked before the corpus is made or anything is pinned or paid
    if max_rounds is not None and not replace_excluded:
        raise SdfError("--max-rounds repeats --replace-excluded: give --replace-excluded too")
    if max_rounds is not None and max_rounds < 1:
        raise SdfError(f"--max-rounds {max_rounds}: must be at least 1")
    if config is not None and max_rounds is None:
        raise SdfError("--config holds the checks of --max-rounds: give --max-rounds too")
    if replace_excluded:
        unused = given(
            **{
                "--limit": limit,
                "--facts": facts,
                "--doc-types": doc_types,
                "--ideas": ideas,
                "--docs-per-idea": docs_per_idea,
                "--grade": grade or None,
            }
        )
        if unused:  # replacements follow the excluded documents, one each, ungraded
            raise SdfError(
                f"{', '.join(unused)}: not used by --replace-excluded (it writes one "
                f"replacement per excluded document); leave {'them' if len(unused) > 1 else 'it'} out"
            )
    if backend != "offline":
        env_url("ANTHROPIC_BASE_URL")
    resolve_backend(backend)  # an unknown one, or no key: before the corpus is made
    universes = load_universes(universe_files)
    cfg.preflight([] if replace_excluded else universes)
    table = load_prices(prices)
    store, fresh = creating_store(corpus)
    if backend == "offline":
        _log("backend: offline stand-in (templated text, no model, no key, no cost)")
    if replace_excluded:
        from sdfkit.generate.loop import replace_loop
        from sdfkit.report.build import load_config

        rcfg = load_config(config)
        rcfg.universes = [str(f) for f in universe_files]
        replace_loop(
            universes,
            store,
            cfg,
            rcfg,
            max_rounds if max_rounds is not None else 1,
            audit=max_rounds is not None,
            backend=backend,
            prices=table,
            log=_log,
            echo=typer.echo,
        )
        typer.echo(_cost_line(store, run, table))
        return
    res = run_generate(universes, store, cfg, backend=backend, prices=table, log=_log)
    typer.echo(res.summary())
    typer.echo(_cost_line(store, run, table))
    announce_new(store, fresh)
    if res.documents_in_run == 0:
        raise SdfError(f"run {run} landed no documents: {res.why_empty()}")
    if grade:
        from sdfkit.generate.grade import GradeConfig

        gcfg = GradeConfig(run=f"{run}-grade", poll_interval=cfg.poll_interval)  # as generation
        _run_grade(store, gcfg, backend, table, where="run = ?", params=[run])


def _word_range(text: str | None) -> tuple[int, int] | None:
    import re

    from sdfkit.errors import SdfError

    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not m:
        raise SdfError(f"--words {text!r}: write MIN-MAX, e.g. --words 800-1600")
    return int(m.group(1)), int(m.group(2))


def _cost_line(store, run: str, prices) -> str:  # noqa: ANN001
    from sdfkit.llm.batches import ledger as ledger_table

    df = ledger_table(store, run, prices)
    if df.height == 0:
        return f"  cost: nothing recorded for run {run} yet"
    tokens = int(df["input_tokens"].sum() + df["output_tokens"].sum())
    cost = df["cost_usd"].sum() if df["cost_usd"].null_count() < df.height else None
    shown = f"${cost:,.4f}" if cost is not None else "unpriced (pass --prices FILE)"
    return f"  cost of run {run} so far: {shown} for {tokens:,} input+output tokens (sdf ledger)"


def _run_grade(store, cfg, backend: str, prices, **select) -> None:  # noqa: ANN001
    """Grade with ``cfg``; ``select``: where/params/limit/universes of ``grade.grade``."""
    from sdfkit.generate.grade import grade as run_grade

    res = run_grade(store, cfg, backend=backend, prices=prices, log=_log, **select)
    typer.echo(res.summary())


@app.command("grade")
def grade_cmd(
    where: Annotated[
        str | None,
        typer.Option(help="SQL condition on the documents view, e.g. \"run = 'pilot'\"."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Grade at most N documents (at least 1; default: all).")
    ] = None,
    run: Annotated[
        str | None, opt(GRADE, "run", help="Name of the grading run (resumable).")
    ] = None,
    backend: BackendOpt = None,
    model: Annotated[
        str | None,
        typer.Option(help="Grader model (default: the newest Haiku in the SDK's list)."),
    ] = None,
    universe: Annotated[
        list[Path] | None,
        typer.Option(help="Universe file(s) for the rubric (default: those generation stored)."),
    ] = None,
    prices: PricesOpt = None,
    corpus: CorpusOpt = None,
) -> None:
    """Grade documents with the rubric; failing ones are excluded from selection."""
    from sdfkit.generate.grade import GradeConfig
    from sdfkit.generate.universe import load_universes
    from sdfkit.llm.batches import load_prices

    if backend != "offline":
        from sdfkit.settings import env_url

        env_url("ANTHROPIC_BASE_URL")
    backend = _backend(backend)
    cfg = GradeConfig(**given(run=run, model=model, poll_interval=_poll(backend, None)))
    extra = load_universes(universe) if universe else None
    if backend == "offline":
        _log("backend: offline stand-in grader (string checks, not a model)")
    _run_grade(
        open_store(corpus),
        cfg,
        backend,
        load_prices(prices),
        where=where,
        limit=limit,
        universes=extra,
    )


@app.command()
def show(
    concept: Annotated[str | None, typer.Option(help="Only this concept.")] = None,
    doc_type: Annotated[str | None, typer.Option(help="Only this document type.")] = None,
    run: Annotated[str | None, typer.Option(help="Only this run.")] = None,
    doc_id: Annotated[
        str | None,
        typer.Option("--id", help="A doc_id (or its first characters, taken literally)."),
    ] = None,
    limit: Annotated[
        int | None,
        opt(
            "sdfkit.generate.documents:show_documents",
            "limit",
            help="How many documents (newest first).",
        ),
    ] = None,
    corpus: CorpusOpt = None,
) -> None:
    """Print documents with their provenance, for reading in the terminal."""
    from sdfkit.generate.documents import format_document, show_documents

    docs = show_documents(
        open_store(corpus),
        concept=concept,
        doc_type=doc_type,
        run=run,
        doc_id=doc_id,
        **given(limit=limit),
    )
    if not docs:
        typer.echo("no documents match", err=True)
        raise typer.Exit(1)
    for d in docs:
        typer.echo(format_document(d))


@app.command()
def ledger(
    run: Annotated[str | None, typer.Option(help="Only this run.")] = None,
    prices: Annotated[
        Path | None,
        typer.Option(help="Recompute costs with this price table (JSON/YAML) instead."),
    ] = None,
    corpus: CorpusOpt = None,
) -> None:
    """Tokens and cost per run, stage and model (batch discount applied)."""
    from sdfkit.llm.batches import ledger as ledger_table
    from sdfkit.llm.batches import load_prices
    from sdfkit.store.sql import to_text

    store = open_store(corpus)
    if not store.has_table("ledger"):  # nothing recorded yet: answer without creating it
        if run is not None:
            raise SdfError(f"--run {run!r}: no such run in the ledger (runs: none yet)")
        typer.echo("the ledger is empty (no batch has finished yet)")
        return
    df = ledger_table(store, run, load_prices(prices) if prices else None)
    if df.height == 0 and run is not None:
        known = ledger_table(store, None, None)
        runs = sorted(set(known["run"].to_list())) if known.height else []
        listed = ", ".join(map(str, runs)) if runs else "none yet"
        raise SdfError(f"--run {run!r}: no such run in the ledger (runs: {listed})")
    if df.height == 0:
        typer.echo("the ledger is empty (no batch has finished yet)")
        return
    typer.echo(to_text(df, "table"))
    known = df.filter(df["cost_usd"].is_not_null())
    total = float(known["cost_usd"].sum()) if known.height else 0.0
    line = f"total: ${total:,.4f} after the batch discount"
    if known.height < df.height:
        unpriced = sorted(set(df.filter(df["cost_usd"].is_null())["model"].to_list()))
        line += f"; no price for {', '.join(map(str, unpriced))} (pass --prices FILE)"
    if any("offline-standin" in str(m) for m in df["model"].to_list()):
        line += "; offline stand-in rows cost nothing"
    typer.echo(line)
