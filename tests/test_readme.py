"""The README's examples work: its shell lines run on a demo corpus, and docs name real options.

The test reads README.md and docs/*.md; it keeps no copy of their commands. Every line of a
```bash/sh/shell/console block of the README that starts with ``sdf``, ``python`` or ``make``
is an example:

- ``sdf ...`` and ``python ...`` lines run with bash, in order, from a project folder holding
  the demo corpus (built once, offline, by examples/demo.sh's own first steps);
- a line ending in ``# exit N`` must exit with N (0 otherwise);
- a line marked ``# needs ANTHROPIC_API_KEY`` (or any ``# needs ...``) is not run: its command
  and every option must exist in the CLI;
- ``make TARGET`` lines must name a target of the Makefile (make demo is not run here).

```python blocks of the README run too, in the same order and folder.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
SHELL_LANGS = {"bash", "sh", "shell", "console"}
RUN_TOOLS = {"sdf", "python", "make"}
# Commands of other tools that docs mention beside sdf's (their options are not sdf's).
BENCH_OPTION = re.compile(r"[\"'](--[a-z][\w-]*)[\"']")  # add_argument("--quick", ...)
OTHER_TOOLS = {"python", "pip", "make", "cd", "export", "duckdb", "jq", "git", "bash", "source"}


# -- parsing the Markdown ---------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    lang: str
    lines: tuple[str, ...]
    first_line: int  # 1-based line of the README where the block's text starts


@dataclass(frozen=True)
class Example:
    kind: str  # "shell" or "python"
    text: str
    line: int

    @property
    def marker(self) -> str:
        m = re.search(r"#\s*(needs\s+\S+|exit\s+\d+)\s*[:.]?[^#]*$", self.text)
        return m.group(1) if m else ""

    @property
    def expected_exit(self) -> int:
        m = re.fullmatch(r"exit\s+(\d+)", self.marker)
        return int(m.group(1)) if m else 0


def fenced_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*```\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1).lower(), i + 1
        j = start
        while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
            j += 1
        blocks.append(Block(lang, tuple(lines[start:j]), start + 1))
        i = j + 1
    return blocks


def shell_lines(block: Block) -> list[tuple[str, int]]:
    """The block's command lines (continuations joined; ``$ `` prompts of console blocks)."""
    out: list[tuple[str, int]] = []
    pending, pending_line = "", 0
    for offset, raw in enumerate(block.lines):
        line = raw.rstrip()
        if block.lang == "console" and not pending:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not pending:
            pending_line = block.first_line + offset
        if pending:
            line = line.lstrip()
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        out.append(((pending + line).strip(), pending_line))
        pending = ""
    return [(c, n) for c, n in out if c and not c.startswith("#")]


def readme_examples(text: str) -> list[Example]:
    examples: list[Example] = []
    for block in fenced_blocks(text):
        if block.lang in SHELL_LANGS:
            for command, line in shell_lines(block):
                if command.split()[0] in RUN_TOOLS:
                    examples.append(Example("shell", command, line))
        elif block.lang == "python":
            examples.append(Example("python", "\n".join(block.lines), block.first_line))
    return examples


def sdf_mentions(text: str) -> list[tuple[list[str], int]]:
    """Every ``sdf ...`` command in code blocks and inline code, as argument lists."""
    found: list[tuple[str, int]] = []
    for block in fenced_blocks(text):
        if block.lang in SHELL_LANGS:
            found += shell_lines(block)
        elif block.lang in {"", "text"}:  # transcripts: the commands after a "$ " prompt
            found += shell_lines(Block("console", block.lines, block.first_line))
    prose = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)
    for m in re.finditer(r"`((?:[A-Z_]+=\S+ )*sdf [^`]+)`", prose):
        found.append((m.group(1), prose.count("\n", 0, m.start()) + 1))
    commands = []
    for command, line in found:
        for part in re.split(r"\s*(?:&&|\|\||\||;)\s*", command):
            words = _split(part)
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words = words[1:]  # SDF_ENGINE=ray sdf report
            if words and words[0] == "sdf":
                commands.append((words[1:], line))
    return commands


def _split(command: str) -> list[str]:
    try:
        return shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote in prose: fall back to words
        return command.split()


def _placeholder(word: str) -> bool:
    return (
        word.startswith("<")
        or word in {"...", "…"}
        or bool(re.fullmatch(r"[A-Z][A-Z_]*(\.\.\.)?", word))
        or "[" in word
    )


# -- the CLI's command tree -----------------------------------------------------------------


def cli_root() -> Any:
    """sdf's click command tree (typer vendors click, so it is duck-typed here)."""
    import typer

    from sdfkit.cli import app

    return typer.main.get_command(app)


def options(command: Any) -> dict[str, bool]:
    """The command's long options, each with whether it takes a value."""
    found = {"--help": False}
    for param in command.params:
        if param.param_type_name == "option":
            for name in (*param.opts, *param.secondary_opts):
                if name.startswith("--"):
                    found[name] = not (param.is_flag or param.count)
    return found


