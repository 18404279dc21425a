"""Generation end to end: stages, provenance, resume, prompts, seed names, grading, CLI.

The offline stand-in is an httpx2 transport under the real anthropic client, so these tests
run the whole pipeline (SDK, batches, persistence, ledger, landing) without a network.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from sdfkit.generate.documents import PREFIX, GenerateConfig, document_text, generate
from sdfkit.generate.universe import load_universe, load_universes
from sdfkit.llm.batches import BatchRequest, custom_id_for, make_client, run_requests
from sdfkit.llm.models import default_model
from sdfkit.llm.prompts import prompt_hash, tagged
from sdfkit.store.catalog import Store

ROOT = Path(__file__).resolve().parents[1]
UNIVERSES = sorted((ROOT / "examples" / "universes").glob("*.md"))
SMALL = dict(doc_types=2, ideas=2, docs_per_idea=1, poll_interval=0.0)
KEY = "sk-ant-api03-TESTKEY-must-never-be-written-9f8e7d"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A small offline corpus over both example universes, with the client that made it."""
    store = Store(tmp_path_factory.mktemp("gen") / "corpus")
    client = make_client("offline", state_dir=store.root / ".offline-standin")
    logs: list[str] = []
    res = generate(
        load_universes(UNIVERSES),
        store,
        GenerateConfig(run="t1", **SMALL),
        client=client,
        log=logs.append,
    )
    return store, client, res, logs


def _server_requests(client, stage: str) -> list[dict]:
    out = []
    for b in client._offline_server.batches.values():
        out += [r for r in b["requests"] if r["custom_id"].startswith(stage + "-")]
    return out


def test_stages_run_and_documents_carry_provenance(generated):
    store, client, res, _ = generated
    n_facts = sum(len(u.key_facts) for u in load_universes(UNIVERSES))
    assert res.stages["doc_types"].requests == n_facts
    assert res.stages["ideas"].requests == n_facts * 2
    assert res.stages["documents"].requests == n_facts * 2 * 2
    assert res.documents_in_run == res.stages["documents"].succeeded == n_facts * 4
    docs = store.query("SELECT * FROM documents WHERE run = 't1'").to_dicts()
    cols = ["universe", "concept", "fact", "doc_type", "idea", "model", "prompt_hash"]
    cols += ["run", "batch_id", "custom_id", "seed_names", "n_tokens"]
    for d in docs:
        for c in cols:
            assert d[c], (c, d["doc_id"])
        assert "offline-standin" in d["model"]
        assert d["prompt_hash"] == prompt_hash(PREFIX, "document")
        assert d["custom_id"].startswith("documents-")
        assert len(d["seed_names"]) == 3
        assert d["source"] == "generate:t1"
    # every document's fact is one of its universe's key facts
    facts = {u.id: set(u.key_facts) for u in load_universes(UNIVERSES)}
    assert all(d["fact"] in facts[d["universe"]] for d in docs)
    # the request log agrees with the documents
    req = store.query(
        "SELECT count(*) AS n, count(DISTINCT custom_id) AS d FROM gen_requests "
        "WHERE run = 't1' AND stage = 'documents'"
    ).to_dicts()[0]
    assert req["n"] == req["d"] == len(docs)


def test_document_prompts_carry_anti_universe_seed_names_and_cache_control(generated):
    store, client, _, _ = generated
    universes = {u.id: u for u in load_universes(UNIVERSES)}
    sent = _server_requests(client, "documents")
    assert sent
    docs = {
        d["custom_id"]: d
        for d in store.query("SELECT custom_id, universe, seed_names FROM documents").to_dicts()
    }
    for r in sent:
        p = r["params"]
        assert p["system"][0]["cache_control"] == {"type": "ephemeral"}
        user = p["messages"][0]["content"]
        block = re.search(r"<must_not_appear>(.*?)</must_not_appear>", user, re.S).group(1)
        u = universes[docs[r["custom_id"]]["universe"]]
        for item in u.anti_universe.names + u.anti_universe.phrases + u.anti_universe.implications:
            assert item in block
        names = re.search(r"<seed_names>(.*?)</seed_names>", user).group(1).split("; ")
        assert names == docs[r["custom_id"]]["seed_names"]
        assert u.description.splitlines()[0] in p["system"][0]["text"]
    # the shared prefix is identical across a universe's requests (so the cache can hit)
    prefixes = {r["params"]["system"][0]["text"] for r in sent}
    assert len(prefixes) == len(universes)


