"""The ``sdf`` command: a thin shell over the library (nothing here computes).

Each stage's commands live in their own module and register themselves on ``app``. Heavy
libraries are imported inside command bodies, so ``sdf --help`` stays instant.

Defaults are written once, in the library's config dataclasses: an option made with ``opt``
defaults to None, shows the library's default in ``--help`` (read when help is printed), and
the command hands the library only what the user set (``given``). Library errors name the
setting (``learning_rate must be positive``); ``SdfGroup`` rewrites it to the flag
(``--lr must be positive``) through ``FLAGS``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from sdfkit.errors import SdfError

#: The one table from a library setting to the flag that sets it, where the two are not
#: spelled alike; every other setting ``foo_bar`` is set by ``--foo-bar``.
FLAGS = {
    "learning_rate": "--lr",
    "checkpoint_ttl_seconds": "--checkpoint-ttl",
    "include_base": "--base",
    "lda_alpha": "--lda",
    "universes": "--universe",
    "concepts": "--concept",
    "overrides": "--concept-target",
    "doc_id": "--id",
}


def flag_for(setting: str) -> str:
    """The flag that sets the library setting ``setting``."""
    return FLAGS.get(setting, "--" + setting.replace("_", "-"))


def in_flags(message: str, settings: tuple[str, ...], flags: set[str]) -> str:
    """``message`` with each named setting written as the flag of this command that sets it
    (settings the command has no flag for, e.g. a sweep file's keys, stay as they are)."""
    for setting in sorted(settings, key=len, reverse=True):
        flag = flag_for(setting)
        if flag in flags:
            message = re.sub(rf"(?<![\w-]){re.escape(setting)}(?![\w-])", flag, message)
    return message


def _command_flags(group: Any, ctx: Any) -> set[str]:
    """The flags of the group's own options and of the subcommand that ran."""
    params = list(group.params)
    name = getattr(ctx, "invoked_subcommand", None)
    sub = group.get_command(ctx, name) if name else None
    if sub is not None:
        params += sub.params
    return {o for p in params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}


class SdfGroup(TyperGroup):
    """Turns ``SdfError`` into a one-line message and its exit code, never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        _opened.clear()
        try:
            return super().invoke(ctx)
        except SdfError as exc:
            damage = _damage_behind(exc)
            if damage is not None:
                exc = damage
            message = str(exc)
            if exc.settings:
                message = in_flags(message, exc.settings, _command_flags(self, ctx))
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort):
            raise  # a command's own exit, or an error an inner group already reported
        except Exception as exc:
            # a read of a damaged part that a stage reported in its own words (a --where
            # that could not be checked, a query of its own): the part and `sdf doctor`
            damage = _damage_behind(exc)
            if os.environ.get("SDF_TRACEBACK") or (damage is None and not isinstance(exc, OSError)):
                raise
            if damage is not None:
                typer.echo(f"error: {damage}", err=True)
                raise typer.Exit(damage.exit_code) from None
            # the system refused a file (no space left, no permission, a read-only disk):
            # name it in one line; the writers leave no half-written file behind
            where = f"{exc.filename}: " if exc.filename else ""
            typer.echo(f"error: {where}{exc.strerror or exc}", err=True)
            raise typer.Exit(2) from None


#: The corpus the running command opened (``open_store``, ``creating_store``): where to
#: look for the damaged part behind a read that failed without naming it.
_opened: list[Path] = []


def _damage_behind(exc: BaseException) -> SdfError | None:
    """The damaged corpus part behind an error, else None: one the error (or the DuckDB or
    Arrow error it was raised from, which a stage may have put in its own words) names,
    or, for an error that may come of damage, the first part of the command's corpus that
    does not read back whole."""
    from sdfkit.store.catalog import DamagedPartError, Store, damage_named_in, is_read_failure

    if isinstance(exc, DamagedPartError):
        return None
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 8:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for err in chain:
        if ".parquet" in str(err):
            named = damage_named_in(str(err))
            if named is not None:
                return named
    if _opened and any(is_read_failure(err) for err in chain):
        return Store(_opened[-1]).find_damage()
    return None


def library_default(source: str, setting: str) -> Any:
    """The default of ``setting`` in ``source`` ("module:Name"): a dataclass field, or a
    keyword of a function."""
    module, _, name = source.partition(":")
    obj = getattr(importlib.import_module(module), name)
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            if f.name == setting:
                if f.default_factory is not dataclasses.MISSING:
                    return f.default_factory()
                return f.default
    else:
        param = inspect.signature(obj).parameters.get(setting)
        if param is not None and param.default is not inspect.Parameter.empty:
            return param.default
    raise LookupError(f"{source} has no default for {setting!r}")


def show_value(value: Any, flag: str) -> str:
    """A default as ``--help`` shows it."""
    if isinstance(value, bool):  # as typer shows a flag's default: its name
        name = flag.removeprefix("--")
        return name if value else "no-" + name
    if value is None or value == [] or value == ():
        return "none"
    if isinstance(value, str):
        return value if value.isprintable() and value.strip() == value else repr(value)
    return str(value)


class LibraryDefault(str):
    """What ``--help`` shows as an option's default: read from the library when help is
    printed, so it cannot drift from what the library uses, and ``sdf --help`` imports no
    library module."""

    def __new__(cls, source: str, setting: str, flag: str) -> LibraryDefault:
        self = super().__new__(cls, f"{source}.{setting}")
        self.source, self.setting, self.flag = source, setting, flag
        return self

    def __str__(self) -> str:
        return show_value(library_default(self.source, self.setting), self.flag)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def opt(source: str, setting: str, *decls: str, help: str, show: bool = True, **kw: Any) -> Any:
    """A typer option for the library setting ``setting`` of ``source`` ("module:Config"):
    it defaults to None (pass it through ``given``), and ``--help`` shows the library's
    default (``show=False`` where the help text says what None means). ``decls`` default to
    the flag of ``FLAGS``."""
    decls = decls or (flag_for(setting),)
    flag = next(d for d in decls if d.startswith("--")).split("/")[0]
    shown: Any = LibraryDefault(source, setting, flag) if show else False
    return typer.Option(*decls, help=help, show_default=shown, **kw)


def given(**values: Any) -> dict[str, Any]:
    """The settings the user gave (not None): the library's defaults fill in the rest."""
    return {k: v for k, v in values.items() if v is not None}


def new_app(help: str) -> typer.Typer:
    return typer.Typer(
        cls=SdfGroup,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )


app = new_app("sdfkit: build, audit and export Synthetic Document Finetuning corpora.")

#: What an empty ``--corpus ""`` parses to: this very object (``Path("")`` is the current
#: folder, which ``sdf ingest`` then made a corpus of), refused by ``corpus_path``.
EMPTY_CORPUS = Path("")


def parse_corpus(value: str) -> Path:
    return Path(value) if value.strip() else EMPTY_CORPUS


CorpusOpt = Annotated[
    Path | None,
    typer.Option(
        "--corpus",
        envvar="SDF_CORPUS",
        parser=parse_corpus,
        metavar="<path>",
        help="Corpus workspace directory (default ./corpus, or $SDF_CORPUS).",
        show_default=False,
    ),
]


EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine",
        envvar="SDF_ENGINE",
        help="Where per-document stages run: local (default) or ray.",
        show_default=False,
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        envvar="RAY_ADDRESS",
        help="Join this Ray cluster (with --engine ray); default: a local Ray for this command.",
        show_default=False,
    ),
]


