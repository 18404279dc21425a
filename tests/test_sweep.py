"""`sdf sweep`: variants of one selection at the same token budget (E epochs over 1/E of the
documents, still balanced per concept × doc type), their exports and exact plans, and their
training and evaluation against the fake Tinker (tests/fake_tinker.py) on one page."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLES
from fake_tinker import FakeTinkerWorld
from test_evaluate import harmony_sampler
from test_train import health_server, tinker_env  # noqa: F401 - fixtures

from sdfkit.export.selection import list_selections
from sdfkit.export.verify import read_manifest
from sdfkit.store.catalog import Store
from sdfkit.train.sweep import SWEEP_MANIFEST, load_spec, prepare, run

UNIVERSES = sorted((EXAMPLES / "universes").glob("*.md"))
BASE_DOCS = 40  # per concept


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Store:
    """Both example universes generated offline, and a base selection 'main'."""
    from sdfkit.export.selection import SelectionConfig, select
    from sdfkit.generate.documents import GenerateConfig, generate
    from sdfkit.generate.universe import load_universes
    from sdfkit.llm.batches import make_client

    store = Store(tmp_path_factory.mktemp("sweep") / "corpus")
    cfg = GenerateConfig(run="g", doc_types=3, ideas=3, docs_per_idea=2, poll_interval=0.0)
    generate(load_universes(UNIVERSES), store, cfg, client=make_client("offline"))
    select(store, SelectionConfig(name="main", docs=BASE_DOCS, seed=3))
    return store


def write_spec(folder: Path, name: str, variants: list[dict], **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "name": name,
        "selection": "main",
        "tolerance": 0.02,
        "train": {"batch_size": 4, "save_every": 0},
        "variants": variants,
        **extra,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


VARIANTS = [
    {"name": "e1", "epochs": 1},
    {"name": "e3", "epochs": 3},
    {"name": "e4", "epochs": 4},
    {"name": "e3-doctag", "epochs": 3, "export": {"doctag": "<DOCTAG>"}},
    {"name": "e1-web", "epochs": 1, "export": {"webtext": "web.jsonl", "webtext_ratio": 0.5}},
]
WEB = [f"Plain web text number {i}: " + " ".join(["weather and gardens"] * 60) for i in range(900)]


def sql(store: Store, q: str, params=None) -> list[dict]:
    return store.query(q, params or []).to_dicts()


@pytest.fixture(scope="module")
def dry_run(corpus, tmp_path_factory):
    """``sdf sweep epochs.yaml --dry-run --json`` through the CLI."""
    from typer.testing import CliRunner

    from sdfkit.cli import app

    folder = tmp_path_factory.mktemp("spec")
    (folder / "web.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in WEB))
    spec = write_spec(folder, "epochs", VARIANTS, out="out")  # paths relative to the file
    res = CliRunner().invoke(
        app, ["--corpus", str(corpus.root), "sweep", str(spec), "--dry-run", "--json"]
    )
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout), folder / "out"


def test_dry_run_json_is_the_exact_plan_of_every_variant(corpus, dry_run):
    plan, out = dry_run
    base = sql(corpus, "SELECT count(*) AS n, sum(n_tokens) AS t FROM selections WHERE name='main'")
    assert plan["budget_tokens"] == base[0]["t"] and plan["base_selection"] == "main"
    assert [v["name"] for v in plan["variants"]] == [v["name"] for v in VARIANTS]
    for v in plan["variants"]:
        assert set(v) == {"name", "epochs", "documents", "tokens", "total_steps"}
        e = v["epochs"]
        sel = sql(
            corpus,
            "SELECT concept, count(*) AS n, sum(n_tokens) AS t FROM selections WHERE name = ? "
            "GROUP BY 1 ORDER BY 1",
            [f"epochs-e{e}"],
        )
        # 1/E of the documents per concept, E passes over them: the base budget
        assert [r["n"] for r in sel] == [round(BASE_DOCS / e)] * 2
        assert v["documents"] == sum(r["n"] for r in sel)
        assert v["tokens"] == e * sum(r["t"] for r in sel)
        assert abs(v["tokens"] - plan["budget_tokens"]) <= 0.02 * plan["budget_tokens"]
        manifest = read_manifest(out / v["name"])
        assert manifest["epochs"] == e and manifest["documents"] == v["documents"]
        if v["name"] == "e1-web":  # webtext is mixed on top of the budget, at its ratio
            web = manifest["sources"]["webtext"]["tokens"] / manifest["sources"]["sdf"]["tokens"]
            assert abs(web - 0.5) < 0.02
            assert manifest["examples"] > v["documents"]
            assert v["total_steps"] == math.ceil(manifest["examples"] / 4)
            continue
        # steps: batches of 4 that never span two epochs (documents are never split here)
        assert v["total_steps"] == e * math.ceil(v["documents"] / 4)
        assert manifest["examples"] == e * v["documents"]
    e1 = plan["variants"][0]
    assert e1["documents"] == base[0]["n"] and e1["tokens"] == plan["budget_tokens"]


def test_variant_selections_come_from_the_base_and_keep_the_doc_type_mix(corpus, dry_run):
    outside = sql(
        corpus,
        "SELECT count(*) AS n FROM selections WHERE name LIKE 'epochs-e%' AND doc_id NOT IN "
        "(SELECT doc_id FROM selections WHERE name = 'main')",
    )
    assert outside[0]["n"] == 0
    for e in (3, 4):
        rows = sql(
            corpus,
            "SELECT b.concept, b.doc_type, b.n AS base, coalesce(v.n, 0) AS n FROM "
            "(SELECT concept, doc_type, count(*) AS n FROM selections WHERE name = 'main' "
            " GROUP BY ALL) b LEFT JOIN "
            "(SELECT concept, doc_type, count(*) AS n FROM selections WHERE name = ? "
            " GROUP BY ALL) v USING (concept, doc_type)",
            [f"epochs-e{e}"],
        )
        for r in rows:  # largest remainder: each stratum within one document of its share
            assert abs(r["n"] - r["base"] / e) < 1, r


def test_sweep_manifest_records_the_budget_and_exact_counts(corpus, dry_run):
    plan, out = dry_run
    m = json.loads((out / SWEEP_MANIFEST).read_text())
    assert (
        m["budget"]["tokens"] == plan["budget_tokens"] and m["budget"]["documents"] == 2 * BASE_DOCS
    )
    by_name = {v["name"]: v for v in m["variants"]}
    for v in plan["variants"]:
        rec = by_name[v["name"]]
        exp = read_manifest(rec["export_dir"])
        assert rec["tokens"] == v["tokens"] == rec["epochs"] * rec["selection_tokens"]
        assert rec["budget_error"] == (v["tokens"] - plan["budget_tokens"]) / plan["budget_tokens"]
        assert rec["export_tokens"] == exp["tokens"]
        assert rec["export_sdf_tokens"] == exp["sources"]["sdf"]["tokens"]
        assert sum(g["tokens"] for g in rec["per_group"].values()) == rec["tokens"]
        assert sum(g["budget_tokens"] for g in rec["per_group"].values()) == m["budget"]["tokens"]
    assert m["budget"]["tokenizer"] == "o200k_harmony"
    # the budget is exact in every export's own manifest: its SDF tokens are the variant's
    # tokens plus one EOS (and the DOCTAG) per example, nothing estimated
    for rec in m["variants"]:
        exp = read_manifest(rec["export_dir"])
        assert exp["tokenizer"] == rec["export_tokenizer"] == m["budget"]["tokenizer"]
        sdf = exp["sources"]["sdf"]
        per_example = 1 + len(exp["doctag_tokens"])
        assert sdf["tokens"] == rec["tokens"] + per_example * sdf["examples"], rec["name"]
        assert sum(c["tokens"] for c in exp["counts"] if c["source"] == "sdf") == sdf["tokens"]
        assert exp["epochs"] == rec["epochs"] and exp["selection"] == rec["selection"]
    # the DOCTAG variant trains on the same documents: its export differs by the tag alone
    tag = read_manifest(by_name["e3-doctag"]["export_dir"])
    plain = read_manifest(by_name["e3"]["export_dir"])
    assert by_name["e3-doctag"]["selection"] == by_name["e3"]["selection"]
    assert tag["tokens"] - plain["tokens"] == len(tag["doctag_tokens"]) * plain["examples"] > 0


def test_variant_selections_count_tokens_as_the_base_selection_did(corpus, tmp_path):
    """A base selection balanced in another tokenizer's counts (sdf select --tokenizer):
    its budget is in those tokens, so every variant's share is counted in them too."""
    from sdfkit.engine.local import run_stage
    from sdfkit.engine.token_counts import TokenCountStage
    from sdfkit.export.selection import SelectionConfig, select
    from sdfkit.train.sweep import _base, _variant_selections

    run_stage(corpus, TokenCountStage("cl100k_base"), workers=1)
    select(corpus, SelectionConfig(name="main-cl", docs=BASE_DOCS, seed=3, tokenizer="cl100k_base"))
    spec = load_spec(write_spec(tmp_path, "cl", VARIANTS[:2], selection="main-cl"))
    report, base_cfg = _base(corpus, "main-cl")
    budget = {c.concept: (c.docs, c.tokens) for c in report.concepts}
    configs = _variant_selections(corpus, spec, base_cfg, budget, "concept")
    assert {c.tokenizer for c in configs.values()} == {"cl100k_base"}


