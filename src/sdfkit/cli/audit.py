"""`sdf audit ...`, `sdf report` and `sdf check` (registered on the shared app).

Each command is a few lines over ``sdfkit.report.build`` / ``sdfkit.report.check`` / the audit modules;
nothing here computes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sdfkit.cli import (
    CorpusOpt,
    EngineOpt,
    RayAddressOpt,
    app,
    new_app,
    open_store,
    ray_address_env,
)

audit_app = new_app("Audit the corpus: collapse, near-duplicates, diversity, keywords, shape.")
app.add_typer(audit_app, name="audit")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Project file with audit settings and thresholds (default ./sdfkit.yaml if present).",
        show_default=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="FIELD=VALUE: any setting of the audit's Config (YAML value), repeatable.",
        show_default=False,
    ),
]
UniverseOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--universe",
        metavar="FILE",
        help="Universe file or quoted glob whose required keywords are checked (repeatable).",
        show_default=False,
    ),
]


def _settings(set_: list[str] | None, **explicit: Any) -> dict[str, Any]:
    import yaml

    from sdfkit.errors import SdfError

    out: dict[str, Any] = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SdfError(f"--set {item!r}: write FIELD=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    out.update({k: v for k, v in explicit.items() if v is not None})
    return out


def _run_one(
    name: str,
    corpus: Path | None,
    config_file: Path | None,
    engine: str | None,
    settings: dict[str, Any],
    universes: list[Path] | None = None,
    ray_address: str | None = None,
) -> None:
    from sdfkit.audits import get
    from sdfkit.report.build import load_config, run_audit, set_audit_settings

    config = load_config(config_file)
    config.engine = engine or config.engine
    set_audit_settings(config, name, settings, origin="command line")
    if universes:
        config.universes = [str(u) for u in universes]
    with ray_address_env(ray_address):
        result = run_audit(open_store(corpus), name, config)
    module = get(name)
    lines = module.summary(result) if hasattr(module, "summary") else _generic_summary(result)
    for line in lines:
        typer.echo(line)
    for flag in result.flags[:20]:
        typer.echo(f"flag: {flag}")
    if len(result.flags) > 20:
        typer.echo(f"... and {len(result.flags) - 20} more flags")
    tables = ", ".join(f"audit_{result.name}_{t}" for t in result.tables)
    typer.echo(f"({result.seconds:.1f}s; tables: {tables or 'none'})")


def _generic_summary(result: Any) -> list[str]:
    out = []
    for key, value in result.figures.items():
        if isinstance(value, (int, float, str)):
            out.append(f"{key}: {value}")
    return out


@audit_app.command("shape")
def audit_shape(
    corpus: CorpusOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Documents, tokens and lengths per concept × doc type; grader verdicts."""
    _run_one("shape", corpus, config, None, _settings(set_))


@audit_app.command("ngrams")
def audit_ngrams(
    n: Annotated[
        list[int] | None, typer.Option("--n", help="n-gram sizes (repeatable; default 2..5).")
    ] = None,
    top_k: Annotated[int | None, typer.Option(help="Top n-grams kept per n.")] = None,
    where: Annotated[str | None, typer.Option(help="SQL condition selecting documents.")] = None,
    corpus: CorpusOpt = None,
    config: ConfigOpt = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    set_: SetOpt = None,
) -> None:
    """Top word n-grams by count and document frequency; flags collapsed phrases."""
    explicit = {"n": tuple(n) if n else None, "top_k": top_k, "where": where}
    _run_one("ngrams", corpus, config, engine, _settings(set_, **explicit), ray_address=ray_address)


@audit_app.command("names")
def audit_names(
    propose: Annotated[
        bool,
        typer.Option(
            "--propose",
            help="List per universe the names and phrases to ban next (never ones already banned).",
        ),
    ] = False,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply", help="With --propose: write them into the universe files (diff shown)."
        ),
    ] = False,
    universe: UniverseOpt = None,
    corpus: CorpusOpt = None,
    config: ConfigOpt = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    set_: SetOpt = None,
) -> None:
    """Person names by mentions and documents (the "Sarah Chen" detector)."""
    from sdfkit.errors import SdfError

    if apply and not propose:
        raise SdfError("--apply writes the proposals: give --propose too")
    _run_one("names", corpus, config, engine, _settings(set_), ray_address=ray_address)
    if propose:
        _propose(corpus, config, universe, apply)


def _propose(
    corpus: Path | None, config_file: Path | None, universes: list[Path] | None, apply: bool
) -> None:
    from sdfkit.audits import anti_universe as au
    from sdfkit.report.build import audit_config, load_config

    config = load_config(config_file)
    if universes:
        config.universes = [str(u) for u in universes]
    store = open_store(corpus)
    cfg = audit_config("anti_universe", au, config)
    proposals = au.propose(store, au.load_configured(store, cfg.universes), cfg)
    for line in au.proposal_lines(proposals) or ["no universes to propose bans for"]:
        typer.echo(line)
    if not apply:
        return
    changes = au.plan_apply(proposals)
    if not changes:
        typer.echo("nothing to apply: every universe file already bans what was proposed")
        return
    for change in changes:
        typer.echo(change.diff.rstrip("\n"))
    au.write_changes(changes)
    typer.echo(f"wrote {len(changes)} universe file(s): " + ", ".join(str(c.path) for c in changes))


