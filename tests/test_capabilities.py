"""Capability regression: inspect-ai tasks served by Tinker sampling through sdfkit's chat
renderer; scores with standard errors in capability_scores, the change against the base
model in the report, `max_capability_drop` in `sdf check`. A local inspect task (sums of two
numbers) and fake models of known accuracy make the scores known."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("inspect_ai", reason="capability evals are the optional extra sdfkit[evals]")

from fake_tinker import FakeTinkerWorld  # noqa: E402
from test_sampling import TOK, harmony  # noqa: E402
from test_train import health_server, tinker_env, write_export  # noqa: E402,F401 - fixtures
from tinker import types  # noqa: E402

from sdfkit.evaluate.recall import EvalConfig  # noqa: E402

TASK_FILE = Path(__file__).resolve().parent / "capability_task.py"
SPEC = f"{TASK_FILE}@sums"


def _pairs() -> list[tuple[int, int]]:
    import capability_task

    return capability_task.PAIRS


def arithmetic_sampler(calls: list[str]):
    """The base model adds correctly; a checkpoint gets every even sum wrong (by one). Each
    reasons first, with a wrong number in its reasoning: scorers must read only the answer."""

    def sample(model, prompt, n, params, kw):
        text = TOK.decode(prompt)
        calls.append(text)
        a, b = map(int, re.search(r"What is (\d+)\+(\d+)\?", text).groups())
        answer = a + b
        if "step" in model and answer % 2 == 0:
            answer += 1
        toks = harmony(f"Adding. It might be {answer + 50}.", str(answer))
        seq = types.SampledSequence(stop_reason="stop", sequence_id="x", tokens_np=np.asarray(toks))
        return types.SampleResponse(sequences=[seq] * n)

    return sample


def expected(limit: int | None = None) -> tuple[float, float]:
    """(accuracy, stderr) of the checkpoint on the first ``limit`` samples."""
    scores = [float((a + b) % 2 == 1) for a, b in _pairs()[:limit]]
    return statistics.mean(scores), statistics.stdev(scores) / math.sqrt(len(scores))


@pytest.fixture
def trained(tmp_path, store, request):
    from sdfkit.train.run import TrainConfig, train

    request.getfixturevalue("tinker_env")
    world = FakeTinkerWorld()
    export = write_export(tmp_path / "exp", [list(range(4))])
    train(export, store, TrainConfig(batch_size=2), run="t", service_factory=world.service)
    return world


def test_capability_scores_land_with_stderr_and_change_against_base(store, trained):
    from inspect_ai.log import read_eval_log

    from sdfkit.evaluate.capabilities import changes, run
    from sdfkit.report.check import run_checks as check

    prompts: list[str] = []
    trained.sampler = arithmetic_sampler(prompts)
    res = run(store, "t", EvalConfig(checkpoints="last", max_tokens=64), SPEC,
              service_factory=trained.service)  # fmt: skip
    assert sorted(res.scored) == [("base", SPEC), ("step-000002", SPEC)] and not res.skipped
    n = len(_pairs())
    assert len(prompts) == 2 * n
    # asked in the model's own chat format, ready for the assistant
    assert all(p.startswith("<|start|>user<|message|>What is ") for p in prompts)
    assert all(p.endswith("<|end|><|start|>assistant") for p in prompts)
    rows = store.query(
        "SELECT model_label, step, task, scorer, metric, value, stderr, samples "
        "FROM capability_scores ORDER BY step"
    ).to_dicts()
    assert [(r["model_label"], r["metric"], r["samples"]) for r in rows] == [
        ("base", "accuracy", n),
        ("step-000002", "accuracy", n),
    ]
    acc, se = expected()
    assert rows[0]["value"] == 1.0 and rows[0]["stderr"] == 0.0
    assert rows[1]["value"] == pytest.approx(acc) and rows[1]["stderr"] == pytest.approx(se)
    assert rows[1]["task"] == SPEC and rows[1]["scorer"] == "match"
    # the answer was scored, the reasoning kept apart
    log_path = store.query("SELECT log_path FROM capability_scores LIMIT 1")["log_path"].item()
    sample = read_eval_log(log_path).samples[0]
    kinds = [c.type for c in sample.output.message.content]
    assert kinds == ["reasoning", "text"] and "might be" not in sample.output.completion
    # change against the base model, with the standard error of the difference
    ch = [r for r in changes(store) if r["model_label"] != "base"][0]
    assert ch["change"] == pytest.approx(acc - 1.0, abs=1e-4)
    assert ch["change_stderr"] == pytest.approx(se, abs=1e-4)
    # sdf check holds the drop to max_capability_drop
    report = {"capabilities": changes(store)}
    tight = check(report, _only_drop(0.05)).verdicts
    assert [v.status for v in tight] == ["fail"] and tight[0].figure == pytest.approx(1 - acc, 1e-3)
    assert check(report, _only_drop(0.8)).ok
    assert check({}, _only_drop(0.1)).verdicts[0].status == "not run"
    broken = {"capabilities_error": "capability_changes.sql: no such column x"}
    v = check(broken, _only_drop(0.1)).verdicts[0]
    assert v.status == "not run" and "could not be computed: capability_changes.sql" in v.detail
    # rerunning resumes: nothing sampled again
    again = run(store, "t", EvalConfig(checkpoints="last"), SPEC, service_factory=trained.service)
    assert not again.scored and len(again.skipped) == 2 and len(prompts) == 2 * n


def test_dry_run_plans_without_tinker_then_limit_runs(tmp_path, cli, trained, monkeypatch):
    import tinker

    trained.sampler = arithmetic_sampler([])
    before = list(trained.calls)
    args = ["eval", "t", "--capabilities", SPEC, "--limit", "4", "--checkpoints", "last"]
    plan = json.loads(cli(*args, "--dry-run", "--json").output)
    assert trained.calls == before  # the plan contacts no Tinker
    tables = "SELECT count(*) AS n FROM duckdb_tables() WHERE table_name LIKE 'capability%'"
    assert json.loads(cli("sql", tables, "-f", "json").output) == [{"n": 0}]  # nor writes
    assert [c["label"] for c in plan["checkpoints"]] == ["base", "step-000002"]
    assert plan["tasks"] == [
        {
            "task": SPEC,
            "samples": 4,
            "dataset_samples": len(_pairs()),
            "epochs": 1,
            "requests": 8,
            "already_scored": [],
        }
    ]
    assert plan["requests"] == 8
    monkeypatch.setattr(tinker, "ServiceClient", trained.service)  # the client-object boundary
    out = cli(*args).output
    assert "2 (model, task) run(s) scored" in out and "change_stderr" in out
    acc, _ = expected(4)
    from sdfkit.evaluate.capabilities import changes
    from sdfkit.store.catalog import Store

    rows = changes(Store(tmp_path / "corpus"))
    assert [(r["model_label"], r["samples"], r["sample_limit"]) for r in rows] == [
        ("base", 4, 4),
        ("step-000002", 4, 4),
    ]
    assert rows[1]["value"] == pytest.approx(acc)
    replan = json.loads(cli(*args, "--dry-run", "--json").output)
    assert replan["requests"] == 0
    assert replan["tasks"][0]["already_scored"] == ["base", "step-000002"]


def test_report_shows_the_change_against_base():
    from sdfkit.report.build import render_html

    row = {
        "run": "t", "task": "inspect_evals/ifeval", "metric": "final_acc", "step": 400,
        "model_label": "step-000400", "samples": 50, "value": 0.7, "stderr": 0.06,
        "base_value": 0.8, "change": -0.1, "change_stderr": 0.085,
    }  # fmt: skip
    page = render_html({"capabilities": [row], "audits": {}})
    assert "Capability regression" in page and "final_acc" in page and "-0.1" in page
    assert 'href="#evaluation"' in page


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_eval_anywhere", "no inspect-evals task named 'no_such_eval_anywhere'"),
        # a later bad name is found before an earlier task loads (and downloads) its dataset
        (f"{TASK_FILE}@broken,no_such_eval", "no inspect-evals task named 'no_such_eval'"),
        (f"{TASK_FILE}@broken", "could not load the task: ConnectionError: the dataset could"),
        ("missing.py@sums", "no such file missing.py"),
        (f"{TASK_FILE}@nope", "defines no 'nope'"),
        (str(TASK_FILE), "name the task function"),
        (" , ", "name at least one task"),
    ],
)
def test_bad_task_specs_are_one_line_errors(store, trained, spec, message):
    from sdfkit.evaluate.capabilities import CapabilityError, plan

    with pytest.raises(CapabilityError) as err:
        plan(store, "t", EvalConfig(), spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def _only_drop(limit: float):
    """Thresholds with max_capability_drop alone (the gates on by default turned off)."""
    from sdfkit.report.check import Thresholds

    return Thresholds(
        max_capability_drop=limit,
        max_anti_universe_documents=None,
        max_name_doc_share=None,
        max_top5_names_doc_share=None,
    )


def _existing_corpus() -> None:
    """./corpus, as a trained run's corpus would be (`sdf eval` names a missing one)."""
    from sdfkit.store.catalog import Store

    with Store("corpus").connect():
        pass