def test_rerun_reuses_exports_until_the_base_selection_changes(corpus, tmp_path):
    from sdfkit.export.selection import SelectionConfig, select

    spec = load_spec(write_spec(tmp_path, "again", VARIANTS[:2], out="o"))
    logs: list[str] = []
    first = prepare(corpus, spec, logs.append)
    stamp = (tmp_path / "o" / "e3" / "manifest.json").stat().st_mtime_ns
    logs.clear()
    second = prepare(corpus, spec, logs.append)
    assert (tmp_path / "o" / "e3" / "manifest.json").stat().st_mtime_ns == stamp
    assert all("up to date" in line for line in logs) and len(logs) == 2
    assert second.to_json() == first.to_json()
    # a changed export switch re-exports
    logs.clear()
    prepare(corpus, load_spec(write_spec(tmp_path, "again", VARIANTS[:2], out="o",
                                         export={"eos": False})), logs.append)  # fmt: skip
    assert all("exporting" in line for line in logs) and len(logs) == 2
    assert read_manifest(tmp_path / "o" / "e3")["eos_id"] is None
    select(corpus, SelectionConfig(name="main2", docs=BASE_DOCS, seed=99))
    spec2 = load_spec(write_spec(tmp_path, "again", VARIANTS[:2], out="o", selection="main2"))
    logs.clear()
    third = prepare(corpus, spec2, logs.append)
    assert all("exporting" in line for line in logs) and len(logs) == 2
    assert third.variants[1].selection_sha256 != first.variants[1].selection_sha256


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"variants": [{"name": "a", "epochs": 0}]}, "field 'variants[0].epochs': Input should be"),
        ({"variants": [{"name": "a", "export": {"doctagg": "x"}}]}, "'variants[a].export.doctagg': unknown setting"),
        ({"variants": [{"name": "a", "export": {"epochs": 3}}]}, "'variants[a].export.epochs': set by the sweep"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "variant name 'a' is used twice"),
        ({"train": {"batch_size": 0}}, "field 'variants[a].train': batch_size must be at least 1"),
        ({"selection": "nope"}, "bad.yaml: field 'selection': no selection named 'nope'"),
        ({"epochz": 3}, "field 'epochz': unknown field"),
        ({"variants": [{"name": "a", "epochs": -1}]}, "'variants[0].epochs': Input should be greater"),
        ({"variants": [{"name": "a", "epochs": "three"}]}, "'variants[0].epochs': Input should be a valid integer"),
        ({"variants": [{"name": "a", "epochs": True}]}, "'variants[0].epochs': Input should be a valid integer"),
        ({"variants": ["e1", "e3"]}, "'variants[0]': Input should be a valid dictionary"),
        ({"export": {"tokenizer": "qwen3"}}, "field 'variants[a]': the export was tokenized with 'qwen3' but base model"),
        ({"variants": [{"name": "a", "export": {"webtext": "none.jsonl"}}]}, "field 'variants[a].export.webtext': "),
        ({"export": {"chat": "bad.yaml"}}, "field 'export.chat': "),
        ({"train": {"learning_rate": "fast"}}, "field 'variants[a].train.learning_rate': expected a number, got 'fast'"),
        ({"export": {"eos": 1}}, "field 'variants[a].export.eos': expected true or false, got 1"),
        ({"eval": {"checkpoints": "sometimes"}}, "field 'eval.checkpoints': 'sometimes': use all, last"),
        # every number has its range, inf and nan included, before any work
        ({"eval": {"temperature": float("nan")}}, "field 'eval': temperature nan: give a number of 0 or more"),
        ({"eval": {"temperature": -1}}, "field 'eval': temperature -1: give a number of 0 or more"),
        ({"eval": {"lda_alpha": float("inf")}}, "field 'eval': lda_alpha inf: give an amplification"),
        ({"eval": {"lda_top_k": 0}}, "field 'eval': lda_top_k must be at least 1"),
        ({"train": {"learning_rate": float("inf")}}, "'variants[a].train': learning_rate must be a finite number"),
        ({"train": {"beta1": 1}}, "'variants[a].train': beta1 must be at least 0 and below 1"),
        ({"train": {"beta2": float("nan")}}, "'variants[a].train': beta2 must be at least 0 and below 1"),
        ({"train": {"eps": -1}}, "'variants[a].train': eps must be a positive number"),
        ({"train": {"weight_decay": float("inf")}}, "'variants[a].train': weight_decay must be a number"),
        ({"train": {"grad_clip_norm": float("nan")}}, "'variants[a].train': grad_clip_norm must be a number"),
        ({"train": {"min_lr_ratio": float("nan")}}, "'variants[a].train': min_lr_ratio must be between"),
        ({"train": {"lora_seed": -1}}, "'variants[a].train': lora_seed must be a whole number from 0"),
        ({"variants": [{"name": "a", "epochs": 100}]}, "field 'variants[0].epochs': 100 epochs over 1/100 of selection 'main' miss the budget: concept '"),
    ],
)  # fmt: skip
def test_bad_sweep_files_are_one_line_errors(corpus, tmp_path, cli, change, message):
    spec = {"name": "bad", "selection": "main", "variants": [{"name": "a"}], **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    res = cli("--corpus", str(corpus.root), "sweep", str(path), "--dry-run", expect=2)
    assert res.output.startswith("error: ") and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (corpus.root / "sweeps" / "bad").exists() and not any(
        s.startswith("bad-") for s in list_selections(corpus)
    )


def test_a_budget_one_variant_cannot_meet_stops_the_sweep_before_it_writes(corpus, tmp_path, cli):
    path = write_spec(tmp_path, "short", [{"name": "e1", "epochs": 1}, {"name": "e3", "epochs": 3},
                                          {"name": "e60", "epochs": 60}], out="o")  # fmt: skip
    res = cli("--corpus", str(corpus.root), "sweep", str(path), "--dry-run", expect=2)
    assert res.output.startswith(f"error: {path}: field 'variants[2].epochs': 60 epochs over")
    assert res.output.count("\n") == 1 and "fewer epochs" in res.output
    # the feasible variants before it made neither a selection nor an export
    assert [s for s in list_selections(corpus) if s.startswith("short-")] == []
    assert not (tmp_path / "o").exists()


def test_json_without_dry_run_is_refused_before_anything_trains(corpus, tmp_path, cli):
    path = write_spec(tmp_path, "j", VARIANTS[:1], out="o")
    res = cli("--corpus", str(corpus.root), "sweep", str(path), "--json", expect=2)
    assert res.output == "error: --json: only with --dry-run (the plan of every variant)\n"
    assert not (tmp_path / "o").exists()


def test_a_sweep_never_replaces_a_selection_or_folder_it_did_not_make(corpus, tmp_path, cli):
    from sdfkit.export.selection import SelectionConfig, select

    def refused(path: Path) -> str:
        res = cli("--corpus", str(corpus.root), "sweep", str(path), "--dry-run", expect=2)
        assert res.output.count("\n") == 1
        return res.output

    # the 3-epoch selection of sweep 'main' would be 'main-e3': a user's selection of that name
    select(corpus, SelectionConfig(name="main-e3", docs=5, seed=1))
    kept = sql(corpus, "SELECT doc_id FROM selections WHERE name = 'main-e3' ORDER BY 1")
    out = refused(write_spec(tmp_path, "main", VARIANTS[1:2], out="o1"))
    assert "field 'name': selection 'main-e3' exists and no sweep made it" in out
    assert sql(corpus, "SELECT doc_id FROM selections WHERE name = 'main-e3' ORDER BY 1") == kept
    # a base selection named like the sweep's own
    out = refused(write_spec(tmp_path, "main", VARIANTS[1:2], out="o1", selection="main-e3"))
    assert "which is the base selection itself; rename the sweep" in out
    # a folder of the user's where a variant's export would go
    (tmp_path / "o2" / "e3").mkdir(parents=True)
    (tmp_path / "o2" / "e3" / "notes.txt").write_text("mine")
    out = refused(write_spec(tmp_path, "mine", VARIANTS[1:2], out="o2"))
    assert "field 'variants[e3]': " in out and "exists and is not an export" in out
    assert (tmp_path / "o2" / "e3" / "notes.txt").read_text() == "mine"
    # an out that cannot be made
    (tmp_path / "afile").write_text("x")
    out = refused(write_spec(tmp_path, "mine", VARIANTS[1:2], out="afile"))
    assert "field 'out': " in out and "is a file, not a folder" in out
    out = refused(write_spec(tmp_path, "mine", VARIANTS[1:2], out="/proc/sdfkit-no-such/o"))
    assert "field 'out': cannot make /proc/sdfkit-no-such/o" in out
    assert [s for s in list_selections(corpus) if s.startswith("mine-")] == []


def test_a_key_given_twice_names_the_line(tmp_path, cli):
    """The last one used to win: a sweep trained with half of what its file says."""
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nselection: main\nvariants: [{name: a}]\ntrain: {rank: 8}\n"
                    "train: {rank: 16}\n")  # fmt: skip
    res = cli("sweep", str(path), "--dry-run", expect=2)
    assert (
        res.output
        == f"error: {path}:5: invalid YAML: key 'train' is given twice (first on line 4)\n"
    )


