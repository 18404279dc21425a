"""The CLI states each option's default next to the library's config dataclass: they must
agree, or `sdf export` and `sdfkit.export.shards.export(...)` from a notebook would differ."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer

from sdfkit.cli import app
from sdfkit.evaluate.recall import EvalConfig
from sdfkit.evaluate.sampling import SampleConfig
from sdfkit.export.selection import SelectionConfig
from sdfkit.export.shards import ExportConfig
from sdfkit.generate.documents import GenerateConfig
from sdfkit.generate.grade import GradeConfig
from sdfkit.train.run import TrainConfig

# The library field an option maps onto, where the names differ.
RENAMED = {"universe": "universes"}


def _command(path: list[str]):  # noqa: ANN202
    cmd = typer.main.get_command(app)
    for name in path:
        assert hasattr(cmd, "commands"), path
        cmd = cmd.commands[name]
    return cmd


def _same(cli_default, lib_default) -> bool:
    if isinstance(lib_default, list) and cli_default in (None, ()):
        return lib_default == []
    if isinstance(cli_default, Path) or isinstance(lib_default, Path):
        return str(cli_default) == str(lib_default)
    if isinstance(cli_default, tuple):
        cli_default = list(cli_default)
    return cli_default == lib_default


@pytest.mark.parametrize(
    ("path", "config"),
    [
        (["select"], SelectionConfig),
        (["export"], ExportConfig),
        (["generate"], GenerateConfig),
        (["grade"], GradeConfig),
        (["train"], TrainConfig),
        (["eval"], EvalConfig),
        (["sample"], SampleConfig),
        (["chat"], SampleConfig),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else x.__name__,
)
def test_cli_defaults_match_the_library(path, config):
    fields = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            fields[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            fields[f.name] = f.default_factory()
    checked, drift = 0, []
    for p in _command(path).params:
        name = RENAMED.get(p.name, p.name)
        if name not in fields:
            continue
        if p.default is None and fields[name] is not None and not isinstance(fields[name], list):
            continue  # "None = let the library decide": nothing restated
        checked += 1
        if not _same(p.default, fields[name]):
            drift.append(
                f"--{p.name.replace('_', '-')}: CLI {p.default!r}, library {fields[name]!r}"
            )
    assert checked >= 2, f"too few options of sdf {' '.join(path)} map onto {config.__name__}"
    assert not drift, f"sdf {' '.join(path)}: " + "; ".join(drift)