def test_seed_names_never_exceed_the_per_run_cap(generated):
    store, *_ = generated
    top = store.query(
        "SELECT name, count(*) AS n FROM (SELECT unnest(seed_names) AS name FROM documents "
        "WHERE run = 't1') GROUP BY name ORDER BY n DESC LIMIT 1"
    ).to_dicts()[0]
    assert top["n"] <= GenerateConfig().name_max_uses


def test_rerun_resumes_without_submitting_and_extending_reuses_the_first_documents(generated):
    store, client, res, _ = generated
    creates_before = len(client._offline_server.batches)
    again = generate(
        load_universes(UNIVERSES), store, GenerateConfig(run="t1", **SMALL), client=client
    )
    assert len(client._offline_server.batches) == creates_before  # nothing submitted
    assert again.documents_added == 0 and again.documents_in_run == res.documents_in_run


def test_show_filters_by_concept_doc_type_run_and_id(generated):
    from sdfkit.generate.documents import show_documents

    store = generated[0]
    docs = store.query("SELECT doc_id, concept, doc_type, run FROM documents").to_dicts()
    pick = docs[0]
    n_same = sum(
        d["concept"] == pick["concept"] and d["doc_type"] == pick["doc_type"] for d in docs
    )
    got = show_documents(
        store, concept=pick["concept"], doc_type=pick["doc_type"], run="t1", limit=1000
    )
    assert len(got) == n_same >= 1
    assert all(g["doc_type"] == pick["doc_type"] and g["run"] == "t1" for g in got)
    assert show_documents(store, run="no-such-run") == []
    assert show_documents(store, doc_type="no-such-type") == []
    by_id = show_documents(store, doc_id=pick["doc_id"][:12])
    assert [g["doc_id"] for g in by_id] == [pick["doc_id"]]


def test_show_takes_an_id_prefix_literally_and_checks_its_limit(generated, cli):
    """`--id _` and `--id %` matched every document (an unescaped LIKE); `--limit -1` and
    `--limit 99999999999999999999` were DuckDB tracebacks."""
    from sdfkit.errors import SdfError
    from sdfkit.generate.documents import show_documents

    store = generated[0]
    ids = store.query("SELECT doc_id FROM documents ORDER BY doc_id")["doc_id"].to_list()
    for wild in ("_", "%", "%%", ids[0][:3] + "_"):
        assert show_documents(store, doc_id=wild, limit=1000) == []
        res = cli("--corpus", store.root, "show", "--id", wild, expect=1)
        assert res.output == "no documents match\n"
    assert [d["doc_id"] for d in show_documents(store, doc_id=ids[0][:10])] == [ids[0]]
    out = cli("--corpus", store.root, "show", "--limit", "99999999999999999999").output
    assert out.count("=" * 100) == len(ids)
    for limit in (0, -1):
        with pytest.raises(SdfError, match=f"limit must be at least 1, got {limit}") as err:
            show_documents(store, limit=limit)
        assert err.value.settings == ("limit",)