@contextmanager
def ray_address_env(address: str | None) -> Iterator[None]:
    """``--ray-address`` for the length of one command: Ray reads ``RAY_ADDRESS``."""
    if not address:
        yield
        return
    before = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = address
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = before


def engine_options(engine: str | None, ray_address: str | None) -> dict[str, Any]:
    """Keyword arguments for ``sdfkit.engine.local.run_stage`` from the CLI's engine options."""
    opts: dict[str, Any] = {"engine": engine}
    if ray_address:
        opts["address"] = ray_address
    return opts


def corpus_path(corpus: Path | None) -> Path:
    """The corpus folder of ``--corpus``, else ``$SDF_CORPUS``, else ``./corpus``. An empty
    ``--corpus ""`` is an error, as an empty ``SDF_CORPUS`` is (``default_corpus_dir``): it
    is most often an unset shell variable, and no guess (the current folder, ./corpus) is
    safe to write to or read from."""
    from sdfkit.store.catalog import default_corpus_dir

    if corpus is EMPTY_CORPUS:
        raise SdfError(
            "corpus directory '' (--corpus or $SDF_CORPUS): empty; give a folder, or leave "
            "both unset for ./corpus"
        )
    return corpus if corpus is not None else default_corpus_dir()


def open_store(corpus: Path | None):  # noqa: ANN201 - returns sdfkit.Store
    """The existing corpus of ``--corpus`` / ``$SDF_CORPUS`` / ``./corpus``: a missing one is
    a one-line error, never a fresh empty workspace that answers 0 (see ``creating_store``)."""
    from sdfkit.store.catalog import Store

    path = corpus_path(corpus)
    check_existing_corpus(path)
    Store(path).check_path()
    _opened.append(path)
    return Store(path)


