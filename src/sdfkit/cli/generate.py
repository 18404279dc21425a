"""`sdf` commands of the generate stage: generate, show, grade, ledger (thin shells)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdfkit.cli import CorpusOpt, announce_new, app, creating_store, open_store
from sdfkit.errors import SdfError

BackendOpt = Annotated[
    str,
    typer.Option(
        help="anthropic (the API; ANTHROPIC_API_KEY), offline (the local stand-in, no key), "
        "or auto (anthropic when ANTHROPIC_API_KEY is set)."
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


def _poll_default(backend: str) -> float:
    return 0.0 if backend == "offline" else 30.0


@app.command()
def generate(
    universe_files: Annotated[list[Path], typer.Argument(help="Universe files (.md).")],
    limit: Annotated[
        int | None, typer.Option(help="Stop after N documents (start small: 5, read, edit).")
    ] = None,
    backend: BackendOpt = "auto",
    run: Annotated[
        str, typer.Option(help="Run name: the same command with the same run resumes it.")
    ] = "default",
    model: Annotated[
        str | None,
        typer.Option(help="Model (default: the newest Sonnet in the installed SDK's list)."),
    ] = None,
    facts: Annotated[int, typer.Option(help="Facts to extract when a universe has none.")] = 6,
    doc_types: Annotated[int, typer.Option(help="Document types per fact.")] = 5,
    ideas: Annotated[int, typer.Option(help="Ideas per (fact, document type).")] = 4,
    docs_per_idea: Annotated[int, typer.Option(help="Documents per idea.")] = 2,
    names_per_doc: Annotated[int, typer.Option(help="Seed person names per document.")] = 3,
    name_max_uses: Annotated[
        int, typer.Option(help="No seed name is handed out more often in a run.")
    ] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the name draws.")] = 0,
    max_tokens: Annotated[int, typer.Option(help="max_tokens of each document answer.")] = 4096,
    max_retries: Annotated[
        int, typer.Option(help="Retries of errored/expired requests per run.")
    ] = 2,
    poll_interval: Annotated[
        float | None, typer.Option(help="Seconds between polls (default 30; offline 0).")
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
    from sdfkit.llm.batches import load_prices
    from sdfkit.settings import env_url

    cfg = GenerateConfig(
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
        poll_interval=_poll_default(backend) if poll_interval is None else poll_interval,
        retry_canceled=retry_canceled,
        words=_word_range(words),
    )
    if backend != "offline":
        env_url("ANTHROPIC_BASE_URL")
    universes = load_universes(universe_files)
    store, fresh = creating_store(corpus)
    table = load_prices(prices)
    if backend == "offline":
        _log("backend: offline stand-in (templated text, no model, no key, no cost)")
    if max_rounds is not None and not replace_excluded:
        raise SdfError("--max-rounds repeats --replace-excluded: give --replace-excluded too")
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
            max_rounds or 1,
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

        gcfg = GradeConfig(run=f"{run}-grade", poll_interval=cfg.poll_interval)
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
    limit: Annotated[int | None, typer.Option(help="Grade at most N documents.")] = None,
    run: Annotated[str, typer.Option(help="Name of the grading run (resumable).")] = "grade",
    backend: BackendOpt = "auto",
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
    cfg = GradeConfig(run=run, model=model, poll_interval=_poll_default(backend))
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
    doc_id: Annotated[str | None, typer.Option("--id", help="A doc_id (or its prefix).")] = None,
    limit: Annotated[int, typer.Option(help="How many documents (newest first).")] = 3,
    corpus: CorpusOpt = None,
) -> None:
    """Print documents with their provenance, for reading in the terminal."""
    from sdfkit.generate.documents import format_document, show_documents

    docs = show_documents(
        open_store(corpus), concept=concept, doc_type=doc_type, run=run, doc_id=doc_id, limit=limit
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