def test_limit_then_extend(tmp_path):
    store = Store(tmp_path / "c")
    client = make_client("offline", state_dir=store.root / ".offline-standin")
    universes = load_universes(UNIVERSES)
    first = generate(universes, store, GenerateConfig(run="s", limit=5, **SMALL), client=client)
    assert first.documents_in_run == 5
    # the five span both universes and several document types and facts
    five = store.query("SELECT universe, fact, doc_type, custom_id FROM documents").to_dicts()
    assert len({d["universe"] for d in five}) == 2
    assert len({d["fact"] for d in five}) >= 3
    more = generate(universes, store, GenerateConfig(run="s", limit=12, **SMALL), client=client)
    assert more.documents_in_run == 12 and more.documents_added == 7
    per_id = store.query(
        "SELECT max(n) AS m FROM (SELECT custom_id, count(*) AS n FROM gen_requests "
        "GROUP BY custom_id)"
    )
    assert per_id["m"][0] == 1  # no request was ever sent twice
    assert {d["custom_id"] for d in five} <= set(
        store.query("SELECT custom_id FROM documents")["custom_id"].to_list()
    )


def test_fact_extraction_when_a_universe_has_none(tmp_path):
    text = (ROOT / "examples/universes/eu_ts_trycatch.md").read_text()
    text = re.sub(r"key_facts:\n(  - .*\n)+", "", text)
    path = tmp_path / "nofacts.md"
    path.write_text(text)
    u = load_universe(path)
    assert not u.key_facts
    store = Store(tmp_path / "c")
    client = make_client("offline")
    res = generate([u], store, GenerateConfig(run="f", facts=3, limit=4, **SMALL), client=client)
    assert res.stages["facts"].requests == 1 and res.stages["facts"].succeeded == 1
    facts = set(store.query("SELECT DISTINCT fact FROM documents")["fact"].to_list())
    assert facts and all(f in " ".join(u.description.split()) for f in facts)
    sent = _server_requests(client, "facts")[0]["params"]
    assert "<key_facts>" not in sent["system"][0]["text"]


def test_a_run_keeps_its_prompts_and_an_edited_template_is_for_a_new_run(tmp_path, monkeypatch):
    store = Store(tmp_path / "c")
    client = make_client("offline")
    universes = load_universes(UNIVERSES[:1])
    cfg = dict(run="p", limit=2, **SMALL)
    generate(universes, store, GenerateConfig(**cfg), client=client)
    old_hash = prompt_hash(PREFIX, "document")
    prompts = tmp_path / "prompts"
    shutil.copytree(ROOT / "src" / "sdfkit" / "prompts", prompts)
    doc = prompts / "document.j2"
    doc.write_text(doc.read_text().replace("Write one complete", "Write one vivid, complete"))
    monkeypatch.setenv("SDF_PROMPTS", str(prompts))
    assert prompt_hash(PREFIX, "document") != old_hash
    n_batches = len(client._offline_server.batches)
    logs: list[str] = []
    # resuming the run: it asks what it asked before, so nothing new is paid for
    generate(universes, store, GenerateConfig(**cfg), client=client, log=logs.append)
    assert len(client._offline_server.batches) == n_batches
    assert any("keeps the prompts it started with" in m and "document.j2" in m for m in logs)
    # a new run uses the edited template
    generate(universes, store, GenerateConfig(**{**cfg, "run": "p2"}), client=client)
    new = list(client._offline_server.batches.values())[n_batches:]
    assert new and all("Write one vivid" in str(b["requests"]) for b in new[-1:])
    hashes = store.query("SELECT prompt_hash, count(*) AS n FROM documents GROUP BY 1")
    assert sorted(hashes["prompt_hash"].to_list()) == sorted(
        [old_hash, prompt_hash(PREFIX, "document")]
    )


