"""`sdf doctor`: a thin shell over ``sdfkit.store.doctor``."""

from __future__ import annotations

import typer

from sdfkit.cli import CorpusOpt, app, open_store


@app.command()
def doctor(corpus: CorpusOpt = None) -> None:
    """Read every part and table; move damaged parts into quarantine/; list affected documents.

    Documents stored twice keep their first copy; second copies are set aside too. Exits 0
    when everything reads back whole, 1 when something was damaged (and set aside).
    """
    from sdfkit.store.doctor import doctor as run_doctor

    report = run_doctor(open_store(corpus))
    for line in report.lines():
        typer.echo(line)
    if not report.healthy:
        raise typer.Exit(1)
