"""``sdf sweep SWEEP.yaml``: fixed-budget variants (epochs, export switches), each selected,
exported, trained and evaluated; a thin shell over ``sdfkit.train.sweep``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sdfkit.cli import CorpusOpt, app, given, open_store, opt


@app.command()
def sweep(
    spec_file: Annotated[Path, typer.Argument(help="Sweep file (YAML): selection and variants.")],
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Make the selections and exports and print every variant's plan; "
            "contact no service.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --dry-run: the plan as JSON.")
    ] = False,
    evaluate: Annotated[
        bool, typer.Option("--eval/--no-eval", help="Evaluate every variant after training.")
    ] = True,
    backend: Annotated[
        str | None,
        opt(
            "sdfkit.train.sweep:run",
            "backend",
            help="Eval graders: anthropic, offline (the stand-in) or auto.",
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="The page of every variant's curves (default reports/sweep-NAME.html)."),
    ] = None,
    corpus: CorpusOpt = None,
) -> None:
    """Train and evaluate variants of one selection at the same token budget."""
    from sdfkit.train.sweep import SweepError, load_spec, prepare, run

    if as_json and not dry_run:  # without it the command would train, silently
        raise SweepError("--json: only with --dry-run (the plan of every variant)")
    spec = load_spec(spec_file)
    store = open_store(corpus)
    say = (lambda m: None) if as_json else (lambda m: typer.echo(m, err=True))
    if dry_run:
        plan = prepare(store, spec, say)
        typer.echo(json.dumps(plan.to_json(), indent=1) if as_json else plan.describe())
        return
    res = run(store, spec, evaluate_runs=evaluate, report=report, log=say, **given(backend=backend))
    typer.echo(res.summary())
    if res.samples_missing:  # partial results must not pass for complete ones
        raise typer.Exit(1)
