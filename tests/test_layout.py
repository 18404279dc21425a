"""The package's seams, read from the source with ``ast`` (nothing is imported): shared
services live in modules of their own, so stages do not import each other for them."""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sdfkit"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(encoding="utf-8"))


def imports(module: str) -> list[tuple[str, str | None]]:
    """(module imported, name imported or None) for every import anywhere in ``module``,
    function-level ones included."""
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out += [(node.module, a.name) for a in node.names]
    return out


def imported_modules(module: str) -> set[str]:
    """Every module ``module`` imports (``from a.b import c`` counts a.b and a.b.c)."""
    out = set()
    for mod, name in imports(module):
        out.add(mod)
        if name is not None:
            out.add(f"{mod}.{name}")
    return out


def test_the_source_tree_is_found():
    # guards every test below from passing on an empty module list
    assert {"sdfkit.engine.ray_data", "sdfkit.store.sql", "sdfkit.generate.grade"} <= set(MODULES)
    assert ("sdfkit.engine.stage", "Stage") in imports("sdfkit.engine.ray_data")


def test_ray_engine_does_not_import_the_local_engine():
    assert "sdfkit.engine.local" not in imported_modules("sdfkit.engine.ray_data")


def test_the_store_does_not_import_the_audit_registry():
    for module in [m for m in MODULES if m.startswith("sdfkit.store.")]:
        bad = {m for m in imported_modules(module) if m.split(".")[:2] == ["sdfkit", "audits"]}
        assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize(
    "module",
    [
        m
        for m in MODULES
        if m == "sdfkit.generate.grade" or m.startswith(("sdfkit.train.", "sdfkit.evaluate."))
    ],
)
def test_grading_training_and_evaluation_do_not_import_the_generation_stage(module):
    assert "sdfkit.generate.documents" not in imported_modules(module)


def test_no_module_imports_a_private_fsync_or_atomic_helper_of_another():
    bad = [
        (module, f"{mod}.{name}")
        for module in MODULES
        for mod, name in imports(module)
        if name and re.match(r"_(fsync|atomic)", name) and mod != module
    ]
    assert not bad


#: Model names as the table of base models spells them, and the names of the bundled
#: tokenizers; a literal holding both is a model -> tokenizer table.
MODEL_NAME = re.compile(r"^(openai/gpt-oss|gpt-oss-|qwen/qwen|meta-llama/|llama-3)", re.I)
TOKENIZERS = {"o200k_harmony", "qwen3", "llama3", "o200k_base", "cl100k_base"}
SPECIAL_TOKEN = re.compile(r"^<\|\w+\|>$")
CHAT_FORMATS = {"harmony", "chatml", "llama3"}


def _strings(node: ast.AST) -> set[str]:
    return {
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def model_tables(module: str) -> list[str]:
    """Names assigned a literal that maps model names to tokenizers, or chat formats to
    their special tokens."""
    found = []
    for node in ast.walk(_tree(module)):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            if not isinstance(node.value, (ast.Dict, ast.List, ast.Tuple, ast.Set, ast.Call)):
                continue
            s = _strings(node.value)
            models = any(MODEL_NAME.match(x) for x in s) and s & TOKENIZERS
            formats = s & CHAT_FORMATS and any(SPECIAL_TOKEN.match(x) for x in s)
            if models or formats:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found += [ast.unparse(t) for t in targets]
    return found


def test_exactly_one_module_holds_the_table_of_base_models():
    holders = {m: t for m in MODULES if (t := model_tables(m))}
    assert list(holders) == ["sdfkit.llm.models"], holders
    assert "FAMILIES" in holders["sdfkit.llm.models"]


def test_modules_that_own_catalog_tables_follow_one_convention():
    """``TABLES`` (the CREATE statements) and ``ensure_tables(con)`` that runs them."""
    owners = []
    for module in MODULES:
        if module.split(".")[1:2] not in (["store"], ["llm"], ["generate"], ["train"]):
            continue
        tree = _tree(module)
        if not any(s.lstrip().startswith("CREATE TABLE IF NOT EXISTS") for s in _strings(tree)):
            continue
        owners.append(module)
        assigned = {
            t.id
            for node in tree.body
            if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(t, ast.Name)
        }
        functions = {
            node.name: [a.arg for a in node.args.args]
            for node in tree.body
            if isinstance(node, ast.FunctionDef)
        }
        assert "TABLES" in assigned, module
        assert functions.get("ensure_tables") == ["con"], module
    assert {"sdfkit.store.schema", "sdfkit.llm.batches", "sdfkit.train.run"} <= set(owners)


def _top_level_imports(module: str) -> set[str]:
    """Modules of sdfkit imported at module level (not inside a function): the ones that
    make an import cycle."""
    out = set()
    for node in _tree(module).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sdfkit"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.add(full if full in MODULES else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
    out = {m for m in out if m in MODULES and m != module}
    # a package that imports its own submodules to register them (the CLI's commands) is not a
    # cycle of meaning: the submodules import the package, never the reverse
    return {m for m in out if not m.startswith(module + ".")}


def test_no_import_cycle_between_modules():
    graph = {m: _top_level_imports(m) for m in MODULES}
    cycles, state = [], {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(path[path.index(n) :] + [n] if n in path else [m, n])
            elif n not in state:
                visit(n, [*path, n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles


def test_report_and_evaluation_do_not_import_each_other():
    """The report finds the evaluation's part by name (sdfkit.report.parts); evaluation uses
    only the report's shared helpers (charts, html, verdicts), never the report itself."""
    shared = {"sdfkit.report.charts", "sdfkit.report.html", "sdfkit.report.verdicts"}
    for module in [m for m in MODULES if m.startswith("sdfkit.report.")]:
        bad = {m for m in imported_modules(module) if m.startswith("sdfkit.evaluate")}
        assert not bad, f"{module} imports {sorted(bad)}"
    for module in [m for m in MODULES if m.startswith("sdfkit.evaluate.")]:
        bad = {
            m
            for m in imported_modules(module)
            if m.startswith("sdfkit.report") and m not in shared and m.count(".") >= 2
        }
        bad = {m for m in bad if not any(m.startswith(s) for s in shared)}
        assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith("sdfkit.evaluate.")])
def test_evaluation_reaches_tinker_through_the_service_module(module):
    plumbing = {"require_key", "check_health", "within", "connect_service", "close_service"}
    bad = [
        (mod, n) for mod, n in imports(module) if n in plumbing and mod != "sdfkit.train.service"
    ]
    assert not bad


def test_engine_stages_are_named_alike():
    """Every per-document stage is a ``Stage`` subclass named ``...Stage``, wherever it lives."""
    stages = [
        (module, node.name)
        for module in MODULES
        for node in ast.walk(_tree(module))
        if isinstance(node, ast.ClassDef)
        and any(getattr(b, "id", getattr(b, "attr", None)) == "Stage" for b in node.bases)
    ]
    assert len(stages) >= 5  # token counts, export tokens, embeddings, MinHash, names
    assert [s for s in stages if not s[1].endswith("Stage")] == []