def test_without_the_extra_the_error_gives_the_install_command(cli, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("inspect_ai", "inspect_evals") else real(name, *a),
    )
    _existing_corpus()
    res = cli("eval", "t", "--capabilities", "ifeval", expect=2)
    assert "pip install 'sdfkit[evals]'" in res.output and "Traceback" not in res.output


def test_belief_and_capabilities_are_separate_runs(cli):
    _existing_corpus()
    res = cli("eval", "t", "--capabilities", "ifeval", "--belief", expect=2)
    assert "separate runs" in res.output
    res = cli("eval", "t", "--dry-run", expect=2)
    assert "add --capabilities" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--capabilities", SPEC, "--limit", "0"], "--limit 0: give at least 1 sample per task"),
        (["--capabilities", SPEC, "--limit", "-5", "--dry-run", "--json"], "--limit -5: give"),
        (["--limit", "3"], "--limit applies to --capabilities"),
        (["--capabilities", SPEC, "--json"], "--json prints the plan of --dry-run"),
        (["--capabilities", SPEC, "--lda", "1.0"], "--lda applies to sdf eval's own questions"),
    ],
)
def test_capability_options_that_make_no_sense_are_refused_in_one_line(
    tmp_path, cli, trained, args, message
):
    before = list(trained.calls)
    res = cli("eval", "t", *args, expect=2)
    assert f"error: {message}" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert trained.calls == before
    n = "SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 'capability_scores'"
    assert json.loads(cli("sql", n, "-f", "json").output) == [{"n": 0}]  # nothing written


