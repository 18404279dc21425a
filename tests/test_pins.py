"""A run keeps the model and prompts it started with: upgrading the SDK (whose model list
gives the default) or editing a template never changes, re-asks and re-pays a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdfkit.generate.documents import GenerateConfig, generate
from sdfkit.generate.grade import GradeConfig, grade
from sdfkit.generate.universe import load_universes
from sdfkit.llm.batches import make_client
from sdfkit.llm.pins import PinError, pin_run, pins
from sdfkit.store.catalog import Store

ROOT = Path(__file__).resolve().parents[1]
UNIVERSES = sorted((ROOT / "examples" / "universes").glob("*.md"))[:1]
SMALL = dict(doc_types=2, ideas=2, docs_per_idea=1, poll_interval=0.0, limit=2)
KEY = "sk-ant-api03-TESTKEY-pins"


@pytest.fixture
def api(monkeypatch):
    """The real SDK client (backend anthropic) over the offline stand-in's transport, so
    the default model comes from the SDK's list as it would against the real API."""
    import httpx2

    from sdfkit.llm.offline import OfflineServer

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    server = OfflineServer()
    client = make_client(
        "anthropic",
        base_url="https://api.example.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(server.handle)),
    )
    return client, server


def _sdf_lists(monkeypatch, sonnet: str, haiku: str = "claude-haiku-1-0") -> None:
    """What the installed SDK's model list would make the default."""
    import sdfkit.llm.models as g

    monkeypatch.setattr(
        g, "default_model", lambda family="sonnet": {"sonnet": sonnet}.get(family, haiku)
    )


def _models(store: Store, run: str) -> set[str]:
    rows = store.query("SELECT DISTINCT model FROM gen_requests WHERE run = ?", [run])
    return set(rows["model"].to_list())


def test_resuming_after_an_sdk_upgrade_keeps_the_runs_model_and_pays_nothing(
    tmp_path, monkeypatch, api
):
    client, server = api
    store = Store(tmp_path / "corpus")
    universes = load_universes(UNIVERSES)
    _sdf_lists(monkeypatch, "claude-sonnet-4-5")
    first = generate(universes, store, GenerateConfig(run="r", **SMALL), client=client)
    assert first.model == "claude-sonnet-4-5"
    n = len(server.batches)
    _sdf_lists(monkeypatch, "claude-sonnet-9-9")  # the SDK was upgraded
    again = generate(universes, store, GenerateConfig(run="r", **SMALL), client=client)
    assert again.model == "claude-sonnet-4-5" and len(server.batches) == n
    assert _models(store, "r") == {"claude-sonnet-4-5"}
    # another model for this run is refused, in one line naming the run's model
    with pytest.raises(PinError, match="started with model claude-sonnet-4-5") as err:
        generate(
            universes,
            store,
            GenerateConfig(run="r", model="claude-opus-9", **SMALL),
            client=client,
        )
    assert "\n" not in str(err.value) and "--run" in str(err.value)
    assert len(server.batches) == n
    # a new run name starts fresh, with the current default
    new = generate(universes, store, GenerateConfig(run="r2", **SMALL), client=client)
    assert new.model == "claude-sonnet-9-9" and _models(store, "r2") == {"claude-sonnet-9-9"}
    kinds = {(p["kind"], p["run"]): p for p in pins(store)}
    assert kinds[("generate", "r")]["model"] == "claude-sonnet-4-5"
    assert "document" in kinds[("generate", "r")]["prompts"]


def test_a_run_started_before_pins_keeps_the_model_it_recorded(tmp_path, monkeypatch, api):
    client, server = api
    store = Store(tmp_path / "corpus")
    universes = load_universes(UNIVERSES)
    _sdf_lists(monkeypatch, "claude-sonnet-4-5")
    generate(universes, store, GenerateConfig(run="old", **SMALL), client=client)
    with store.connect() as con:  # as a catalog written before run_pins existed
        con.execute("DROP TABLE run_pins")
    n = len(server.batches)
    _sdf_lists(monkeypatch, "claude-sonnet-9-9")
    res = generate(universes, store, GenerateConfig(run="old", **SMALL), client=client)
    assert res.model == "claude-sonnet-4-5" and len(server.batches) == n


def test_graders_keep_their_model_too(tmp_path, monkeypatch, api):
    client, server = api
    store = Store(tmp_path / "corpus")
    _sdf_lists(monkeypatch, "claude-sonnet-4-5", haiku="claude-haiku-4-5")
    generate(load_universes(UNIVERSES), store, GenerateConfig(run="g", **SMALL), client=client)
    first = grade(store, GradeConfig(run="grade", poll_interval=0.0), client=client)
    assert first.model == "claude-haiku-4-5"
    n = len(server.batches)
    _sdf_lists(monkeypatch, "claude-sonnet-9-9", haiku="claude-haiku-9-9")
    again = grade(store, GradeConfig(run="grade", poll_interval=0.0), client=client)
    assert again.model == "claude-haiku-4-5" and len(server.batches) == n
    with pytest.raises(PinError, match="grade run 'grade' was started with model claude-haiku-4-5"):
        grade(store, GradeConfig(run="grade", model="claude-x", poll_interval=0.0), client=client)