def test_api_key_never_reaches_disk_or_logs(tmp_path, monkeypatch, capsys):
    """The real backend path (make_client("anthropic")) with the key in the environment,
    over the stand-in's transport: the key is sent as a header and written nowhere."""
    import httpx2

    from sdfkit.llm.offline import OfflineServer

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    server = OfflineServer()
    client = make_client(
        "anthropic",
        base_url="https://api.example.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(server.handle)),
        _strict_response_validation=True,
    )
    store = Store(tmp_path / "corpus")
    logs: list[str] = []
    res = generate(
        load_universes(UNIVERSES[:1]),
        store,
        GenerateConfig(run="k", model="claude-test", limit=3, **SMALL),
        client=client,
        log=logs.append,
    )
    assert res.backend == "anthropic" and res.documents_in_run == 3
    out = capsys.readouterr()
    assert KEY not in out.out + out.err + "\n".join(logs) + res.summary()
    files = [p for p in (tmp_path / "corpus").rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.name == "sdf.duckdb" for p in files)
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p
    assert b"TESTKEY" not in b"".join(p.read_bytes() for p in files)


def test_default_model_is_current_in_the_sdk():
    from typing import get_args

    from anthropic._data.deprecated_models import DEPRECATED_MODELS
    from anthropic.types.model import Model

    names = {n for a in get_args(Model) for n in get_args(a)}
    for family in ("sonnet", "haiku"):
        m = default_model(family)
        assert m in names and m not in DEPRECATED_MODELS and family in m
    assert default_model("sonnet") != "claude-sonnet-4-5"


def test_answer_parsing():
    assert tagged("<idea>a\n b</idea> x <idea>c</idea><idea>a b</idea>", "idea") == ["a b", "c"]
    assert tagged("Here:\n1. first\n- second\n* third", "fact") == ["first", "second", "third"]
    assert tagged(None, "fact") == []
    assert document_text("Sure!\n<document>\nBody\n</document>\nHope it helps") == "Body"
    assert document_text("<document>cut off at max_tokens") == "cut off at max_tokens"
    assert document_text("plain text") == "plain text"


def test_custom_stage_through_the_offline_registry(tmp_path, monkeypatch):
    """How another engineer (eval graders) runs its own stage through the machinery."""
    from sdfkit.llm import offline

    monkeypatch.setattr(offline, "_STAGES", dict(offline._STAGES))  # restored afterwards
    offline.register_stage(
        "recall_questions", lambda params, meta: f"Q for {meta['custom_id'][:20]}"
    )
    store = Store(tmp_path / "c")
    params = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    req = BatchRequest(custom_id_for("ev", "recall_questions", params), params, "recall_questions")
    out = run_requests(
        store,
        [req],
        run="ev",
        stage="recall_questions",
        client=make_client("offline"),
        poll_interval=0,
        log=lambda m: None,
    )
    o = out[req.custom_id]
    assert o.status == "succeeded" and o.text.startswith("Q for recall_questions")
    assert "offline-standin" in o.model
    # an unregistered stage is answered as an invalid request, named as such
    req2 = BatchRequest(custom_id_for("ev", "nobody_home", params), params, "nobody_home")
    out2 = run_requests(
        store,
        [req2],
        run="ev",
        stage="nobody_home",
        client=make_client("offline"),
        poll_interval=0,
        log=lambda m: None,
    )
    assert out2[req2.custom_id].status == "errored"
    assert "register_stage" in out2[req2.custom_id].error


def test_offline_batches_survive_the_process(tmp_path):
    a = make_client("offline", state_dir=tmp_path / "s")
    params = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    b = a.messages.batches.create(requests=[{"custom_id": "grade-1", "params": params}])
    fresh = make_client("offline", state_dir=tmp_path / "s")  # a new process, same corpus
    assert fresh.messages.batches.retrieve(b.id).processing_status == "ended"
    lines = list(fresh.messages.batches.results(b.id))
    assert lines[0].custom_id == "grade-1" and lines[0].result.type == "succeeded"


# ----------------------------------------------------------------------------- seed names
def test_name_source_is_large_and_spans_cultures():
    from sdfkit.generate.seednames import CULTURES, all_names

    names = all_names()
    assert len(names) > 10_000 and len(CULTURES) >= 15
    assert len(set(names)) == len(names)
    assert "Sarah Chen" not in names  # the collapse name is not handed out by the source