def creating_store(corpus: Path | None):  # noqa: ANN201 - returns (sdfkit.Store, bool)
    """For the commands that add to a corpus (ingest, generate, train): the store, made if
    missing, and whether it is new (``announce_new`` says where, once the command worked)."""
    from sdfkit.store.catalog import Store

    path = corpus_path(corpus)
    fresh = not is_corpus(path)
    Store(path).check_path()
    check_corpus_dir(path)
    _opened.append(path)
    return Store(path), fresh


def announce_new(store: Any, fresh: bool) -> None:
    if fresh:
        typer.echo(f"created a new corpus at {store.root}", err=True)


def is_corpus(path: Path) -> bool:
    """A folder sdfkit made: it has the catalog or the record's folder."""
    from sdfkit.store.catalog import DB_NAME

    return path.is_dir() and ((path / DB_NAME).is_file() or (path / "documents").is_dir())


def check_existing_corpus(path: Path) -> None:
    named = f"corpus {str(path)!r} (--corpus or $SDF_CORPUS)"
    if path.exists() and not path.is_dir():
        raise SdfError(
            f"corpus directory {str(path)!r} (--corpus or $SDF_CORPUS): is a file, not a directory"
        )
    if not path.exists() and any(p.is_file() for p in path.parents):
        raise SdfError(
            f"corpus directory {str(path)!r} (--corpus or $SDF_CORPUS): cannot be created, "
            "a parent is a file"
        )
    if not path.exists():
        raise SdfError(
            f"no {named}: it does not exist; check the path, or create one with "
            "`sdf ingest FILE` or `sdf generate UNIVERSE`"
        )
    if not is_corpus(path):
        raise SdfError(
            f"{named}: is not an sdf corpus (no sdf.duckdb, no documents/); check the path, "
            "or create one with `sdf ingest FILE` or `sdf generate UNIVERSE`"
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise SdfError(f"{named}: not readable by this user")


def check_corpus_dir(path: Path) -> None:
    """A usable corpus directory (``--corpus`` / ``$SDF_CORPUS``), made if missing; else an
    ``SdfError`` naming the option and the variable, before any work, not a mkdir
    traceback."""
    named = f"corpus directory {str(path)!r} (--corpus or $SDF_CORPUS)"
    if path.exists() and not path.is_dir():
        raise SdfError(f"{named}: is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a parent is a file
        raise SdfError(f"{named}: cannot be created, a parent is a file") from None
    except OSError as exc:
        raise SdfError(f"{named}: cannot be created: {exc.strerror}") from None
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise SdfError(f"{named}: not readable and writable by this user")


def _print_version(value: bool) -> None:
    if value:
        from sdfkit import __version__

        typer.echo(f"sdfkit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    corpus: CorpusOpt = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version; exit."
        ),
    ] = False,
) -> None:
    """sdfkit: build, audit and export Synthetic Document Finetuning corpora."""
    if corpus is not None:
        corpus_path(corpus)  # an empty --corpus "" stops here
        # `sdf --corpus DIR cmd` acts like SDF_CORPUS=DIR for this one command.
        before = os.environ.get("SDF_CORPUS")
        os.environ["SDF_CORPUS"] = str(corpus)

        def restore() -> None:
            if before is None:
                os.environ.pop("SDF_CORPUS", None)
            else:
                os.environ["SDF_CORPUS"] = before

        ctx.call_on_close(restore)


# Registration: each module adds its commands to ``app``.
from sdfkit.cli import audit as _audit  # noqa: E402,F401
from sdfkit.cli import core as _core  # noqa: E402,F401
from sdfkit.cli import doctor as _doctor  # noqa: E402,F401
from sdfkit.cli import export as _export  # noqa: E402,F401
from sdfkit.cli import generate as _generate  # noqa: E402,F401
from sdfkit.cli import split as _split  # noqa: E402,F401
from sdfkit.cli import sweep as _sweep  # noqa: E402,F401
from sdfkit.cli import talk as _talk  # noqa: E402,F401
from sdfkit.cli import train as _train  # noqa: E402,F401


def main() -> None:
    app()