def subcommands(command: Any) -> dict[str, Any]:
    """A group's subcommands, including those it builds only when asked (``sdf audit NAME``)."""
    if not hasattr(command, "list_commands"):
        return {}
    ctx = command.context_class(command)
    return {name: command.get_command(ctx, name) for name in command.list_commands(ctx)}


def option_names(command: Any) -> set[str]:
    return set(options(command))


def all_option_names(command: Any) -> set[str]:
    names = option_names(command)
    for sub in subcommands(command).values():
        names |= all_option_names(sub)
    return names


def check_sdf_args(root: Any, args: list[str]) -> list[str]:
    """What in ``sdf ARGS`` the CLI does not know: unknown commands and options."""
    problems: list[str] = []
    command, path = root, ["sdf"]
    descending, value_next = True, False
    for word in args:
        if value_next:  # the value of the option before it
            value_next = False
            continue
        if word.startswith("--"):
            name, has_value = word.split("=", 1)[0], "=" in word
            known = options(command)
            if name not in known:
                problems.append(f"{' '.join(path)}: no option {name}")
            value_next = known.get(name, False) and not has_value
            continue
        if not descending or word.startswith("-"):
            continue
        if hasattr(command, "list_commands"):
            subs = subcommands(command)
            if word in subs:
                command = subs[word]
                path.append(word)
                continue
            if _placeholder(word):  # `sdf audit <name> ...`: options of an unnamed command
                return problems
            if command is root:
                return [f"sdf: no command {word!r}"]
        descending = False  # a positional argument: no subcommand follows it
    return problems


# -- the demo project -----------------------------------------------------------------------


