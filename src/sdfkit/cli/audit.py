"""`sdf audit ...`, `sdf report` and `sdf check` (registered on the shared app).

Each command is a few lines over ``sdfkit.report.build`` / ``sdfkit.report.check`` / the audit modules;
nothing here computes. ``sdf audit <name>`` is generated from the registry ``sdfkit.audits.AUDITS``:
each audit module's ``COMMAND`` says which of its Config fields get a flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sdfkit.cli import (
    CorpusOpt,
    EngineOpt,
    RayAddressOpt,
    SdfGroup,
    app,
    flag_for,
    given,
    library_default,
    new_app,
    open_store,
    opt,
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


def _settings(set_: list[str] | None, **explicit: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings of ``--set FIELD=VALUE`` and of the audit's own options, and the option
    that gave each (``--set where``, ``--where``) for errors found once the corpus is open."""
    import yaml

    from sdfkit.errors import SdfError

    out: dict[str, Any] = {}
    options: dict[str, str] = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SdfError(f"--set {item!r}: write FIELD=VALUE")
        if not value.strip():  # YAML reads nothing as null: "every document" for a where
            raise SdfError(f"--set {item!r}: no value; write {key.strip()}=null for none")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:  # "n=[": a traceback before
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise SdfError(f"--set {item!r}: not a value ({problem})") from None
        options[key.strip()] = f"--set {key.strip()}"
    given = {k: v for k, v in explicit.items() if v is not None}
    out.update(given)
    options.update({k: flag_for(k) for k in given})
    return out, options


def _run_one(
    name: str,
    corpus: Path | None,
    config_file: Path | None,
    engine: str | None,
    settings: tuple[dict[str, Any], dict[str, str]],
    universes: list[Path] | None = None,
    ray_address: str | None = None,
    flags: dict[str, bool] | None = None,
) -> None:
    from sdfkit.audits import module, where_ids
    from sdfkit.report.build import audit_config, load_config, run_audit, set_audit_settings

    audit = module(name)
    flags = flags or {}
    if flags and hasattr(audit, "check_flags"):
        audit.check_flags(flags)
    config = load_config(config_file)
    config.engine = engine or config.engine
    values, options = settings
    set_audit_settings(config, name, values, origin="command line", options=options)
    if universes:
        config.universes = [str(u) for u in universes]
    store = open_store(corpus)
    # a bad `where`, or one that selects nothing, stops here, naming where it came from
    where = getattr(audit_config(name, audit, config), "where", None)
    where_ids(store, name, where, config.origin(name, "where"))
    with ray_address_env(ray_address):
        result = run_audit(store, name, config)
    for line in audit.summary(result):
        typer.echo(line)
    for flag in result.flags[:20]:
        typer.echo(f"flag: {flag}")
    if len(result.flags) > 20:
        typer.echo(f"... and {len(result.flags) - 20} more flags")
    tables = ", ".join(f"audit_{result.name}_{t}" for t in result.tables)
    typer.echo(f"({result.seconds:.1f}s; tables: {tables or 'none'})")
    if flags and hasattr(audit, "after_command"):
        fresh = load_config(config_file)  # the project's settings, without this audit's --set
        if universes:
            fresh.universes = [str(u) for u in universes]
        audit.after_command(
            store, lambda other: audit_config(other, None, fresh), flags, typer.echo
        )


def _option_type(hint: Any) -> Any:
    """The typer type of a Config field's option: None allowed (an option left out is not
    passed); a tuple or list field is a repeatable option."""
    import types
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) in (tuple, list):
        return list[typing.get_args(hint)[0]] | None  # type: ignore[index]
    return hint | None


def audit_command(name: str) -> Any:
    """``sdf audit <name>``, built from the audit module's ``COMMAND`` and ``Config``: each
    option is made with ``opt`` (None by default, ``--help`` shows the Config's default) and
    only the options the user set reach the Config (``given``)."""
    import inspect
    import typing

    from sdfkit.audits import module

    audit = module(name)
    spec = audit.COMMAND
    hints = typing.get_type_hints(audit.Config)
    params: list[inspect.Parameter] = []

    def param(pname: str, annotation: Any, default: Any = None) -> None:
        params.append(
            inspect.Parameter(
                pname, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )

    options = dict(spec.options)
    source = f"{audit.__name__}:Config"
    for setting, help_text in options.items():
        # a None default is shown by the help text itself ("default $SDF_WORKERS or 1")
        shown = library_default(source, setting) is not None
        option = opt(source, setting, help=help_text, show=shown)
        param(f"opt_{setting}", Annotated[_option_type(hints[setting]), option])
    for flag_name, help_text in spec.flags.items():
        param(
            f"flag_{flag_name}",
            Annotated[bool, typer.Option(f"--{flag_name}", help=help_text)],
            False,
        )
    if spec.universe:
        param("universe", UniverseOpt)
    param("corpus", CorpusOpt)
    param("config", ConfigOpt)
    if spec.engine:
        param("engine", EngineOpt)
        param("ray_address", RayAddressOpt)
    param("set_", SetOpt)

    def command(**kw: Any) -> None:
        values = {s: kw[f"opt_{s}"] for s in options}
        explicit = {
            s: tuple(v) if isinstance(v, list) else v for s, v in given(**values).items() if v != []
        }
        flags = {f: bool(kw[f"flag_{f}"]) for f in spec.flags}
        _run_one(
            name,
            kw["corpus"],
            kw["config"],
            kw.get("engine"),
            _settings(kw["set_"], **explicit),
            kw.get("universe"),
            ray_address=kw.get("ray_address"),
            flags=flags,
        )

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = spec.help
    command.__name__ = f"audit_{name}"
    one = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    one.command(name)(command)
    cmd = typer.main.get_command(one)
    cmd.name = name
    return cmd


class AuditGroup(SdfGroup):
    """``sdf audit``: one subcommand per registered audit, built when it is asked for, so
    ``sdf --help`` imports no audit module."""

    def list_commands(self, ctx: Any) -> list[str]:
        from sdfkit.audits import AUDITS

        return [*super().list_commands(ctx), *AUDITS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        from sdfkit.audits import AUDITS

        if cmd_name in AUDITS:
            return audit_command(cmd_name)
        return super().get_command(ctx, cmd_name)


audit_app.info.cls = AuditGroup


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
    """Evaluate the thresholds of the project file; exit 1 naming each breach.

    Without ``--run`` the report must have measured this corpus as it is now: one of
    another corpus, or one older than its last change, is refused (exit 2)."""
    from sdfkit.report.build import build, load_config, verdict_errors
    from sdfkit.report.check import check_report, load_report_json, run_checks
    from sdfkit.report.freshness import check_fresh

    cfg = load_config(config)
    cfg.engine = engine or cfg.engine
    if universe:
        cfg.universes = [str(u) for u in universe]
    if report_path is not None:
        cfg.json = report_path
    if run:
        with ray_address_env(ray_address):
            data = build(open_store(corpus), cfg).data
        for line in verdict_errors(data):  # why an audit's gate is "not in the report"
            typer.echo(f"error: {line}", err=True)
    else:
        data = load_report_json(cfg.json)
        check_fresh(data, open_store(corpus), cfg.json)
    verdicts = run_checks(data, cfg.thresholds).verdicts
    if not verdicts:
        typer.echo(f"no thresholds configured ({cfg.source or 'no sdfkit.yaml'}): nothing to check")
        return
    for v in verdicts:
        if v.passed:
            typer.echo(v.line())
    check_report(data, cfg.thresholds)
    typer.echo(f"all {len(verdicts)} checks pass")