def test_eval_graders_are_pinned_per_evaluation_run(tmp_path, monkeypatch, api):
    from sdfkit.evaluate.questions import pin_graders
    from sdfkit.evaluate.recall import EvalConfig

    client, _ = api
    store = Store(tmp_path / "corpus")
    _sdf_lists(monkeypatch, "claude-sonnet-4-5")
    pin = pin_graders(store, "ev", client, EvalConfig(), lambda m: None)
    assert pin.model == "claude-sonnet-4-5" and "grade_recall" in pin.prompts
    _sdf_lists(monkeypatch, "claude-sonnet-9-9")
    assert pin_graders(store, "ev", client, EvalConfig(), lambda m: None).model == (
        "claude-sonnet-4-5"
    )
    with pytest.raises(PinError, match="--grader-model claude-sonnet-4-5"):
        pin_graders(store, "ev", client, EvalConfig(grader_model="claude-y"), lambda m: None)
    assert pin_graders(store, "ev2", client, EvalConfig(), lambda m: None).model == (
        "claude-sonnet-9-9"
    )


def test_pinned_prompts_render_and_hash_as_recorded(tmp_path, monkeypatch):
    from sdfkit.llm.prompts import prompt_hash
    from sdfkit.llm.prompts import render_template as render

    store = Store(tmp_path / "corpus")
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "grade.j2").write_text("Rubric v1 for {{ text }}", encoding="utf-8")
    monkeypatch.setenv("SDF_PROMPTS", str(prompts))
    pin = pin_run(store, "grade", "x", None, lambda: "m", ["grade"])
    v1 = prompt_hash("grade")
    (prompts / "grade.j2").write_text("Rubric v2 for {{ text }}", encoding="utf-8")
    logs: list[str] = []
    pin = pin_run(store, "grade", "x", None, lambda: "m", ["grade"], log=logs.append)
    assert pin.edited == ["grade"] and any("grade.j2" in m for m in logs)
    with pin.active():
        assert render("grade", text="doc") == "Rubric v1 for doc"
        assert prompt_hash("grade") == v1
    assert render("grade", text="doc") == "Rubric v2 for doc"
    assert prompt_hash("grade") != v1


def test_cli_refuses_another_model_for_an_existing_run_in_one_line(cli, example_universe):
    cli("generate", str(example_universe), "--backend", "offline", "--run", "c", "--limit", "1")
    r = cli(
        "generate",
        str(example_universe),
        "--backend",
        "offline",
        "--run",
        "c",
        "--limit",
        "1",
        "--model",
        "claude-other",
        expect=None,
    )
    assert r.exit_code != 0
    assert "started with model offline-standin" in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert "Traceback" not in r.output and len(errors) == 1


def test_a_run_stays_with_the_backend_that_started_it(tmp_path, api):
    client, server = api
    store = Store(tmp_path / "corpus")
    universes = load_universes(UNIVERSES)
    offline = make_client("offline", state_dir=store.root / ".offline-standin")
    generate(universes, store, GenerateConfig(run="default", **SMALL), client=offline)
    # the same run name with a key: its batches live at the stand-in, its model is not real
    with pytest.raises(PinError, match="started with the offline stand-in") as err:
        generate(universes, store, GenerateConfig(run="default", **SMALL), client=client)
    assert "another --run" in str(err.value) and not server.batches


def test_an_interrupted_run_resumed_after_the_sdk_list_changes_keeps_every_custom_id(
    tmp_path, monkeypatch
):
    """The SDK's own model list changes between the two invocations (what an upgrade does):
    the run was interrupted while its first batch ran, and on resume every custom_id it
    had is asked for again under the same id, none is submitted twice, and no request of
    the run names the new default model."""
    import typing

    import anthropic.types.model as sdk_models
    import httpx2

    from sdfkit.llm.batches import BatchInterrupted
    from sdfkit.llm.models import default_model
    from sdfkit.llm.offline import OfflineServer

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    server = OfflineServer()
    polls = {"n": 0}

    def handle(request):
        if request.method == "GET" and request.url.path.count("/") == 4:
            polls["n"] += 1
            if polls["n"] == 1:
                raise KeyboardInterrupt  # Ctrl-C while the first batch runs
        return server.handle(request)

    client = make_client(
        "anthropic",
        base_url="https://api.example.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handle)),
    )
    before_upgrade = default_model()
    store = Store(tmp_path / "corpus")
    universes = load_universes(UNIVERSES)
    with pytest.raises(BatchInterrupted):
        generate(universes, store, GenerateConfig(run="u", **SMALL), client=client)
    ids_before = set(store.query("SELECT custom_id FROM gen_requests")["custom_id"].to_list())
    assert ids_before and _models(store, "u") == {before_upgrade}
    # the upgrade: a newer Sonnet appears and the one the run started with is deprecated
    newer = "claude-sonnet-99"
    monkeypatch.setattr(sdk_models, "Model", typing.Literal[newer] | str)
    import anthropic._data.deprecated_models as dep

    monkeypatch.setattr(dep, "DEPRECATED_MODELS", {**dep.DEPRECATED_MODELS, before_upgrade: ""})
    assert default_model() == newer
    res = generate(universes, store, GenerateConfig(run="u", **SMALL), client=client)
    assert res.model == before_upgrade and res.documents_in_run == SMALL["limit"]
    sent = store.query("SELECT custom_id, count(*) AS n FROM gen_requests GROUP BY custom_id")
    assert ids_before <= set(sent["custom_id"].to_list())
    assert set(sent["n"].to_list()) == {1}  # nothing asked for twice
    assert _models(store, "u") == {before_upgrade}