def _env(project: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "TINKER_API_KEY", "SDF_CORPUS"):
        env.pop(var, None)
    env["PATH"] = f"{project / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.update(SDF_PROGRESS="0", TINKER_TELEMETRY="0", HF_HUB_OFFLINE="1")
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder as a newcomer has it (examples/, sdfkit.yaml), with the demo corpus.

    ``sdf`` and ``python`` on its PATH are this interpreter with this checkout's sdfkit. The
    corpus is built by examples/demo.sh itself, stopped after its corpus-building steps, with
    one document per idea (its own knob) so the README's `sdf report` stays quick.
    """
    project = tmp_path_factory.mktemp("readme")
    (project / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    shutil.copy(ROOT / "sdfkit.yaml", project / "sdfkit.yaml")
    bin_dir = project / "bin"
    bin_dir.mkdir()
    (bin_dir / "sdf").write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -c '
        '\'import sys; sys.argv[0] = "sdf"; from sdfkit.cli import main; main()\' "$@"\n'
    )
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for shim in bin_dir.iterdir():
        shim.chmod(0o755)
    env = _env(project) | {
        "SDF": str(bin_dir / "sdf"),
        "SDF_CORPUS": str(project / "corpus"),
        "SDF_DEMO_CORPUS_ONLY": "1",
        "SDF_DEMO_DOCS_PER_IDEA": "1",  # 140 generated documents instead of 420: quicker audits
    }
    done = subprocess.run(
        ["bash", str(ROOT / "examples" / "demo.sh")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return project


# -- tests ----------------------------------------------------------------------------------


def test_readme_is_under_15_kb():
    assert len(README.read_bytes()) < 15_000


def test_readme_first_screen_is_the_newcomer_path_in_order():
    """ingest → sql → report → select → export → train --dry-run, in the first 40 lines."""
    head = "\n".join(README.read_text(encoding="utf-8").splitlines()[:40])
    examples = [e.text for e in readme_examples(head) if e.kind == "shell"]
    steps = ["sdf ingest ", "sdf sql ", "sdf report", "sdf select ", "sdf export ", "sdf train "]
    positions = []
    for step in steps:
        hits = [i for i, text in enumerate(examples) if text.startswith(step)]
        assert hits, f"{step!r} is not on the README's first screen"
        positions.append(hits[0])
    assert positions == sorted(positions), examples
    train = examples[positions[-1]]
    assert "--dry-run" in train
    ingest = examples[positions[0]]
    jsonl = next(w for w in _split(ingest) if w.endswith(".jsonl"))
    assert (ROOT / jsonl).is_file(), f"the README ingests {jsonl}, which examples/ lacks"


def test_every_readme_example_runs_on_the_demo_corpus(demo_project: Path):
    examples = readme_examples(README.read_text(encoding="utf-8"))
    assert len([e for e in examples if e.text.startswith("sdf ")]) >= 8
    root = cli_root()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w.-]+)\s*:(?!=)", makefile, flags=re.M))
    env = _env(demo_project)
    seconds: list[tuple[float, str]] = []  # printed (pytest -s) to see where the time goes
    for example in examples:
        started = time.monotonic()
        where = f"README.md:{example.line}: {example.text.splitlines()[0]}"
        if example.kind == "python":
            done = subprocess.run(
                [sys.executable, "-c", example.text],
                cwd=demo_project,
                env=env,
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, f"{where}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
            continue
        words = _split(example.text)
        if words[0] == "make":
            assert words[1] in targets, f"{where}: the Makefile has no target {words[1]!r}"
            continue
        if example.marker.startswith("needs"):
            assert words[0] == "sdf", f"{where}: only sdf lines may be marked '# needs'"
            assert check_sdf_args(root, words[1:]) == [], where
            continue
        done = subprocess.run(
            ["bash", "-c", example.text], cwd=demo_project, env=env, capture_output=True, text=True
        )
        assert done.returncode == example.expected_exit, (
            f"{where}\nexit {done.returncode}, expected {example.expected_exit}\n"
            f"{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
        seconds.append((time.monotonic() - started, where))
    for took, where in seconds:
        print(f"{took:6.1f}s  {where}")
    # the path's artefacts exist where the README says they are
    assert (demo_project / "corpus" / "exports" / "mine" / "manifest.json").is_file()
    assert (demo_project / "reports" / "report.html").is_file()


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_sdf_command_and_option_in_the_docs_exists(page: Path):
    root = cli_root()
    mentions = sdf_mentions(page.read_text(encoding="utf-8"))
    problems = [
        f"{page.name}:{line}: {problem}"
        for args, line in mentions
        for problem in check_sdf_args(root, args)
    ]
    assert problems == []


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_option_named_in_prose_is_an_sdf_option(page: Path):
    """A bare `--option` in the text is an option of some sdf command or of a bench script."""
    known = all_option_names(cli_root())
    known |= {o for f in (ROOT / "bench").glob("*.py") for o in BENCH_OPTION.findall(f.read_text())}
    text = page.read_text(encoding="utf-8")
    prose = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)
    unknown = set()
    for m in re.finditer(r"`([^`]+)`", prose):
        words = _split(m.group(1))
        if not words or words[0] in OTHER_TOOLS:
            continue
        for word in words:
            name = word.split("=", 1)[0]
            if re.fullmatch(r"--[a-z][\w-]*(/--[a-z][\w-]*)*", name):
                unknown |= {n for n in name.split("/") if n not in known}
    assert unknown == set()


@pytest.mark.parametrize("page", [README, *DOCS, ROOT / "prompts" / "README.md"], ids=str)
def test_every_relative_link_points_at_a_file(page: Path):
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"\w+://|#|mailto:", target):
            continue
        if not (page.parent / target.split("#", 1)[0]).exists():
            broken.append(target)
    quoted = re.findall(r"`(docs/[\w.-]+\.md)`", text)  # prompts/README.md names docs pages
    broken += [q for q in quoted if not (ROOT / q).exists()]
    assert broken == []


# -- the checkers themselves catch what they are for ----------------------------------------


def test_checker_names_a_misspelt_option_and_an_unknown_command():
    root = cli_root()
    assert check_sdf_args(root, ["select", "--name", "x", "--docs", "3"]) == []
    assert check_sdf_args(root, ["export", "verify", "corpus/exports/mine"]) == []
    assert check_sdf_args(root, ["select", "--nmae", "x"]) == ["sdf select: no option --nmae"]
    assert check_sdf_args(root, ["selekt", "--name", "x"]) == ["sdf: no command 'selekt'"]
    assert check_sdf_args(root, ["audit", "<name>", "--engine", "ray"]) == []


def test_example_extraction_joins_continuations_and_reads_markers():
    text = (
        "intro\n```bash\nsdf report \\\n  --skip diversity   # exit 2\n"
        "echo not an example\nsdf train x   # needs TINKER_API_KEY\nmake demo\n```\n"
        "```console\n$ sdf check\noutput line\n```\n```python\nprint(1)\n```\n"
    )
    examples = readme_examples(text)
    assert [e.kind for e in examples] == ["shell", "shell", "shell", "shell", "python"]
    assert examples[0].text.startswith("sdf report --skip diversity")
    assert (examples[0].expected_exit, examples[0].line) == (2, 3)
    assert examples[1].marker == "needs TINKER_API_KEY"
    assert [e.text for e in examples[2:4]] == ["make demo", "sdf check"]
    mentions = sdf_mentions(text + "Use `sdf select --docs 3` or `SDF_ENGINE=ray sdf report`.\n")
    assert (["select", "--docs", "3"]) in [args for args, _ in mentions]
    assert (["report"]) in [args for args, _ in mentions]


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_sdfkit_module_and_function_named_in_the_docs_exists(page: Path):
    """`sdfkit.store.catalog`, `sdfkit.export.selection.select`: moved code fails here."""
    import importlib

    missing = []
    for dotted in sorted(
        set(re.findall(r"\bsdfkit(?:\.[a-z_]+)+", page.read_text())) - {"sdfkit.yaml"}
    ):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(dotted)
            break
    assert missing == []