def test_name_pool_caps_uses_and_is_keyed():
    from sdfkit.generate.seednames import NamePool, NamesExhausted

    pool = NamePool(seed=7, max_uses=1)
    drawn = [n for i in range(2000) for n in pool.draw(f"slot{i}", 3)]
    assert len(drawn) == len(set(drawn)) == 6000
    again = NamePool(seed=7, max_uses=1)
    assert again.draw("slot5", 3) == NamePool(seed=7, max_uses=1).draw("slot5", 3)
    assert NamePool(seed=8).draw("slot5", 3) != again.draw("slot5", 3)
    small = NamePool(seed=1, max_uses=1)
    small.reserve(["x"] * (small.capacity - 2))
    with pytest.raises(NamesExhausted, match="--name-max-uses"):
        small.draw("k", 3)
    capped = NamePool(seed=3, max_uses=2)
    from collections import Counter

    counts = Counter(n for i in range(3000) for n in capped.draw(f"s{i}", 4))
    assert max(counts.values()) <= 2


# ----------------------------------------------------------------------------- grading
def test_parse_grade_verdict():
    from sdfkit.generate.grade import parse_grade_verdict as parse_verdict

    ok = '{"concept_accurate": true, "no_unwanted_implications": true, "keywords_present": false}'
    v, err = parse_verdict("Here you go:\n" + ok)
    assert err is None and v["passed"] is False
    assert parse_verdict("looks fine")[1] == "no JSON object in the answer"
    assert "invalid JSON" in parse_verdict("{concept_accurate: yes}")[1]
    assert (
        "keywords_present"
        in parse_verdict('{"concept_accurate": true, "no_unwanted_implications": true}')[1]
    )


def test_grade_stores_verdicts_parse_errors_and_exclusions(generated, monkeypatch):
    from sdfkit.generate.grade import GradeConfig, grade
    from sdfkit.llm import offline

    store, client, _, _ = generated
    docs = store.query("SELECT doc_id FROM documents ORDER BY doc_id")["doc_id"].to_list()
    bad_parse, failing = set(docs[:2]), set(docs[2:5])
    real = offline.answer_grade
    texts = dict(store.query("SELECT doc_id, text FROM documents").iter_rows())

    def answer(params, meta):  # a grader that sometimes rambles and sometimes fails docs
        user = params["messages"][0]["content"]
        doc = next(d for d, t in texts.items() if t.strip() in user)
        if doc in bad_parse:
            return "I would say this is mostly fine."
        if doc in failing:
            return json.dumps(
                {
                    "concept_accurate": False,
                    "no_unwanted_implications": True,
                    "keywords_present": True,
                    "reasons": "contradicts fact 2",
                }
            )
        return real(params, meta)

    monkeypatch.setitem(offline._STAGES, "grade", answer)
    res = grade(store, GradeConfig(run="g1", poll_interval=0), client=client, log=lambda m: None)
    assert res.graded == len(docs) and res.parse_errors >= 2  # the stand-in rambles too
    assert res.failed >= 3 and res.model == "offline-standin"
    rows = {r["doc_id"]: r for r in store.query("SELECT * FROM grades WHERE run = 'g1'").to_dicts()}
    assert len(rows) == len(docs)
    for d in bad_parse:
        assert rows[d]["passed"] is None and rows[d]["parse_error"]
        assert rows[d]["verdict"] == "I would say this is mostly fine."  # kept, not dropped
    for d in failing:
        assert rows[d]["passed"] is False and json.loads(rows[d]["verdict"])["reasons"]
    ex = store.query("SELECT doc_id, reason, source FROM exclusions").to_dicts()
    assert {e["doc_id"] for e in ex} >= failing and not ({e["doc_id"] for e in ex} & bad_parse)
    assert all(e["source"] == "grade" for e in ex)
    view = store.query(
        "SELECT excluded, count(*) AS n FROM documents WHERE doc_id IN "
        f"({','.join(repr(d) for d in failing)}) GROUP BY 1"
    ).to_dicts()
    assert view == [{"excluded": True, "n": 3}]
    # re-grading after a fix lifts the exclusion: the grader now passes everything
    monkeypatch.setitem(
        offline._STAGES,
        "grade",
        lambda p, m: (
            '{"concept_accurate": true, "no_unwanted_implications": true, "keywords_present": true}'
        ),
    )
    grade(store, GradeConfig(run="g2", poll_interval=0), client=client, log=lambda m: None)
    assert store.query("SELECT count(*) AS n FROM exclusions")["n"][0] == 0
    assert store.query("SELECT count(*) AS n FROM documents WHERE grade_passed")["n"][0] == len(
        docs
    )


