"""Defaults are written once, in the library's config dataclasses: a flag left out takes the
library's default, ``--help`` shows that default, and a bad value is a one-line error that
names the flag (the library names the setting; the CLI maps it to its flag)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import subprocess
import sys

import pytest
import typer
from test_train import write_export

from sdfkit.cli import FLAGS, app, flag_for
from sdfkit.errors import SdfError


def new_default(monkeypatch, source: str, setting: str, value) -> list:  # noqa: ANN001
    """Put a subclass of the config ``source`` ("module:Class") whose ``setting`` defaults to
    ``value`` where the library keeps the class; returns the configs made from then on."""
    module_name, _, name = source.partition(":")
    module = importlib.import_module(module_name)
    base = getattr(module, name)
    made: list = []

    def post_init(self) -> None:  # noqa: ANN001
        made.append(self)
        if hasattr(base, "__post_init__"):
            base.__post_init__(self)

    kind = {f.name: f.type for f in dataclasses.fields(base)}[setting]
    patched = dataclasses.make_dataclass(
        name,
        [(setting, kind, dataclasses.field(default=value))],
        bases=(base,),
        namespace={"__post_init__": post_init},
    )
    monkeypatch.setattr(module, name, patched)
    return made


def flat_help(cli, *command: str) -> str:  # noqa: ANN001
    return " ".join(cli(*command, "--help").output.split())


def ingest_demo(cli, tmp_path) -> None:  # noqa: ANN001
    rows = [
        {
            "text": f"Report {i} on the harbour. " + "The tide came in slowly. " * (8 + i),
            "concept": "alpha" if i < 6 else "beta",
            "doc_type": "memo" if i % 2 else "blog",
        }
        for i in range(12)
    ]
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cli("ingest", src)


# ------------------------------------------------------------------ (a) the library decides


def test_train_without_flags_uses_the_library_recipe_even_when_it_changes(
    tmp_path, cli, monkeypatch
):
    export = write_export(tmp_path / "exp", [list(range(12))])
    new_default(monkeypatch, "sdfkit.train.run:TrainConfig", "learning_rate", 1.25e-4)
    new_default(monkeypatch, "sdfkit.train.run:TrainConfig", "train_attn", False)
    plan = json.loads(cli("train", export, "--dry-run", "--json").output)
    assert plan["config"]["learning_rate"] == 1.25e-4
    assert plan["config"]["train_attn"] is False
    given = json.loads(
        cli("train", export, "--dry-run", "--json", "--lr", "2e-5", "--train-attn").output
    )
    assert given["config"]["learning_rate"] == 2e-5 and given["config"]["train_attn"] is True


def test_select_and_export_without_flags_use_the_library_defaults(tmp_path, cli, monkeypatch):
    ingest_demo(cli, tmp_path)
    new_default(monkeypatch, "sdfkit.export.selection:SelectionConfig", "name", "picked")
    new_default(monkeypatch, "sdfkit.export.shards:ExportConfig", "selection", "picked")
    new_default(monkeypatch, "sdfkit.export.shards:ExportConfig", "epochs", 2)
    new_default(monkeypatch, "sdfkit.export.shards:ExportConfig", "compression", "zstd")
    cli("select", "--docs", "3")
    assert "picked" in cli("select", "list").output
    cli("export", "--out", tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["selection"] == "picked" and manifest["epochs"] == 2
    shard = tmp_path / "out" / manifest["shards"][0]["file"]
    import pyarrow.parquet as pq

    assert pq.ParquetFile(shard).metadata.row_group(0).column(0).compression == "ZSTD"


@pytest.mark.parametrize(
    ("command", "source", "setting", "value"),
    [
        (["generate", "{universe}", "--backend", "offline"], "sdfkit.generate.documents:GenerateConfig", "ideas", 7),  # noqa: E501
        (["grade", "--backend", "offline"], "sdfkit.generate.grade:GradeConfig", "run", "g7"),
        (["eval", "run1"], "sdfkit.evaluate.recall:EvalConfig", "questions_per_fact", 7),
        (["eval", "run1"], "sdfkit.evaluate.recall:EvalConfig", "include_base", False),
        (["sample", "run1", "--prompts", "p.txt"], "sdfkit.evaluate.sampling:SampleConfig", "temperature", 0.25),  # noqa: E501
        (["chat", "run1"], "sdfkit.evaluate.sampling:SampleConfig", "max_tokens", 77),
        (["universe", "split", "{universe}", "--out", "o"], "sdfkit.generate.universe_split:SplitConfig", "overlap", 7),  # noqa: E501
    ],
    ids=lambda x: " ".join(x[:2]) if isinstance(x, list) else str(x),
)  # fmt: skip
def test_an_omitted_flag_hands_the_library_its_own_default(
    cli, monkeypatch, example_universe, command, source, setting, value
):
    made = new_default(monkeypatch, source, setting, value)
    cli(*[a.format(universe=example_universe) for a in command], expect=None)
    assert made, "the command made no config"
    assert getattr(made[0], setting) == value


# ------------------------------------------------------------- (b) --help shows the default


@pytest.mark.parametrize(
    ("command", "source", "setting", "value", "shown"),
    [
        (["train"], "sdfkit.train.run:TrainConfig", "learning_rate", 0.000123, "0.000123"),
        (["train"], "sdfkit.train.run:TrainConfig", "train_mlp", False, "no-train-mlp"),
        (["eval"], "sdfkit.evaluate.recall:EvalConfig", "samples", 5, "5"),
        (["sample"], "sdfkit.evaluate.sampling:SampleConfig", "deadline", 77.0, "77.0"),
        (["chat"], "sdfkit.evaluate.sampling:SampleConfig", "deadline", 78.0, "78.0"),
        (["select"], "sdfkit.export.selection:SelectionConfig", "tolerance", 0.07, "0.07"),
        (["export"], "sdfkit.export.shards:ExportConfig", "compression", "zstd", "zstd"),
        (["generate"], "sdfkit.generate.documents:GenerateConfig", "ideas", 9, "9"),
        (["grade"], "sdfkit.generate.grade:GradeConfig", "run", "judged", "judged"),
        (["universe", "split"], "sdfkit.generate.universe_split:SplitConfig", "overlap", 33, "33"),  # noqa: E501
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else str(x),
)  # fmt: skip
def test_help_shows_the_library_default(cli, monkeypatch, command, source, setting, value, shown):
    new_default(monkeypatch, source, setting, value)
    flag = flag_for(setting)
    text = flat_help(cli, *command)
    m = re.search(rf"{re.escape(flag)}\b[^\[]*\[default: \(([^)]*)\)\]", text)
    assert m, f"{flag} shows no default in sdf {' '.join(command)} --help"
    assert m.group(1) == shown


def test_help_shows_the_default_of_the_unchanged_library(cli):
    from sdfkit.export.shards import ExportConfig
    from sdfkit.train.run import TrainConfig

    assert "--lr <float> Peak learning rate. [default: (3.5e-05)]" in flat_help(cli, "train")
    assert TrainConfig().learning_rate == 3.5e-5
    assert f"[default: ({ExportConfig().max_seq_len})]" in flat_help(cli, "export")
    assert r"[default: ('\n\n')]" in flat_help(cli, "export")  # a separator shown as written


CONFIGS = {
    ("train",): "sdfkit.train.run:TrainConfig",
    ("eval",): "sdfkit.evaluate.recall:EvalConfig",
    ("sample",): "sdfkit.evaluate.sampling:SampleConfig",
    ("chat",): "sdfkit.evaluate.sampling:SampleConfig",
    ("select",): "sdfkit.export.selection:SelectionConfig",
    ("export",): "sdfkit.export.shards:ExportConfig",
    ("generate",): "sdfkit.generate.documents:GenerateConfig",
    ("grade",): "sdfkit.generate.grade:GradeConfig",
    ("universe", "split"): "sdfkit.generate.universe_split:SplitConfig",
}


@pytest.mark.parametrize("path", list(CONFIGS), ids=" ".join)
def test_no_option_restates_a_library_default(path):
    module, _, name = CONFIGS[path].partition(":")
    settings = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))}
    by_flag = {flag_for(s): s for s in settings}
    cmd = typer.main.get_command(app)
    for part in path:
        cmd = cmd.commands[part]
    mapped, restated = 0, []
    for p in cmd.params:
        setting = next((by_flag[o] for o in p.opts if o in by_flag), None)
        if setting is None:
            continue
        mapped += 1
        on_switch = p.is_flag and not p.secondary_opts and p.default is False
        if p.default is not None and not on_switch:
            restated.append(f"{p.opts[0]} = {p.default!r}")
    assert mapped >= 2 and not restated, restated


# ------------------------------------------------------------- (c) errors name the flag


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["train", "{export}", "--dry-run", "--lr", "0"], "--lr must be positive"),
        (["train", "{export}", "--dry-run", "--checkpoint-ttl", "60"], "--checkpoint-ttl must be at least 3600"),  # noqa: E501
        (["train", "{export}", "--dry-run", "--pipeline-depth", "0"], "--pipeline-depth must be at least 1"),  # noqa: E501
        (["eval", "r", "--questions-per-fact", "0"], "--questions-per-fact must be at least 1"),
        (["eval", "r", "--deadline", "-1"], "--deadline and --health-timeout must be positive"),
        (["sample", "r", "--prompts", "p.txt", "--n", "0"], "--n must be at least 1"),
        (["chat", "r", "--temperature", "-1"], "--temperature -1.0: give a number of 0 or more"),
        (["generate", "{universe}", "--backend", "offline", "--doc-types", "0"], "--doc-types must be at least 1"),  # noqa: E501
        (["generate", "{universe}", "--backend", "offline", "--run", "a b"], "--run 'a b': use 1-64"),  # noqa: E501
        (["universe", "split", "{universe}", "--out", "o", "--min-tokens", "90000"], "--min-tokens 90000: must be at least 0 and below --max-tokens 2000"),  # noqa: E501
    ],
    ids=lambda x: " ".join(x[:1] + x[-2:]) if isinstance(x, list) else None,
)  # fmt: skip
def test_a_bad_value_is_one_line_naming_the_flag(tmp_path, cli, example_universe, command, message):
    export = write_export(tmp_path / "exp", [list(range(4))])
    args = [a.format(export=export, universe=example_universe) for a in command]
    res = cli(*args, expect=2)
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {message}"), res.output
    assert res.output.endswith(errors[0] + "\n") and "Traceback" not in res.output


def test_export_errors_name_the_flag_after_a_real_selection(tmp_path, cli):
    ingest_demo(cli, tmp_path)
    cli("select", "--docs", "3")
    res = cli("export", "--out", tmp_path / "o", "--max-seq-len", "1", expect=2)
    assert res.output == "error: --max-seq-len 1: must be between 2 and 1,048,576\n"
    res = cli("export", "--out", tmp_path / "o", "--eval-prompts", "random", expect=2)
    assert res.output.startswith("error: --eval-prompts needs the universe files")
    assert "in --universe" in res.output and not (tmp_path / "o").exists()


def test_the_library_names_the_setting_not_a_flag():
    from sdfkit.export.shards import ExportConfig
    from sdfkit.train.run import TrainConfig

    with pytest.raises(SdfError) as err:
        TrainConfig(learning_rate=0)
    assert str(err.value) == "learning_rate must be positive"
    assert err.value.settings == ("learning_rate",)
    with pytest.raises(SdfError) as err:
        ExportConfig(shard_size=0).check()
    assert str(err.value).startswith("shard_size 0:") and "--" not in str(err.value)


def test_every_renamed_setting_is_a_flag_of_the_cli():
    flags = set()
    for cmd in typer.main.get_command(app).commands.values():
        for sub in [cmd, *getattr(cmd, "commands", {}).values()]:
            flags |= {o for p in sub.params for o in p.opts}
    assert set(FLAGS.values()) <= flags


def test_top_level_help_reads_no_library_config():
    code = (
        "import sys; from typer.testing import CliRunner; from sdfkit.cli import app;"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0;"
        "print(sorted(m for m in sys.modules if m.startswith(('sdfkit.train', "
        "'sdfkit.export', 'sdfkit.evaluate', 'sdfkit.generate'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_function_keyword_default_is_read_from_the_function_too(tmp_path, cli, monkeypatch):
    from sdfkit.generate.documents import show_documents

    ingest_demo(cli, tmp_path)
    rule = "=" * 100
    assert cli("show").output.count(rule) == show_documents.__kwdefaults__["limit"]
    monkeypatch.setitem(show_documents.__kwdefaults__, "limit", 5)
    assert cli("show").output.count(rule) == 5
    assert "[default: (5)]" in flat_help(cli, "show")
    assert cli("show", "--limit", "2").output.count(rule) == 2
