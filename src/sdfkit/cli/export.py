"""`sdf select` (balanced selections) and `sdf export` (Tinker shards): thin shells over
``sdfkit.export.selection`` and ``sdfkit.export.shards``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdfkit.cli import (
    CorpusOpt,
    EngineOpt,
    RayAddressOpt,
    app,
    engine_options,
    given,
    new_app,
    open_store,
    opt,
)

select_app = new_app(
    "Balanced selection: hit a document AND token target per concept, keeping the doc-type mix."
)
app.add_typer(select_app, name="select")
export_app = new_app("Training shards for Tinker from a selection; `sdf export verify DIR`.")
app.add_typer(export_app, name="export")


SELECT = "sdfkit.export.selection:SelectionConfig"
EXPORT = "sdfkit.export.shards:ExportConfig"


@select_app.callback(invoke_without_command=True)
def select(
    ctx: typer.Context,
    name: Annotated[
        str | None, opt(SELECT, "name", help="Name the selection is stored under.")
    ] = None,
    docs: Annotated[
        str | None, typer.Option(help="Documents per concept (e.g. 2400 or 2.4k).")
    ] = None,
    tokens: Annotated[
        str | None, typer.Option(help="Tokens per concept (e.g. 5.1M); omit for docs only.")
    ] = None,
    concept_target: Annotated[
        list[str] | None,
        typer.Option(help="CONCEPT=DOCS[:TOKENS]: a different target for one concept."),
    ] = None,
    concept: Annotated[
        list[str] | None, typer.Option(help="Only these concepts (repeatable; default all).")
    ] = None,
    where: Annotated[
        str | None, typer.Option(help="Extra SQL filter over the documents view.")
    ] = None,
    include_failed_grades: Annotated[
        bool | None,
        opt(
            SELECT,
            "include_failed_grades",
            "--include-failed-grades/--no-include-failed-grades",
            help="Also select documents whose newest grade failed.",
        ),
    ] = None,
    seed: Annotated[int | None, opt(SELECT, "seed", help="Sampling seed.")] = None,
    tolerance: Annotated[
        float | None,
        opt(SELECT, "tolerance", help="Relative token error that still meets the target."),
    ] = None,
    allow_short: Annotated[
        bool | None,
        opt(
            SELECT,
            "allow_short",
            "--allow-short/--no-allow-short",
            help="Keep what is possible when a target cannot be met.",
        ),
    ] = None,
    replace: Annotated[
        bool | None,
        opt(
            SELECT,
            "replace",
            "--replace/--no-replace",
            help="Replace a selection of the same name.",
        ),
    ] = None,
    balance_by: Annotated[
        str | None,
        opt(
            SELECT,
            "balance_by",
            help="Targets per concept, or per section (universe) of a split source; "
            "with section, --concept and --concept-target name universes.",
        ),
    ] = None,
    tokenizer: Annotated[
        str | None,
        opt(
            SELECT,
            "tokenizer",
            help="Balance tokens counted under this tokenizer (the export's; count them first "
            "with sdf tokens --tokenizer NAME); default: the documents' own n_tokens.",
            show=False,
        ),
    ] = None,
    corpus: CorpusOpt = None,
) -> None:
    """Select a balanced subset (sub-commands: list, show, diff, drop)."""
    if ctx.invoked_subcommand is not None:
        return
    from sdfkit.export.selection import SelectionConfig, parse_concept_targets, parse_count
    from sdfkit.export.selection import select as run_select

    cfg = SelectionConfig(
        **given(
            name=name,
            docs=parse_count(docs, "--docs"),
            tokens=parse_count(tokens, "--tokens"),
            overrides=parse_concept_targets(concept_target) if concept_target else None,
            concepts=concept or None,
            where=where,
            include_failed_grades=include_failed_grades,
            seed=seed,
            tolerance=tolerance,
            allow_short=allow_short,
            replace=replace,
            balance_by=balance_by,
            tokenizer=tokenizer,
        )
    )
    report = run_select(open_store(corpus), cfg)
    typer.echo(report.text())


@select_app.command("list")
def select_list(corpus: CorpusOpt = None) -> None:
    """Stored selections."""
    from sdfkit.export.selection import list_selections

    for name, r in list_selections(open_store(corpus)).items():
        typer.echo(
            f"{name:24s} {r['status']:6s} {r['docs']:>8,} docs {r['tokens']:>14,} tokens "
            f"seed {r['seed']}  {r['created_at']:%Y-%m-%d %H:%M}"
        )


@select_app.command("show")
def select_show(
    name: Annotated[str, typer.Argument(help="Selection name.")], corpus: CorpusOpt = None
) -> None:
    """Achieved vs target per concept and stratum of a stored selection."""
    from sdfkit.export.selection import load_selection_report

    typer.echo(load_selection_report(open_store(corpus), name).text())


@select_app.command("diff")
def select_diff(
    a: Annotated[str, typer.Argument(help="First selection.")],
    b: Annotated[str, typer.Argument(help="Second selection.")],
    corpus: CorpusOpt = None,
) -> None:
    """Documents only in A, only in B and in both, per concept."""
    from sdfkit.export.selection import diff
    from sdfkit.store.sql import format_table

    typer.echo(format_table(diff(open_store(corpus), a, b)))


@select_app.command("drop")
def select_drop(
    name: Annotated[str, typer.Argument(help="Selection name.")], corpus: CorpusOpt = None
) -> None:
    """Delete a stored selection."""
    from sdfkit.export.selection import drop

    drop(open_store(corpus), name)
    typer.echo(f"dropped selection {name!r}")


@export_app.callback(invoke_without_command=True)
def export(
    ctx: typer.Context,
    out: Annotated[str | None, typer.Option(help="Output directory (created).")] = None,
    selection: Annotated[str | None, opt(EXPORT, "selection", help="Selection to export.")] = None,
    tokenizer: Annotated[
        str | None,
        opt(
            EXPORT,
            "tokenizer",
            help="Target model's tokenizer: o200k_harmony (gpt-oss), hf:<model>.",
        ),
    ] = None,
    doctag: Annotated[
        str | None,
        opt(
            EXPORT,
            "doctag",
            help="Prefix every document with this tag, masked (weight 0).",
            show=False,
        ),
    ] = None,
    webtext: Annotated[
        Path | None,
        opt(EXPORT, "webtext", help="Parquet/JSONL of plain text to mix in.", show=False),
    ] = None,
    webtext_ratio: Annotated[
        float | None, opt(EXPORT, "webtext_ratio", help="Webtext tokens per SDF token.")
    ] = None,
    webtext_field: Annotated[
        str | None, opt(EXPORT, "webtext_field", help="Text field of the webtext file.")
    ] = None,
    eval_prompts: Annotated[
        str | None,
        opt(EXPORT, "eval_prompts", help="Prepend eval prompts: none, random or round-robin."),
    ] = None,
    universe: Annotated[
        list[Path] | None,
        opt(
            EXPORT,
            "universes",
            help="Universe file holding eval_prompts (repeatable).",
            show=False,
        ),
    ] = None,
    mask_eval_prompts: Annotated[
        bool | None,
        opt(
            EXPORT,
            "mask_eval_prompts",
            "--mask-eval-prompts/--no-mask-eval-prompts",
            help="Weight 0 on prepended eval prompts (--no-... to train on them).",
        ),
    ] = None,
    eval_prompt_separator: Annotated[
        str | None,
        opt(
            EXPORT,
            "eval_prompt_separator",
            help="Text between a prepended eval prompt and the document.",
        ),
    ] = None,
    eos: Annotated[
        bool | None, opt(EXPORT, "eos", "--eos/--no-eos", help="Append EOS to every document.")
    ] = None,
    eos_token: Annotated[
        str | None,
        opt(
            EXPORT,
            "eos_token",
            help="EOS as a special-token string (default end-of-text).",
            show=False,
        ),
    ] = None,
    chat: Annotated[
        Path | None,
        opt(
            EXPORT,
            "chat",
            help='JSONL of {"messages": [...]} trajectories to mix in.',
            show=False,
        ),
    ] = None,
    chat_ratio: Annotated[
        float | None, opt(EXPORT, "chat_ratio", help="Chat tokens per SDF token.")
    ] = None,
    epochs: Annotated[
        int | None, opt(EXPORT, "epochs", help="Times each document is seen (reshuffled).")
    ] = None,
    max_seq_len: Annotated[
        int | None,
        opt(EXPORT, "max_seq_len", help="Longest example; longer documents are split, never cut."),
    ] = None,
    shard_size: Annotated[
        int | None, opt(EXPORT, "shard_size", help="Examples per shard file.")
    ] = None,
    compression: Annotated[
        str | None,
        opt(EXPORT, "compression", help="Shard codec: lz4 (fastest), zstd (smallest) or none."),
    ] = None,
    seed: Annotated[int | None, opt(EXPORT, "seed", help="Shuffling and eval-prompt seed.")] = None,
    allow_excluded: Annotated[
        bool | None,
        opt(
            EXPORT,
            "allow_excluded",
            "--allow-excluded/--no-allow-excluded",
            help="Export documents excluded after the selection was made.",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    corpus: CorpusOpt = None,
) -> None:
    """Write training shards + manifest.json from a selection (sub-command: verify DIR)."""
    if ctx.invoked_subcommand is not None:
        return
    from sdfkit.export.shards import ExportConfig, ExportError
    from sdfkit.export.shards import export as run_export
    from sdfkit.progress import counter

    if out is None:
        raise ExportError("give the output directory: sdf export --out DIR")
    cfg = ExportConfig(
        **given(
            selection=selection,
            tokenizer=tokenizer,
            doctag=doctag,
            webtext=str(webtext) if webtext else None,
            webtext_ratio=webtext_ratio,
            webtext_field=webtext_field,
            eval_prompts=eval_prompts,
            universes=[str(u) for u in universe] if universe else None,
            mask_eval_prompts=mask_eval_prompts,
            eval_prompt_separator=eval_prompt_separator,
            eos=eos,
            eos_token=eos_token,
            chat=str(chat) if chat else None,
            chat_ratio=chat_ratio,
            epochs=epochs,
            max_seq_len=max_seq_len,
            shard_size=shard_size,
            compression=compression,
            seed=seed,
            allow_excluded=allow_excluded,
        )
    )
    with counter("export", unit="examples") as tick:
        result = run_export(
            open_store(corpus),
            cfg,
            out,
            overwrite=overwrite,
            progress=tick,
            **engine_options(engine, ray_address),
        )
    typer.echo(result.summary())
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)


@export_app.command("verify")
def export_verify(
    directory: Annotated[Path, typer.Argument(help="Export directory.")],
    no_datums: Annotated[
        bool, typer.Option("--no-datums", help="Skip building tinker Datums.")
    ] = False,
) -> None:
    """Re-read shards: hashes, counts, weights, token ranges, tinker Datums; per-stratum table."""
    from sdfkit.export.verify import verify
    from sdfkit.progress import counter

    with counter("verify", unit="examples") as tick:
        report = verify(directory, build_datums=not no_datums, progress=tick)
    typer.echo(report.text())


@app.command()
def exclude(
    where: Annotated[
        str | None,
        typer.Option(help="SQL condition over the documents view (with --lift: whose to lift)."),
    ] = None,
    reason: Annotated[
        str,
        typer.Option(
            help="Why: shown in documents.exclusion_reason (with --lift: which to remove)."
        ),
    ] = "",
    lift: Annotated[
        bool,
        typer.Option(
            "--lift",
            help="Remove the exclusions of --reason instead (with --where: only of those "
            "documents).",
        ),
    ] = False,
    corpus: CorpusOpt = None,
) -> None:
    """Exclude documents from selections by SQL (or --lift a reason's exclusions)."""
    from sdfkit.export.selection import (
        SelectionError,
        exclude_where,
        lift_exclusions,
        recorded_reasons,
    )

    store = open_store(corpus)
    if lift:
        n = lift_exclusions(store, reason, where)
        which = f" of documents matching {where!r}" if where is not None else ""
        line = f"lifted {n:,} exclusions ({reason!r}){which}"
        if n == 0 and where is None:  # a mistyped reason: say which there are
            line += f"; recorded reasons: {recorded_reasons(store)}"
        typer.echo(line)
        return
    if not where:
        raise SelectionError('give --where SQL (e.g. --where "n_tokens > 8000")')
    n = exclude_where(store, where, reason)
    typer.echo(f"excluded {n:,} more documents ({reason!r}); sdf select now leaves them out")