def test_a_task_system_message_reaches_the_model_through_the_shared_chat_renderer(trained):
    """inspect tasks may open with a system message: it is rendered by sdfkit.llm.chat exactly as
    sdf chat, sdf sample and belief depth render theirs (whatever the format's rule for it)."""
    import asyncio

    from inspect_ai.model import ChatMessageSystem, ChatMessageUser, GenerateConfig

    from sdfkit.evaluate.inspect_tinker import TinkerSamplingAPI
    from sdfkit.evaluate.recall import renderer_for
    from sdfkit.llm.chat import render_prompt

    trained.sampler = arithmetic_sampler([])
    client = trained.service().create_sampling_client(base_model="openai/gpt-oss-20b").result()
    api = TinkerSamplingAPI(
        "t", sampling_client=client, renderer=renderer_for("openai/gpt-oss-20b", "auto")
    )
    msgs = [ChatMessageSystem(content="Be terse."), ChatMessageUser(content="What is 2+3?")]
    out = asyncio.run(api.generate(msgs, [], "none", GenerateConfig()))
    assert out.completion == "5"
    sent = [c[1]["prompt"] for c in trained.calls if c[0] == "sample"][-1]
    expected = [{"role": "system", "content": "Be terse."}]
    expected.append({"role": "user", "content": "What is 2+3?"})
    assert sent == render_prompt(expected, TOK, "harmony")


def test_an_interrupted_task_reuses_the_completions_already_paid_for(store, trained):
    from sdfkit.evaluate.capabilities import CapabilityError, run

    prompts: list[str] = []
    trained.sampler = arithmetic_sampler(prompts)
    trained.fail_sample_calls = {5}  # the last of six requests fails: the task stops
    six = EvalConfig(checkpoints="none", max_tokens=64, limit=6)  # the base model only
    with pytest.raises(CapabilityError, match="did not finish"):
        run(store, "t", six, SPEC, service_factory=trained.service)
    assert len(prompts) == 6
    assert store.query("SELECT count(*) AS n FROM capability_samples")["n"].item() == 5
    assert store.query("SELECT count(*) AS n FROM capability_scores")["n"].item() == 0
    trained.fail_sample_calls = set()
    logs: list[str] = []
    res = run(store, "t", six, SPEC, service_factory=trained.service, log=logs.append)
    assert res.scored == [("base", SPEC)]
    assert len(prompts) == 7  # only the request that failed is asked again
    assert any("5 completion(s) reused" in m for m in logs)
    row = store.query("SELECT value, samples FROM capability_scores").row(0, named=True)
    assert row == {"value": 1.0, "samples": 6}
    # the whole dataset later asks only for the samples beyond the six answered
    n = len(_pairs())
    run(store, "t", EvalConfig(checkpoints="none", max_tokens=64), SPEC,
        service_factory=trained.service)  # fmt: skip
    assert len(prompts) == 7 + n - 6
    # completions belong to their model: a checkpoint is asked everything
    ck = EvalConfig(checkpoints="last", max_tokens=64, include_base=False, limit=6)
    run(store, "t", ck, SPEC, service_factory=trained.service)
    assert len(prompts) == 7 + n