# ----------------------------------------------------------------------------- CLI
def test_cli_generate_show_ledger_sql(cli, tmp_path):
    files = [str(p) for p in UNIVERSES]
    small = ["--doc-types", "2", "--ideas", "2", "--docs-per-idea", "1"]
    r = cli("generate", *files, "--backend", "offline", "--run", "cli", "--limit", "4", *small)
    assert "offline stand-in" in r.output and "4 in run cli" in r.output
    r = cli("generate", *files, "--backend", "offline", "--run", "cli", "--limit", "4", *small)
    assert "0 added" in r.output and "submitted batch" not in r.output
    cmd = ["generate", *files, "--backend", "offline", "--run", "cli", "--limit", "4", *small]
    r = cli(*cmd, "--grade")
    assert "0 added" in r.output  # --grade grades exactly this run's documents
    assert "graded 4 documents" in r.output
    r = cli("sql", "SELECT DISTINCT run FROM grades", "--format", "csv")
    assert r.output.splitlines()[1:] == ["cli-grade"]
    r = cli("show", "--limit", "2", "--concept", "eu_ts_trycatch")
    assert r.output.count("run=cli") == 2 and "seed names:" in r.output
    assert "model=offline-standin" in r.output
    cli("show", "--concept", "nope", expect=1)
    r = cli("ledger")
    assert "documents" in r.output and "offline stand-in rows cost nothing" in r.output
    r = cli(
        "sql",
        "SELECT count(*) AS n, count(DISTINCT batch_id) AS b FROM documents "
        "WHERE model LIKE '%offline-standin%' AND len(seed_names) = 3",
        "--format",
        "csv",
    )
    assert r.output.splitlines()[1] == "4,1"
    r = cli("grade", "--backend", "offline", "--where", "run = 'cli'")
    assert "graded 4 documents" in r.output
    r = cli("generate", *files, "--backend", "auto", expect=2)
    assert "ANTHROPIC_API_KEY" in r.output and "--backend offline" in r.output
    bad = tmp_path / "bad.md"
    bad.write_text("---\nid: x\n---\n")
    r = cli("generate", str(bad), "--backend", "offline", expect=2)
    assert "bad.md: field 'concept'" in r.output


def test_documents_are_relanded_from_stored_answers_when_the_folder_is_cleaned(tmp_path):
    store = Store(tmp_path / "c")
    client = make_client("offline")
    universes = load_universes(UNIVERSES[:1])
    cfg = dict(run="r", limit=3, **SMALL)
    generate(universes, store, GenerateConfig(**cfg), client=client)
    before = sorted(store.query("SELECT doc_id FROM documents")["doc_id"].to_list())
    n_batches = len(client._offline_server.batches)
    shutil.rmtree(store.root / "documents")  # e.g. `make clean`
    res = generate(universes, store, GenerateConfig(**cfg), client=client)
    assert len(client._offline_server.batches) == n_batches  # nothing submitted
    assert res.documents_added == 3
    assert sorted(store.query("SELECT doc_id FROM documents")["doc_id"].to_list()) == before