@audit_app.command("anti_universe")
def audit_anti_universe(
    universe: UniverseOpt = None,
    corpus: CorpusOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Documents carrying a name or phrase their own universe bans; excludes them."""
    _run_one("anti_universe", corpus, config, None, _settings(set_), universe)


@audit_app.command("dedup")
def audit_dedup(
    corpus: CorpusOpt = None,
    config: ConfigOpt = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    set_: SetOpt = None,
) -> None:
    """Near-duplicate clusters (MinHash LSH) and a keep-one-per-cluster exclusion."""
    _run_one("dedup", corpus, config, engine, _settings(set_), ray_address=ray_address)


@audit_app.command("diversity")
def audit_diversity(
    max_seq_length: Annotated[
        int | None, typer.Option(help="Word pieces of each document embedded (default 256).")
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="auto, fp32 or bf16 (auto: bf16 on CPUs with native bf16).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Encoder batch size.")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Local embedding processes (default $SDF_WORKERS or 1).")
    ] = None,
    corpus: CorpusOpt = None,
    config: ConfigOpt = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    set_: SetOpt = None,
) -> None:
    """Embedding diversity: mean pairwise cosine, nearest neighbours, effective documents."""
    explicit = {
        "max_seq_length": max_seq_length,
        "precision": precision,
        "batch_size": batch_size,
        "workers": workers,
    }
    _run_one(
        "diversity", corpus, config, engine, _settings(set_, **explicit), ray_address=ray_address
    )


@audit_app.command("keywords")
def audit_keywords(
    universe: UniverseOpt = None,
    min_rate: Annotated[
        float | None, typer.Option(help="Replace every universe's minimum rate with this.")
    ] = None,
    corpus: CorpusOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Rate of each universe's required keywords per concept; documents missing them."""
    _run_one("keywords", corpus, config, None, _settings(set_, min_rate=min_rate), universe)


@app.command()
def report(
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Where to write the JSON (reports/report.json).")
    ] = None,
    html_path: Annotated[
        Path | None, typer.Option("--html", help="Where to write the HTML (reports/report.html).")
    ] = None,
    universe: UniverseOpt = None,
    skip: Annotated[
        list[str] | None,
        typer.Option("--skip", metavar="AUDIT", help="Audit not to run (repeatable)."),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", metavar="AUDIT", help="Run only this audit (repeatable)."),
    ] = None,
    config: ConfigOpt = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    corpus: CorpusOpt = None,
) -> None:
    """Run every audit; write reports/report.html (for people) and report.json (for machines)."""
    from sdfkit.errors import SdfError
    from sdfkit.report.build import _audit_names, build, load_config, verdict_errors

    cfg = load_config(config)
    cfg.json = json_path or cfg.json
    cfg.html = html_path or cfg.html
    cfg.engine = engine or cfg.engine
    if universe:
        cfg.universes = [str(u) for u in universe]
    if skip:
        cfg.skip = _audit_names(skip, "--skip")
    with ray_address_env(ray_address):
        rep = build(open_store(corpus), cfg, only=_audit_names(only, "--only") if only else None)
    for name, entry in rep.data["audits"].items():
        typer.echo(
            f"{name:10s} {entry['status']:13s} {entry['seconds']:7.1f}s  "
            f"{len(entry.get('flags', []))} flag(s)"
        )
    fails = [v for v in rep.verdicts if not v.passed]
    if rep.verdicts:
        typer.echo(
            f"checks: {len(rep.verdicts) - len(fails)} pass, {len(fails)} fail "
            "(`sdf check` exits 1 on a failure)"
        )
        for v in fails:
            typer.echo(f"  {v.line()}")
    typer.echo(f"wrote {rep.html_path} and {rep.json_path}")
    errors = verdict_errors(rep.data)
    if errors:
        raise SdfError("\n".join(errors))


@app.command()
def check(
    report_path: Annotated[
        Path | None,
        typer.Option("--report", help="The report.json to check (default: the report's path)."),
    ] = None,
    run: Annotated[
        bool, typer.Option("--run", help="Run the audits (write a fresh report) first.")
    ] = False,
    universe: UniverseOpt = None,
    config: ConfigOpt = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    corpus: CorpusOpt = None,
) -> None:
    """Evaluate the thresholds of the project file; exit 1 naming each breach."""
    from sdfkit.report.build import build, load_config
    from sdfkit.report.check import check_report, evaluate, load_report

    cfg = load_config(config)
    cfg.engine = engine or cfg.engine
    if universe:
        cfg.universes = [str(u) for u in universe]
    if report_path is not None:
        cfg.json = report_path
    if run:
        with ray_address_env(ray_address):
            data = build(open_store(corpus), cfg).data
    else:
        data = load_report(cfg.json)
    verdicts = evaluate(data, cfg.thresholds).verdicts
    if not verdicts:
        typer.echo(f"no thresholds configured ({cfg.source or 'no sdfkit.yaml'}): nothing to check")
        return
    for v in verdicts:
        if v.passed:
            typer.echo(v.line())
    check_report(data, cfg.thresholds)
    typer.echo(f"all {len(verdicts)} checks pass")