def test_a_task_inspect_cannot_start_is_a_one_line_error(store, trained, monkeypatch):
    import inspect_ai

    from sdfkit.evaluate.capabilities import CapabilityError, run

    def cannot_start(*a, **kw):
        raise RuntimeError("this task needs a docker sandbox\nand docker is not running")

    monkeypatch.setattr(inspect_ai, "eval", cannot_start)
    trained.sampler = arithmetic_sampler([])
    with pytest.raises(CapabilityError) as err:
        run(store, "t", EvalConfig(checkpoints="none"), SPEC, service_factory=trained.service)
    msg = str(err.value)
    assert "inspect could not run" in msg and "needs a docker sandbox" in msg and "\n" not in msg
    assert trained.calls[-1][0] == "close"


def test_ctrl_c_mid_task_keeps_every_completion_received(store, trained, monkeypatch):
    import threading

    from sdfkit.evaluate import capabilities
    from sdfkit.evaluate.capabilities import run

    prompts: list[str] = []
    answer = arithmetic_sampler(prompts)
    # inspect sends the six requests at once, each on its own thread: the sixth to arrive is
    # interrupted, once the other five are answered and kept (not "when five prompts were
    # seen", which threads under load could all check before any of them answered).
    lock, arrived, added, kept = threading.Lock(), [], [], threading.Event()
    real_add = capabilities.SampleCache.add

    def add(self, *args, **kw):
        real_add(self, *args, **kw)
        with lock:
            added.append(1)
            if len(added) == 5:
                kept.set()

    monkeypatch.setattr(capabilities.SampleCache, "add", add)

    def interrupted(model, prompt, n, params, kw):
        with lock:
            arrived.append(prompt)
            sixth = len(arrived) == 6
        if sixth:  # Ctrl-C while the last request is awaited
            assert kept.wait(timeout=120), "the other five requests were never answered"
            prompts.append("interrupted")
            raise KeyboardInterrupt
        return answer(model, prompt, n, params, kw)

    trained.sampler = interrupted
    six = EvalConfig(checkpoints="none", max_tokens=64, limit=6)
    with pytest.raises(KeyboardInterrupt):
        run(store, "t", six, SPEC, service_factory=trained.service)
    assert store.query("SELECT count(*) AS n FROM capability_samples")["n"].item() == 5
    assert trained.calls[-1][0] == "close"
    trained.sampler = answer
    run(store, "t", six, SPEC, service_factory=trained.service)
    assert len(prompts) == 7  # the five answers received were not paid for again


def test_a_broken_evaluation_query_does_not_hide_the_capability_changes(
    tmp_path, store, trained, monkeypatch
):
    from sdfkit.evaluate.capabilities import run
    from sdfkit.evaluate.report_part import add as _add_evaluation

    trained.sampler = arithmetic_sampler([])
    cfg = EvalConfig(checkpoints="last", max_tokens=64, limit=2)
    run(store, "t", cfg, SPEC, service_factory=trained.service)
    mine = tmp_path / "myqueries"
    mine.mkdir()
    (mine / "eval_curves.sql").write_text("-- a user's edit gone wrong\nSELECT 1 +")
    monkeypatch.setenv("SDF_QUERIES", str(mine))
    data: dict = {}
    _add_evaluation(store, data)
    assert "evaluation_error" in data and "evaluation" not in data
    assert [r["model_label"] for r in data["capabilities"]] == ["base", "step-000002"]


def test_a_tasks_own_sampling_settings_reach_tinker(trained):
    import asyncio

    from inspect_ai.model import ChatMessageUser, GenerateConfig

    from sdfkit.evaluate.inspect_tinker import TinkerSamplingAPI
    from sdfkit.evaluate.recall import renderer_for

    seen: list = []
    answer = arithmetic_sampler([])

    def sampler(model, prompt, n, params, kw):
        seen.append(params)
        return answer(model, prompt, n, params, kw)

    trained.sampler = sampler
    client = trained.service().create_sampling_client(base_model="openai/gpt-oss-20b").result()
    renderer = renderer_for("openai/gpt-oss-20b", "auto")
    api = TinkerSamplingAPI("t", sampling_client=client, renderer=renderer, max_tokens=99)
    ask = [ChatMessageUser(content="What is 2+3?")]
    task_cfg = GenerateConfig(max_tokens=7, temperature=0.0, seed=3, top_p=0.9, top_k=40)
    asyncio.run(api.generate(ask, [], "none", task_cfg))
    asyncio.run(api.generate(ask, [], "none", GenerateConfig()))
    got = [(p.max_tokens, p.temperature, p.seed, p.top_p, p.top_k) for p in seen]
    assert got == [(7, 0.0, 3, 0.9, 40), (99, 1.0, None, 1.0, -1)]
    assert all(p.stop == renderer.stop_ids() for p in seen)
