"""``sdf universe split``: a large source as one universe per section (thin shell over
``sdfkit.generate.universe_split``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdfkit.cli import given, opt
from sdfkit.cli.core import universe_app

SPLIT = "sdfkit.generate.universe_split:SplitConfig"


@universe_app.command("split")
def universe_split(
    source: Annotated[Path, typer.Argument(help="Markdown, plain text or HTML file.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the universe files.")],
    concept: Annotated[
        str | None,
        opt(
            SPLIT,
            "concept",
            help="Parent concept shared by every section (default: the file's stem).",
            show=False,
        ),
    ] = None,
    id_prefix: Annotated[
        str | None,
        opt(
            SPLIT,
            "id_prefix",
            help="Universe ids are PREFIX-NNN-<title> (default: concept).",
            show=False,
        ),
    ] = None,
    max_tokens: Annotated[
        int | None, opt(SPLIT, "max_tokens", help="Longest section, in tokens.")
    ] = None,
    min_tokens: Annotated[
        int | None, opt(SPLIT, "min_tokens", help="Shorter sections merge into a neighbour.")
    ] = None,
    overlap: Annotated[
        int | None,
        opt(SPLIT, "overlap", help="Tokens of the previous part repeated when a section is cut."),
    ] = None,
    tokenizer: Annotated[
        str | None,
        opt(
            SPLIT,
            "tokenizer",
            help="Tokenizer of the token counts (o200k_harmony, qwen3, ...).",
        ),
    ] = None,
    format: Annotated[
        str | None, opt(SPLIT, "format", "--format", help="auto (by suffix), md, txt or html.")
    ] = None,
    base: Annotated[
        Path | None,
        opt(
            SPLIT,
            "base",
            help="Universe file whose anti_universe, required_keywords, eval_prompts, "
            "doc_type_hints, behaviour_prompts and real_world every section gets.",
            show=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool | None,
        opt(SPLIT, "overwrite", "--overwrite/--no-overwrite", help="Replace a non-empty --out."),
    ] = None,
) -> None:
    """Split a large source into one universe file per section, plus sections.json."""
    from sdfkit.generate.universe_split import SplitConfig, split_source

    cfg = SplitConfig(
        **given(
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
    )
    res = split_source(source, out, cfg)
    typer.echo(res.summary())
    for s in res.sections:
        typer.echo(f"  {s['file']:48s} {s['tokens']:>6,} tokens  {s['title']}")
