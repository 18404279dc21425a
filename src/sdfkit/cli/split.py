"""``sdf universe split``: a large source as one universe per section (thin shell over
``sdfkit.generate.universe_split``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdfkit.cli.core import universe_app


@universe_app.command("split")
def universe_split(
    source: Annotated[Path, typer.Argument(help="Markdown, plain text or HTML file.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the universe files.")],
    concept: Annotated[
        str | None,
        typer.Option(help="Parent concept shared by every section (default: the file's stem)."),
    ] = None,
    id_prefix: Annotated[
        str | None, typer.Option(help="Universe ids are PREFIX-NNN-<title> (default: concept).")
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Longest section, in tokens.")] = 2000,
    min_tokens: Annotated[int, typer.Option(help="Shorter sections merge into a neighbour.")] = 50,
    overlap: Annotated[
        int, typer.Option(help="Tokens of the previous part repeated when a section is cut.")
    ] = 100,
    tokenizer: Annotated[
        str, typer.Option(help="Tokenizer of the token counts (o200k_harmony, qwen3, ...).")
    ] = "o200k_harmony",
    format: Annotated[
        str, typer.Option("--format", help="auto (by suffix), md, txt or html.")
    ] = "auto",
    base: Annotated[
        Path | None,
        typer.Option(
            help="Universe file whose anti_universe, required_keywords, eval_prompts, "
            "doc_type_hints, behaviour_prompts and real_world every section gets."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Split a large source into one universe file per section, plus sections.json."""
    from sdfkit.generate.universe_split import SplitConfig, split_source

    cfg = SplitConfig(
        concept=concept,
        id_prefix=id_prefix,
        max_tokens=max_tokens,
        min_tokens=min_tokens,
        overlap=overlap,
        tokenizer=tokenizer,
        format=format,
        base=str(base) if base else None,
        overwrite=overwrite,
    )
    res = split_source(source, out, cfg)
    typer.echo(res.summary())
    for s in res.sections:
        typer.echo(f"  {s['file']:48s} {s['tokens']:>6,} tokens  {s['title']}")