def test_malformed_yaml_names_the_line(tmp_path, cli):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nselection: main\nvariants: [\n  {name: a\n")
    res = cli("sweep", str(path), "--dry-run", expect=2)
    assert f"error: {path}:" in res.output and "invalid YAML" in res.output


@pytest.mark.usefixtures("tinker_env")
def test_sweep_trains_and_evaluates_every_variant_and_draws_one_page(corpus, tmp_path):
    from sdfkit.llm.batches import make_client

    path = write_spec(
        tmp_path,
        "run",
        VARIANTS[:2],
        out="o",
        eval={"checkpoints": "last", "questions_per_fact": 2, "poll_interval": 0.0,
              "max_tokens": 256},
        universes=[str(u) for u in UNIVERSES],
        report="pages/run.html",
    )  # fmt: skip
    world = FakeTinkerWorld()
    world.sampler = harmony_sampler()
    client = make_client("offline")
    res = run(corpus, load_spec(path), anthropic_client=client, service_factory=world.service)
    plan = res.plan
    runs = sql(corpus, "SELECT run, status, steps_done, total_steps FROM train_runs ORDER BY run")
    planned = {v.train_run: v.total_steps for v in plan.variants}
    got = {r["run"]: (r["status"], r["steps_done"], r["total_steps"]) for r in runs}
    assert {k: got.get(k) for k in planned} == {k: ("finished", n, n) for k, n in planned.items()}
    assert len(world.sent_batches()) == sum(planned.values())
    # every variant was evaluated at its base and last checkpoint, under its own name
    ev = sql(
        corpus,
        "SELECT eval_run, list(DISTINCT model_label ORDER BY model_label) AS m "
        "FROM eval_samples GROUP BY 1 ORDER BY 1",
    )
    assert [(r["eval_run"], r["m"]) for r in ev] == [
        (v.train_run, ["base", f"step-{v.total_steps:06d}"])
        for v in sorted(plan.variants, key=lambda v: v.train_run)
    ]
    page = (tmp_path / "pages" / "run.html").read_text()
    data = json.loads((tmp_path / "pages" / "run.json").read_text())
    assert res.report == tmp_path / "pages" / "run.html"
    for v in plan.variants:
        assert f">{v.name}<" in page
    assert page.count("<svg") == 2 * 4  # two concepts × recall, behaviour, reasoning, gibberish
    for v in data["variants"]:
        steps = sorted({p["step"] for p in v["points"]})
        assert steps == [0, v["total_steps"]]
        assert {p["progress"] for p in v["points"]} == {0.0, 1.0}
        eu = {p["step"]: p for p in v["points"] if p["concept"] == "eu_ts_trycatch"}
        # the fake's checkpoints answer with the implanted facts, its base with the real world
        assert (eu[0]["recall_rate"], eu[v["total_steps"]]["recall_rate"]) == (0.0, 1.0)
    # rerunning the sweep resumes: nothing is trained or sampled again
    n_calls = len(world.calls)
    run(corpus, load_spec(path), anthropic_client=client, service_factory=world.service)
    assert [c[0] for c in world.calls[n_calls:] if c[0] in ("forward_backward", "sample")] == []


@pytest.mark.usefixtures("tinker_env")
def test_sweep_through_the_cli_without_eval(corpus, tmp_path, cli, monkeypatch):
    import tinker

    world = FakeTinkerWorld()
    monkeypatch.setattr(tinker, "ServiceClient", world.service)  # the client-object boundary
    path = write_spec(tmp_path, "cli", VARIANTS[1:2], out="o")
    res = cli("--corpus", str(corpus.root), "sweep", str(path), "--no-eval")
    assert "run 'cli-e3': finished" in res.output
    assert "curves of every variant: reports/sweep-cli.html" in res.output
    assert (tmp_path / "reports" / "sweep-cli.html").is_file()


@pytest.mark.usefixtures("tinker_env")
def test_a_page_path_that_cannot_be_written_fails_before_anything_trains(
    corpus, tmp_path, cli, monkeypatch
):
    import tinker

    world = FakeTinkerWorld()
    monkeypatch.setattr(tinker, "ServiceClient", world.service)
    (tmp_path / "pages").mkdir()
    path = write_spec(tmp_path, "pg", VARIANTS[1:2], out="o")
    res = cli("--corpus", str(corpus.root), "sweep", str(path), "--no-eval", "--report", "pages",
              expect=2)  # fmt: skip
    assert res.output == "error: --report: pages is a folder; name the page's .html file\n"
    (tmp_path / "afile").write_text("x")
    path = write_spec(tmp_path, "pg", VARIANTS[1:2], out="o", report="afile/pg.html")
    res = cli("--corpus", str(corpus.root), "sweep", str(path), "--no-eval", expect=2)
    assert (
        f"error: {path}: field 'report': " in res.output and "afile is not a folder" in res.output
    )
    assert world.calls == [] and not (tmp_path / "o").exists()


def test_the_example_sweep_file_is_valid():
    spec = load_spec(EXAMPLES / "sweeps" / "epochs.yaml")
    assert [v.epochs for v in spec.variants] == [1, 3, 5, 7, 3]
    assert all(Path(u).is_file() for u in spec.universes)  # relative to the file


def test_a_number_where_text_is_wanted_is_taken_as_its_text(tmp_path):
    from sdfkit.train.sweep import eval_config

    spec = load_spec(write_spec(tmp_path, "n", VARIANTS[:1], eval={"checkpoints": 100}))
    assert eval_config(spec).checkpoints == "100"
