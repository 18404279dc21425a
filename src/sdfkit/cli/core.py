"""``sdf`` commands of the foundation: universe checks, ingest, SQL."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdfkit.cli import (
    CorpusOpt,
    EngineOpt,
    RayAddressOpt,
    announce_new,
    app,
    creating_store,
    engine_options,
    given,
    new_app,
    open_store,
    opt,
)

universe_app = new_app("Universe files: validate them; split a large source into many.")
app.add_typer(universe_app, name="universe")


@universe_app.command("check")
def universe_check(
    files: Annotated[
        list[Path], typer.Argument(help="Universe files (.md with YAML front matter).")
    ],
) -> None:
    """Validate universe files; errors name the file and the field."""
    from sdfkit.generate.universe import load_universes

    for u in load_universes(files):
        typer.echo(
            f"ok  {u.source_path}: id={u.id} concept={u.concept} facts={len(u.key_facts)} "
            f"keywords={len(u.required_keywords)} eval_prompts={len(u.eval_prompts)}"
        )


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="JSONL or Parquet files of documents.")],
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="COLUMN=FIELD: store COLUMN is the input's FIELD (repeatable)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="COLUMN=VALUE: the same value for every row (repeatable)."),
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="Tokenizer for n_tokens (default o200k_harmony; hf:<model>).")
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip and count bad rows instead of stopping.")
    ] = False,
    max_bytes: Annotated[
        int | None,
        opt(
            "sdfkit.store.ingest:ingest_files", "max_bytes", help="Largest accepted row, in bytes."
        ),
    ] = None,
    corpus: CorpusOpt = None,
) -> None:
    """Add documents from existing corpora; re-ingesting the same documents adds nothing."""
    from sdfkit.progress import counter
    from sdfkit.store.ingest import ingest_files, parse_assignments

    store, fresh = creating_store(corpus)
    with counter("ingest", unit="rows") as tick:
        res = ingest_files(
            files,
            store=store,
            mapping=parse_assignments(map_, "--map"),
            constants=parse_assignments(set_, "--set"),
            tokenizer=tokenizer,
            skip_bad=skip_bad,
            progress=tick,
            **given(max_bytes=max_bytes),
        )
    typer.echo(res.summary())
    for ex in res.skip_examples:
        typer.echo(f"  skipped {ex}", err=True)
    for warning in res.warnings:
        typer.echo(f"warning: {warning}", err=True)
    announce_new(store, fresh)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="SQL text, a .sql file, or a named query.")],
    format: Annotated[
        str,
        typer.Option("--format", "-f", help="table (the first 200 rows), csv or json (every row)."),
    ] = "table",
    out: Annotated[
        Path | None,
        typer.Option(help="Write every row to a .csv, .parquet, .json or .jsonl file instead."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Let --out replace an existing file.")
    ] = False,
    corpus: CorpusOpt = None,
) -> None:
    """Query the corpus (views: documents, documents_raw, grades, exclusions, ...)."""
    from sdfkit.store.sql import (
        FORMATS,
        SHOWN_ROWS,
        QueryError,
        check_out,
        format_table,
        open_query,
        text_chunks,
        write_out,
    )

    if format not in FORMATS:
        raise QueryError(f"unknown --format {format!r}: use one of {', '.join(FORMATS)}")
    store = open_store(corpus)
    if out is not None:
        check_out(out, store, overwrite)  # before the query: a bad --out costs no query time
        with open_query(query, store) as result:
            rows = write_out(result, out, store, overwrite)
        typer.echo(f"wrote {rows} rows to {out}")
    elif format == "table":
        # the rows shown and one more (to know there are more), never the whole result
        with open_query(query, store) as result:
            head = result.head(SHOWN_ROWS + 1)
        typer.echo(format_table(head, max_rows=SHOWN_ROWS, cut=True))
    else:
        with open_query(query, store) as result:
            last = ""
            for chunk in text_chunks(result.frames(), format):
                typer.echo(chunk, nl=False)
                last = chunk or last
        if not last.endswith("\n"):
            typer.echo("")


@app.command()
def queries() -> None:
    """List the named queries (from ./queries and sdfkit's own)."""
    from sdfkit.store.sql import list_queries

    for name, desc in list_queries().items():
        typer.echo(f"{name:32s} {desc}")


@app.command()
def tokens(
    tokenizer: Annotated[
        str, typer.Option(help="Tokenizer name (o200k_harmony, qwen3, hf:<model>...).")
    ],
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    workers: Annotated[int | None, typer.Option(help="Local engine: processes.")] = None,
    corpus: CorpusOpt = None,
) -> None:
    """Count every document's tokens under another tokenizer (table token_counts_<name>)."""
    from sdfkit.engine.local import run_stage
    from sdfkit.engine.token_counts import TokenCountStage

    stage = TokenCountStage(tokenizer)
    res = run_stage(
        open_store(corpus), stage, workers=workers, **engine_options(engine, ray_address)
    )
    typer.echo(f"{res.processed} documents counted on the {res.engine} engine into {res.table}")
